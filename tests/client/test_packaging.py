"""The client installs alone: `pip install minisaga` brings what the client and the
`minisaga` command import, and the servers' dependencies come only with `[server]`.

Three views of it: the imports of the code against pyproject.toml's lists; the
wheel pip builds (its Requires-Dist and its packages); and the command run with
every server dependency made unimportable.
"""

from __future__ import annotations

import ast
import email.message
import email.parser
import functools
import importlib.metadata
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from collections.abc import Iterable
from pathlib import Path

import pytest

from minisaga_client.cli import EXIT_DEADLINE_EXCEEDED, EXIT_OK, EXIT_UNAVAILABLE, main

ROOT = Path(__file__).resolve().parents[2]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
MINISAGA = Path(sys.executable).parent / "minisaga"

CLIENT_CODE = ("minisaga_client", "generated/minisaga")
SERVER_CODE = (
    "service_kit",
    "payment_server",
    "inventory_server",
    "shipping_server",
    "orchestrator_server",
)
CONSOLE_CODE = "minisaga_client/console"
"""`minisaga console` imports its web server only when run: the `console` extra."""
POSTGRES_CODE = "orchestrator_server/saga/postgres_store.py"
"""Imported only for a postgresql:// store: its imports are the `postgres` extra's."""
INSTALLED = {"minisaga", "minisaga_client", *SERVER_CODE}
"""The top-level packages of the wheel: the client, the messages, and the servers.

The servers stay in it, their dependencies an extra (`minisaga graph` asks the
orchestrator for its definition, GetSagaDefinition: it imports no server code).
"""
FIRST_PARTY = INSTALLED | {"bench", "examples", "tests"}


def canonical(requirement: str) -> str:
    """The distribution a requirement names, spelled as pip compares names."""
    match = re.match(r"[A-Za-z0-9._-]+", requirement)
    assert match, requirement
    return re.sub(r"[-_.]+", "-", match.group()).lower()


def requirements(extra: str | None = None) -> set[str]:
    """The distributions the base install (or one extra) requires, by pyproject.toml."""
    listed = PROJECT["optional-dependencies"][extra] if extra else PROJECT["dependencies"]
    return {canonical(r) for r in listed} - {"minisaga"}


BASE = requirements()
SERVER = requirements("server")
POSTGRES = requirements("postgres")
CONSOLE = requirements("console")


@functools.cache
def owners() -> dict[str, str]:
    """Every installed file, and the distribution it came with."""
    return {
        os.path.normpath(str(dist.locate_file(file))): canonical(dist.metadata["Name"])
        for dist in importlib.metadata.distributions()
        for file in dist.files or ()
    }


def distribution(module: str) -> str | None:
    """The installed distribution `module` comes from; None for the standard library or ours.

    `from a.b import c` is given as "a.b.c": c may be a module (google.rpc's
    status_pb2, in a namespace package several distributions share) or a name.
    """
    top = module.partition(".")[0]
    if top in sys.stdlib_module_names or top in FIRST_PARTY:
        return None
    parts = module.split(".")
    while parts:
        try:
            spec = importlib.util.find_spec(".".join(parts))
        except ModuleNotFoundError:  # a name in a module, not a submodule
            spec = None
        except ValueError:  # a module loaded with no spec (cryptography's serialization)
            spec = None
        if spec is not None and spec.origin:
            return owners()[os.path.normpath(spec.origin)]
        parts.pop()
    raise AssertionError(f"{module} is imported but not installed")


