"""The console's pages, written as HTML on the server from the API's messages.

Pure functions of `minisaga.orchestrator.v1` messages: no web framework here,
so they are tested and typed alone. Every value goes through `escape`. The
timeline and the graph are drawn here too (HTML bars on a shared time axis;
an SVG of the definition's nodes and edges), so the pages need no JavaScript
library; `static/console.js` only follows the server-sent events.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from html import escape
from typing import Literal
from urllib.parse import urlencode

from google.protobuf.timestamp_pb2 import Timestamp
from minisaga.orchestrator.v1 import orchestrator_pb2 as pb

from minisaga_client.graph import COMPENSATED, COMPLETED, FAILED, START, Shape, action_id, undo_id
from minisaga_client.render import headline, millis, short_method, status_name, when

STATUSES = ("RUNNING", "COMPENSATING", "COMPLETED", "COMPENSATED", "FAILED")
REJECTIONS = frozenset(
    {"FAILED_PRECONDITION", "INVALID_ARGUMENT", "NOT_FOUND", "ALREADY_EXISTS", "OUT_OF_RANGE"}
)
"""Codes a participant refuses with: the step did nothing (docs/design.md §4)."""
FILTERS = ("status", "saga_type", "order_id", "request_id", "created_from", "created_before")


def outcome(code: str) -> str:
    """The class of an attempt's code, which gives its colour: ok, rejected, error, running."""
    if not code:
        return "running"
    if code == "OK":
        return "ok"
    return "rejected" if code in REJECTIONS else "error"


SYMBOL = {"ok": "✓", "rejected": "✗", "error": "!", "running": "…", "pending": "·"}


def _ms(stamp: Timestamp) -> int:
    return stamp.ToMilliseconds()


def _when(saga: pb.Saga, field: Literal["created_at", "ended_at", "deadline"]) -> str:
    return when(getattr(saga, field)) if saga.HasField(field) else "—"


def duration_of(saga: pb.Saga) -> str:
    if not saga.HasField("ended_at"):
        return "—"
    return millis(_ms(saga.ended_at) - _ms(saga.created_at))


def status_badge(status: pb.SagaStatus.ValueType) -> str:
    name = status_name(status)
    return f'<span class="badge status-{name.lower()}" data-status="{name}">{name}</span>'


# --- the page around everything ----------------------------------------------


def layout(title: str, body: str, *, script: bool = False) -> str:
    tag = '<script src="/static/console.js" defer></script>' if script else ""
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{escape(title)} · minisaga console</title>
<link rel="stylesheet" href="/static/console.css">
{tag}
</head>
<body>
<a class="skip" href="#main">Skip to content</a>
<header class="top"><a href="/" class="brand">minisaga console</a></header>
<main id="main">
{body}
</main>
</body>
</html>
"""


def notice(text: str, *, error: bool = False) -> str:
    if not text:
        return ""
    if error:
        return f'<p class="notice error" role="alert">{escape(text)}</p>'
    return f'<p class="notice" role="status">{escape(text)}</p>'


# --- the list -------------------------------------------------------------------


def query(filters: Mapping[str, str], **changes: str) -> str:
    """The list's URL for `filters` with `changes` (an empty value drops a filter)."""
    merged = {**filters, **changes}
    kept = {k: v for k, v in merged.items() if v}
    return "/?" + urlencode(kept) if kept else "/"


def counts_html(counts: pb.CountSagasResponse, filters: Mapping[str, str]) -> str:
    """The count of each status under the other filters; each links to its filtered list."""
    by_status = {status_name(c.status): c.count for c in counts.counts}
    current = filters.get("status", "").upper()
    items = [
        f'<li><a href="{escape(query(filters, status="", page_token=""))}"'
        f"{' aria-current=' + chr(34) + 'true' + chr(34) if not current else ''}>"
        f'all <strong data-count="ALL">{counts.total}</strong></a></li>'
    ]
    for name in STATUSES:
        mark = ' aria-current="true"' if current == name else ""
        items.append(
            f'<li><a class="status-{name.lower()}" href="'
            f'{escape(query(filters, status=name.lower(), page_token=""))}"{mark}>'
            f'{name.lower()} <strong data-count="{name}">{by_status.get(name, 0)}</strong></a></li>'
        )
    return '<ul class="counts">' + "".join(items) + "</ul>"


