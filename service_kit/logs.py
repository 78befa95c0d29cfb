"""Logging for every server: `--log-format text|json` (auto: JSON unless stdout is a terminal).

A JSON line is one object: `time` (RFC 3339, UTC), `level`, `logger`,
`message`, and the saga's fields when the line concerns a saga (`saga_id`,
`saga_type`, `step`, `phase`, `attempt`, `code`, `trace_id`, passed as
`extra=saga_fields(...)`), then `error` with a traceback if any. The text
format shows the same saga fields after the message as key=value.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

FORMATS = ("auto", "json", "text")
SAGA_FIELDS = ("saga_id", "saga_type", "step", "phase", "attempt", "code", "trace_id")


def saga_fields(
    saga_id: str,
    saga_type: str,
    *,
    trace_id: str = "",
    step: str = "",
    phase: str = "",
    attempt: int = 0,
    code: str = "",
) -> dict[str, Any]:
    """The `extra` of a log line about a saga (empty values are left out of the line)."""
    return {
        "saga_id": saga_id,
        "saga_type": saga_type,
        "step": step,
        "phase": phase,
        "attempt": attempt,
        "code": code,
        "trace_id": trace_id,
    }


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    return {
        name: value
        for name in SAGA_FIELDS
        if (value := getattr(record, name, None)) not in (None, "", 0)
    }


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        seconds = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        line: dict[str, Any] = {
            "time": f"{seconds}.{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            **_fields(record),
        }
        if record.exc_info:
            line["error"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        fields = _fields(record)
        if not fields:
            return text
        first, newline, rest = text.partition("\n")
        pairs = " ".join(f"{name}={value}" for name, value in fields.items())
        return f"{first} [{pairs}]{newline}{rest}"


def configure(level: str, fmt: str = "auto") -> None:
    """Logs at `level` to stderr, as JSON or text (auto: JSON unless stdout is a terminal)."""
    if fmt == "auto":
        fmt = "text" if sys.stdout.isatty() else "json"
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # Neither format shows the caller's file and line, the thread or the
    # process: not collecting them saves a stack walk and more on every line
    # (the logging HOWTO's "Optimization").
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
