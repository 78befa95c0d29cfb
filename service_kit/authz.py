"""Who may call what: the one authorization table of every minisaga service, and its guard.

`TABLE` maps each fully-qualified method to the identities allowed to call
it. A caller's identity is the `spiffe://minisaga/<identity>` URI of its
verified client certificate or, failing that, the identity of the bearer
token it sends (`authorization: Bearer <token>`), looked up in a token file
that stores only each token's SHA-256 and identity. `Authorizer`, a server
interceptor, checks every call before its handler runs: no identity is
UNAUTHENTICATED, an identity the table does not list for the method is
PERMISSION_DENIED (ErrorInfo reason ROLE_NOT_ALLOWED), and in both cases
nothing of the handler runs. `start_server` installs it when the server has
TLS or a token file (`service_kit.tls.Security.authorizing`).

Tokens are 256 random bits (`new_token`): a hash without a salt is enough,
because a salt only slows the guessing of secrets people choose; nobody can
guess or precompute 2^256 candidates, and the file alone lets nobody call.
"""

from __future__ import annotations

import hashlib
import hmac
import inspect
import logging
import os
import re
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import grpc

from service_kit.errors import ServiceError, abort
from service_kit.interceptors import Interceptor

log = logging.getLogger(__name__)

ORCHESTRATOR: Final = "orchestrator"
PAYMENT: Final = "payment"
INVENTORY: Final = "inventory"
SHIPPING: Final = "shipping"
OPERATOR: Final = "operator"
CLIENT: Final = "client"
IDENTITIES: Final = (ORCHESTRATOR, PAYMENT, INVENTORY, SHIPPING, OPERATOR, CLIENT)
"""Every identity there is: one certificate each from `minisaga certs init`."""

ANYONE: Final = "*"
"""In the table: any caller, even one with no identity (health checks)."""

SPIFFE_PREFIX: Final = "spiffe://minisaga/"
DOMAIN: Final = "minisaga.authz"
UNAUTHENTICATED: Final = "UNAUTHENTICATED"
ROLE_NOT_ALLOWED: Final = "ROLE_NOT_ALLOWED"

_PAYMENT = "minisaga.payment.v1.PaymentService"
_INVENTORY = "minisaga.inventory.v1.InventoryService"
_SHIPPING = "minisaga.shipping.v1.ShippingService"
_ORCHESTRATOR = "minisaga.orchestrator.v1.OrchestratorService"
_HEALTH = "grpc.health.v1.Health"
_REFLECTION = "grpc.reflection.v1alpha.ServerReflection"

_ORCHESTRATOR_ONLY = frozenset({ORCHESTRATOR})
_READERS = frozenset({ORCHESTRATOR, OPERATOR})
_OPERATOR_ONLY = frozenset({OPERATOR})
_CUSTOMERS = frozenset({CLIENT, OPERATOR})