def _field(name: str, label: str, value: str, kind: str = "text", hint: str = "") -> str:
    extra = ' step="1"' if kind == "datetime-local" else ""
    described = f' aria-describedby="{name}-hint"' if hint else ""
    hint_html = f'<small id="{name}-hint">{escape(hint)}</small>' if hint else ""
    return (
        f'<div class="field"><label for="{name}">{escape(label)}</label>'
        f'<input id="{name}" name="{name}" type="{kind}" value="{escape(value)}"{extra}'
        f"{described}>{hint_html}</div>"
    )


def filter_form(filters: Mapping[str, str]) -> str:
    status = filters.get("status", "").upper()
    options = ['<option value="">any</option>'] + [
        f'<option value="{s.lower()}"{" selected" if s == status else ""}>{s.lower()}</option>'
        for s in STATUSES
    ]
    return (
        '<form class="filters" method="get" action="/" role="search" aria-label="Filter sagas">'
        '<div class="field"><label for="status">Status</label>'
        f'<select id="status" name="status">{"".join(options)}</select></div>'
        + _field("saga_type", "Saga type", filters.get("saga_type", ""))
        + _field("order_id", "Order id", filters.get("order_id", ""))
        + _field("request_id", "Request id", filters.get("request_id", ""))
        + _field(
            "created_from",
            "Created from",
            filters.get("created_from", ""),
            "datetime-local",
            "UTC, inclusive",
        )
        + _field(
            "created_before",
            "Created before",
            filters.get("created_before", ""),
            "datetime-local",
            "UTC, exclusive",
        )
        + (
            f'<input type="hidden" name="page_size" value="{escape(filters["page_size"])}">'
            if filters.get("page_size")
            else ""
        )
        + '<div class="buttons"><button type="submit">Filter</button>'
        '<a class="button secondary" href="/">Clear</a></div></form>'
    )


def saga_rows(sagas: Sequence[pb.Saga]) -> str:
    rows = []
    for saga in sagas:
        rows.append(
            f'<tr data-saga-id="{escape(saga.saga_id)}">'
            f'<td><a href="/sagas/{escape(saga.saga_id)}" title="{escape(saga.saga_id)}"'
            f' aria-label="saga {escape(saga.saga_id)}"><code>{escape(saga.saga_id[:8])}</code>'
            "…</a></td>"
            f"<td>{status_badge(saga.status)}</td>"
            f"<td>{escape(saga.saga_type)}</td>"
            f"<td>{escape(saga.order_id)}</td>"
            f"<td>{escape(saga.request_id) or '—'}</td>"
            f"<td>{_when(saga, 'created_at')}</td>"
            f"<td>{_when(saga, 'ended_at')}</td>"
            f"<td>{duration_of(saga)}</td></tr>"
        )
    return "".join(rows)


def list_page(
    page: pb.ListSagasResponse,
    counts: pb.CountSagasResponse,
    filters: Mapping[str, str],
    *,
    page_token: str = "",
    error: str = "",
) -> str:
    counts_query = urlencode({k: v for k, v in filters.items() if v and k != "status"})
    if page.sagas:
        table = (
            '<div class="scroll"><table class="sagas"><caption>Sagas, newest first</caption>'
            "<thead><tr><th scope=col>Saga</th><th scope=col>Status</th>"
            "<th scope=col>Type</th><th scope=col>Order id</th><th scope=col>Request id</th>"
            "<th scope=col>Created (UTC)</th><th scope=col>Ended (UTC)</th>"
            "<th scope=col>Duration</th></tr></thead>"
            f"<tbody>{saga_rows(page.sagas)}</tbody></table></div>"
        )
    else:
        table = '<p class="empty">No saga matches these filters.</p>'
    paging = []
    if page_token:
        paging.append(f'<a class="button secondary" href="{escape(query(filters))}">First page</a>')
    if page.next_page_token:
        paging.append(
            f'<a class="button" rel="next" href="'
            f'{escape(query(filters, page_token=page.next_page_token))}">Next page</a>'
        )
    body = (
        "<h1>Sagas</h1>"
        + notice(error, error=True)
        + f'<section aria-label="Counts per status" id="counts" data-live="/events/counts'
        f'{"?" + escape(counts_query) if counts_query else ""}">'
        + counts_html(counts, filters)
        + "</section>"
        + filter_form(filters)
        + table
        + (f'<nav class="paging" aria-label="Pages">{"".join(paging)}</nav>' if paging else "")
    )
    return layout("Sagas", body, script=True)


# --- one saga ---------------------------------------------------------------------


@dataclass(frozen=True)
class Actions:
    """Which of Resume and Cancel the page offers (none when read-only)."""

    resume: bool
    cancel: bool


