"""The console's web server (aiohttp): pages, server-sent events, and the two actions.

It reaches the orchestrator only through `minisaga_client.AsyncClient`: the
public gRPC API, so it works against any replica, and needs no database nor
server code. Live parts follow `WatchSaga` and are sent as server-sent events
of HTML (`static/console.js` swaps them in).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import secrets
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TextIO, TypedDict

from aiohttp import web
from minisaga.orchestrator.v1 import orchestrator_pb2 as pb

from minisaga_client.client import DEFAULT_TIMEOUT, AsyncClient, connect_async
from minisaga_client.console import pages
from minisaga_client.errors import MinisagaError, NotFound
from minisaga_client.graph import Shape, shape
from minisaga_client.render import status_name
from minisaga_client.tls import Tls

STATIC = Path(__file__).parent / "static"
PAGE_SIZE = 25
"""Sagas per page of the list (a page_size in the query sets another)."""
MAX_PAGE_SIZE = 500
COUNTS_REFRESH = 2.0
"""Seconds between two counts of the list's live figures when no watched saga moves
(a saga started meanwhile is seen at the next one)."""
NOT_ALLOWED = "this console is read-only, or its role may not do this"


@dataclass
class Settings:
    orchestrator: str
    read_only: bool
    """Hide Resume and Cancel and refuse them, whatever the console's role allows."""
    timeout: float = DEFAULT_TIMEOUT
    counts_refresh: float = COUNTS_REFRESH
    tls: Tls | None = None
    """The console's certificate (as the CLI's --tls-*): its identity gives its role."""
    token: str | None = None
    """Or a bearer token (as the CLI's --token), whose identity gives its role."""


@dataclass
class State:
    """What the handlers share: the client, the form token, results to show once."""

    settings: Settings
    client: AsyncClient
    csrf: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    flashes: dict[str, tuple[str, bool]] = field(default_factory=dict)
    streams: set[asyncio.Task[object]] = field(default_factory=set)
    _allowed: dict[str, bool] = field(default_factory=dict)

    async def allowed(self, action: str) -> bool:
        """Whether this console may `action` ("resume", "cancel"): not read-only, and its
        role (the identity of its certificate or token) may make the RPC, as the
        orchestrator says.

        The orchestrator is asked, not a copy of its table: a call with an empty saga
        id is refused before anything happens, INVALID_ARGUMENT when the role may make
        it, PERMISSION_DENIED (or UNAUTHENTICATED) when it may not. Asked once each."""
        if self.settings.read_only:
            return False
        if action not in self._allowed:
            send = self.client.resume_saga if action == "resume" else self.client.cancel_saga
            try:
                await send("")
            except MinisagaError as error:
                if error.code.name in ("PERMISSION_DENIED", "UNAUTHENTICATED"):
                    self._allowed[action] = False
                elif error.code.name == "INVALID_ARGUMENT":
                    self._allowed[action] = True
                else:  # unreachable now: ask again next time, offer nothing meanwhile
                    return False
            else:
                self._allowed[action] = True
        return self._allowed[action]

    async def actions(self, saga: pb.Saga) -> pages.Actions:
        offered = pages.actions_for(saga, read_only=self.settings.read_only)
        return pages.Actions(
            resume=offered.resume and await self.allowed("resume"),
            cancel=offered.cancel and await self.allowed("cancel"),
        )


STATE = web.AppKey("state", State)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def now_ms() -> int:
    import time

    return time.time_ns() // 1_000_000


# --- pages --------------------------------------------------------------------


def _html(text: str, status: int = 200) -> web.Response:
    return web.Response(text=text, status=status, content_type="text/html")


def _describe(error: MinisagaError) -> str:
    if error.field_violations:
        fields = "; ".join(f"{v.field}: {v.description}" for v in error.field_violations)
        return f"{error.code.name}: {fields}"
    return f"{error.code.name}: {error.message or 'no message'}"


def _status(name: str) -> pb.SagaStatus.ValueType | None:
    if not name:
        return None
    if name.upper() not in pages.STATUSES:
        raise ValueError(f"unknown status {name!r}")
    return pb.SagaStatus.Value(f"SAGA_STATUS_{name.upper()}")


class Common(TypedDict):
    """The filters ListSagas and CountSagas share, as the client's methods take them."""

    saga_type: str
    order_id: str
    request_id: str
    created_from: datetime | None
    created_before: datetime | None


def common_filters(filters: Mapping[str, str]) -> Common:
    """Raises ValueError for a time that is not one."""
    return Common(
        saga_type=filters["saga_type"],
        order_id=filters["order_id"],
        request_id=filters["request_id"],
        created_from=pages.parse_time(filters["created_from"]),
        created_before=pages.parse_time(filters["created_before"]),
    )


