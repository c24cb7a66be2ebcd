"""Engines, sessions and the per-thread unit of work.

One unit of work per request: ``UnitOfWork.begin()`` opens a session bound to the calling
thread, nests (re-entrant), commits when the outermost block exits normally and rolls back
when it raises. Domain services receive the session and never commit.
"""

from __future__ import annotations

import functools
import os
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from select import POLLIN, POLLPRI, poll
from typing import Iterable, Iterator, Optional

from sqlalchemy import (Connection, CursorResult, Engine, bindparam, create_engine, event,
                        exc, select, text)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

DEFAULT_SQLITE_PATH = "var/radicale-crm.db"
ENV_URL = "CRM_DATABASE_URL"


def resolve_url(configured: Optional[str] = None) -> str:
    """The database URL: configured value, else ``$CRM_DATABASE_URL``, else SQLite under var/."""
    url = (configured or "").strip() or os.environ.get(ENV_URL, "").strip()
    if not url:
        url = "sqlite:///" + DEFAULT_SQLITE_PATH
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


def url_from_config(configuration) -> str:
    """The URL from a Radicale configuration object (``[storage] db_url``), resolved."""
    try:
        value = configuration.get("storage", "db_url")
    except KeyError:
        value = ""
    return resolve_url(value)


def pool_size_from_config(configuration) -> int:
    """``[storage] db_pool_size`` from any plugin's configuration: the auth and rights plugins
    must ask for the storage's pool size, or ``shared_engine`` gives them a second pool."""
    try:
        return int(configuration.get("storage", "db_pool_size"))
    except (KeyError, ValueError, TypeError):
        return 5


def is_sqlite(url: str) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


def _sqlite_engine(url: str) -> Engine:
    parsed = make_url(url)
    if parsed.database and parsed.database != ":memory:":
        folder = os.path.dirname(os.path.abspath(parsed.database))
        os.makedirs(folder, exist_ok=True)
    engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record) -> None:  # pragma: no cover - driver hook
        # Let SQLAlchemy, not pysqlite, decide when a transaction begins (see "begin").
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn) -> None:  # pragma: no cover - driver hook
        # Writers take the database write lock up front (BEGIN IMMEDIATE), so a
        # read-then-write request can never fail half-way on a lock upgrade.
        mode = conn.get_execution_options().get("sqlite_begin", "DEFERRED")
        if mode:                                 # "" for read_once: no transaction
            conn.exec_driver_sql(f"BEGIN {mode}")

    return engine


# libpq waits forever by default: for a host that accepts the connection and never answers
# (a frozen server, a full accept queue, a proxy whose backend is gone) every request hung
# and no 503 ever came. Connection attempts are bounded, and a peer that vanished from an
# established connection (a network partition) is found by keepalives and tcp_user_timeout
# instead of the kernel's ~15 minutes. A value in the URL wins (``?connect_timeout=2``).
PG_CONNECT_DEFAULTS = {"connect_timeout": 5, "keepalives": 1, "keepalives_idle": 30,
                       "keepalives_interval": 10, "keepalives_count": 3,
                       "tcp_user_timeout": 30000}


def make_engine(url: str, pool_size: int = 5) -> Engine:
    if is_sqlite(url):
        return _sqlite_engine(url)
    parsed = make_url(url)
    connect_args: dict = {}
    if parsed.get_driver_name() in ("psycopg", "psycopg2"):   # libpq parameters
        connect_args = {k: v for k, v in PG_CONNECT_DEFAULTS.items() if k not in parsed.query}
    if "prepare_threshold" in parsed.query and parsed.get_driver_name() == "psycopg":
        connect_args["prepare_threshold"] = _prepare_threshold(parsed.query["prepare_threshold"])
        parsed = parsed.difference_update_query(["prepare_threshold"])
    engine = create_engine(parsed, pool_size=pool_size, max_overflow=pool_size * 2,
                           pool_recycle=1800, connect_args=connect_args)
    _ping_when_idle(engine, PING_IDLE_SECONDS)
    return engine


# A pooled connection is pinged before use (SELECT 1) when it sat idle for longer than this,
# or when the server sent something while it was idle (a server that shuts down or ends the
# session sends an error and closes: the socket turns readable). One that died is replaced
# instead of failing a request. SQLAlchemy's pool_pre_ping pings at every checkout: a round
# trip per checkout, two per request (the login and the storage check out one each), ~0.3 ms
# of a GET's ~2.4 ms on PostgreSQL. A connection back in the pool a moment ago with nothing
# to read was working (HikariCP skips its alive check the same way, within 500 ms); one cut
# off silently inside the window (a network partition) fails that request with a 503.
PING_IDLE_SECONDS = 0.5