def actions_for(saga: pb.Saga, *, read_only: bool) -> Actions:
    if read_only:
        return Actions(False, False)
    return Actions(
        resume=saga.status == pb.SAGA_STATUS_FAILED,
        cancel=saga.status == pb.SAGA_STATUS_RUNNING,
    )


def _actions_html(saga: pb.Saga, actions: Actions) -> str:
    links = []
    if actions.resume:
        links.append(f'<a class="button" href="/sagas/{escape(saga.saga_id)}/resume">Resume…</a>')
    if actions.cancel:
        links.append(
            f'<a class="button danger" href="/sagas/{escape(saga.saga_id)}/cancel">Cancel…</a>'
        )
    return f'<div class="actions">{"".join(links)}</div>' if links else ""


def _span(saga: pb.Saga, now_ms: int) -> tuple[int, int]:
    """The shared time axis: from the saga's start to its end (or its last attempt, or now)."""
    start = _ms(saga.created_at)
    end = _ms(saga.ended_at) if saga.HasField("ended_at") else now_ms
    for execution in saga.steps:
        for attempt in execution.attempts:
            end = max(end, _ms(attempt.started_at))
            if attempt.HasField("finished_at"):
                end = max(end, _ms(attempt.finished_at))
    return start, max(end, start + 1)


def timeline_html(saga: pb.Saga, now_ms: int) -> str:
    """A row per step execution, a bar per attempt, placed on one time axis."""
    start, end = _span(saga, now_ms)
    total = end - start

    def percent(ms: int) -> float:
        return round(100 * (ms - start) / total, 3)

    rows = []
    for execution in saga.steps:
        undo = execution.phase == pb.STEP_PHASE_COMPENSATION
        name = f"undo {execution.step}" if undo else execution.step
        bars = []
        for attempt in execution.attempts:
            kind = outcome(attempt.code)
            began = _ms(attempt.started_at)
            ended = _ms(attempt.finished_at) if attempt.HasField("finished_at") else now_ms
            left = percent(began)
            width = max(percent(ended) - left, 0.6)
            code = attempt.code or "in flight"
            took = millis(attempt.duration.ToMilliseconds()) if attempt.code else "running"
            label = f"{name} attempt {attempt.number}: {code}, {took}"
            phase = "compensation" if undo else "action"
            bars.append(
                f'<span class="bar {kind}" style="left:{left}%;width:{min(width, 100 - left)}%"'
                f' data-step="{escape(execution.step)}" data-phase="{phase}"'
                f' data-code="{escape(attempt.code)}" title="{escape(label)}"'
                f' role="img" aria-label="{escape(label)}"></span>'
            )
        if not execution.attempts:
            bars.append('<span class="pending-note">not started</span>')
        rows.append(
            f'<div class="row{" undo" if undo else ""}">'
            f'<span class="row-label">{SYMBOL.get(_state(execution), "")} {escape(name)}</span>'
            f'<span class="track">{"".join(bars)}</span></div>'
        )
    ticks = (
        f'<div class="axis" aria-hidden="true"><span>{when(saga.created_at)[11:]}</span>'
        f"<span>+{millis(total)}</span></div>"
    )
    legend = (
        '<ul class="legend" aria-label="Legend">'
        '<li><span class="swatch ok"></span>OK</li>'
        '<li><span class="swatch rejected"></span>rejected (did nothing)</li>'
        '<li><span class="swatch error"></span>error (retried or in doubt)</li>'
        '<li><span class="swatch running"></span>in flight</li>'
        '<li><span class="swatch undo-band"></span>compensation</li></ul>'
    )
    return (
        '<section aria-labelledby="timeline-h"><h2 id="timeline-h">Timeline</h2>'
        f'<div class="timeline" id="timeline">{"".join(rows)}{ticks}</div>{legend}</section>'
    )


def _state(execution: pb.StepExecution) -> str:
    return {
        pb.STEP_STATE_SUCCEEDED: "ok",
        pb.STEP_STATE_FAILED: "rejected",
        pb.STEP_STATE_RUNNING: "running",
        pb.STEP_STATE_PENDING: "pending",
    }.get(execution.state, "")