TABLE: Final[Mapping[str, frozenset[str]]] = {
    # Participants: their actions and compensations only from the orchestrator ...
    f"{_PAYMENT}/Charge": _ORCHESTRATOR_ONLY,
    f"{_PAYMENT}/Refund": _ORCHESTRATOR_ONLY,
    f"{_INVENTORY}/Reserve": _ORCHESTRATOR_ONLY,
    f"{_INVENTORY}/Release": _ORCHESTRATOR_ONLY,
    f"{_SHIPPING}/CreateShipment": _ORCHESTRATOR_ONLY,
    f"{_SHIPPING}/CancelShipment": _ORCHESTRATOR_ONLY,
    # ... their reads and listings from the orchestrator and operators ...
    f"{_PAYMENT}/GetPayment": _READERS,
    f"{_PAYMENT}/ListPayments": _READERS,
    f"{_INVENTORY}/GetReservation": _READERS,
    f"{_INVENTORY}/ListReservations": _READERS,
    f"{_INVENTORY}/GetStock": _READERS,
    f"{_SHIPPING}/GetShipment": _READERS,
    f"{_SHIPPING}/ListShipments": _READERS,
    # ... and the stock is set by operators.
    f"{_INVENTORY}/SetStock": _OPERATOR_ONLY,
    # The orchestrator: orders and their sagas for clients and operators ...
    f"{_ORCHESTRATOR}/PlaceOrder": _CUSTOMERS,
    f"{_ORCHESTRATOR}/StartSaga": _CUSTOMERS,
    f"{_ORCHESTRATOR}/GetSaga": _CUSTOMERS,
    f"{_ORCHESTRATOR}/GetOrder": _CUSTOMERS,
    f"{_ORCHESTRATOR}/WatchSaga": _CUSTOMERS,
    f"{_ORCHESTRATOR}/ListSagas": _CUSTOMERS,
    f"{_ORCHESTRATOR}/CountSagas": _CUSTOMERS,
    f"{_ORCHESTRATOR}/GetSagaDefinition": _CUSTOMERS,
    # ... repairs for operators.
    f"{_ORCHESTRATOR}/ResumeSaga": _OPERATOR_ONLY,
    f"{_ORCHESTRATOR}/ResumeSagas": _OPERATOR_ONLY,
    f"{_ORCHESTRATOR}/CancelSaga": _OPERATOR_ONLY,
    # Health for everyone; reflection (with --reflection) for any known identity.
    f"{_HEALTH}/Check": frozenset({ANYONE}),
    f"{_HEALTH}/Watch": frozenset({ANYONE}),
    f"{_HEALTH}/List": frozenset({ANYONE}),
    f"{_REFLECTION}/ServerReflectionInfo": frozenset(IDENTITIES),
}


def allowed(method: str, identity: str | None) -> bool:
    """Whether `identity` (None: the caller has none) may call `method` ("pkg.Service/Method")."""
    roles = TABLE.get(method.lstrip("/"), frozenset())
    return ANYONE in roles or (identity is not None and identity in roles)


# --- tokens -----------------------------------------------------------------


def new_token() -> str:
    """A fresh bearer token: 256 random bits, URL-safe."""
    return secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    """What the token file stores for `token`."""
    return "sha256:" + hashlib.sha256(token.encode()).hexdigest()


class TokenFileError(Exception):
    """A token file that cannot be read as one."""


@dataclass(frozen=True)
class TokenEntry:
    hash: str
    identity: str
    label: str


def read_tokens(path: Path) -> dict[str, TokenEntry]:
    """The entries of a token file by hash. A line is `sha256:<hex> <identity> [label]`;
    blank lines and lines starting with # are skipped."""
    entries: dict[str, TokenEntry] = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split(maxsplit=2)
        if len(parts) < 2 or not re.fullmatch(r"sha256:[0-9a-f]{64}", parts[0]):
            raise TokenFileError(f"{path}:{number}: expected 'sha256:<64 hex digits> IDENTITY'")
        if parts[1] not in IDENTITIES:
            raise TokenFileError(
                f"{path}:{number}: unknown identity {parts[1]!r}; one of {', '.join(IDENTITIES)}"
            )
        entries[parts[0]] = TokenEntry(parts[0], parts[1], parts[2] if len(parts) > 2 else "")
    return entries


def add_token(path: Path, identity: str, label: str = "") -> str:
    """Appends a new token for `identity` to the file (made 0600 when new); returns the token,
    which is shown once and stored nowhere."""
    if identity not in IDENTITIES:
        raise TokenFileError(f"unknown identity {identity!r}; one of {', '.join(IDENTITIES)}")
    label = "-".join(label.split())  # one word: the line stays `hash identity label`
    if path.exists():
        read_tokens(path)  # refuse to append to a file that is not one
    token = new_token()
    line = f"{token_hash(token)} {identity}{' ' + label if label else ''}\n"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)
    return token


