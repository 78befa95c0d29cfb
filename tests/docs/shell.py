"""The machinery of tests/docs/test_docs_run.py: a Sybil parser for the pages'
shell blocks, a reader's shell that runs them, and the transcript matcher.

See test_docs_run.py's docstring for what runs, how, and why Sybil.
"""

from __future__ import annotations

import os
import re
import select
import shutil
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path

from sybil import Document, Example, Region
from sybil.parsers.markdown.lexers import FencedCodeBlockLexer

from tests.harness import free_ports
from tests.pg import find_bin_dir

ROOT = Path(__file__).resolve().parents[2]

SKIP = re.compile(r"<!--\s*docs-test:\s*skip\s*\((?P<reason>[^)]*)\)\s*-->\s*$")
SINGLE = re.compile(r"<!--\s*docs-test:\s*single command[^>]*-->\s*$")
NO_SYSTEM = re.compile(r"<!--\s*docs-test:\s*starts without make run")
NEEDS_POSTGRES = re.compile(r"<!--\s*docs-test:[^>]*needs postgresql")
LANGUAGES = {"console": "transcript", "sh": "commands"}
DOC_PORT = re.compile(r"(?<![\w.])(127\.0\.0\.1:|localhost:|-p )(7\d{3}|5433)\b")
"""A page's port in a command: its services' 7xxx, and 5433, its PostgreSQL."""
COMMAND_TIMEOUT = 120.0


@dataclass
class Command:
    text: str
    expected: list[str] | None
    """The transcript's output lines; None in a ```sh block, where output is not compared."""
    line: int


@dataclass
class Block:
    kind: str
    commands: list[Command]
    skip: str | None
    line: int


def _comment_above(text: str, start: int) -> str:
    """The line right above a fence (blank lines between them allowed)."""
    before = text[:start].rstrip("\n").rsplit("\n", 1)
    return before[-1] if before else ""


def _logical_lines(lines: list[str]) -> Iterator[tuple[int, str]]:
    """Lines joined across trailing backslashes, with the index of their first line."""
    index = 0
    while index < len(lines):
        first, text = index, lines[index]
        while text.endswith("\\") and index + 1 < len(lines):
            index += 1
            text = text + "\n" + lines[index]
        yield first, text
        index += 1


def parse_block(kind: str, source: str, line: int, single: bool = False) -> list[Command]:
    lines = source.rstrip("\n").split("\n")
    commands: list[Command] = []
    if kind == "commands":
        for offset, text in _logical_lines(lines):
            if text.strip() and not text.lstrip().startswith("#"):
                commands.append(Command(text, None, line + offset))
        return commands
    current: Command | None = None
    index = 0
    while index < len(lines):
        text = lines[index]
        if text.startswith("$ ") and not (single and current is not None):
            command, first = text[2:], index
            while command.endswith("\\") and index + 1 < len(lines):
                index += 1
                command += "\n" + lines[index]
            current = Command(command, [], line + first)
            commands.append(current)
        elif current is not None and current.expected is not None:
            current.expected.append(text)
        index += 1
    return commands


def parse_document(document: Document) -> Iterable[Region]:
    """Sybil parser: every ```console and ```sh block, and every ```python block that a
    ```text block (its output) follows, with a skip comment above it honoured."""
    regions = list(FencedCodeBlockLexer(r"[\w-]+")(document))
    for index, region in enumerate(regions):
        language = str(region.lexemes["language"])
        source = str(region.lexemes["source"])
        line = document.text.count("\n", 0, region.start) + 2
        above = _comment_above(document.text, region.start)
        skip = SKIP.search(above)
        reason = skip.group("reason") if skip else None
        if language == "python":
            following = regions[index + 1] if index + 1 < len(regions) else None
            between = document.text[region.end : following.start] if following else "x"
            if following is None or between.strip() or following.lexemes["language"] != "text":
                continue  # a fragment of a program, not a program and its output
            program = Command(
                f".venv/bin/python - <<'PYTHON'\n{source}PYTHON",
                str(following.lexemes["source"]).rstrip("\n").split("\n"),
                line,
            )
            yield Region(
                region.start, following.end, Block("program", [program], reason, line), evaluate
            )
            continue
        kind = LANGUAGES.get(language)
        if kind is None:
            continue
        single = bool(SINGLE.search(above))
        block = Block(kind, parse_block(kind, source, line, single), reason, line)
        yield Region(region.start, region.end, block, evaluate)