def attempts_html(saga: pb.Saga) -> str:
    rows = []
    for execution in saga.steps:
        undo = execution.phase == pb.STEP_PHASE_COMPENSATION
        name = f"undo {execution.step}" if undo else execution.step
        for attempt in execution.attempts:
            kind = outcome(attempt.code)
            reason = f" ({escape(attempt.reason)})" if attempt.reason else ""
            rows.append(
                f'<tr class="{"undo" if undo else ""}">'
                f"<td>{escape(name)}</td><td>{escape(short_method(execution.method))}</td>"
                f"<td>{attempt.number}</td>"
                f'<td><span class="code {kind}">{SYMBOL[kind]} '
                f"{escape(attempt.code or 'in flight')}</span>{reason}</td>"
                f"<td>{escape(attempt.message) or '—'}</td>"
                f"<td>{millis(attempt.duration.ToMilliseconds()) if attempt.code else '—'}</td>"
                "</tr>"
            )
    if not rows:
        return ""
    return (
        '<section aria-labelledby="attempts-h"><h2 id="attempts-h">Attempts</h2>'
        '<div class="scroll"><table class="attempts"><thead><tr><th scope=col>Step</th>'
        "<th scope=col>RPC</th><th scope=col>#</th><th scope=col>Code</th>"
        "<th scope=col>Message</th><th scope=col>Duration</th></tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table></div></section>"
    )


def compensation_html(saga: pb.Saga) -> str:
    parts = []
    if saga.HasField("compensation_cause"):
        cause = saga.compensation_cause
        reason = f" {escape(cause.reason)}" if cause.reason else ""
        parts.append(
            '<dl class="cause" id="cause">'
            f"<dt>Cause</dt><dd>{escape(cause.step) or 'the saga'}: "
            f'<span class="code {outcome(cause.code)}">{escape(cause.code)}</span>{reason}</dd>'
            f"<dt>Message</dt><dd>{escape(cause.message) or '—'}</dd>"
            f"<dt>At</dt><dd>{when(cause.at) if cause.HasField('at') else '—'}</dd></dl>"
        )
    if saga.compensation_failures:
        items = "".join(
            f"<li><strong>undo {escape(f.step)}</strong> ({escape(short_method(f.method))}): "
            f'<span class="code error">{escape(f.code)}</span> after {f.attempts} attempt(s) — '
            f"{escape(f.message) or 'no message'} <small>at {when(f.at)}</small></li>"
            for f in saga.compensation_failures
        )
        parts.append(
            '<h3 id="failures-h">Compensation failures</h3>'
            f'<ul class="failures" aria-labelledby="failures-h">{items}</ul>'
        )
    if not parts:
        return ""
    return (
        '<section aria-labelledby="compensation-h"><h2 id="compensation-h">Compensation</h2>'
        + "".join(parts)
        + "</section>"
    )


# --- the graph ----------------------------------------------------------------------


@dataclass(frozen=True)
class Path:
    """What this saga did on its definition's graph."""

    nodes: Mapping[str, str]
    """Node id -> ok, rejected, running (for an executed step or undo) or reached (an end)."""
    edges: frozenset[tuple[str, str]]
    """The edges it took."""


def path_of(saga: pb.Saga, drawn: Shape) -> Path:
    """The nodes this saga visited, in order, and the edges between consecutive ones."""
    visited: list[tuple[str, str]] = [(START, "ok")]
    for execution in saga.steps:
        if not execution.attempts:
            continue
        undo = execution.phase == pb.STEP_PHASE_COMPENSATION
        node = undo_id(execution.step) if undo else action_id(execution.step)
        visited.append((node, _state(execution)))
    end = {
        pb.SAGA_STATUS_COMPLETED: COMPLETED,
        pb.SAGA_STATUS_COMPENSATED: COMPENSATED,
        pb.SAGA_STATUS_FAILED: FAILED,
    }.get(saga.status)
    if end is not None:
        visited.append((end, "reached"))
    known = {(e.start, e.end) for e in drawn.edges}
    taken = {(a, b) for (a, _), (b, _) in itertools.pairwise(visited) if (a, b) in known}
    return Path(dict(visited), frozenset(taken))


NODE_W, NODE_H, ROW_H, GAP = 236, 46, 84, 80


