"""The audit trail: who changed what, when, from where; hash-chained so tampering shows.

Records are appended in the caller's transaction (an audited change and its record commit
together). Each *stream* is its own chain (``dav:<user>`` for a user's calendars and address
books, ``admin`` for operator commands), so writers to different users' data never wait on
one global chain head; within a stream the head row is locked while appending.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterable, Iterator, Optional, Sequence

from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from server.crm.db import run
from server.crm.models import AuditRecord, AuditStream, utcnow

GENESIS = "0" * 64
ADMIN_STREAM = "admin"


def dav_stream(owner: str) -> str:
    return "dav:" + owner


def _canonical(stream: str, seq: int, at: dt.datetime, actor: Optional[str], action: str,
               obj: str, client: Optional[str], before: Optional[str], after: Optional[str],
               summary: str, prev_hash: str) -> str:
    when = at.astimezone(dt.timezone.utc).isoformat(timespec="microseconds")
    return json.dumps([stream, seq, when, actor, action, obj, client, before, after, summary,
                       prev_hash], ensure_ascii=False, separators=(",", ":"))


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


_HEAD = select(AuditStream.seq, AuditStream.head_hash).where(
    AuditStream.stream == bindparam("stream")).with_for_update()
_INSERT_RECORDS = insert(AuditRecord.__table__)
_MOVE_HEAD = update(AuditStream.__table__).where(
    AuditStream.__table__.c.stream == bindparam("s")).values(
    seq=bindparam("seq"), head_hash=bindparam("head"))


def _lock_head(session: Session, stream: str) -> tuple[int, str]:
    row = run(session, _HEAD, {"stream": stream}).first()
    if row is None:
        try:
            with session.begin_nested():
                session.execute(insert(AuditStream).values(stream=stream, seq=0,
                                                           head_hash=GENESIS))
        except IntegrityError:
            pass  # another transaction started this stream first
        row = run(session, _HEAD, {"stream": stream}).one()
    return row.seq, row.head_hash


def append(session: Session, stream: str, action: str, obj: str, *,
           actor: Optional[str] = None, client: Optional[str] = None,
           before: Optional[str] = None, after: Optional[str] = None,
           summary: str = "") -> str:
    """Append a record to ``stream``; returns its hash."""
    return append_many(session, stream, [Note(action, obj, actor, client, before, after,
                                              summary)])


@dataclass(frozen=True)
class Note:
    """One record to append: what happened to which object, by whom, from where."""
    action: str
    object: str
    actor: Optional[str] = None
    client: Optional[str] = None
    before: Optional[str] = None
    after: Optional[str] = None
    summary: str = ""


def append_many(session: Session, stream: str, notes: Sequence[Note]) -> str:
    """Append ``notes`` to ``stream`` in order, locking its head once; returns the new head."""
    seq, prev = _lock_head(session, stream)
    if not notes:
        return prev
    at = utcnow()
    rows = []
    for note in notes:
        seq += 1
        record_hash = _digest(_canonical(stream, seq, at, note.actor, note.action, note.object,
                                         note.client, note.before, note.after, note.summary,
                                         prev))
        rows.append(dict(stream=stream, seq=seq, at=at, actor=note.actor, action=note.action,
                         object=note.object, client=note.client, before_digest=note.before,
                         after_digest=note.after, summary=note.summary, prev_hash=prev,
                         hash=record_hash))
        prev = record_hash
    run(session, _INSERT_RECORDS, rows)
    run(session, _MOVE_HEAD, {"s": stream, "seq": seq, "head": prev})
    return prev


_DEFERRED = "audit.deferred"


def record(session: Session, stream: str, notes: Sequence[Note]) -> None:
    """Append ``notes`` to ``stream``: now, or inside a ``deferring`` scope when it ends."""
    pending = session.info.get(_DEFERRED)
    if pending is None:
        append_many(session, stream, notes)
    else:
        pending.extend((stream, note) for note in notes)


@contextmanager
def deferring(session: Session) -> Iterator[None]:
    """Collect what ``record`` is given in this block and append it when the block ends,
    one append per stream: a calendar PUT's own record and its CRM ingestion's records
    then lock the stream head, insert and move the head once (three statements, not six,
    and the head is held for less of the transaction). Call it inside the savepoint of the
    change: if the block fails, its records are dropped, as its rows are. A nested scope
    leaves the appending to the outermost one and drops only its own records on failure."""
    outer = session.info.get(_DEFERRED)
    if outer is not None:
        mark = len(outer)
        try:
            yield
        except BaseException:
            del outer[mark:]
            raise
        return
    pending: list[tuple[str, Note]] = []
    session.info[_DEFERRED] = pending
    try:
        yield
        by_stream: dict[str, list[Note]] = {}
        for stream, note in pending:
            by_stream.setdefault(stream, []).append(note)
        del session.info[_DEFERRED]        # appends below run as they would outside
        for stream, notes in by_stream.items():
            append_many(session, stream, notes)
    finally:
        session.info.pop(_DEFERRED, None)


@dataclass(frozen=True)
class Entry:
    id: int
    at: str
    actor: Optional[str]
    action: str
    object: str
    client: Optional[str]
    summary: str


def entries(session: Session, actor: Optional[str] = None, obj: Optional[str] = None,
            since: Optional[dt.datetime] = None, limit: int = 100) -> list[Entry]:
    """Newest first."""
    stmt = select(AuditRecord).order_by(AuditRecord.at.desc(), AuditRecord.id.desc())
    if actor:
        stmt = stmt.where(AuditRecord.actor == actor)
    if obj:
        stmt = stmt.where(AuditRecord.object.contains(obj, autoescape=True))
    if since:
        stmt = stmt.where(AuditRecord.at >= since)
    return [Entry(r.id, _aware(r.at).isoformat(timespec="seconds"), r.actor, r.action, r.object,
                  r.client, r.summary) for r in session.scalars(stmt.limit(limit))]


@dataclass(frozen=True)
class Problem:
    stream: str
    seq: Optional[int]
    record_id: Optional[int]
    message: str

    def __str__(self) -> str:
        where = f"record {self.record_id} ({self.stream} #{self.seq})" if self.record_id \
            else f"stream {self.stream}"
        return f"{where}: {self.message}"


def verify(session: Session, streams: Optional[Iterable[str]] = None
           ) -> tuple[int, list[Problem]]:
    """Recompute every chain (or those of ``streams``). Returns (records checked, problems)."""
    heads = {row.stream: (row.seq, row.head_hash)
             for row in session.execute(select(AuditStream.stream, AuditStream.seq,
                                               AuditStream.head_hash))}
    problems: list[Problem] = []
    checked = 0
    if streams is None:
        streams = set(heads) | set(session.scalars(select(AuditRecord.stream).distinct()))
    for stream in sorted(streams):
        count, found = _verify_stream(session, stream, heads.get(stream))
        checked += count
        problems += found
    return checked, problems


def _verify_stream(session: Session, stream: str, head: Optional[tuple[int, str]]
                   ) -> tuple[int, list[Problem]]:
    problems: list[Problem] = []
    expected_seq, prev = 1, GENESIS
    count = 0
    for r in _records(session, stream):
        count += 1
        if r.seq != expected_seq:
            problems.append(Problem(stream, r.seq, r.id, f"records #{expected_seq}"
                                    f"..#{r.seq - 1} before it are missing (deleted)"))
        elif r.prev_hash != prev:
            problems.append(Problem(stream, r.seq, r.id, "does not follow the previous record "
                                    "(the chain was altered before it)"))
        recomputed = _digest(_canonical(stream, r.seq, _aware(r.at), r.actor, r.action, r.object,
                                        r.client, r.before_digest, r.after_digest, r.summary,
                                        r.prev_hash))
        if recomputed != r.hash:
            problems.append(Problem(stream, r.seq, r.id, "was edited (its content no longer "
                                    "matches its hash)"))
        expected_seq, prev = r.seq + 1, r.hash
    if head is None:
        if count:
            problems.append(Problem(stream, None, None, "has records but no chain head"))
    elif head != (expected_seq - 1, prev):
        problems.append(Problem(stream, None, None, f"the chain ends at #{expected_seq - 1} "
                                f"but its head says #{head[0]}: the last records were deleted "
                                "or the head was altered"))
    return count, problems


def _records(session: Session, stream: str) -> Iterator[AuditRecord]:
    stmt = (select(AuditRecord).where(AuditRecord.stream == stream)
            .order_by(AuditRecord.seq).execution_options(yield_per=1000))
    yield from session.scalars(stmt)


def _aware(value: dt.datetime) -> dt.datetime:
    return value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)
