"""Channels, failure classification and the retry driver shared by the clients.

Whether a failed call may be retried depends on where it failed, never on
the text of its message (the Rust client's rules, ``src/client.rs``):

- **not applied**: ``UNAVAILABLE`` answered by a drover node (it carries the
  ``retry-after-ms`` metadata), or a node this client could not connect to
  before sending anything. Any call may be retried, at this or another node.
- **outcome unknown**: a timeout, a connection lost with the request in
  flight (a transport ``UNAVAILABLE``), ``ABORTED``, ``DEADLINE_EXCEEDED``,
  ``UNKNOWN``, ``CANCELLED``. The write may have been applied: only
  idempotent calls are retried (reads, and writes carrying a request id or
  idempotency key).
- anything else is final, among them the refusals of an authorizing
  cluster: ``UNAUTHENTICATED`` (no, unknown, expired or revoked token) and
  ``PERMISSION_DENIED`` (the grant's role or callbacks do not cover the
  call). Another node would answer the same.

Every call carries the client's bearer token, when it has one, as
``authorization: Bearer <token>`` metadata (:class:`Bearer`).
"""

from __future__ import annotations

import asyncio
import enum
import logging
import os
import random
import time
from typing import Dict, Iterable, List, Optional, Sequence, Tuple, Union

import grpc
import grpc.aio

from . import _rpc
from ._errors import RpcError
from ._rpc import Req, Resp, Unary

log = logging.getLogger("drover")

#: Metadata as gRPC gives it: (key, value) pairs, binary values as bytes.
MetadataIn = Optional[Iterable[Tuple[str, Union[str, bytes]]]]

#: Metadata naming the leader (``ID=HOST:PORT``) and a suggested retry delay.
LEADER_HINT = "x-drover-leader"
RETRY_AFTER_MS = "retry-after-ms"
#: Metadata bearing a token, and the environment variable a token comes
#: from when none is given (as the CLI's --token).
AUTHORIZATION = "authorization"
TOKEN_ENV = "DROVER_TOKEN"
#: Largest message drover sends or accepts.
MAX_MESSAGE_BYTES = 64 << 20

CHANNEL_OPTIONS = [
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    # A peer that stops answering pings (partitioned, frozen) is dropped
    # within ~2.5 s, as the Rust client does.
    ("grpc.keepalive_time_ms", 1000),
    ("grpc.keepalive_timeout_ms", 1500),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
    # gRPC's own reconnect backoff grows to 2 minutes by default: a node
    # that comes back would stay unused that long.
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
    # This SDK retries, by its own rules; gRPC's transparent retries off.
    ("grpc.enable_retries", 0),
]


class Failure(enum.Enum):
    """Where a call failed, which decides whether it may be retried."""

    NOT_APPLIED = "not applied"
    OUTCOME_UNKNOWN = "outcome unknown"
    FINAL = "final"


def metadata_value(md: MetadataIn, key: str) -> Optional[str]:
    """A metadata value (str) by key, from any gRPC metadata sequence."""
    if not md:
        return None
    for k, v in md:
        if k == key:
            return v.decode() if isinstance(v, bytes) else str(v)
    return None


def leader_hint(md: MetadataIn) -> Optional[Tuple[int, str]]:
    """(leader id, address) from metadata, if present."""
    v = metadata_value(md, LEADER_HINT)
    if not v or "=" not in v:
        return None
    i, addr = v.split("=", 1)
    try:
        return int(i), addr
    except ValueError:
        return None


def classify(err: grpc.aio.AioRpcError) -> Failure:
    """Classify a failed call (whose request was sent) by its status and origin."""
    code = err.code()
    if code == grpc.StatusCode.UNAVAILABLE:
        # A drover node's UNAVAILABLE always carries retry-after-ms; one
        # without it came from the transport, maybe after the request left.
        md = err.trailing_metadata()
        if metadata_value(md, RETRY_AFTER_MS) is not None or metadata_value(md, LEADER_HINT) is not None:
            return Failure.NOT_APPLIED
        return Failure.OUTCOME_UNKNOWN
    if code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
        return Failure.FINAL  # every node refuses the same credentials
    if code in (
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.CANCELLED,
    ):
        return Failure.OUTCOME_UNKNOWN
    return Failure.FINAL