async def _list_and_count(
    client: AsyncClient, filters: dict[str, str], page_token: str
) -> tuple[pb.ListSagasResponse, pb.CountSagasResponse]:
    common = common_filters(filters)
    size = filters.get("page_size", "")
    if size and (not size.isdigit() or not 1 <= int(size) <= MAX_PAGE_SIZE):
        raise ValueError(f"page_size must be a number from 1 to {MAX_PAGE_SIZE}")
    page = await client.list_sagas(
        status=_status(filters["status"]),
        page_size=int(size) if size else PAGE_SIZE,
        page_token=page_token,
        **common,
    )
    counts = await client.count_sagas(**common)
    return page, counts


async def list_sagas(request: web.Request) -> web.Response:
    state = request.app[STATE]
    filters = pages.clean_filters(request.query)
    token = request.query.get("page_token", "")
    try:
        page, counts = await _list_and_count(state.client, filters, token)
    except ValueError as error:
        return _html(
            pages.list_page(
                pb.ListSagasResponse(), pb.CountSagasResponse(), filters, error=str(error)
            ),
            400,
        )
    except MinisagaError as error:
        return _html(
            pages.list_page(
                pb.ListSagasResponse(), pb.CountSagasResponse(), filters, error=_describe(error)
            ),
            400 if error.code.name in ("INVALID_ARGUMENT", "OUT_OF_RANGE") else 502,
        )
    return _html(pages.list_page(page, counts, filters, page_token=token))


async def _definition(client: AsyncClient, saga_type: str) -> tuple[pb.SagaDefinition, Shape]:
    definition = await client.get_saga_definition(saga_type)
    return definition, shape(definition)


async def _graph_parts(
    client: AsyncClient, saga_type: str
) -> tuple[pb.SagaDefinition | None, Shape | None]:
    """The definition to draw, or nothing when the orchestrator cannot give it."""
    try:
        return await _definition(client, saga_type)
    except MinisagaError:
        return None, None


async def saga(request: web.Request) -> web.Response:
    state = request.app[STATE]
    saga_id = request.match_info["saga_id"]
    try:
        found = await state.client.get_saga(saga_id)
    except NotFound as error:
        return _html(pages.error_page("No such saga", error.message), 404)
    except MinisagaError as error:
        status = 400 if error.code.name == "INVALID_ARGUMENT" else 502
        return _html(pages.error_page("Cannot show this saga", _describe(error)), status)
    definition, drawn = await _graph_parts(state.client, found.saga_type)
    flash, failed = state.flashes.pop(request.query.get("flash", ""), ("", False))
    live = pages.live_html(found, definition, drawn, await state.actions(found), now_ms())
    return _html(
        pages.saga_page(live, found, flash="" if failed else flash, error=flash if failed else "")
    )


async def confirm(request: web.Request) -> web.Response:
    state = request.app[STATE]
    action = request.match_info["action"]
    if not await state.allowed(action):
        return _html(pages.error_page("Not allowed", NOT_ALLOWED), 403)
    try:
        found = await state.client.get_saga(request.match_info["saga_id"])
    except MinisagaError as error:
        return _html(pages.error_page("Cannot show this saga", _describe(error)), 404)
    return _html(pages.confirm_page(found, action, state.csrf))


async def act(request: web.Request) -> web.Response:
    state = request.app[STATE]
    action = request.match_info["action"]
    saga_id = request.match_info["saga_id"]
    if not await state.allowed(action):
        return _html(pages.error_page("Not allowed", NOT_ALLOWED), 403)
    form = await request.post()
    if not secrets.compare_digest(str(form.get("csrf", "")), state.csrf):
        return _html(pages.error_page("Refused", "the form is stale: go back and try again"), 403)
    send = state.client.resume_saga if action == "resume" else state.client.cancel_saga
    try:
        after = await send(saga_id)
    except MinisagaError as error:
        result, failed = f"{action.capitalize()} refused — {_describe(error)}", True
    else:
        done = "Resumed" if action == "resume" else "Cancel requested"
        result, failed = f"{done}: the saga is {status_name(after.status)}.", False
    key = secrets.token_urlsafe(8)
    state.flashes[key] = (result, failed)
    while len(state.flashes) > 100:  # results never shown do not pile up
        state.flashes.pop(next(iter(state.flashes)))
    raise web.HTTPSeeOther(f"/sagas/{saga_id}?flash={key}")


# --- server-sent events --------------------------------------------------------


async def _event_stream(
    request: web.Request, produce: Callable[[web.StreamResponse], Awaitable[None]]
) -> web.StreamResponse:
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
    )
    await response.prepare(request)
    streams = request.app[STATE].streams
    task = asyncio.current_task()
    assert task is not None
    streams.add(task)
    try:
        await produce(response)
    except (ConnectionResetError, asyncio.CancelledError):
        pass  # the page went away, or the console stops
    finally:
        streams.discard(task)
    return response


async def saga_events(request: web.Request) -> web.StreamResponse:
    """The saga's live part, rendered again at each WatchSaga event, until it ends."""
    state = request.app[STATE]
    saga_id = request.match_info["saga_id"]

    async def produce(response: web.StreamResponse) -> None:
        parts: tuple[pb.SagaDefinition | None, Shape | None] | None = None
        try:
            async for update in state.client.watch_saga(saga_id):
                if parts is None:
                    parts = await _graph_parts(state.client, update.saga.saga_type)
                actions = await state.actions(update.saga)
                html = pages.live_html(update.saga, *parts, actions, now_ms())
                await response.write(pages.sse("saga", html))
        except MinisagaError as error:
            await response.write(pages.sse("failure", _describe(error)))
        await response.write(pages.sse("end", ""))

    return await _event_stream(request, produce)


