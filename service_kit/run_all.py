"""python -m service_kit.run_all: every minisaga service on this machine (`make run`).

Starts Payment, Inventory and Shipping, then the orchestrator (when its
module exists), each as a subprocess with its SQLite file under --data-dir;
waits until each reports SERVING through grpc.health.v1.Health; prints one
line per service; then waits. Ctrl-C or SIGTERM stops every child with
SIGTERM (each drains its calls in flight) and exits 0. If a child dies on its
own, the others are stopped and the exit status is 1.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

import grpc

from service_kit import flags
from service_kit.health import wait_until_serving
from service_kit.spawn import dying_with_parent
from service_kit.tls import TlsFiles

ROOT = Path(__file__).resolve().parent.parent

STARTUP_TIMEOUT = 30.0
CONSOLE_PORT = 7080
STOP_TIMEOUT = 20.0
# How often the supervisor looks for a child that died on its own.
POLL_INTERVAL = 0.2


@dataclass
class Child:
    name: str
    module: str
    address: str
    args: list[str]
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    dial: TlsFiles | None = None
    """What run_all dials it with for its health checks (TLS mode: the operator's certificate)."""
    url: str = ""
    """A web server's URL (the console), checked by HTTP instead of gRPC health."""

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m service_kit.run_all",
        description="Start all minisaga services (what `make run` runs); Ctrl-C stops them all.",
    )
    parser.add_argument(
        "--data-dir",
        default="data",
        type=Path,
        help="folder of the services' SQLite files, created if missing (default %(default)s)",
    )
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="address every service listens on; the services refuse a non-loopback one "
        "without TLS (default %(default)s)",
    )
    parser.add_argument(
        "--base-port",
        type=int,
        default=7001,
        help="orchestrator on this port, payment, inventory, shipping on the next three "
        "(default %(default)s)",
    )
    parser.add_argument(
        "--ports",
        default=None,
        metavar="O,P,I,S",
        help="explicit ports for orchestrator,payment,inventory,shipping; overrides --base-port",
    )
    parser.add_argument(
        "--metrics-base-port",
        type=int,
        default=None,
        help="Prometheus metrics (/metrics) of the orchestrator on this port of --host, "
        "payment, inventory, shipping on the next three; 0 for none (default 9464 with the "
        "default ports, none with --base-port or --ports)",
    )
    parser.add_argument(
        "--console-port",
        type=int,
        default=CONSOLE_PORT,
        help="the web console (`minisaga console`) on this port of --host; 0 for none "
        "(default %(default)s; none when aiohttp, the console extra, is not installed)",
    )
    parser.add_argument(
        "--tls-dir",
        type=Path,
        default=None,
        metavar="DIR",
        help="serve mTLS everywhere with the certificates of DIR (`minisaga certs init DIR` "
        "writes them; created when DIR has no ca.crt) (default none: plaintext on loopback)",
    )
    parser.add_argument(
        "--startup-timeout",
        type=float,
        default=STARTUP_TIMEOUT,
        help="seconds each service may take to report SERVING (default %(default)s)",
    )
    args = flags.parse(parser, argv)
    if args.ports is not None:
        try:
            ports = [int(p) for p in args.ports.split(",")]
        except ValueError:
            parser.error(f"--ports must be four comma-separated numbers, got {args.ports!r}")
        if len(ports) != 4:
            parser.error(f"--ports must be four comma-separated numbers, got {args.ports!r}")
    else:
        ports = [args.base_port + i for i in range(4)]
    if not all(0 < p < 65536 for p in ports):
        parser.error(f"ports out of range: {ports}")
    if not 0 <= args.console_port < 65536:
        parser.error(f"--console-port out of range: {args.console_port}")
    args.port_list = ports
    return args


METRICS_PORT = 9464
"""The orchestrator's /metrics in make run (Prometheus' port for exporters' own use);
payment, inventory and shipping on the next three."""

# make run is a development system: the requests' failure switches work there.
DEVELOPMENT = ("--allow-failure-switches",)


