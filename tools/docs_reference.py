"""Writes the generated pages of the docs, or checks that they are up to date.

    python -m tools.docs_reference          # rewrite docs/reference/*.md
    python -m tools.docs_reference --check  # exit 1 if a committed page differs

`make docs-reference` runs the first; tests/docs/test_references.py the check.
"""

from __future__ import annotations

import argparse
import difflib
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from tools import api_reference, config_reference

ROOT = Path(__file__).resolve().parents[1]
COMMAND = "make docs-reference"

PAGES: Mapping[str, Callable[[], str]] = {
    "docs/reference/configuration.md": config_reference.render,
    "docs/reference/api.md": api_reference.render,
}


def stale(root: Path = ROOT) -> dict[str, str]:
    """The unified diff of each committed page that differs from what the code gives."""
    diffs = {}
    for name, render in PAGES.items():
        path = root / name
        want = render()
        have = path.read_text() if path.exists() else ""
        if have != want:
            diffs[name] = "".join(
                difflib.unified_diff(
                    have.splitlines(keepends=True),
                    want.splitlines(keepends=True),
                    f"{name} (committed)",
                    f"{name} (generated)",
                )
            )
    return diffs


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.docs_reference", description=__doc__)
    parser.add_argument("--check", action="store_true", help="only report stale pages")
    args = parser.parse_args(argv)
    if args.check:
        diffs = stale()
        for name, diff in diffs.items():
            print(f"{name} is stale: run `{COMMAND}` and commit it\n{diff}", file=sys.stderr)
        return 1 if diffs else 0
    for name, render in PAGES.items():
        path = ROOT / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(render())
        print(f"wrote {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