def evaluate(example: Example) -> str | None:
    """Sybil evaluator: runs a block in the page's shell; a string is a failure."""
    block: Block = example.parsed
    shell: Shell = example.namespace["shell"]
    if block.skip is not None:
        shell.skipped.append(f"{Path(example.path).name}:{block.line} ({block.skip})")
        return None
    for command in block.commands:
        status, output = shell.run(command.text)
        if command.expected is None:
            if status != 0:
                return failure(command, f"exited {status}", output)
            continue
        if not command.expected and status != 0:
            return failure(command, f"exited {status} where the page shows no output", output)
        problem = mismatch(command.expected, output)
        if problem:
            return failure(command, problem, output)
    return None


def failure(command: Command, problem: str, output: str) -> str:
    return f"line {command.line}: $ {command.text}\n{problem}\n--- output ---\n{output}"


# The transcript's volatile parts, each matched by pattern.
VOLATILE = [
    r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}",  # saga ids
    r"(?:ord|rcpt|rsv|shp)_[0-9a-f]{32}",  # participant record ids
    r"\b[0-9a-f]{32}\b",  # request ids
    r"\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d(?:\.\d+)?Z",  # timestamps
    r"\b\d\d:\d\d:\d\d\.\d{3}Z",  # times of day
    r"\b\d+(?:\.\d+)? ?(?:ms|s)\b",  # durations
    r"(?<=--page-token )[A-Za-z0-9+/=_-]+",  # page tokens
    r"(?<=incident )[0-9a-f]+",  # incident ids
]
PATTERN_OF = {
    0: r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}",
    1: r"(?:ord|rcpt|rsv|shp)_[0-9a-f]{32}",
    2: r"[0-9a-f]{32}",
    3: r"\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d(?:\.\d+)?Z",
    4: r"\d\d:\d\d:\d\d\.\d{3}Z",
    5: r"\d+(?:\.\d+)? ?(?:ms|s)",
    6: r"[A-Za-z0-9+/=_-]+",
    7: r"[0-9a-f]+",
}
TOKENS = re.compile("|".join(f"(?P<v{i}>{p})" for i, p in enumerate(VOLATILE)))
ELLIPSIS = {"…", "...", ""}


def line_pattern(line: str) -> str:
    """A transcript line as a regex: volatile parts by pattern, any run of spaces as one or more."""
    parts: list[str] = []
    position = 0
    for match in TOKENS.finditer(line):
        parts.append(_literal(line[position : match.start()]))
        index = int(next(name for name, value in match.groupdict().items() if value)[1:])
        parts.append(PATTERN_OF[index])
        position = match.end()
    parts.append(_literal(line[position:]))
    return "".join(parts)


def _literal(text: str) -> str:
    return _spaced(text)


def _spaced(text: str) -> str:
    pieces = re.split(r"( +)", text)
    return "".join(" +" if piece.startswith(" ") else re.escape(piece) for piece in pieces if piece)


def transcript_pattern(expected: list[str]) -> re.Pattern[str]:
    lines = [line.rstrip() for line in expected]
    while lines and not lines[-1]:
        lines.pop()
    regex = ""
    for line in lines:
        if line.strip() in ELLIPSIS - {""}:
            regex += r"(?:[^\n]*\n)*?"
        elif not line:
            regex += r"\n"
        else:
            regex += line_pattern(line) + r"\n"
    return re.compile(regex)