def _ping_when_idle(engine: Engine, idle_seconds: float) -> None:
    dialect = engine.dialect

    @event.listens_for(engine, "checkin")
    def _returned(_dbapi_connection, record) -> None:
        record.info["returned_at"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _checked_out(dbapi_connection, record, _proxy) -> None:
        returned = record.info.get("returned_at")
        if returned is None:
            return                  # just connected
        if time.monotonic() - returned <= idle_seconds and not _has_input(dbapi_connection):
            return                  # in use a moment ago, and the server has said nothing
        try:
            dialect.do_ping(dbapi_connection)
        except dialect.loaded_dbapi.Error as e:
            # The pool discards this connection and checks out another (a new one if the
            # server is back); all of them if the server went away, as pre-ping does.
            if dialect.is_disconnect(e, dbapi_connection, None):
                raise exc.InvalidatePoolError(str(e)) from e
            raise exc.DisconnectionError(str(e)) from e


def _has_input(dbapi_connection) -> bool:
    """Whether the server sent anything to this idle connection (or closed it): a zero-timeout
    poll of its socket, no round trip. An idle session gets nothing unless it is ending."""
    try:
        fd = dbapi_connection.fileno()
    except Exception:           # closed already: let the ping say so
        return True
    poller = poll()
    poller.register(fd, POLLIN | POLLPRI)
    return bool(poller.poll(0))


def _prepare_threshold(value) -> Optional[int]:
    """``?prepare_threshold=none`` turns psycopg's server-side prepared statements off (for
    pgbouncer before 1.21 in transaction mode); a number sets after how many executions a
    statement is prepared. psycopg takes it as a Python value, not a libpq string."""
    text = (value[-1] if isinstance(value, tuple) else value).strip().lower()
    if text in ("none", "off", "no", ""):
        return None
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"prepare_threshold in the database URL must be a number or "
                         f"'none', not {text!r}") from None


_engines: dict[tuple[str, int], Engine] = {}
_engines_lock = threading.Lock()


def shared_engine(url: str, pool_size: int = 5) -> Engine:
    """One engine (one pool) per URL per process, shared by the storage and auth plugins."""
    key = (url, pool_size)
    with _engines_lock:
        engine = _engines.get(key)
        if engine is None:
            engine = _engines[key] = make_engine(url, pool_size)
        return engine


@contextmanager
def read_once(engine: Engine) -> Iterator[Connection]:
    """A connection for one read statement, outside any transaction: a single SELECT sees a
    consistent snapshot by itself, and the BEGIN and ROLLBACK around it cost two round
    trips on PostgreSQL (about half of a login's time) and two statements on SQLite."""
    if engine.dialect.name == "sqlite":
        options = {"sqlite_begin": ""}
    else:
        options = {"isolation_level": "AUTOCOMMIT"}
    with engine.connect().execution_options(**options) as connection:
        yield connection


def is_outage(exc: BaseException) -> bool:
    """True for errors that mean "the database is not there", not "the request was bad"."""
    if isinstance(exc, (OperationalError, InterfaceError)):
        return True
    return isinstance(exc, DBAPIError) and bool(exc.connection_invalidated)


@dataclass
class _ThreadState:
    session: Optional[Session] = None
    depth: int = 0
    write: bool = False
    info: dict = field(default_factory=dict)


class UnitOfWork:
    """Thread-bound, re-entrant transaction scope over one engine."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.sqlite = engine.dialect.name == "sqlite"
        self._reader = sessionmaker(bind=engine, expire_on_commit=False)
        writer_bind = engine.execution_options(sqlite_begin="IMMEDIATE") if self.sqlite else engine
        self._writer = sessionmaker(bind=writer_bind, expire_on_commit=False)
        self._local = threading.local()

    def _state(self) -> _ThreadState:
        state = getattr(self._local, "state", None)
        if state is None:
            state = self._local.state = _ThreadState()
        return state

    @property
    def current(self) -> Optional[Session]:
        return self._state().session

    @property
    def info(self) -> dict:
        """Per-unit-of-work scratch space (actor, request, ...); empty outside one."""
        return self._state().info

    @contextmanager
    def begin(self, write: bool = False, lock_paths: Iterable[str] = ()) -> Iterator[Session]:
        state = self._state()
        if state.session is not None:
            if write and not state.write:
                raise RuntimeError("cannot upgrade a read unit of work to a write one")
            state.depth += 1
            try:
                yield state.session
            finally:
                state.depth -= 1
            return
        session = (self._writer if write else self._reader)()
        state.session, state.depth, state.write = session, 1, write
        try:
            if write:
                self._lock_collections(session, lock_paths)
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()
            state.session, state.depth, state.write = None, 0, False
            state.info = {}

    @contextmanager
    def scope(self) -> Iterator[Session]:
        """The current session, or a short read-only one (Radicale reads some properties
        after it has released its lock)."""
        if self.current is not None:
            yield self.current
        else:
            with self.begin(write=False) as session:
                yield session

    def _lock_collections(self, session: Session, paths: Iterable[str]) -> None:
        """Serialise writers per collection across processes (PostgreSQL row locks).

        SQLite needs nothing here: BEGIN IMMEDIATE already holds the database write lock.
        """
        if self.sqlite:
            return
        paths = sorted({p for p in paths if p})
        if paths:
            run(session, _lock_statement(), {"paths": paths}).all()


@functools.cache
def _lock_statement():
    """``SELECT ... FOR UPDATE`` of the collections at ``paths``, in id order (no deadlock
    between writers locking several), built once: every PostgreSQL write begins with it."""
    from server.crm.models import DavCollection  # local: models import this module

    return (select(DavCollection.id)
            .where(DavCollection.path.in_(bindparam("paths", expanding=True)))
            .order_by(DavCollection.id).with_for_update())


def run(session: Session, stmt, params=None) -> CursorResult:
    """Execute a statement built once (at import, with bind parameters) on the session's
    connection. Building ``select(...).where(...)`` on every call and passing it through the
    ORM layer cost about five times the statement itself on SQLite (measured: 124 µs
    against 19 µs for an item look-up); the hot paths run this way. Pending ORM changes are
    flushed first, as ``session.execute`` would."""
    if session.autoflush and (session.new or session.dirty or session.deleted):
        session.flush()
    return session.connection().execute(stmt, params)


def ping(engine: Engine) -> None:
    with engine.connect() as conn:
        conn.execute(text("SELECT 1"))
