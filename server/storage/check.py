"""``crm-admin db check``: the store's invariants, verified on any database.

What a crash, a killed process or a database outage must never leave behind, and what the
fault tests assert after each fault:

* **items**: every stored text parses, and its indexed columns (UID, object and component
  name, ETag, time range, CLASS) are what the storage plugin derives from that text; no text
  holds a recurrence rule the server now refuses (``server.crm.recurrence``: one stored
  before that check would make every reader spin, this check included, so it is not parsed);
* **sync**: every item has its change-log row at the item's own revision, every change-log
  row marked present has its item, and no collection's revision is behind its change log;
* **visits**: every placement points at a live item with the visit's UID, every live visit
  is placed somewhere, and a visit in the trash is placed nowhere (``cards`` relies on it);
* **cards**: every published contact card has its item in its CRM address book;
* **audit**: every hash chain verifies (``server.crm.audit.verify``).

It lives beside the storage plugin, not in ``server.crm``, because "the indexed columns are
right" means "what Radicale's parser makes of the text", and the CRM domain does not import
Radicale. Everything is read in one transaction, items streamed in batches.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Iterator, Optional

from radicale import item as radicale_item
from sqlalchemy import text
from sqlalchemy.orm import Session

from server import vobject_tz
from server.crm import audit, cards, recurrence
from server.storage import mapping

vobject_tz.install()   # the storage plugin's time-zone handling: same time ranges as stored

CHECKS = ("items", "sync", "visits", "cards", "audit")
# Radicale's default [server] max_vevent_rrule_occurrence: the limit PUTs are held to
RRULE_LIMIT = 10000


@dataclass(frozen=True)
class Violation:
    check: str
    where: str
    message: str

    def __str__(self) -> str:
        return f"{self.check}: {self.where}: {self.message}"


@dataclass
class Report:
    checked: Counter = field(default_factory=Counter)
    violations: list[Violation] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.violations


def check(session: Session, skip: tuple[str, ...] = ()) -> Report:
    report = Report()
    for name in CHECKS:
        if name not in skip:
            for violation in _CHECKERS[name](session, report.checked):
                report.violations.append(violation)
    return report


# --- items -----------------------------------------------------------------------------------

_ITEMS = text("""
    SELECT c.path, i.href, i.uid, i.name, i.component, i.text, i.etag, i.range_start,
           i.range_end, i."class", i.occurrences
    FROM dav_items i JOIN dav_collections c ON c.id = i.collection_id
    ORDER BY i.id""")
_FIELDS = ("uid", "name", "component", "etag", "range_start", "range_end", "klass")


def _items(session: Session, checked: Counter) -> Iterator[Violation]:
    checked["items"] += 0
    rows = session.execute(_ITEMS.execution_options(yield_per=500))
    for path, href, uid, name, component, item_text, etag, start, end, klass, occurrences \
            in rows:
        checked["items"] += 1
        where = f"/{path}/{href}"
        why = recurrence.problem(item_text, RRULE_LIMIT)
        if why:
            yield Violation("items", where, "its recurrence rule would make every reader "
                            "spin, so it was not parsed: " + why)
            continue
        try:
            derived = mapping.to_data(href, radicale_item.Item(collection_path=path,
                                                               text=item_text), text=item_text)
        except Exception as e:
            yield Violation("items", where, "its text does not parse: " + _one_line(e))
            continue
        stored = dict(uid=uid or "", name=name, component=component or "", etag=etag,
                      range_start=start, range_end=end, klass=klass)
        if occurrences is not None and occurrences != derived.occurrences:
            # NULL is "not indexed" (rows older than the index): parsed when queried.
            yield Violation("items", where, f"indexed occurrences are {occurrences[:60]!r} "
                            f"but its text gives {(derived.occurrences or '')[:60]!r}")
        for column in _FIELDS:
            want = getattr(derived, column)
            if column in ("uid", "component"):
                want = want or ""
            if stored[column] != want:
                yield Violation("items", where, f"indexed {column} is {stored[column]!r} but "
                                f"its text gives {want!r}")


# --- sync counters and change logs -------------------------------------------------------------

_ITEM_WITHOUT_CHANGE = text("""
    SELECT c.path, i.href, i.revision, ch.revision, ch.deleted
    FROM dav_items i JOIN dav_collections c ON c.id = i.collection_id
    LEFT JOIN dav_changes ch ON ch.collection_id = i.collection_id AND ch.href = i.href
    WHERE ch.id IS NULL OR ch.deleted OR ch.revision <> i.revision""")
_CHANGE_WITHOUT_ITEM = text("""
    SELECT c.path, ch.href, ch.revision
    FROM dav_changes ch JOIN dav_collections c ON c.id = ch.collection_id
    LEFT JOIN dav_items i ON i.collection_id = ch.collection_id AND i.href = ch.href
    WHERE NOT ch.deleted AND i.id IS NULL""")
_COLLECTION_BEHIND = text("""
    SELECT c.path, c.revision, c.pruned_revision,
           (SELECT max(ch.revision) FROM dav_changes ch WHERE ch.collection_id = c.id),
           (SELECT max(i.revision) FROM dav_items i WHERE i.collection_id = c.id)
    FROM dav_collections c""")


def _sync(session: Session, checked: Counter) -> Iterator[Violation]:
    checked["collections"] += 0
    for path, href, revision, logged, deleted in session.execute(_ITEM_WITHOUT_CHANGE):
        where = f"/{path}/{href}"
        if logged is None:
            yield Violation("sync", where, "the item has no change-log row: sync-collection "
                            "never reports it")
        elif deleted:
            yield Violation("sync", where, "the change log says deleted but the item exists")
        else:
            yield Violation("sync", where, f"the item is at revision {revision} but its "
                            f"change-log row at {logged}")
    for path, href, revision in session.execute(_CHANGE_WITHOUT_ITEM):
        yield Violation("sync", f"/{path}/{href}", f"the change log has it present at "
                        f"revision {revision} but there is no such item")
    for path, revision, pruned, max_change, max_item in session.execute(_COLLECTION_BEHIND):
        checked["collections"] += 1
        newest = max(max_change or 0, max_item or 0)
        if newest > revision:
            yield Violation("sync", f"/{path}/", f"the collection is at revision {revision} "
                            f"but holds changes of revision {newest}: sync tokens would repeat")
        if pruned > revision:
            yield Violation("sync", f"/{path}/", f"pruned up to revision {pruned}, past its "
                            f"revision {revision}")


# --- visits ------------------------------------------------------------------------------------

_PLACEMENTS = text("""
    SELECT v.id, v.uid, v.deleted_at IS NOT NULL, p.collection_path, p.href, i.uid, i.id
    FROM crm_visit_placements p JOIN crm_visits v ON v.id = p.visit_id
    LEFT JOIN dav_collections c ON c.path = p.collection_path
    LEFT JOIN dav_items i ON i.collection_id = c.id AND i.href = p.href""")
_UNPLACED_LIVE = text("""
    SELECT v.id, v.uid FROM crm_visits v
    WHERE v.deleted_at IS NULL
      AND NOT EXISTS (SELECT 1 FROM crm_visit_placements p WHERE p.visit_id = v.id)""")
_VISITS = text("SELECT count(*) FROM crm_visits")


def _visits(session: Session, checked: Counter) -> Iterator[Violation]:
    checked["visits"] += session.execute(_VISITS).scalar_one()
    for visit_id, uid, trashed, path, href, item_uid, item_id in session.execute(_PLACEMENTS):
        where = f"visit {visit_id} ({uid}) at /{path}/{href}"
        if trashed:
            yield Violation("visits", where, "the visit is in the trash but still placed")
        if item_id is None:
            yield Violation("visits", where, "placed at an item that does not exist")
        elif item_uid != uid:
            yield Violation("visits", where, f"the item there has UID {item_uid!r}")
    for visit_id, uid in session.execute(_UNPLACED_LIVE):
        yield Violation("visits", f"visit {visit_id} ({uid})", "live but placed in no "
                        "calendar (it should be in the trash)")


# --- published contact cards -------------------------------------------------------------------

_CARDS = text("""
    SELECT cc.contact_id, c.path, i.id
    FROM crm_contact_cards cc JOIN dav_collections c ON c.id = cc.collection_id
    LEFT JOIN dav_items i ON i.collection_id = cc.collection_id AND i.href = :prefix
         || CAST(cc.contact_id AS VARCHAR(20)) || :suffix""")


def _cards(session: Session, checked: Counter) -> Iterator[Violation]:
    checked["cards"] += 0
    prefix, suffix = cards.href_of(0).split("0")
    for contact_id, path, item_id in session.execute(_CARDS, {"prefix": prefix,
                                                              "suffix": suffix}):
        checked["cards"] += 1
        if item_id is None:
            yield Violation("cards", f"/{path}/{cards.href_of(contact_id)}",
                            f"contact {contact_id} is published here but the card is missing")


# --- audit -------------------------------------------------------------------------------------

def _audit(session: Session, checked: Counter) -> Iterator[Violation]:
    count, problems = audit.verify(session)
    checked["audit records"] += count
    for problem in problems:
        where, _, message = str(problem).partition(": ")
        yield Violation("audit", where, message)


_CHECKERS = {"items": _items, "sync": _sync, "visits": _visits, "cards": _cards,
             "audit": _audit}


def _one_line(error: BaseException, limit: int = 200) -> str:
    cause: Optional[BaseException] = error.__cause__ or error
    return " ".join(str(cause).split())[:limit] or type(cause).__name__
