"""How the `minisaga` command shows sagas and records to a person.

A saga's timeline reads top to bottom: a headline that says how it ended and
why, then every step and compensation in the order they ran, with each
attempt's status code and duration, the line where compensation started,
and the compensations that failed. Colour is a `Style`: on only when the
output is a terminal and NO_COLOR is not set (https://no-color.org).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC
from typing import TextIO

from google.protobuf import duration_pb2, timestamp_pb2
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from minisaga.orchestrator.v1 import orchestrator_pb2 as pb


def use_color(stream: TextIO, environ: Mapping[str, str] | None = None) -> bool:
    """Colour only for a terminal, and never when NO_COLOR is set to anything but ""."""
    environ = os.environ if environ is None else environ
    if environ.get("NO_COLOR", ""):
        return False
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


@dataclass(frozen=True)
class Style:
    """ANSI colours, or plain text when `color` is false."""

    color: bool = False

    def _paint(self, code: str, text: str) -> str:
        return f"\x1b[{code}m{text}\x1b[0m" if self.color and text else text

    def bold(self, text: str) -> str:
        return self._paint("1", text)

    def dim(self, text: str) -> str:
        return self._paint("2", text)

    def red(self, text: str) -> str:
        return self._paint("1;31", text)

    def green(self, text: str) -> str:
        return self._paint("32", text)

    def yellow(self, text: str) -> str:
        return self._paint("33", text)

    def cyan(self, text: str) -> str:
        return self._paint("36", text)

    def code(self, code: str) -> str:
        """A gRPC status code name: green when OK, red otherwise."""
        return self.green(code) if code == "OK" else self.red(code)

    def status(self, status: pb.SagaStatus.ValueType) -> str:
        name = status_name(status)
        if status == pb.SAGA_STATUS_COMPLETED:
            return self.bold(self.green(name))
        if status == pb.SAGA_STATUS_COMPENSATED:
            return self.bold(self.yellow(name))
        if status == pb.SAGA_STATUS_FAILED:
            return self.red(name)
        return self.bold(self.cyan(name))


PLAIN = Style(False)

# What a server's text must not bring to a terminal: C0 and C1 controls but
# newline and tab (escape sequences can move the cursor, retitle the window,
# hide text), DEL, line and paragraph separators, and the bidirectional
# formatting characters that make text read differently from what it is.
_UNSAFE = re.compile(
    "[\\x00-\\x08\\x0b-\\x1f\\x7f-\\x9f\\u061c\\u200e\\u200f\\u2028\\u2029\\u202a-\\u202e\\u2066-\\u2069]"
)
# The colours Style paints with: the only escape sequences let through.
_OUR_COLOURS = re.compile(r"\x1b\[(?:0|1|2|1;31|32|33|36)m")


def escape_controls(text: str, *, keep_colours: bool = False) -> str:
    """`text` safe to print: each unsafe character becomes a visible \\uXXXX
    (valid in JSON too); with keep_colours, Style's own colour codes stay."""

    def escape(piece: str) -> str:
        return _UNSAFE.sub(lambda found: f"\\u{ord(found.group()):04x}", piece)

    if not keep_colours:
        return escape(text)
    parts, last = [], 0
    for colour in _OUR_COLOURS.finditer(text):
        parts += [escape(text[last : colour.start()]), colour.group()]
        last = colour.end()
    return "".join([*parts, escape(text[last:])])


def status_name(status: pb.SagaStatus.ValueType) -> str:
    """SAGA_STATUS_COMPENSATED -> COMPENSATED."""
    return pb.SagaStatus.Name(status).removeprefix("SAGA_STATUS_")


def short_method(method: str) -> str:
    """/minisaga.payment.v1.PaymentService/Charge -> PaymentService.Charge."""
    service, _, name = method.strip("/").rpartition("/")
    return f"{service.rpartition('.')[2]}.{name}" if service else method