def plan(args: argparse.Namespace) -> list[Child]:
    """The services to start, participants first (the orchestrator calls them)."""
    data: Path = args.data_dir.resolve()
    host: str = args.host
    orchestrator_port, payment_port, inventory_port, shipping_port = args.port_list
    payment = f"{host}:{payment_port}"
    inventory = f"{host}:{inventory_port}"
    shipping = f"{host}:{shipping_port}"
    children = [
        Child(
            "payment",
            "payment_server",
            payment,
            ["--listen", payment, "--db", str(data / "payment.db"), *DEVELOPMENT],
        ),
        Child(
            "inventory",
            "inventory_server",
            inventory,
            ["--listen", inventory, "--db", str(data / "inventory.db"), *DEVELOPMENT],
        ),
        Child(
            "shipping",
            "shipping_server",
            shipping,
            ["--listen", shipping, "--db", str(data / "shipping.db"), *DEVELOPMENT],
        ),
    ]
    orchestrator = f"{host}:{orchestrator_port}"
    children.append(
        Child(
            "orchestrator",
            "orchestrator_server",
            orchestrator,
            [
                "--listen",
                orchestrator,
                "--db",
                str(data / "orchestrator.db"),
                "--payment",
                payment,
                "--inventory",
                inventory,
                "--shipping",
                shipping,
                *DEVELOPMENT,
            ],
        )
    )
    metrics_port = args.metrics_base_port
    if metrics_port is None:  # on for make run; off for other ports (tests), not to collide
        metrics_port = METRICS_PORT if args.port_list == [7001, 7002, 7003, 7004] else 0
    if metrics_port:
        for offset, name in enumerate(("orchestrator", "payment", "inventory", "shipping")):
            child = next(c for c in children if c.name == name)
            shown = f"[{host}]" if ":" in host else host
            child.args += ["--metrics-listen", f"{shown}:{metrics_port + offset}"]
    for child in children:  # security: reflection for grpcurl; mTLS with --tls-dir
        child.args.append("--reflection")
        if args.tls_dir is not None:
            cert, key, ca = tls_files(args.tls_dir, child.name)
            child.args += ["--tls-cert", str(cert), "--tls-key", str(key), "--tls-ca", str(ca)]
            child.dial = TlsFiles(*tls_files(args.tls_dir, "operator"))
    if args.console_port and importlib.util.find_spec("aiohttp") is not None:
        children.append(console(host, args.console_port, orchestrator, args.tls_dir))
    return children


def console(host: str, port: int, orchestrator: str, tls_dir: Path | None) -> Child:
    """The web console, a client of the orchestrator: as the operator in TLS mode, so that
    its Resume and Cancel are allowed (it listens on loopback: not read-only)."""
    security: list[str] = []
    if tls_dir is not None:
        cert, key, ca = tls_files(tls_dir, "operator")
        security = ["--tls-cert", str(cert), "--tls-key", str(key), "--tls-ca", str(ca)]
    listen = f"{host}:{port}"
    shown = f"[{host}]" if ":" in host else host
    return Child(
        "console",
        "minisaga_client.cli",
        listen,
        ["--orchestrator", orchestrator, *security, "console", "--listen", listen],
        url=f"http://{shown}:{port}/",
    )


def tls_files(directory: Path, identity: str) -> tuple[Path, Path, Path]:
    """(cert, key, ca) of `identity` in a folder `minisaga certs init` wrote."""
    folder = directory.resolve()
    return folder / f"{identity}.crt", folder / f"{identity}.key", folder / "ca.crt"


def ensure_certificates(directory: Path) -> None:
    """Writes a development CA and certificates into `directory` when it has no CA yet."""
    if (directory / "ca.crt").exists():
        return
    from service_kit import certs  # needs cryptography, which only TLS mode does

    certs.init(directory)
    print(f"wrote a development CA and certificates to {directory}", flush=True)


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    paths = [str(ROOT), str(ROOT / "generated")]
    if env.get("PYTHONPATH"):
        paths.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(paths)
    return env


def start(child: Child, env: dict[str, str]) -> None:
    child.process = subprocess.Popen(
        # SIGTERM if run_all itself is killed: the services drain and stop.
        dying_with_parent([sys.executable, "-m", child.module, *child.args], signal.SIGTERM),
        env=env,
        stdin=subprocess.DEVNULL,
        # The console's own "serving on" line: run_all prints its URL with the others.
        stdout=subprocess.DEVNULL if child.url else None,
    )


class Failed(Exception):
    """A child died or never became SERVING."""


def _answers(url: str, timeout: float) -> bool:
    """Whether the web server at `url` serves its style sheet (it needs no orchestrator)."""
    try:
        with urllib.request.urlopen(url + "static/console.css", timeout=timeout) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def wait_serving(child: Child, stop: threading.Event, timeout: float) -> None:
    """Waits for SERVING, giving up early if the child exits or we are told to stop."""
    deadline = time.monotonic() + timeout
    if child.url:
        while not stop.is_set():
            assert child.process is not None
            code = child.process.poll()
            if code is not None:
                raise Failed(f"{child.name} exited with status {code} while starting")
            if _answers(child.url, 0.5):
                return
            if time.monotonic() > deadline:
                raise Failed(f"{child.name} did not answer on {child.url} within {timeout:g}s")
            stop.wait(POLL_INTERVAL)
        return
    if child.dial is not None:
        channel = grpc.secure_channel(child.address, child.dial.channel_credentials())
    else:
        channel = grpc.insecure_channel(child.address)
    with channel:
        while True:
            if stop.is_set():
                return
            assert child.process is not None
            code = child.process.poll()
            if code is not None:
                if stop.is_set():  # Ctrl-C reached the child too, and it stopped first
                    return
                raise Failed(f"{child.name} exited with status {code} while starting")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise Failed(
                    f"{child.name} did not report SERVING on {child.address} within {timeout:g}s"
                )
            try:
                wait_until_serving(channel, "", timeout=min(0.5, remaining))
                return
            except TimeoutError:
                continue