class Backoff:
    """Exponential backoff with equal jitter: ~50 ms doubling to ~1 s."""

    def __init__(self, first: float = 0.05, maximum: float = 1.0) -> None:
        self.first = first
        self.maximum = maximum
        self._next = first

    def next_delay(self) -> float:
        d = self._next
        self._next = min(self._next * 2, self.maximum)
        return d / 2 + random.uniform(0, d / 2)

    def reset(self) -> None:
        self._next = self.first


def credentials(
    endpoints: List[str], ca: Optional[str], cert: Optional[str], key: Optional[str]
) -> Optional[grpc.ChannelCredentials]:
    """TLS credentials when ``ca`` or ``cert`` is given or an endpoint is
    ``https://`` (as the CLI's --ca/--cert/--cert-key): trust the CA certificates
    in the PEM file ``ca`` (the system's when None), and present the client
    certificate ``cert`` with its ``key`` (mutual TLS)."""
    if ca is None and cert is None and not any(e.startswith("https://") for e in endpoints):
        return None
    if (cert is None) != (key is None):
        raise ValueError("give cert and key together")

    def read(path: Optional[str]) -> Optional[bytes]:
        if path is None:
            return None
        with open(path, "rb") as f:
            return f.read()

    return grpc.ssl_channel_credentials(read(ca), read(key), read(cert))


class Bearer:
    """A bearer token, and the metadata that carries it on every call.

    ``token=None`` takes the environment variable ``DROVER_TOKEN`` when it
    is set (as the CLI does); a token that is empty (or only whitespace)
    means no token: calls carry no ``authorization`` metadata. The token
    is never shown: ``repr`` says only whether there is one.
    """

    __slots__ = ("_metadata",)

    def __init__(self, token: Optional[str] = None) -> None:
        if token is None:
            token = os.environ.get(TOKEN_ENV)
        token = (token or "").strip()
        if token and not all(0x20 <= ord(ch) < 0x7F for ch in token):
            # Not echoed: it may be a secret pasted by mistake.
            raise ValueError("the token must be printable ASCII")
        #: The metadata every call carries: ``authorization: Bearer <token>``, or nothing.
        self._metadata: Tuple[Tuple[str, str], ...] = ((AUTHORIZATION, f"Bearer {token}"),) if token else ()

    @property
    def metadata(self) -> Tuple[Tuple[str, str], ...]:
        """Call metadata: ``(("authorization", "Bearer <token>"),)``, or empty without a token."""
        return self._metadata

    def __bool__(self) -> bool:
        return bool(self._metadata)

    def __repr__(self) -> str:
        return "Bearer(<redacted>)" if self._metadata else "Bearer(None)"


def target(addr: str) -> str:
    """A gRPC target for ``HOST:PORT`` (an ``http://`` prefix is dropped)."""
    for prefix in ("http://", "https://"):
        if addr.startswith(prefix):
            return addr[len(prefix) :]
    return addr


class Pool:
    """One channel per endpoint, reused by every call (never one per RPC).

    Channels belong to the event loop that made them; a pool is only used
    from one loop. ``bearer`` is the token every call made through the pool
    carries: pass :attr:`metadata` to each call.
    """

    def __init__(
        self,
        endpoints: List[str],
        connect_timeout: float,
        tls: Optional[grpc.ChannelCredentials] = None,
        bearer: Optional[Bearer] = None,
    ) -> None:
        if not endpoints:
            raise ValueError("no endpoint given: pass at least one HOST:PORT")
        self.endpoints = list(endpoints)
        self.connect_timeout = connect_timeout
        self.tls = tls
        self.bearer = bearer if bearer is not None else Bearer("")
        self._channels: Dict[str, grpc.aio.Channel] = {}

    @property
    def metadata(self) -> Sequence[Tuple[str, str]]:
        """The metadata of every call: the bearer token, if any."""
        return self.bearer.metadata

    def channel(self, addr: str) -> grpc.aio.Channel:
        ch = self._channels.get(addr)
        if ch is None:
            if self.tls is not None:
                ch = grpc.aio.secure_channel(target(addr), self.tls, options=CHANNEL_OPTIONS)
            else:
                ch = grpc.aio.insecure_channel(target(addr), options=CHANNEL_OPTIONS)
            self._channels[addr] = ch
        return ch

    async def ready(self, addr: str) -> bool:
        """Whether a connection to ``addr`` is up (waiting at most the connect timeout)."""
        ch = self.channel(addr)
        if ch.get_state(try_to_connect=True) == grpc.ChannelConnectivity.READY:
            return True
        try:
            await asyncio.wait_for(ch.channel_ready(), self.connect_timeout)
            return True
        except asyncio.TimeoutError:
            return False

    async def close(self) -> None:
        chans, self._channels = list(self._channels.values()), {}
        for ch in chans:
            await ch.close()