async def counts_events(request: web.Request) -> web.StreamResponse:
    """The list's counts, sent again whenever a watched saga moves, or a recount differs."""
    state = request.app[STATE]
    filters = pages.clean_filters(request.query)
    try:
        common = common_filters(filters)
    except ValueError as error:
        raise web.HTTPBadRequest(text=str(error)) from None

    async def produce(response: web.StreamResponse) -> None:
        moved = asyncio.Event()
        watchers: dict[str, asyncio.Task[None]] = {}

        async def watch(saga_id: str) -> None:
            with contextlib.suppress(MinisagaError):
                async for _ in state.client.watch_saga(saga_id):
                    moved.set()
            moved.set()

        last = ""
        try:
            while True:
                moved.clear()
                counts = await state.client.count_sagas(**common)
                html = pages.counts_html(counts, filters)
                if html != last:
                    await response.write(pages.sse("counts", html))
                    last = html
                else:  # a comment: finds a page that went away (the write fails)
                    await response.write(b": unchanged\n\n")
                for status in (pb.SAGA_STATUS_RUNNING, pb.SAGA_STATUS_COMPENSATING):
                    active = await state.client.list_sagas(status=status, page_size=100, **common)
                    for found in active.sagas:
                        if found.saga_id not in watchers or watchers[found.saga_id].done():
                            watchers[found.saga_id] = asyncio.create_task(watch(found.saga_id))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(moved.wait(), state.settings.counts_refresh)
        except MinisagaError as error:
            await response.write(pages.sse("failure", _describe(error)))
        finally:
            for task in watchers.values():
                task.cancel()
            await asyncio.gather(*watchers.values(), return_exceptions=True)

    return await _event_stream(request, produce)


# --- the application ----------------------------------------------------------------


@web.middleware
async def security_headers(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    response = await handler(request)
    response.headers.setdefault(
        "Content-Security-Policy",
        "default-src 'self'; style-src 'self' 'unsafe-inline'; frame-ancestors 'none'",
    )
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "same-origin")
    return response


def make_app(settings: Settings, client: AsyncClient | None = None) -> web.Application:
    """The console's application; it opens its own client of the orchestrator unless given one."""
    app = web.Application(middlewares=[security_headers])

    async def client_context(app: web.Application) -> AsyncIterator[None]:
        owned = client is None
        used = (
            connect_async(
                settings.orchestrator,
                timeout=settings.timeout,
                tls=settings.tls,
                token=settings.token,
            )
            if owned
            else client
        )
        assert used is not None
        app[STATE] = State(settings, used)
        yield
        if owned:
            await used.close()

    async def stop_streams(app: web.Application) -> None:
        for task in list(app[STATE].streams):
            task.cancel()

    app.cleanup_ctx.append(client_context)
    app.on_shutdown.append(stop_streams)
    app.router.add_get("/", list_sagas)
    app.router.add_get("/events/counts", counts_events)
    app.router.add_get(r"/sagas/{saga_id}", saga)
    app.router.add_get(r"/sagas/{saga_id}/events", saga_events)
    app.router.add_get(r"/sagas/{saga_id}/{action:resume|cancel}", confirm)
    app.router.add_post(r"/sagas/{saga_id}/{action:resume|cancel}", act)
    app.router.add_static("/static", STATIC)
    return app


@dataclass
class RunningConsole:
    runner: web.AppRunner
    url: str

    async def stop(self) -> None:
        await self.runner.cleanup()


def split_listen(listen: str) -> tuple[str, int]:
    host, _, port = listen.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"--listen wants HOST:PORT, got {listen!r}")
    return host.strip("[]"), int(port)


async def start(
    settings: Settings, listen: str = "127.0.0.1:0", client: AsyncClient | None = None
) -> RunningConsole:
    """Serves the console on `listen` (port 0: a free one); `url` says where."""
    host, port = split_listen(listen)
    runner = web.AppRunner(make_app(settings, client), shutdown_timeout=1.0, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    server = site._server  # the listening socket gives the port chosen for port 0
    sockets = getattr(server, "sockets", None) or []
    bound = sockets[0].getsockname()[1] if sockets else port
    shown = f"[{host}]" if ":" in host else host
    return RunningConsole(runner, f"http://{shown}:{bound}/")


async def serve(settings: Settings, listen: str, out: TextIO = sys.stdout) -> None:
    """Runs the console until SIGINT or SIGTERM."""
    console = await start(settings, listen)
    mode = "read-only" if settings.read_only else "resume and cancel enabled"
    print(
        f"minisaga console on {console.url}  (orchestrator {settings.orchestrator}, {mode}; "
        "Ctrl-C stops it)",
        file=out,
        flush=True,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await console.stop()
