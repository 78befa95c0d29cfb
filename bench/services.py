"""Fresh minisaga services for one benchmark run, as subprocesses on free loopback ports.

Each service listens on 127.0.0.1:0 (the kernel picks a free port, so there is
no race with anything else on the machine) and logs the address it got; we
read it from the log, then wait for SERVING through grpc.health.v1.Health.
The environment's MINISAGA_* and OTEL_* variables are dropped so that every service runs
its documented defaults plus the flags given here, nothing else.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

import grpc

from service_kit.health import wait_until_serving
from service_kit.spawn import dying_with_parent

ROOT = Path(__file__).resolve().parent.parent

PRODUCT = "bench"
STOCK = 1_000_000  # the most one product may hold (service_kit.validation.MAX_QUANTITY)
PAYMENT_LIMIT = 1_000_000_000_000  # far above any amount the benchmark charges
STARTUP_TIMEOUT = 30.0
STOP_TIMEOUT = 15.0
# Calls in flight when the benchmark stops a service are its own; don't wait long for them.
GRACE_SECONDS = "1"

_SERVING = re.compile(r"serving .* on (\S+:\d+)")


class ServiceError(RuntimeError):
    """A service died or never became SERVING."""


@dataclass
class Service:
    name: str
    module: str
    args: list[str]
    log_path: Path
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    address: str = ""
    dial: grpc.ChannelCredentials | None = field(default=None, repr=False)
    """What the health check dials with (mTLS runs: the operator's certificate)."""
    env: dict[str, str] = field(default_factory=dict)
    """Added to the environment (the tracing runs' OTEL_* variables)."""
    started_at: float = 0.0
    """time.monotonic() just before the process was started."""
    serving_seconds: float | None = None
    """From process start to the first SERVING answer of its health check."""
    log_offset: int = 0
    """Where this process's lines start in the log (a restart appends to it)."""

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self) -> None:
        self.log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        self.started_at = time.monotonic()
        with self.log_path.open("ab") as log:  # the child keeps its own copy of the fd
            self.process = subprocess.Popen(
                # SIGKILL if the benchmark itself dies: no service outlives it.
                dying_with_parent([sys.executable, "-m", self.module, *self.args]),
                cwd=self.log_path.parent,
                env={**child_env(), **self.env},
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def wait_address(self, deadline: float) -> str:
        """Reads the address from the service's log ("serving ... on host:port")."""
        assert self.process is not None
        while True:
            match = _SERVING.search(self.log(since=self.log_offset))
            if match:
                self.address = match.group(1)
                return self.address
            if self.process.poll() is not None:
                raise ServiceError(
                    f"{self.name} exited with status {self.process.returncode} while "
                    f"starting:\n{self.log()[-4000:]}"
                )
            if time.monotonic() > deadline:
                raise ServiceError(f"{self.name} did not log its address in time")
            time.sleep(0.02)  # polling the log for a condition, bounded by the deadline

    def wait_serving(self, deadline: float) -> None:
        channel = (
            grpc.secure_channel(self.address, self.dial)
            if self.dial is not None
            else grpc.insecure_channel(self.address)
        )
        with channel:
            # Polled every 20 ms: the time to SERVING is one of the benchmark's figures.
            wait_until_serving(
                channel, "", timeout=max(0.1, deadline - time.monotonic()), max_backoff=0.02
            )
        self.serving_seconds = time.monotonic() - self.started_at

    def log(self, since: int = 0) -> str:
        """The log, from byte `since` on."""
        try:
            with self.log_path.open("rb") as log:
                log.seek(since)
                return log.read().decode(errors="replace")
        except FileNotFoundError:
            return ""

    def kill(self) -> None:
        """SIGKILL, as a crash: nothing is drained or flushed."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
        if self.process is not None:
            self.process.wait()

    def stop(self, deadline: float) -> int | None:
        """SIGTERM (the service drains for GRACE_SECONDS), SIGKILL if still up at deadline."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()


def child_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MINISAGA_", "OTEL_"))}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(ROOT / "generated")])
    env["PYTHONUNBUFFERED"] = "1"
    return env


@dataclass
class Cluster:
    services: dict[str, Service]

    def address(self, name: str) -> str:
        return self.services[name].address

    def pids(self) -> dict[str, int]:
        return {name: service.pid for name, service in self.services.items()}

    def startup_seconds(self) -> dict[str, float]:
        """Each service's time from process start to SERVING."""
        return {
            name: service.serving_seconds
            for name, service in self.services.items()
            if service.serving_seconds is not None
        }

    def restart(
        self,
        name: str,
        *,
        remove: Sequence[str] = (),
        flags: Mapping[str, str] = {},
        timeout: float = STARTUP_TIMEOUT,
    ) -> Service:
        """Starts `name` anew on the same files, once its old process has exited
        (the caller kills or stops it): its flags without those in `remove` (each
        with its value), with `flags` set. Waits until it serves; returns it."""
        old = self.services[name]
        assert old.process is not None and old.process.poll() is not None, f"{name} still runs"
        args = _without(old.args, {*remove, *flags})
        for flag, value in flags.items():
            args += [flag, value]
        service = replace(old, args=args, process=None, address="", serving_seconds=None)
        self.services[name] = service
        _start_all([service], timeout)
        return service

    def check_alive(self) -> None:
        for service in self.services.values():
            assert service.process is not None
            if service.process.poll() is not None:
                raise ServiceError(
                    f"{service.name} exited with status {service.process.returncode}:\n"
                    f"{service.log()[-4000:]}"
                )


def _without(args: Sequence[str], flags: set[str]) -> list[str]:
    """`args` without each flag of `flags` and the value that follows it."""
    kept: list[str] = []
    skip = False
    for arg in args:
        if skip:
            skip = False
        elif arg in flags:
            skip = True
        else:
            kept.append(arg)
    return kept


def _start_all(services: Sequence[Service], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    for service in services:
        service.start()

    def ready(service: Service) -> None:
        service.wait_address(deadline)
        service.wait_serving(deadline)

    # Each waited for in a thread of its own, so each one's time to SERVING is its own.
    with ThreadPoolExecutor(max_workers=len(services)) as pool:
        for done in [pool.submit(ready, service) for service in services]:
            done.result()


@contextmanager
def cluster(
    workdir: Path,
    *,
    orchestrator: bool | str,
    shipping_args: Sequence[str] = (),
    orchestrator_args: Sequence[str] = (),
    startup_timeout: float = STARTUP_TIMEOUT,
    tls_dir: Path | None = None,
    extra_args: Sequence[str] = (),
    env: dict[str, str] | None = None,
    store: str = "",
    replicas: int = 1,
) -> Iterator[Cluster]:
    """Payment, Inventory, Shipping (and the orchestrator), fresh, with their files in workdir.

    `orchestrator` is False (none), True (minisaga's) or "inmemory" (bench.inmemory,
    the baseline that keeps nothing: no TLS, no flags but the participants').

    With `tls_dir` (what `minisaga certs init` writes) every service serves mTLS
    with its own certificate, and the orchestrator dials the participants with its.
    `extra_args` go to every service (--metrics-listen, say), `env` to their environment.
    `store` is the orchestrator's --store (a postgresql:// URL; "" for its SQLite
    default); on PostgreSQL, `replicas` orchestrators share it: "orchestrator",
    "orchestrator-2", ..."""
    if replicas != 1 and not store:
        raise ValueError("several orchestrator replicas need a shared store (PostgreSQL)")
    workdir.mkdir(parents=True, exist_ok=True)

    def secured(service: Service) -> Service:
        service.args += extra_args
        service.env = dict(env or {})
        if tls_dir is not None:
            service.args += [
                "--tls-cert", str(tls_dir / f"{service.name}.crt"),
                "--tls-key", str(tls_dir / f"{service.name}.key"),
                "--tls-ca", str(tls_dir / "ca.crt"),
            ]  # fmt: skip
            service.dial = grpc.ssl_channel_credentials(
                root_certificates=(tls_dir / "ca.crt").read_bytes(),
                private_key=(tls_dir / "operator.key").read_bytes(),
                certificate_chain=(tls_dir / "operator.crt").read_bytes(),
            )
        return service

    def participant(name: str, *extra: str) -> Service:
        return secured(
            Service(
                name,
                f"{name}_server",
                [
                    "--listen",
                    "127.0.0.1:0",
                    "--db",
                    str(workdir / f"{name}.db"),
                    "--grace-seconds",
                    GRACE_SECONDS,
                    "--allow-failure-switches",  # the failing orders set fail_inventory / fail
                    *extra,
                ],
                workdir / f"{name}.log",
            )
        )

    participants = [
        participant("payment", "--limit", str(PAYMENT_LIMIT)),
        participant("inventory", "--stock", f"{PRODUCT}={STOCK}"),
        participant("shipping", *shipping_args),
    ]
    started: list[Service] = list(participants)
    running: Cluster | None = None
    try:
        _start_all(participants, startup_timeout)
        services = {s.name: s for s in participants}
        if orchestrator == "inmemory":
            service = Service(
                "orchestrator",
                "bench.inmemory",
                ["--listen", "127.0.0.1:0"]
                + [f"--{name}={services[name].address}" for name in services],
                workdir / "orchestrator.log",
            )
            started.insert(0, service)
            _start_all([service], startup_timeout)
            services = {"orchestrator": service, **services}
        elif orchestrator:
            replica_names = ["orchestrator"] + [f"orchestrator-{n}" for n in range(2, replicas + 1)]
            orchestrators = [
                secured(
                    Service(
                        name,
                        "orchestrator_server",
                        [
                            "--listen",
                            "127.0.0.1:0",
                            "--db",
                            str(workdir / f"{name}.db"),
                            *(["--store", store] if store else []),
                            "--payment",
                            services["payment"].address,
                            "--inventory",
                            services["inventory"].address,
                            "--shipping",
                            services["shipping"].address,
                            "--grace-seconds",
                            GRACE_SECONDS,
                            "--allow-failure-switches",
                            *orchestrator_args,
                        ],
                        workdir / f"{name}.log",
                    )
                )
                for name in replica_names
            ]
            started[:0] = orchestrators
            _start_all(orchestrators, startup_timeout)
            services = {**{s.name: s for s in orchestrators}, **services}
        running = Cluster(services)
        yield running
    finally:
        if running is not None:  # Cluster.restart may have replaced some
            started = list(running.services.values())
        deadline = time.monotonic() + STOP_TIMEOUT
        for service in started:  # the orchestrators first: they call the others
            if service.process is not None and service.process.poll() is None:
                service.process.send_signal(signal.SIGTERM)
        for service in started:
            service.stop(deadline)
