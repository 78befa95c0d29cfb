"""The documentation tests' summary: how many blocks were skipped, and why."""

from __future__ import annotations

import pytest

from tests.docs.test_docs_run import SKIPPED


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not SKIPPED:
        return
    terminalreporter.write_sep("-", f"docs: {len(SKIPPED)} block(s) marked docs-test: skip")
    for where in SKIPPED:
        terminalreporter.write_line(f"  {where}")
