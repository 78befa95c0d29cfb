"""The docs cannot drift from the code: generated pages, design citations, README links."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from minisaga.inventory.v1 import inventory_pb2
from minisaga.orchestrator.v1 import orchestrator_pb2
from minisaga.payment.v1 import payment_pb2
from minisaga.shipping.v1 import shipping_pb2

from tools import api_reference, config_reference, docs_reference

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"


def test_the_committed_reference_pages_are_what_the_code_generates() -> None:
    diffs = docs_reference.stale()
    assert not diffs, (
        f"generated docs are stale: run `{docs_reference.COMMAND}` and commit "
        + ", ".join(diffs)
        + "\n"
        + "\n".join(diffs.values())
    )


def test_a_stale_page_is_reported_with_the_command_that_fixes_it(tmp_path: Path) -> None:
    for name, render in docs_reference.PAGES.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(render())
    assert docs_reference.stale(tmp_path) == {}

    page = tmp_path / "docs/reference/configuration.md"
    page.write_text(page.read_text().replace("`--saga-deadline-seconds`", "`--old-flag`"))

    diffs = docs_reference.stale(tmp_path)
    assert list(diffs) == ["docs/reference/configuration.md"]
    assert "+| `--saga-deadline-seconds`" in diffs["docs/reference/configuration.md"]


@pytest.mark.parametrize(
    "module",
    ["orchestrator_server", "payment_server", "inventory_server", "shipping_server"],
)
def test_every_flag_in_help_is_in_the_configuration_reference(module: str) -> None:
    """Checked against `--help` of the real command, not the generator's own parser walk."""
    help_text = subprocess.run(
        [sys.executable, "-m", module, "--help"],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
        env={
            "PATH": "/usr/bin:/bin",
            "PYTHONPATH": f"{ROOT}:{ROOT / 'generated'}",
            "COLUMNS": "1000",  # no line wrapped inside a flag name
        },
    ).stdout
    flags = set(re.findall(r"(?<![\w-])(--[a-z][a-z-]+)", help_text)) - {"--help"}
    assert "--listen" in flags
    page = (DOCS / "reference/configuration.md").read_text()
    title = next(p.title for p in config_reference.PROGRAMS if p.command.endswith(module))
    section = page.split(f"\n## {title}\n", 1)[1].split("\n## ", 1)[0]
    documented = set(re.findall(r"^\| `(--[a-z-]+)`", section, re.M))
    assert flags - documented == set(), f"flags of {module} missing from the reference"


def test_an_environment_variable_is_listed_only_where_the_server_reads_it() -> None:
    orchestrator = config_reference.PROGRAMS[0]
    parser = config_reference.build_parser(orchestrator)
    actions = {a.option_strings[0]: a for a in parser._actions if a.option_strings}
    listen = config_reference.describe(orchestrator, parser, actions["--listen"])
    assert listen.env == "MINISAGA_ORCHESTRATOR_LISTEN"
    assert listen.default == "`127.0.0.1:7001`"
    run_all = config_reference.PROGRAMS[-1]
    parser = config_reference.build_parser(run_all)
    host = next(a for a in parser._actions if "--host" in a.option_strings)
    assert config_reference.describe(run_all, parser, host).env is None


def test_the_api_reference_has_every_rpc_message_and_enum() -> None:
    page = (DOCS / "reference/api.md").read_text()
    for module in (orchestrator_pb2, payment_pb2, inventory_pb2, shipping_pb2):
        file = module.DESCRIPTOR
        for service in file.services_by_name.values():
            assert f"{{#{api_reference.anchor(service.full_name)}}}" in page
            for method in service.methods:
                assert f"| `{method.name}` |" in page
        for name in (*file.message_types_by_name, *file.enum_types_by_name):
            assert f"{{#{api_reference.anchor(f'{file.package}.{name}')}}}" in page
    # A comment from the proto reaches the page (not just the names).
    assert "Starts an order's saga and waits for it to end." in page


OLD_DESIGN = "DESIGN" + ".md"  # spelled so that this file does not match itself
DESIGN_CITATION = re.compile(r"docs/design\.md ((?:§[\d.]+(?:, )?)+)")


def test_every_design_citation_in_the_code_names_a_section_that_exists() -> None:
    sections = set(re.findall(r"^#+ (§[\d.]+) ", (DOCS / "design.md").read_text(), re.M))
    assert {"§2", "§3", "§3.6", "§4", "§5", "§6", "§7"} <= sections
    cited: dict[str, list[str]] = {}
    skip = {".venv", "node_modules", "generated", "site", "build", "dist"}
    for path in sorted(ROOT.rglob("*.py")):
        name = str(path.relative_to(ROOT))
        if skip & set(path.relative_to(ROOT).parts) or "/." in f"/{name}":
            continue
        text = path.read_text()
        assert OLD_DESIGN not in text, f"{name} cites the design outside the repository"
        for match in DESIGN_CITATION.finditer(text):
            for section in re.findall(r"§[\d.]+", match.group(1)):
                cited.setdefault(section.rstrip("."), []).append(name)
    assert cited, "no code cites docs/design.md"
    missing = {s: where for s, where in cited.items() if s not in sections}
    assert not missing, f"cited sections not in docs/design.md: {missing}"


def test_every_relative_link_in_the_readme_resolves() -> None:
    readme = (ROOT / "README.md").read_text()
    links = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", readme)
    local = [link for link in links if "://" not in link]
    assert any(link.startswith("docs/") for link in local)
    assert [link for link in local if not (ROOT / link).exists()] == []
