"""Documentation that runs: every shell block and transcript of README.md and
docs/*.md, run in order against a system this test starts, its output compared
with the page (issue 15).

The tool is Sybil (pinned in the dev extra). It is made for exactly this: it
lexes the Markdown's fenced blocks, hands each to an evaluator of our choosing
in document order with a namespace that lives for the whole page, and reports a
failure at the block's line. Its custom-parser API lets one small parser
(tests/docs/shell.py) read `$ command` + output transcripts, which
pytest-markdown-docs and pytest-codeblocks do not model (they run a block as a
script and compare at most its whole output), and it runs inside pytest,
unlike prysk, whose .t format the pages would have to be written in.

What runs, and how:

- ```console blocks are transcripts: each `$ ` line is a command (a trailing
  `\\` continues it), the lines under it are its expected output. A line `…`
  matches any number of lines; ids, timestamps, durations and page tokens are
  matched by pattern; a run of spaces matches one or more (column widths
  follow the data). A command may exit non-zero only if the page shows its
  output. ```sh blocks are commands, each of which must exit 0; their output is
  not compared. A ```python block that a ```text block follows directly is a
  program and its output: the program runs with `.venv/bin/python -` in the
  same shell (its addresses rewritten as below), its output compared the same
  way. Other ```python blocks (fragments) and ```text blocks are not run.
- Each page gets a fresh reader: a folder that looks like a fresh clone (the
  repository's files by symlink, its .venv, no data/), and one bash kept for
  the whole page, so variables (`SAGA=$(... | jq -r .saga_id)`), `export`s
  and background jobs carry from block to block as in a reader's terminal.
- The system runs on free ports, never the pages' 7001-7004 and 7080: every
  `127.0.0.1:7xxx` (or `localhost:7xxx`) in a command is rewritten to a port
  the test picked (one per page port, 7011 too), and those ports are written
  back as the page's in the output before it is compared. The `minisaga`
  command finds the system through MINISAGA_<SERVICE>_ADDRESS, and a server
  started by hand (`python -m payment_server`) through
  MINISAGA_<SERVICE>_LISTEN and the orchestrator's MINISAGA_ORCHESTRATOR_<PARTICIPANT>.
- `make run` is a shell function in that bash: it stops the system it started
  before, if any (what the reader's Ctrl-C does), starts
  `python -m service_kit.run_all` in the background on the test's ports with the
  same data folder (TLS=1 and DATA= honoured; the environment before it, such
  as MINISAGA_INVENTORY_FAULT_LATENCY_MS=..., passed on), waits for its last
  line and prints what make run prints. Any other make target is refused, so
  the pages mark them skip. A page starts with `make run` going, as the
  pages assume, unless its top says `<!-- docs-test: starts without make run ... -->`.
- A block that must not run has `<!-- docs-test: skip (reason) -->` on the line
  above it (an HTML comment: MkDocs does not render it, a reader of the raw
  Markdown sees it). The skipped blocks are counted and listed at the end of
  the pytest run. `<!-- docs-test: single command -->` above a transcript says
  that its first line is the only command (its output itself shows `$ ` lines).
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from sybil import Document

from tests.docs import shell as docs_shell
from tests.docs.shell import ROOT, Shell, mismatch, parse_document, reader_checkout
from tests.pg import INSTALL_HINT, find_bin_dir

pytestmark = pytest.mark.slow

PAGES = [
    ROOT / "README.md",
    *sorted(p for p in (ROOT / "docs").glob("*.md")),
]
SKIPPED: list[str] = []


@pytest.fixture
def reader() -> Iterator[Shell]:
    if not docs_shell.has_jq():
        pytest.skip("no jq, which the pages' commands use (make jq installs it)")
    # Not under tmp_path: another pytest on the machine resets /tmp/pytest-of-*
    # to 0700, and the pages run PostgreSQL as `postgres`, who must reach the folder.
    folder = Path(tempfile.mkdtemp(prefix="minisaga-docs-"))
    shell = Shell.start(reader_checkout(folder / "clone"))
    try:
        yield shell
    finally:
        SKIPPED.extend(shell.skipped)
        shell.close()
        shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.parametrize("page", PAGES, ids=lambda page: str(page.relative_to(ROOT)))
def test_page_runs_as_written(page: Path, reader: Shell) -> None:
    document = Document.parse(str(page), parse_document)
    document.namespace["shell"] = reader
    if docs_shell.NEEDS_POSTGRES.search(document.text) and find_bin_dir() is None:
        pytest.skip(f"no PostgreSQL server binaries for {page.name}; {INSTALL_HINT}")
    if not docs_shell.NO_SYSTEM.search(document.text):
        start_system(reader)
    for example in document:
        example.evaluate()


def start_system(reader: Shell) -> None:
    """`make run` going, as a page assumes; what make run printed if it failed."""
    status, output = reader.run("make run", translate=False)
    assert status == 0, f"make run failed:\n{output}"


# The checker's configuration, on made-up pages.


def test_a_stale_transcript_fails(tmp_path: Path, reader: Shell) -> None:
    page = tmp_path / "stale.md"
    page.write_text(
        "```console\n"
        "$ .venv/bin/minisaga place-order --product-id apple --quantity 2 --amount 1200\n"
        "saga 99d8d80b-f4f7-4152-8752-204f6c7b76b5  place_order\n"
        "COMPENSATED — every step succeeded\n…\n```\n"
    )
    document = Document.parse(str(page), parse_document)
    document.namespace["shell"] = reader
    start_system(reader)
    [example] = list(document)
    with pytest.raises(AssertionError, match="differs from the page at its line 2"):
        example.evaluate()


def test_a_skipped_block_is_counted_and_not_run(tmp_path: Path, reader: Shell) -> None:
    page = tmp_path / "skip.md"
    page.write_text(
        "<!-- docs-test: skip (it would fail) -->\n```sh\nfalse\n```\n\n"
        "```sh\nX=$(echo carried)\n```\n\n```console\n$ echo $X\ncarried\n```\n"
    )
    document = Document.parse(str(page), parse_document)
    document.namespace["shell"] = reader
    for example in document:
        example.evaluate()
    assert reader.skipped == [f"{page.name}:3 (it would fail)"]
    reader.skipped.clear()


def test_volatile_parts_match_by_pattern_and_nothing_else() -> None:
    page = ["saga 99d8d80b-f4f7-4152-8752-204f6c7b76b5  took 14 ms", "…", "end"]
    assert mismatch(page, "saga 0b6f7a52-3c1e-4d8a-9f10-5a7c2e9d4b31 took 2.1 s\na\nb\nend\n") == ""
    assert mismatch(page, "saga 0b6f7a52-3c1e-4d8a-9f10-5a7c2e9d4b31 took 2.1 s\nother\n") != ""
    assert mismatch(["status      PAYMENT_STATUS_CHARGED"], "status PAYMENT_STATUS_REFUNDED\n")
    assert mismatch(["exit"], "") != ""


def test_a_python_program_and_its_output_are_checked(tmp_path: Path, reader: Shell) -> None:
    page = tmp_path / "program.md"
    page.write_text('```python\nprint("actual")\n```\n\n```text\nstale\n```\n')
    document = Document.parse(str(page), parse_document)
    document.namespace["shell"] = reader
    [example] = list(document)
    with pytest.raises(AssertionError, match="differs from the page at its line 1: 'stale'"):
        example.evaluate()
