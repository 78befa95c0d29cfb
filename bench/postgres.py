"""A throwaway PostgreSQL server, for the tests and the benchmark (never for production).

`start_cluster()` finds the server binaries (/usr/lib/postgresql/*/bin, the
newest first, or `initdb` on PATH), runs initdb and pg_ctl in a fresh temp
folder on a free 127.0.0.1 port, and returns a `PostgresCluster` that makes one
database per test (or per benchmark run). By default fsync is off (a test
cluster); `durable=True` keeps PostgreSQL's durable defaults, as a benchmark
against SQLite with synchronous=FULL needs. initdb refuses to run as root: as
root, both run as the `postgres` user (`runuser -u postgres --`) on a folder
chowned to it.

Where none of that works, `PostgresUnavailable` says why; the fixture in
tests/conftest.py turns it into a skip that names the reason, the benchmark
into a problem it reports.
"""

from __future__ import annotations

import itertools
import os
import pwd
import re
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bench.ports import free_ports

INSTALL_HINT = "install it with `apt-get install -y postgresql` (`make test` does, as root)"
START_ATTEMPTS = 3
"""A free port may be taken between picking it and the server binding it: retry."""


class PostgresUnavailable(Exception):
    """No PostgreSQL server can be started here; the message says why."""


def find_bin_dir() -> Path | None:
    def version(path: Path) -> tuple[int, ...]:
        return tuple(int(n) for n in re.findall(r"\d+", path.parent.parent.name))

    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=version, reverse=True)
    if found:
        return found[0].parent
    on_path = shutil.which("initdb")
    return Path(on_path).parent if on_path else None


@dataclass
class PostgresCluster:
    bin_dir: Path
    folder: Path
    port: int
    run_as: list[str]
    _names: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    @property
    def data(self) -> Path:
        return self.folder / "data"

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    @property
    def pid(self) -> int:
        """The postmaster's process id (the first line of postmaster.pid)."""
        return int((self.data / "postmaster.pid").read_text().split()[0])

    async def create_database(self, prefix: str = "minisaga") -> str:
        """A new empty database; returns its URL."""
        import asyncpg  # the `postgres` extra's, which make bench and make test have

        name = f"{prefix}_{next(self._names)}"
        conn = await asyncpg.connect(self.url())
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()
        return self.url(name)

    def version(self) -> str:
        """`postgres --version`: "postgres (PostgreSQL) 15.x"."""
        done = subprocess.run(
            [str(self.bin_dir / "postgres"), "--version"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        return done.stdout.strip()

    def pg_ctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*self.run_as, str(self.bin_dir / "pg_ctl"), "-D", str(self.data), *args],
            capture_output=True,
            text=True,
            timeout=60,
            check=check,
        )

    def stop(self) -> None:
        try:
            self.pg_ctl("stop", "-m", "immediate", "-w", check=False)
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)


def start_cluster(*, durable: bool = False, settings: Sequence[str] = ()) -> PostgresCluster:
    """initdb + pg_ctl start; raises PostgresUnavailable with the reason.

    Not `durable`: fsync, synchronous_commit and full_page_writes off, for
    test speed. `settings` are more `name=value` server settings."""
    bin_dir = find_bin_dir()
    if bin_dir is None:
        raise PostgresUnavailable(
            f"no PostgreSQL server binaries (looked for /usr/lib/postgresql/*/bin/initdb and "
            f"initdb on PATH); {INSTALL_HINT}"
        )
    run_as: list[str] = []
    folder = Path(tempfile.mkdtemp(prefix="minisaga-pg-"))
    try:
        if os.geteuid() == 0:  # initdb refuses root
            try:
                user = pwd.getpwnam("postgres")
            except KeyError:
                raise PostgresUnavailable(
                    "running as root and there is no `postgres` user to run initdb as"
                ) from None
            runuser = shutil.which("runuser")
            if runuser is None:
                raise PostgresUnavailable("running as root and `runuser` is missing")
            os.chown(folder, user.pw_uid, user.pw_gid)
            run_as = [runuser, "-u", "postgres", "--"]
        initdb = subprocess.run(
            [
                *run_as,
                str(bin_dir / "initdb"),
                "-D", str(folder / "data"),
                "-U", "postgres",
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )  # fmt: skip
        if initdb.returncode != 0:
            raise PostgresUnavailable(f"initdb failed: {initdb.stderr.strip()[-2000:]}")
        for attempt in range(1, START_ATTEMPTS + 1):
            cluster = PostgresCluster(bin_dir, folder, free_ports(1)[0], run_as)
            fast = (
                [] if durable else ["fsync=off", "synchronous_commit=off", "full_page_writes=off"]
            )
            options = " ".join(
                f"-c {setting}"
                for setting in [
                    "listen_addresses=127.0.0.1",
                    f"port={cluster.port}",
                    "unix_socket_directories=''",
                    *fast,
                    "max_connections=300",
                    *settings,
                ]
            )
            log = folder / f"server-{attempt}.log"
            started = cluster.pg_ctl(
                "start", "-w", "-t", "60", "-l", str(log), "-o", options, check=False
            )
            if started.returncode == 0:
                return cluster
        reason = log.read_text(errors="replace")[-2000:] if log.exists() else started.stderr
        raise PostgresUnavailable(f"pg_ctl start failed {START_ATTEMPTS} times: {reason.strip()}")
    except (OSError, subprocess.SubprocessError) as error:
        shutil.rmtree(folder, ignore_errors=True)
        raise PostgresUnavailable(f"starting PostgreSQL failed: {error}") from error
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
