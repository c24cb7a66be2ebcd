"""Per-request facts shared between the WSGI layer and the plugins (thread-bound).

Radicale runs each request in one thread (built-in server, gunicorn sync/gthread workers),
so the WSGI wrapper binds a ``RequestContext`` to the thread and the storage plugin reads
the raw body from it and writes back why a request failed.
"""

from __future__ import annotations

import logging
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Iterator, Optional

_local = threading.local()


@dataclass
class RequestContext:
    method: str = ""
    path: str = ""
    remote_addr: str = ""
    raw_body: bytes = b""
    decoder: Optional[Callable[[bytes], str]] = None
    reason: Optional[str] = None          # one line telling the client why it was refused
    db_unavailable: bool = False          # the database failed: answer 503, not 500
    refusal: Optional[tuple[int, str]] = None   # a plugin refused: this status and reason
    refusal_headers: list = field(default_factory=list)  # ... with these headers
    forwarded_for: str = ""               # X-Forwarded-For, for [auth] trusted_proxies
    client_address: str = ""              # the client, proxies seen through (auth plugin)
    memo: dict = field(default_factory=dict)    # per-request cache (rights decisions, ...)
    _text: Optional[str] = None

    @property
    def body_text(self) -> str:
        """The body decoded exactly as Radicale decoded it before parsing."""
        if self._text is None:
            self._text = self.decoder(self.raw_body) if self.decoder else \
                self.raw_body.decode("utf-8", "replace")
        return self._text


def current() -> Optional[RequestContext]:
    return getattr(_local, "context", None)


@contextmanager
def bound(context: RequestContext) -> Iterator[RequestContext]:
    previous = current()
    _local.context = context
    try:
        yield context
    finally:
        _local.context = previous


def client_address() -> Optional[str]:
    """The client's address for the audit: past trusted proxies (``[auth] trusted_proxies``)
    once the auth plugin has looked, else the peer's."""
    context = current()
    if context is None:
        return None
    return context.client_address or context.remote_addr or None


def set_reason(reason: str) -> None:
    context = current()
    if context is not None and context.reason is None:
        context.reason = reason


def mark_db_unavailable(error: Optional[BaseException] = None) -> None:
    """The database failed this request: it is answered 503, and the outage is logged (once
    per request, at most every few seconds; see :class:`OutageLog`)."""
    context = current()
    if context is not None:
        if context.db_unavailable:
            return
        context.db_unavailable = True
    outage_log.failed(error)


def mark_db_worked() -> None:
    """A request used the database without an outage: ends a logged outage, if any."""
    outage_log.worked()


class OutageLog:
    """One line when the database goes away, one every ``every`` seconds while it stays
    away, and one when it is back, instead of an error and a traceback per request (a
    3-second outage under load used to write ~350 lines)."""

    def __init__(self, every: float = 10.0) -> None:
        self.every = every
        self._lock = threading.Lock()
        self._since: Optional[float] = None
        self._last = 0.0
        self._count = 0

    def failed(self, error: Optional[BaseException]) -> None:
        now = time.monotonic()
        reason = " ".join(str(error).split())[:300] if error is not None else "unknown error"
        with self._lock:
            self._count += 1
            if self._since is None:
                self._since = self._last = now
                message = ("Database unavailable (requests get 503 until it is back): %s",
                           reason)
            elif now - self._last >= self.every:
                self._last = now
                message = ("Database still unavailable after %.0f s (%d requests answered 503 "
                           "so far): %s", now - self._since, self._count, reason)
            else:
                return
        _logger.error(*message)

    def worked(self) -> None:
        if self._since is None:      # the usual case: no lock taken
            return
        with self._lock:
            if self._since is None:
                return
            took, count = time.monotonic() - self._since, self._count
            self._since, self._count = None, 0
        _logger.warning("Database available again after %.1f s (%d requests answered 503)",
                        took, count)


_logger = logging.getLogger("radicale-crm")
outage_log = OutageLog()


class Refused(ValueError):
    """Raised by a plugin that refused the request (see :func:`refuse`). A ``ValueError``,
    so Radicale answers 400 where it expects one; the WSGI layer answers the status set."""


def refuse(status: int, reason: str) -> Refused:
    """A plugin refuses the request with ``status`` (e.g. 403) and one line of reason; it
    raises what this returns, and whatever error Radicale makes of that is answered with
    this status and reason instead."""
    context = current()
    if context is not None and context.refusal is None:
        context.refusal = (status, reason)
    return Refused(reason)


def memo() -> dict:
    """A dict that lives as long as the request (a fresh, unshared one outside requests)."""
    context = current()
    return context.memo if context is not None else {}