def imports(packages: Iterable[str], *, leave_out: str = "") -> dict[str, set[str]]:
    """Each distribution the code of `packages` (files or folders, less `leave_out`)
    imports, and the files that import it."""
    found: dict[str, set[str]] = {}
    for package in packages:
        path = ROOT / package
        files = [path] if path.is_file() else sorted(path.rglob("*.py"))
        for file in files:
            if leave_out and file.is_relative_to(ROOT / leave_out):
                continue
            for node in ast.walk(ast.parse(file.read_text(), str(file))):
                if isinstance(node, ast.Import):
                    modules = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    modules = [f"{node.module}.{alias.name}" for alias in node.names]
                else:
                    continue
                for module in modules:
                    name = distribution(module)
                    if name is not None:
                        found.setdefault(name, set()).add(str(file.relative_to(ROOT)))
    return found


def test_the_base_install_is_what_the_client_imports() -> None:
    used = imports(CLIENT_CODE, leave_out=CONSOLE_CODE)
    assert set(used) == BASE, f"the client imports {used}; pyproject.toml's base lists {BASE}"


def test_the_server_extra_is_what_the_servers_import_beyond_the_base() -> None:
    used = imports(SERVER_CODE, leave_out=POSTGRES_CODE)
    assert set(used) - BASE == SERVER, f"the servers import {used}; [server] lists {SERVER}"
    assert SERVER.isdisjoint(BASE)
    assert {"grpcio-health-checking", "grpcio-reflection"} <= SERVER


def test_postgres_brings_the_servers_and_what_the_postgres_store_imports() -> None:
    extras = PROJECT["optional-dependencies"]
    assert "minisaga[server]" in extras["postgres"]
    used = imports([POSTGRES_CODE])
    assert set(used) - BASE - SERVER == POSTGRES == {"asyncpg"}


def test_the_console_extra_is_what_the_console_imports_beyond_the_base() -> None:
    used = imports([CONSOLE_CODE])
    assert set(used) - BASE == CONSOLE == {"aiohttp"}
    assert "minisaga[server]" not in PROJECT["optional-dependencies"]["console"]
    server_code = imports([CONSOLE_CODE, "minisaga_client/cli.py"])
    assert not {name for name in server_code if name in SERVER | POSTGRES}