class Caller:
    """Runs a call against one node after another until it succeeds, fails
    for good, or the deadline passes; remembers the leader a reply names."""

    def __init__(self, pool: Pool, deadline: float, attempt_timeout: float) -> None:
        self.pool = pool
        self.deadline = deadline
        self.attempt_timeout = attempt_timeout
        #: Index of the endpoint last named leader: writes start there.
        self.leader: Optional[int] = None

    def _learn(self, md: MetadataIn) -> None:
        hint = leader_hint(md)
        if hint and hint[1] in self.pool.endpoints:
            self.leader = self.pool.endpoints.index(hint[1])

    async def call(self, method: "Unary[Req, Resp]", req: Req, *, idempotent: bool, write: bool = False) -> Resp:
        """Call ``method`` with ``req`` (the same message on every attempt,
        so a request id in it is reused by every retry), failing over
        between the endpoints; returns the reply. Every attempt carries the
        pool's metadata (the bearer token)."""
        eps = self.pool.endpoints
        start = self.leader if (write and self.leader is not None) else 0
        give_up = time.monotonic() + self.deadline
        backoff = Backoff()
        i = start
        while True:
            addr = eps[i % len(eps)]
            failure: Failure
            err: RpcError
            retry_after = 0.0
            if not await self.pool.ready(addr):
                failure = Failure.NOT_APPLIED
                err = RpcError(grpc.StatusCode.UNAVAILABLE, f"could not connect to {addr}")
            else:
                call = _rpc.invoke(method, self.pool.channel(addr), req, self.attempt_timeout, self.pool.metadata)
                try:
                    reply = await call
                    self._learn(await call.initial_metadata())
                    return reply
                except grpc.aio.AioRpcError as e:
                    failure = classify(e)
                    md = e.trailing_metadata()
                    hint = leader_hint(md)
                    err = RpcError(
                        e.code(),
                        e.details() or "",
                        outcome_unknown=failure is Failure.OUTCOME_UNKNOWN,
                        leader=f"{hint[0]}={hint[1]}" if hint else None,
                    )
                    ra = metadata_value(md, RETRY_AFTER_MS)
                    retry_after = min(int(ra), 1000) / 1000 if ra and ra.isdigit() else 0.0
                    if e.code() == grpc.StatusCode.DEADLINE_EXCEEDED and not e.details():
                        err.message = f"{addr} did not answer within {self.attempt_timeout}s"
            retryable = failure is Failure.NOT_APPLIED or (failure is Failure.OUTCOME_UNKNOWN and idempotent)
            if not retryable or time.monotonic() >= give_up:
                raise err
            if self.leader is not None and self.leader == i % len(eps):
                self.leader = None  # the preferred (leader) endpoint failed: forget it
            log.debug("retrying at the next node after %s from %s", err, addr)
            hint = leader_hint([(LEADER_HINT, err.leader)]) if err.leader else None
            if hint and hint[1] in eps and eps.index(hint[1]) != i % len(eps):
                i = eps.index(hint[1])
                await asyncio.sleep(max(retry_after / 4, 0.02))
                continue
            i += 1
            if i % len(eps) == start % len(eps):
                await asyncio.sleep(max(backoff.next_delay(), retry_after))