def graph_svg(definition: pb.SagaDefinition, drawn: Shape, path: Path) -> str:
    """The definition as an SVG: actions down the left, undos down the right in the order
    they run, the ends at the bottom; this saga's nodes and edges highlighted."""
    actions = [n for n in drawn.nodes if n.kind == "action"]
    undos = [n for n in drawn.nodes if n.kind == "undo"]
    rows = max(len(actions), len(undos))
    left_x, right_x = 10, 10 + NODE_W + GAP
    place: dict[str, tuple[int, int]] = {START: (left_x, 10)}
    for index, node in enumerate(actions, start=1):
        place[node.id] = (left_x, 10 + index * ROW_H)
    for index, node in enumerate(undos, start=1):
        place[node.id] = (right_x, 10 + index * ROW_H)
    bottom = 10 + (rows + 1) * ROW_H
    place[COMPLETED] = (left_x, bottom)
    place[COMPENSATED] = (right_x, bottom)
    place[FAILED] = (right_x, bottom + ROW_H)
    width, height = right_x + NODE_W + 10, bottom + ROW_H + NODE_H + 10

    def anchor(node: str, toward: str) -> tuple[float, float]:
        x, y = place[node]
        tx, ty = place[toward]
        cx, cy = x + NODE_W / 2, y + NODE_H / 2
        if tx == x:  # same column: top or bottom edge
            return cx, (y + NODE_H if ty > y else y)
        return (x + NODE_W if tx > x else x), cy

    edges_svg = []
    for edge in drawn.edges:
        x1, y1 = anchor(edge.start, edge.end)
        x2, y2 = anchor(edge.end, edge.start)
        taken = (edge.start, edge.end) in path.edges
        classes = ["edge"] + (["failure"] if edge.failure else []) + (["taken"] if taken else [])
        label = edge.label or ("undo next" if edge.start.startswith("undo_") else "")
        title = f"{edge.start} → {edge.end}" + (f" ({label})" if label else "")
        text = ""
        if edge.label and (taken or not edge.failure):
            mx, my = (x1 + x2) / 2, (y1 + y2) / 2
            text = f'<text x="{mx:.0f}" y="{my - 4:.0f}" class="edge-label">{escape(label)}</text>'
        edges_svg.append(
            f'<g class="{" ".join(classes)}" data-edge="{edge.start}-{edge.end}">'
            f"<title>{escape(title)}</title>"
            f'<line x1="{x1:.0f}" y1="{y1:.0f}" x2="{x2:.0f}" y2="{y2:.0f}"'
            f' marker-end="url(#{"arrow-taken" if taken else "arrow"})"/>{text}</g>'
        )
    nodes_svg = []
    for node in drawn.nodes:
        x, y = place[node.id]
        state = path.nodes.get(node.id, "")
        classes = ["node", node.kind] + ([f"on {state}"] if state else [])
        words = [node.title] + ([short_method(node.method)] if node.method else [])
        mark = SYMBOL.get(state, "") if node.kind in ("action", "undo") and state else ""
        texts = "".join(
            f'<text x="{x + NODE_W / 2:.0f}" y="{y + 19 + 16 * i}" '
            f'class="{"t" if i == 0 else "m"}">'
            f"{escape((mark + ' ' if i == 0 and mark else '') + w)}</text>"
            for i, w in enumerate(words)
        )
        if len(words) == 1:
            texts = texts.replace(f'y="{y + 19}"', f'y="{y + 28}"')
        radius = 23 if node.kind in ("start", "end") else 4
        nodes_svg.append(
            f'<g class="{" ".join(classes)}" data-node="{node.id}"'
            f"{' data-state=' + chr(34) + state + chr(34) if state else ''}>"
            f'<rect x="{x}" y="{y}" width="{NODE_W}" height="{NODE_H}" rx="{radius}"/>'
            f"{texts}</g>"
        )
    taken_names = [
        n.title for n in drawn.nodes if n.id in path.nodes and n.kind in ("action", "undo")
    ]
    summary = f"The {definition.saga_type} saga's definition; this saga went through " + (
        ", ".join(taken_names) or "no step yet"
    )
    version = f" · version {escape(definition.version)}" if definition.version else ""
    return (
        '<section aria-labelledby="graph-h"><h2 id="graph-h">Definition and path</h2>'
        f'<p class="hint">{escape(definition.saga_type)}{version}: solid arrows go forward '
        "and back along the undo path, dashed ones are failures; this saga's path is "
        "highlighted.</p>"
        f'<div class="graph"><svg id="graph" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="{escape(summary)}" xmlns="http://www.w3.org/2000/svg">'
        "<defs>"
        '<marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="9" '
        'markerHeight="9" markerUnits="userSpaceOnUse" orient="auto-start-reverse">'
        '<path d="M0,0L10,5L0,10z" class="arrowhead"/></marker>'
        '<marker id="arrow-taken" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="12" '
        'markerHeight="12" markerUnits="userSpaceOnUse" orient="auto-start-reverse">'
        '<path d="M0,0L10,5L0,10z" class="arrowhead taken"/></marker></defs>'
        + "".join(edges_svg)
        + "".join(nodes_svg)
        + "</svg></div></section>"
    )