def when(stamp: timestamp_pb2.Timestamp) -> str:
    """A UTC time to the millisecond, such as 2026-11-26 12:37:07.735Z."""
    moment = stamp.ToDatetime(tzinfo=UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def millis(ms: int) -> str:
    return f"{ms} ms" if ms < 10_000 else f"{ms / 1000:.1f} s"


def took(duration: duration_pb2.Duration) -> str:
    return millis(duration.ToMilliseconds())


def _span_ms(start: timestamp_pb2.Timestamp, end: timestamp_pb2.Timestamp) -> int:
    return end.ToMilliseconds() - start.ToMilliseconds()


def _undone_steps(saga: pb.Saga) -> list[str]:
    return [s.step for s in saga.steps if s.phase == pb.STEP_PHASE_COMPENSATION]


def _stopped(saga: pb.Saga) -> str:
    """Why compensation started when no step failed: a cancel or the saga's deadline; else ""."""
    cause = saga.compensation_cause
    before = f" before {cause.step}" if cause.step else ""
    if cause.reason == "SAGA_CANCELLED":
        return f"cancelled by an operator{before}"
    if cause.reason == "SAGA_DEADLINE_EXCEEDED":
        return f"the saga's deadline passed{before}"
    return ""


def _why(saga: pb.Saga) -> str:
    cause = saga.compensation_cause
    reason = f" {cause.reason}" if cause.reason else ""
    return _stopped(saga) or f"{cause.step or 'the saga'} failed ({cause.code}{reason})"


def headline(saga: pb.Saga, style: Style = PLAIN) -> str:
    """One line: how the saga ended (or where it is) and why."""
    status = style.status(saga.status)
    why = _why(saga) if saga.HasField("compensation_cause") else ""
    undone = _undone_steps(saga)
    if saga.status == pb.SAGA_STATUS_COMPLETED:
        return f"{status} — every step succeeded"
    if saga.status == pb.SAGA_STATUS_COMPENSATED:
        if undone:
            tail = "every step done was undone (" + ", ".join(f"undo {s}" for s in undone) + ")"
        else:
            tail = "no step had taken effect, nothing to undo"
        if saga.compensation_failures:
            tail += f", after {len(saga.compensation_failures)} failed undo(s) and a resume"
        return f"{status} — {why}; {tail}"
    if saga.status == pb.SAGA_STATUS_FAILED:
        steps = dict.fromkeys(f.step for f in saga.compensation_failures)  # once each, in order
        failed = ", ".join(f"undo {step}" for step in steps) or "an undo"
        services = sorted(
            {short_method(f.method).split(".")[0] for f in saga.compensation_failures}
        )
        fix = " and ".join(services) or "the participant"
        return (
            f"{status} — {why}; then {failed} ran out of attempts\n"
            f"{style.red('needs an operator')}: once {fix} is healthy, "
            f"run `minisaga saga resume {saga.saga_id}`"
        )
    if saga.status == pb.SAGA_STATUS_COMPENSATING:
        return f"{status} — {why}; undoing the steps done"
    current = next(
        (s.step for s in saga.steps if s.state in (pb.STEP_STATE_RUNNING, pb.STEP_STATE_PENDING)),
        "",
    )
    return f"{status} — at {current}" if current else status


def _step_line(execution: pb.StepExecution, style: Style) -> list[str]:
    compensation = execution.phase == pb.STEP_PHASE_COMPENSATION
    name = f"undo {execution.step}" if compensation else execution.step
    method = short_method(execution.method)
    attempts = list(execution.attempts)
    if execution.state == pb.STEP_STATE_PENDING or not attempts:
        mark, result, spent = style.dim("·"), style.dim("not run yet"), ""
    else:
        last = attempts[-1]
        if execution.state == pb.STEP_STATE_SUCCEEDED:
            mark = style.green("✓")
        elif execution.state == pb.STEP_STATE_RUNNING:
            mark = style.cyan("…")
        else:
            mark = style.red("✗")
        code = last.code or "in flight"
        result = style.code(code) if last.code else style.cyan(code)
        result_width = len(code)
        if len(attempts) > 1:
            suffix = f" after {len(attempts)} attempts"
            result += suffix
            result_width += len(suffix)
        result += " " * max(0, 20 - result_width)
        spent = (
            millis(_span_ms(execution.started_at, execution.finished_at))
            if execution.HasField("finished_at")
            else ""
        )
    lines = [f"  {mark} {style.bold(f'{name:<14}')} {method:<31} {result} {spent:>6}".rstrip()]
    if len(attempts) == 1:
        detail = _attempt_detail(attempts[0])
        if detail:
            lines[0] += f"  {style.dim(detail)}"
    elif len(attempts) > 1:
        for attempt in attempts:
            code = attempt.code or "in flight"
            painted = style.code(code) if attempt.code else style.cyan(code)
            spent_attempt = took(attempt.duration) if attempt.HasField("duration") else ""
            line = f"      attempt {attempt.number:<3} {painted}{' ' * max(0, 20 - len(code))}"
            line += f" {spent_attempt:>8}"
            detail = _attempt_detail(attempt)
            if detail:
                line += f"  {style.dim(detail)}"
            lines.append(line.rstrip())
    return lines


def _attempt_detail(attempt: pb.Attempt) -> str:
    if attempt.code == "OK":
        return ""
    reason = f"{attempt.reason}: " if attempt.reason else ""
    return f"{reason}{attempt.message}".strip()


def timeline(saga: pb.Saga, style: Style = PLAIN) -> str:
    """The saga as a person reads it: outcome first, then every step and undo in order."""
    lines = [
        f"saga {style.bold(saga.saga_id)}  {saga.saga_type}",
        headline(saga, style),
    ]
    facts = [f"order {saga.order_id}"] if saga.order_id else []
    if saga.request_id:
        facts.append(f"request {saga.request_id}")
    if saga.HasField("created_at"):
        facts.append(f"started {when(saga.created_at)}")
    if saga.HasField("ended_at"):
        facts.append(f"took {millis(_span_ms(saga.created_at, saga.ended_at))}")
    if facts:
        lines.append(style.dim(" · ".join(facts)))
    lines.append("")
    cause_shown = False
    for execution in saga.steps:
        if (
            execution.phase == pb.STEP_PHASE_COMPENSATION
            and not cause_shown
            and saga.HasField("compensation_cause")
        ):
            lines.append(_cause_line(saga, style))
            cause_shown = True
        lines.extend(_step_line(execution, style))
    if saga.HasField("compensation_cause") and not cause_shown:
        lines.append(_cause_line(saga, style))
    if saga.compensation_failures:
        lines.append("")
        lines.append(style.red("compensation failures") + style.dim(" (kept after a resume)"))
        for failure in saga.compensation_failures:
            lines.append(
                f"  {style.red('✗')} undo {failure.step} ({short_method(failure.method)}) "
                f"failed after {failure.attempts} attempts at {when(failure.at)}: "
                f"{style.red(failure.code)} {failure.message}".rstrip()
            )
    return "\n".join(lines)


def _cause_line(saga: pb.Saga, style: Style) -> str:
    """What started compensation; the message only when the step's line does not show it."""
    stopped = _stopped(saga)
    if stopped:
        return style.yellow(f"  ↩ compensation started: {stopped}")
    cause = saga.compensation_cause
    shown = {
        a.message
        for s in saga.steps
        if s.step == cause.step and s.phase == pb.STEP_PHASE_ACTION
        for a in s.attempts[-1:]
    }
    text = f"{cause.code} {cause.reason}".strip()
    if cause.message and cause.message not in shown:
        text += f": {cause.message}"
    return style.yellow(f"  ↩ compensation started: {cause.step or 'the saga'} ended {text}")


def saga_table(sagas: Iterable[pb.Saga], style: Style = PLAIN) -> str:
    """One line per saga: id, status, order, when, and why it did not complete."""
    rows = [f"{'SAGA':<36}  {'STATUS':<12}  {'ORDER':<36}  {'STARTED':<24}  WHY"]
    for saga in sagas:
        name = status_name(saga.status)
        why = ""
        if saga.HasField("compensation_cause"):
            cause = saga.compensation_cause
            reason = f" {cause.reason}" if cause.reason else ""
            why = _stopped(saga) or f"{cause.step or 'saga'} {cause.code}{reason}"
        if saga.compensation_failures:
            failed = ", ".join(dict.fromkeys(f.step for f in saga.compensation_failures))
            resumed = "" if saga.status == pb.SAGA_STATUS_FAILED else ", resumed"
            why += f"; undo failed: {failed}{resumed}"
        started = when(saga.created_at) if saga.HasField("created_at") else ""
        rows.append(
            f"{saga.saga_id:<36}  {style.status(saga.status)}{' ' * (12 - len(name))}  "
            f"{saga.order_id:<36}  {started:<24}  {why}".rstrip()
        )
    return "\n".join(rows)


def event_line(event: pb.SagaEvent, style: Style = PLAIN) -> str:
    """A WatchSaga event: its time and its one-line description."""
    stamp = when(event.time)[11:] if event.HasField("time") else ""
    return f"{style.dim(stamp)}  {event.description}"


def record(message: Message, style: Style = PLAIN) -> str:
    """A participant record (Payment, Reservation, Shipment, Stock) as `field  value` lines."""
    fields = [(field.name, _value(field, value)) for field, value in message.ListFields()]
    width = max((len(name) for name, _ in fields), default=0)
    return "\n".join(f"{style.dim(f'{name:<{width}}')}  {value}" for name, value in fields)


def _value(field: FieldDescriptor, value: object) -> str:
    if field.enum_type is not None and isinstance(value, int):
        return field.enum_type.values_by_number[value].name
    if isinstance(value, timestamp_pb2.Timestamp):
        return when(value)
    if isinstance(value, Message):
        return str(value).replace("\n", " ").strip()
    return str(value)
