"""Visits: one per event UID, placed in every rep's calendar that holds it, with its
occurrences and attendance. A visit with no placement left is in the trash
(``deleted_at``); the same UID coming back restores it."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Optional, Sequence

from sqlalchemy import (Integer, String, bindparam, delete, func, insert, literal_column, null,
                        or_, select, union_all, update)
from sqlalchemy.orm import Session

from server.crm.customers import Match
from server.crm.db import run
from server.crm.errors import InvalidInput, NotFound
from server.crm.events import EventFacts
from server.crm.models import (Customer, Visit, VisitAttendance, VisitOccurrence,
                               VisitPlacement, utcnow)


@dataclass(frozen=True)
class Attendance:
    contact_id: int
    partstat: str
    role: str


@dataclass(frozen=True)
class Outcome:
    visit_id: int
    action: str                 # create / update / restore / unchanged
    changed: tuple[str, ...]    # names of the visit fields that changed
    contacts_changed: frozenset[int]
    placed: bool                # newly placed in this calendar (or for another rep)


def placement(session: Session, collection_path: str, href: str) -> Optional[VisitPlacement]:
    return session.scalar(select(VisitPlacement).where(
        VisitPlacement.collection_path == collection_path, VisitPlacement.href == href))


_V, _P, _O, _A = (m.__table__ for m in (Visit, VisitPlacement, VisitOccurrence,
                                          VisitAttendance))
_FIELDS = ("summary", "location", "start", "end", "status", "recurring")
_TAG = ("customer_id", "match_method", "match_score")
_VISIT_COLUMNS = (_V.c.id, _V.c.deleted_at, *(_V.c[f] for f in _FIELDS + _TAG))
# What a write needs first, in one statement (one round trip on PostgreSQL, not two): the
# placement at this href, with the visit it holds, and the visit of the event's UID.
_HERE_AND_CURRENT = union_all(
    select(literal_column("'here'").label("kind"), _P.c.id.label("placement_id"),
           _P.c.rep, *_VISIT_COLUMNS)
    .join_from(_P, _V, _V.c.id == _P.c.visit_id)
    .where(_P.c.collection_path == bindparam("path"), _P.c.href == bindparam("href")),
    select(literal_column("'uid'"), null().cast(Integer), null().cast(String),
           *_VISIT_COLUMNS).where(_V.c.uid == bindparam("uid")))
_INSERT_VISIT = insert(_V).returning(_V.c.id)
_INSERT_PLACEMENT = insert(_P)
_SET_REP = update(_P).where(_P.c.id == bindparam("pid")).values(rep=bindparam("new_rep"))
_OCCURRENCES = (select(_O.c.start, _O.c.end, _O.c.recurrence_id, _O.c.status)
                .where(_O.c.visit_id == bindparam("vid")).order_by(_O.c.start, _O.c.id))
_DROP_OCCURRENCES = delete(_O).where(_O.c.visit_id == bindparam("vid"))
_INSERT_OCCURRENCES = insert(_O)
_ATTENDANCE = select(_A.c.contact_id, _A.c.partstat, _A.c.role).where(
    _A.c.visit_id == bindparam("vid"))
_DROP_ATTENDANCE = delete(_A).where(_A.c.visit_id == bindparam("vid"),
                                    _A.c.contact_id.in_(bindparam("gone", expanding=True)))
_INSERT_ATTENDANCE = insert(_A)
_SET_ATTENDANCE = update(_A).where(_A.c.visit_id == bindparam("vid"),
                                   _A.c.contact_id == bindparam("cid")).values(
    partstat=bindparam("new_partstat"), role=bindparam("new_role"))


def record(session: Session, facts: EventFacts, collection_path: str, href: str, rep: str,
           match: Match, attendance: Sequence[Attendance]) -> Outcome:
    """Create, update or restore the visit of ``facts.uid`` and place it here."""
    rows = {row.kind: row for row in run(session, _HERE_AND_CURRENT, {
        "path": collection_path, "href": href, "uid": facts.uid})}
    here, current = rows.get("here"), rows.get("uid")
    if here is not None and (current is None or here.id != current.id):
        unplace(session, collection_path, href)   # the href now holds another UID
        here = None
    now = utcnow()
    values = _wanted(facts, match, current)
    if current is None:
        action, changed = "create", list(values)
        visit_id = run(session, _INSERT_VISIT, {
            "uid": facts.uid, **values, "created_at": now, "updated_at": now}).scalar_one()
    else:
        visit_id = current.id
        action = "restore" if current.deleted_at is not None else "update"
        changed = [name for name, value in values.items()
                   if _as_stored(getattr(current, name)) != value]
    placed = here is None or here.rep != rep
    if here is None:
        run(session, _INSERT_PLACEMENT, {"visit_id": visit_id, "collection_path": collection_path,
                                         "href": href, "rep": rep})
        if action == "update":
            changed.append("reps")
    elif here.rep != rep:
        run(session, _SET_REP, {"pid": here.placement_id, "new_rep": rep})
        changed.append("reps")
    fresh = action == "create"
    if _set_occurrences(session, visit_id, facts, fresh):
        changed.append("occurrences")
    contacts_changed = _set_attendance(session, visit_id, attendance, fresh)
    if contacts_changed:
        changed.append("attendees")
    if action == "update" and not changed:
        action = "unchanged"
    elif not fresh:
        fields = {name: values[name] for name in changed if name in values}
        session.execute(update(_V).where(_V.c.id == visit_id).values(
            **fields, updated_at=now, **({"deleted_at": None} if action == "restore" else {})))
    return Outcome(visit_id, action, tuple(changed), frozenset(contacts_changed), placed)


def _wanted(facts: EventFacts, match: Match, current) -> dict:
    """The visit's fields as the event says. A tag set by hand stays unless the event
    itself names a customer."""
    wanted = dict(summary=facts.summary[:4000], location=facts.location[:4000],
                  start=facts.start, end=facts.end, status=facts.status,
                  recurring=facts.recurring)
    if current is None or current.match_method != "manual" \
            or match.method in ("explicit", "category"):
        wanted.update(customer_id=match.customer_id, match_method=match.method,
                      match_score=match.score)
    return wanted


def _set_occurrences(session: Session, visit_id: int, facts: EventFacts, fresh: bool) -> bool:
    """Replace the occurrences if they differ; ``fresh``: the visit was just created."""
    wanted = [(o.start, o.end, o.recurrence_id, o.status) for o in facts.occurrences]
    if not fresh:
        current = [(_aware(r.start), _aware(r.end), r.recurrence_id, r.status)
                   for r in run(session, _OCCURRENCES, {"vid": visit_id})]
        if current == wanted:
            return False
        run(session, _DROP_OCCURRENCES, {"vid": visit_id})
    if wanted:
        run(session, _INSERT_OCCURRENCES, [dict(
            visit_id=visit_id, start=s, end=e, recurrence_id=r, status=st)
            for s, e, r, st in wanted])
    return True


def _set_attendance(session: Session, visit_id: int, attendance: Sequence[Attendance],
                    fresh: bool) -> set[int]:
    """Make the attendance ``attendance``; returns the contacts who joined or left."""
    current = {} if fresh else {r.contact_id: (r.partstat, r.role)
                                for r in run(session, _ATTENDANCE, {"vid": visit_id})}
    wanted = {a.contact_id: (a.partstat, a.role) for a in attendance}
    gone = set(current) - set(wanted)
    if gone:
        run(session, _DROP_ATTENDANCE, {"vid": visit_id, "gone": sorted(gone)})
    new = [c for c in wanted if c not in current]
    if new:
        run(session, _INSERT_ATTENDANCE, [dict(
            visit_id=visit_id, contact_id=c, partstat=wanted[c][0], role=wanted[c][1])
            for c in new])
    for contact_id in set(wanted) & set(current):
        if wanted[contact_id] != current[contact_id]:
            run(session, _SET_ATTENDANCE, {"vid": visit_id, "cid": contact_id,
                                           "new_partstat": wanted[contact_id][0],
                                           "new_role": wanted[contact_id][1]})
    return gone | set(new)


def unplace(session: Session, collection_path: str, href: str) -> Optional[tuple[int, bool]]:
    """The event left this calendar. Returns (visit id, whether it went to the trash) or
    None if no visit was placed here."""
    here = placement(session, collection_path, href)
    if here is None:
        return None
    visit_id = here.visit_id
    session.delete(here)
    session.flush()
    left = session.scalar(select(func.count()).select_from(VisitPlacement)
                          .where(VisitPlacement.visit_id == visit_id))
    if left:
        return visit_id, False
    session.execute(update(Visit).where(Visit.id == visit_id).values(deleted_at=utcnow()))
    return visit_id, True


def move(session: Session, old_path: str, old_href: str, new_path: str, new_href: str,
         rep: str) -> Optional[int]:
    """Follow the event to another href or calendar (possibly another rep's)."""
    here = placement(session, old_path, old_href)
    if here is None:
        return None
    clash = placement(session, new_path, new_href)
    if clash is not None and clash.id != here.id:
        unplace(session, new_path, new_href)
    here.collection_path, here.href, here.rep = new_path, new_href, rep
    session.flush()
    return here.visit_id


def placements_below(session: Session, path: str) -> list[tuple[str, str]]:
    """(collection path, href) of every visit placed in ``path`` or below it."""
    return [(p, h) for p, h in session.execute(select(
        VisitPlacement.collection_path, VisitPlacement.href).where(or_(
            VisitPlacement.collection_path == path,
            VisitPlacement.collection_path.startswith(path + "/", autoescape=True))))]


_REPS_OF = select(_P.c.rep).distinct().where(_P.c.visit_id == bindparam("vid"))


def reps_of(session: Session, visit_id: int) -> list[str]:
    """The reps whose calendars hold the visit."""
    return list(run(session, _REPS_OF, {"vid": visit_id}).scalars())


def attendees(session: Session, visit_id: int) -> list[int]:
    return list(session.scalars(select(VisitAttendance.contact_id)
                                .where(VisitAttendance.visit_id == visit_id)))


# --- reports and operator commands -------------------------------------------------------

@dataclass(frozen=True)
class VisitRow:
    id: int
    uid: str
    summary: str
    start: Optional[str]
    status: str
    customer: Optional[str]
    match_method: str
    match_score: Optional[int]
    reps: str
    occurrences: int
    deleted: bool


def listing(session: Session, rep: Optional[str] = None, customer_id: Optional[int] = None,
            since: Optional[dt.datetime] = None, until: Optional[dt.datetime] = None,
            untagged: bool = False, deleted: bool = False, limit: int = 1000) -> list[VisitRow]:
    """Visits (not trashed unless ``deleted``), with the number of occurrences falling in
    [since, until): a recurring visit counts every occurrence."""
    occurrences = select(VisitOccurrence.visit_id, func.count().label("n")) \
        .group_by(VisitOccurrence.visit_id)
    if since:
        occurrences = occurrences.where(VisitOccurrence.start >= since)
    if until:
        occurrences = occurrences.where(VisitOccurrence.start < until)
    occ = occurrences.subquery()
    stmt = (select(Visit, Customer.name, func.coalesce(occ.c.n, 0))
            .outerjoin(Customer, Customer.id == Visit.customer_id)
            .outerjoin(occ, occ.c.visit_id == Visit.id)
            .where(Visit.deleted_at.is_not(None) if deleted else Visit.deleted_at.is_(None))
            .order_by(Visit.start, Visit.id))
    if since or until:
        stmt = stmt.where(occ.c.n > 0)
    if rep:
        stmt = stmt.where(Visit.id.in_(select(VisitPlacement.visit_id)
                                       .where(VisitPlacement.rep == rep)))
    if customer_id is not None:
        stmt = stmt.where(Visit.customer_id == customer_id)
    if untagged:
        stmt = stmt.where(Visit.customer_id.is_(None))
    rows = session.execute(stmt.limit(limit)).all()
    reps = _reps(session, [v.id for v, _, _ in rows])
    return [VisitRow(v.id, v.uid, v.summary, _aware(v.start).isoformat() if v.start else None,
                     v.status, name, v.match_method, v.match_score,
                     ",".join(sorted(reps.get(v.id, ()))), n, v.deleted_at is not None)
            for v, name, n in rows]


def _reps(session: Session, ids: list[int]) -> dict[int, set[str]]:
    out: dict[int, set[str]] = {}
    if ids:
        for visit_id, rep in session.execute(select(VisitPlacement.visit_id, VisitPlacement.rep)
                                             .where(VisitPlacement.visit_id.in_(ids))):
            out.setdefault(visit_id, set()).add(rep)
    return out


def find(session: Session, ref: str) -> Visit:
    """By id or UID."""
    text = str(ref).strip()
    found = session.get(Visit, int(text)) if text.isdigit() else None
    found = found or session.scalar(select(Visit).where(Visit.uid == text))
    if found is None:
        raise NotFound("visit", text)
    return found


def tag(session: Session, visit: Visit, customer_id: int) -> None:
    if visit.deleted_at is not None:
        raise InvalidInput(f"visit {visit.id} is in the trash")
    visit.customer_id, visit.match_method, visit.match_score = customer_id, "manual", 100
    visit.updated_at = utcnow()
    session.flush()


def _as_stored(value):
    """A column value as it compares with what an event says (SQLite: naive UTC)."""
    return _aware(value) if isinstance(value, dt.datetime) else value


def _aware(value: Optional[dt.datetime]) -> Optional[dt.datetime]:
    if value is None:
        return None
    return value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)


def customer_titles(session: Session, uids: Sequence[str]) -> dict[str, str]:
    """The short name (else the name) of the customer each visit UID is tagged with: what a
    ``summary`` reader sees as the event's title."""
    wanted = list(dict.fromkeys(u for u in uids if u))
    out: dict[str, str] = {}
    for i in range(0, len(wanted), 500):
        rows = session.execute(
            select(Visit.uid, Customer.short_name, Customer.name)
            .join(Customer, Customer.id == Visit.customer_id)
            .where(Visit.uid.in_(wanted[i:i + 500]), Visit.deleted_at.is_(None)))
        out.update((uid, short or name) for uid, short, name in rows)
    return out