def stop_all(children: Sequence[Child], timeout: float = STOP_TIMEOUT) -> dict[str, int]:
    """SIGTERMs every live child (orchestrator first), waits, SIGKILLs stragglers."""
    for child in reversed(children):
        if child.alive():
            assert child.process is not None
            child.process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    codes: dict[str, int] = {}
    for child in reversed(children):
        if child.process is None:
            continue
        try:
            codes[child.name] = child.process.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            print(f"{child.name} did not stop in {timeout:g}s: SIGKILL", file=sys.stderr)
            child.process.kill()
            codes[child.name] = child.process.wait()
    return codes


def grpcurl_command() -> str:
    """How to type grpcurl here: bare when on PATH, else the venv's copy."""
    if shutil.which("grpcurl"):
        return "grpcurl"
    beside = Path(sys.executable).parent / "grpcurl"
    if beside.exists():
        relative = os.path.relpath(beside)
        return relative if not relative.startswith("..") else str(beside)
    return "grpcurl"


def grpcurl_security(child: Child) -> str:
    """grpcurl's options to reach `child`: -plaintext, or the client certificate's files."""
    if child.dial is None:
        return "-plaintext"
    folder = Path(os.path.relpath(child.dial.ca.parent))
    if str(folder).startswith(".."):
        folder = child.dial.ca.parent
    return f"-cacert {folder}/ca.crt -cert {folder}/client.crt -key {folder}/client.key"


def supervise(children: Sequence[Child], stop: threading.Event, startup_timeout: float) -> int:
    env = child_env()
    for child in children:
        start(child, env)
    name_width = max(len(child.name) for child in children) + 2
    width = max(len(child.url or child.address) for child in children) + 2
    for child in children:
        wait_serving(child, stop, startup_timeout)
        if stop.is_set():
            return 0
        print(f"{child.name:<{name_width}}{child.url or child.address:<{width}}SERVING", flush=True)
    grpc_children = [child for child in children if not child.url]
    print(
        f"hint: {grpcurl_command()} {grpcurl_security(grpc_children[0])} "
        f"{grpc_children[0].address} list    (Ctrl-C stops all services)",
        flush=True,
    )
    while not stop.wait(POLL_INTERVAL):
        for child in children:
            assert child.process is not None
            code = child.process.poll()
            if code is not None and not stop.is_set():
                raise Failed(f"{child.name} exited with status {code}")
    return 0


def taken(children: Sequence[Child]) -> list[str]:
    """The addresses of `children` that something else already listens on."""
    busy = []
    for child in children:
        host, _, port = child.address.rpartition(":")
        host = host.strip("[]")
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            # As gRPC binds: a port whose last connections linger in TIME_WAIT is free.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((host, int(port)))
            except OSError:
                busy.append(child.address)
    return busy


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    busy = taken(plan(args))
    if busy:
        print(
            f"run_all: {', '.join(busy)} already in use (another `make run`?): stop it, "
            "or pick other ports (make run BASE_PORT=8001, or --base-port / --ports)",
            file=sys.stderr,
        )
        return 1
    args.data_dir.mkdir(parents=True, exist_ok=True)
    if args.tls_dir is not None:
        ensure_certificates(args.tls_dir)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    children = plan(args)
    status = 0
    try:
        status = supervise(children, stop, args.startup_timeout)
    except Failed as error:
        print(f"run_all: {error}; stopping the others", file=sys.stderr, flush=True)
        status = 1
    finally:
        codes = stop_all(children)
    # A child stopped by our SIGTERM (or the terminal's SIGINT) stopped cleanly.
    clean = {0, -signal.SIGTERM, -signal.SIGINT}
    bad = {name: code for name, code in codes.items() if code not in clean}
    if status == 0 and bad:
        print(f"run_all: unclean exit: {bad}", file=sys.stderr, flush=True)
        status = 1
    if status == 0:
        print("all services stopped", flush=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