def mismatch(expected: list[str], output: str) -> str:
    """'' when `output` matches the transcript, else where it first differs."""
    actual = "\n".join(line.rstrip() for line in output.rstrip("\n").split("\n")) + "\n"
    if not output.strip():
        actual = ""
    if transcript_pattern(expected).fullmatch(actual):
        return ""
    # Find the first transcript line that no longer matches, for the message.
    shown = [line.rstrip() for line in expected]
    for count in range(1, len(shown) + 1):
        if not transcript_pattern([*shown[:count], "…"]).fullmatch(actual):
            return f"the output differs from the page at its line {count}: {shown[count - 1]!r}"
    return "the output goes on past the page's transcript"


MARK = "__docs_test_done__"

# The reader's `make`: `make run` (re)starts the system in the background on the
# test's ports, the way a reader's Ctrl-C and a new `make run` would, and prints
# what make run prints; any other target is not run here.
PRELUDE = r"""
__docs_stop() {
  if [ -n "${__DOCS_RUN_PID:-}" ]; then
    kill -TERM "$__DOCS_RUN_PID" 2>/dev/null; wait "$__DOCS_RUN_PID" 2>/dev/null
    __DOCS_RUN_PID=
  fi
}
make() {
  if [ "${1:-}" != run ]; then
    echo "docs-test: 'make $*' is not run by the docs test" >&2; return 2
  fi
  shift
  local tls= data=data arg
  for arg in "$@"; do
    case "$arg" in
      TLS=1|TLS=yes|TLS=true) tls=1 ;;
      DATA=*) data="${arg#DATA=}" ;;
      BASE_PORT=*|PORTS=*|CONSOLE_PORT=*) ;;  # the test's own ports are used
      *) echo "docs-test: make run $arg is not understood" >&2; return 2 ;;
    esac
  done
  __docs_stop
  mkdir -p "$data"
  : > "$__DOCS_DIR/run.out"
  .venv/bin/python -m service_kit.run_all --data-dir "$data" --ports "$__DOCS_PORTS" \
    --console-port "$__DOCS_CONSOLE_PORT" ${tls:+--tls-dir "$data/certs"} \
    >"$__DOCS_DIR/run.out" 2>"$__DOCS_DIR/run.err" </dev/null &
  __DOCS_RUN_PID=$!
  until grep -q '^hint:' "$__DOCS_DIR/run.out"; do
    if ! kill -0 "$__DOCS_RUN_PID" 2>/dev/null; then
      cat "$__DOCS_DIR/run.out" "$__DOCS_DIR/run.err"; __DOCS_RUN_PID=; return 1
    fi
    sleep 0.05  # polling make run's output for its last line, a state
  done
  cat "$__DOCS_DIR/run.out"
}
"""


