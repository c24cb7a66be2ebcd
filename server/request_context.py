"""Per-request facts shared between the WSGI layer and the plugins (thread-bound).

Radicale runs each request in one thread (built-in server, gunicorn sync/gthread workers),
so the WSGI wrapper binds a ``RequestContext`` to the thread and the storage plugin reads
the raw body from it and writes back why a request failed.
"""

from __future__ import annotations

import threading
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


def set_reason(reason: str) -> None:
    context = current()
    if context is not None and context.reason is None:
        context.reason = reason


def mark_db_unavailable() -> None:
    context = current()
    if context is not None:
        context.db_unavailable = True


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