def test_dev_brings_every_extra() -> None:
    extras = PROJECT["optional-dependencies"]
    dev = [r for r in extras["dev"] if canonical(r) == "minisaga"]
    assert dev == ["minisaga[server,postgres,console]"], (
        "make install must still get every server dependency"
    )


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    """The wheel pip builds from a copy of the sources: every package of the repository."""
    source = tmp_path_factory.mktemp("source")
    shutil.copy(ROOT / "pyproject.toml", source)
    shutil.copy(ROOT / "README.md", source)
    packages = [p for p in ROOT.iterdir() if (p / "__init__.py").exists()]
    assert {"bench", "tests", "minisaga_client"} <= {p.name for p in packages}
    for directory in [*packages, ROOT / "generated"]:
        ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.db*", "*.sqlite*")
        shutil.copytree(directory, source / directory.name, ignore=ignore)
    out = tmp_path_factory.mktemp("wheel")
    build = [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-index"]
    subprocess.run(
        [*build, "--no-build-isolation", "--wheel-dir", str(out), str(source)],
        check=True,
        timeout=170,
        stdin=subprocess.DEVNULL,
    )
    [built] = out.glob("minisaga-*.whl")
    return zipfile.ZipFile(built)


def metadata(wheel: zipfile.ZipFile) -> email.message.Message:
    [name] = [n for n in wheel.namelist() if n.endswith(".dist-info/METADATA")]
    return email.parser.Parser().parsestr(wheel.read(name).decode())


def test_the_wheel_requires_no_server_dependency_without_an_extra(
    wheel: zipfile.ZipFile,
) -> None:
    requires = metadata(wheel).get_all("Requires-Dist") or []
    unconditional = {canonical(r) for r in requires if ";" not in r}
    assert unconditional == BASE
    server = {canonical(r) for r in requires if re.search(r"""extra == ["']server["']""", r)}
    assert server == SERVER
    assert {"server", "postgres", "console", "dev"} <= set(
        metadata(wheel).get_all("Provides-Extra") or []
    )


def test_the_wheel_holds_the_client_the_messages_and_the_servers_but_not_bench(
    wheel: zipfile.ZipFile,
) -> None:
    names = wheel.namelist()
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert tops == INSTALLED
    assert "minisaga_client/py.typed" in names
    assert {
        "minisaga_client/console/static/console.js",
        "minisaga_client/console/static/console.css",
    } <= set(names)
    assert "minisaga/py.typed" in names
    assert "minisaga/orchestrator/v1/orchestrator_pb2.pyi" in names
    [entry_points] = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
    assert "minisaga = minisaga_client.cli:main" in wheel.read(entry_points).decode()


# Runs the `minisaga` command as if the server dependencies were not installed:
# a finder in front of every other refuses them. (grpc itself tries grpc_health
# and grpc_reflection, and does without: only what fails for want of them counts.)
REFUSING = r"""
import importlib.abc
import sys

refused = set(sys.argv[1].split(","))


class Refuse(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in refused:
            raise ImportError(f"{name}: a server dependency, refused")
        return None


sys.meta_path.insert(0, Refuse())
try:
    import asyncpg
except ImportError:
    pass
else:
    sys.exit("the refusing finder does not work")

from minisaga_client.cli import main

sys.exit(main(sys.argv[2:]))
"""


def server_modules() -> set[str]:
    """The top-level modules that only the server and console extras' distributions provide."""
    providers = importlib.metadata.packages_distributions()
    return {
        module
        for module, dists in providers.items()
        if {canonical(d) for d in dists} <= (SERVER | POSTGRES | CONSOLE) - BASE
    }


@pytest.mark.parametrize(
    ("args", "codes", "shows"),
    [
        (["--help"], {EXIT_OK}, "usage: minisaga"),
        (["--version"], {EXIT_OK}, f"minisaga {PROJECT['version']}"),
        (["console", "--help"], {EXIT_OK}, "usage: minisaga console"),
        # Nothing listens there: the call fails, as a typed error the command reports.
        (
            ["--orchestrator", "127.0.0.1:1", "--timeout", "5", "saga", "get", "x"],
            {EXIT_UNAVAILABLE, EXIT_DEADLINE_EXCEEDED},
            "",
        ),
    ],
    ids=["help", "version", "console-help", "a-call"],
)
def test_the_command_runs_without_any_server_dependency(
    tmp_path: Path, args: list[str], codes: set[int], shows: str
) -> None:
    refused = server_modules()
    assert {"asyncpg", "grpc_health", "grpc_reflection", "grpc_status", "aiohttp"} <= refused
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    run = subprocess.run(
        [sys.executable, "-c", REFUSING, ",".join(sorted(refused)), *args],
        cwd=tmp_path,  # not the repository: what is importable is what is installed
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    assert "Traceback" not in run.stderr, run.stderr
    assert run.returncode in codes, run
    assert shows in run.stdout
    if codes == {EXIT_OK}:
        assert run.stderr == ""
    else:
        assert run.stderr.startswith("minisaga: "), run.stderr


def test_version_prints_the_installed_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().out == f"minisaga {importlib.metadata.version('minisaga')}\n"
    assert importlib.metadata.version("minisaga") == PROJECT["version"]


def test_the_installed_command_prints_its_version() -> None:
    run = subprocess.run(
        [str(MINISAGA), "--version"],
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    assert (run.returncode, run.stdout, run.stderr) == (0, f"minisaga {PROJECT['version']}\n", "")


def test_bench_is_not_installed(tmp_path: Path) -> None:
    """Outside the repository `bench` is not importable: `make bench` runs it from there."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    probe = (
        "import importlib.util as u; print(u.find_spec('bench'), u.find_spec('minisaga_client'))"
    )
    run = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    bench, client = run.stdout.split(" ", 1)
    assert (bench, client.startswith("ModuleSpec")) == ("None", True)