@dataclass
class Shell:
    """A reader's bash, kept for a whole page: variables, `cd`, jobs carry over."""

    workdir: Path
    ports: dict[str, int]
    skipped: list[str] = field(default_factory=list)
    process: subprocess.Popen[str] | None = None
    count: int = 0

    @classmethod
    def start(cls, workdir: Path) -> Shell:
        names = ["orchestrator", "payment", "inventory", "shipping", "console"]
        doc_ports = ["7001", "7002", "7003", "7004", "7080"]
        numbers = free_ports(len(names))
        ports = dict(zip(doc_ports, numbers, strict=True))
        shell = cls(workdir, ports)
        venv_bin = str(Path(sys.executable).parent)
        path = os.pathsep.join(
            p for p in os.environ.get("PATH", "").split(os.pathsep) if p != venv_bin
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith(("MINISAGA_", "PYTEST"))}
        env.update(PATH=path, NO_COLOR="1", COLUMNS="200", LC_ALL="C.UTF-8")
        for name, number in zip(names[:4], numbers, strict=False):
            address = f"127.0.0.1:{number}"
            env[f"MINISAGA_{name.upper()}_ADDRESS"] = address  # the minisaga command
            env[f"MINISAGA_{name.upper()}_LISTEN"] = address  # a server started by hand
            if name != "orchestrator":
                env[f"MINISAGA_ORCHESTRATOR_{name.upper()}"] = address
        env["__DOCS_PORTS"] = ",".join(map(str, numbers[:4]))
        env["__DOCS_CONSOLE_PORT"] = str(numbers[4])
        env["__DOCS_DIR"] = str(workdir / ".docs-test")
        (workdir / ".docs-test").mkdir()
        shell.process = subprocess.Popen(
            ["bash", "--norc", "--noprofile"],
            cwd=workdir,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        status, output = shell.run(PRELUDE, translate=False)
        assert status == 0, output
        return shell

    def port_for(self, doc_port: str) -> int:
        if doc_port not in self.ports:
            self.ports[doc_port] = free_ports(1)[0]
        return self.ports[doc_port]

    def run(
        self, command: str, translate: bool = True, timeout: float = COMMAND_TIMEOUT
    ) -> tuple[int, str]:
        """Runs one command as the reader's shell would; its exit status and output
        (stdout and stderr together), with the test's ports shown as the page's."""
        assert self.process is not None and self.process.stdin is not None
        if translate:
            command = DOC_PORT.sub(lambda m: f"{m.group(1)}{self.port_for(m.group(2))}", command)
        # A file per command: a job it leaves in the background writes to its own file.
        self.count += 1
        out = self.workdir / ".docs-test" / f"out.{self.count}"
        script = (
            f'(exit ${{__docs_rc:-0}}); {{ {command}\n}} >"{out}" 2>&1 </dev/null; '
            f'__docs_rc=$?; echo "{MARK} $__docs_rc"\n'
        )
        self.process.stdin.write(script)
        self.process.stdin.flush()
        status = self._wait_mark(timeout, command)
        output = out.read_text(errors="replace")
        for doc_port, number in self.ports.items():
            output = re.sub(rf"\b(127\.0\.0\.1|localhost):{number}\b", rf"\g<1>:{doc_port}", output)
        return status, output

    def _wait_mark(self, timeout: float, command: str) -> int:
        assert self.process is not None and self.process.stdout is not None
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no end of {command!r} within {timeout:g}s")
            ready, _, _ = select.select([self.process.stdout], [], [], remaining)
            if not ready:
                continue
            line = self.process.stdout.readline()
            if not line:
                raise RuntimeError(f"the shell died running {command!r}")
            if line.startswith(MARK):
                return int(line.split()[1])

    def close(self) -> None:
        if self.process is None:
            return
        with suppress(TimeoutError, RuntimeError, OSError):
            self.run("__docs_stop; kill $(jobs -p) 2>/dev/null; wait", translate=False, timeout=60)
        with suppress(ProcessLookupError):
            os.killpg(self.process.pid, 9)
        self.process.wait()
        stop_postgres(self.workdir)


def stop_postgres(workdir: Path) -> None:
    """Stops a PostgreSQL a page started under `workdir` and did not stop (it failed
    before its last step): pg_ctl detaches the server from the reader's shell."""
    for pid_file in workdir.glob("data/**/postmaster.pid"):
        bin_dir = find_bin_dir()
        if bin_dir is None:
            return
        run_as = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        subprocess.run(
            [
                *run_as,
                str(bin_dir / "pg_ctl"),
                "-D",
                str(pid_file.parent),
                "-m",
                "immediate",
                "stop",
            ],
            capture_output=True,
            timeout=60,
            check=False,
        )


def reader_checkout(destination: Path) -> Path:
    """A folder that looks like a fresh clone to the reader's commands: the repository's
    files (by symlink), its .venv and node_modules, and no data/."""
    destination.mkdir()
    if os.geteuid() == 0:  # the page runs PostgreSQL as `postgres`, who must reach data/pg
        for folder in [destination, *destination.parents]:
            folder.chmod(folder.stat().st_mode | 0o011)
    for entry in ROOT.iterdir():
        if entry.name in {"data", "site", ".git", ".pytest_cache", "bench-results"}:
            continue
        (destination / entry.name).symlink_to(entry)
    return destination


def has_jq() -> bool:
    return shutil.which("jq") is not None