def live_html(
    saga: pb.Saga,
    definition: pb.SagaDefinition | None,
    drawn: Shape | None,
    actions: Actions,
    now_ms: int,
) -> str:
    """Everything of the saga page that changes as the saga moves (sent again live)."""
    summary = escape(headline(saga)).replace("\n", "<br>")
    facts = [
        ("Status", status_badge(saga.status)),
        ("Saga type", escape(saga.saga_type)),
        ("Order id", escape(saga.order_id)),
        ("Request id", escape(saga.request_id) or "—"),
        ("Created", _when(saga, "created_at")),
        ("Ended", _when(saga, "ended_at")),
        ("Duration", duration_of(saga)),
        ("Deadline", _when(saga, "deadline")),
    ]
    trace = getattr(saga, "trace_id", "")
    if trace:
        facts.append(("Trace id", f"<code>{escape(str(trace))}</code>"))
    graph = ""
    if definition is not None and drawn is not None:
        graph = graph_svg(definition, drawn, path_of(saga, drawn))
    return (
        f'<p class="summary" id="summary">{summary}</p>'
        + _actions_html(saga, actions)
        + '<dl class="facts">'
        + "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in facts)
        + "</dl>"
        + timeline_html(saga, now_ms)
        + compensation_html(saga)
        + attempts_html(saga)
        + graph
    )


def saga_page(live: str, saga: pb.Saga, *, flash: str = "", error: str = "") -> str:
    ended = saga.status in (
        pb.SAGA_STATUS_COMPLETED,
        pb.SAGA_STATUS_COMPENSATED,
        pb.SAGA_STATUS_FAILED,
    )
    body = (
        f'<p class="crumbs"><a href="/">Sagas</a> &rsaquo; saga</p>'
        f'<h1>Saga <code class="id">{escape(saga.saga_id)}</code></h1>'
        + notice(flash)
        + notice(error, error=True)
        + '<p class="visually-hidden" aria-live="polite" id="announce"></p>'
        + f'<div id="live" data-live="/sagas/{escape(saga.saga_id)}/events"'
        f' data-ended="{str(ended).lower()}">{live}</div>'
    )
    return layout(f"Saga {saga.saga_id}", body, script=True)


def confirm_page(saga: pb.Saga, action: str, csrf: str) -> str:
    what = {
        "resume": "Resume retries the compensations that ran out of attempts; "
        "the saga goes on in the background and should end COMPENSATED.",
        "cancel": "Cancel stops the saga going forward; it undoes the steps it has done "
        "and ends COMPENSATED.",
    }[action]
    body = (
        f'<p class="crumbs"><a href="/">Sagas</a> &rsaquo; '
        f'<a href="/sagas/{escape(saga.saga_id)}">saga</a> &rsaquo; {action}</p>'
        f"<h1>{action.capitalize()} saga <code class='id'>{escape(saga.saga_id)}</code>?</h1>"
        f"<p>It is {status_badge(saga.status)} now. {escape(what)}</p>"
        f'<form method="post" action="/sagas/{escape(saga.saga_id)}/{action}" class="confirm">'
        f'<input type="hidden" name="csrf" value="{escape(csrf)}">'
        f'<button type="submit" class="{"danger" if action == "cancel" else ""}">'
        f"Yes, {action} this saga</button>"
        f'<a class="button secondary" href="/sagas/{escape(saga.saga_id)}">No, go back</a>'
        "</form>"
    )
    return layout(f"{action.capitalize()} saga {saga.saga_id}", body)


def error_page(title: str, message: str) -> str:
    body = f"<h1>{escape(title)}</h1>{notice(message, error=True)}<p><a href='/'>All sagas</a></p>"
    return layout(title, body)


# --- parsing the list's query ----------------------------------------------------


def parse_time(text: str) -> datetime | None:
    """A datetime-local value (or ISO 8601), taken as UTC when it names no zone."""
    if not text:
        return None
    moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def clean_filters(values: Mapping[str, str]) -> dict[str, str]:
    """The list's filters from its query, and page_size (kept by its links) when given."""
    return {name: values.get(name, "").strip() for name in (*FILTERS, "page_size")}


def sse(event: str, html: str) -> bytes:
    """One server-sent event whose data is `html` (one data: line per line)."""
    lines = "".join(f"data: {line}\n" for line in html.splitlines() or [""])
    return f"event: {event}\n{lines}\n".encode()