class Tokens:
    """A token file, read again whenever it changes (so a new token needs no restart)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._stamp: tuple[int, int] | None = None
        self._entries: dict[str, TokenEntry] = {}
        self._reload()

    def _reload(self) -> None:
        stat = self.path.stat()
        stamp = (stat.st_mtime_ns, stat.st_size)
        if stamp != self._stamp:
            self._entries = read_tokens(self.path)
            self._stamp = stamp

    def identity(self, token: str) -> str | None:
        """The identity of `token`, or None when the file does not hold its hash."""
        try:
            self._reload()
        except (OSError, TokenFileError) as error:  # fail closed: deleting the file revokes all
            log.warning("token file %s unreadable, no token is accepted: %s", self.path, error)
            self._entries, self._stamp = {}, None
        wanted = token_hash(token)
        for known, entry in self._entries.items():
            if hmac.compare_digest(known, wanted):
                return entry.identity
        return None


# --- the guard ----------------------------------------------------------------


def certificate_identity(context: grpc.aio.ServicerContext[Any, Any]) -> str | None:
    """The identity in the verified client certificate's spiffe://minisaga/ URI SAN, if any."""
    auth = context.auth_context() or {}
    for key in ("peer_spiffe_id", "peer_uri"):
        for value in auth.get(key, ()):
            uri = value.decode(errors="replace") if isinstance(value, bytes) else str(value)
            if uri.startswith(SPIFFE_PREFIX) and uri[len(SPIFFE_PREFIX) :] in IDENTITIES:
                return uri[len(SPIFFE_PREFIX) :]
    return None


def bearer_token(context: grpc.aio.ServicerContext[Any, Any]) -> str | None:
    for key, value in context.invocation_metadata() or ():
        if key == "authorization":
            text = value.decode(errors="replace") if isinstance(value, bytes) else str(value)
            scheme, _, token = text.partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
    return None


class Authorizer(Interceptor):
    """Checks each call against `TABLE` before its handler runs."""

    def __init__(self, tokens: Tokens | None = None) -> None:
        self.tokens = tokens

    def identity(self, context: grpc.aio.ServicerContext[Any, Any]) -> str | None:
        found = certificate_identity(context)
        if found is None and self.tokens is not None:
            token = bearer_token(context)
            if token is not None:
                found = self.tokens.identity(token)
        return found

    async def check(self, method: str, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        """Ends the call (UNAUTHENTICATED or PERMISSION_DENIED) unless the caller may call it."""
        name = method.lstrip("/")
        identity = self.identity(context)
        if allowed(name, identity):
            return
        if identity is None:
            error = ServiceError(
                grpc.StatusCode.UNAUTHENTICATED,
                f"{name} needs an identity: a client certificate of this system's CA or a "
                "known bearer token",
                UNAUTHENTICATED,
                {"method": name},
            )
        else:
            roles = sorted(TABLE.get(name, frozenset()))
            error = ServiceError(
                grpc.StatusCode.PERMISSION_DENIED,
                f"{identity} may not call {name}",
                ROLE_NOT_ALLOWED,
                {"method": name, "identity": identity, "allowed": ",".join(roles)},
            )
        log.info("refused %s to %s: %s", name, identity or "a caller with no identity", error)
        await abort(context, error, DOMAIN)

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any]]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any]:
        handler = await continuation(handler_call_details)
        if handler is None:  # no such method: gRPC answers UNIMPLEMENTED
            return handler
        guarded: grpc.RpcMethodHandler[Any, Any] = _guarded(
            handler, handler_call_details.method, self.check
        )
        return guarded


Check = Callable[[str, grpc.aio.ServicerContext[Any, Any]], Awaitable[None]]


def _guarded(handler: Any, method: str, check: Check) -> Any:
    """`handler` with `check` run before its behaviour, whatever its kind."""
    if handler.unary_unary:
        kind, behaviour = grpc.unary_unary_rpc_method_handler, handler.unary_unary
    elif handler.unary_stream:
        kind, behaviour = grpc.unary_stream_rpc_method_handler, handler.unary_stream
    elif handler.stream_unary:
        kind, behaviour = grpc.stream_unary_rpc_method_handler, handler.stream_unary
    else:
        kind, behaviour = grpc.stream_stream_rpc_method_handler, handler.stream_stream

    if inspect.isasyncgenfunction(behaviour):

        async def streaming(request: Any, context: Any) -> AsyncIterator[Any]:
            await check(method, context)
            async for item in behaviour(request, context):
                yield item

        guarded: Callable[[Any, Any], Any] = streaming
    else:

        async def unary(request: Any, context: Any) -> Any:
            await check(method, context)
            return await behaviour(request, context)

        guarded = unary
    return kind(
        guarded,
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )
