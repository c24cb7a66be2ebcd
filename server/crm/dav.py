"""The DAV store: collections, items, the per-collection change log and the trash.

Pure domain code over a SQLAlchemy session (the caller owns the transaction). Paths are
sanitized collection paths without leading or trailing slash ("alice/calendar"); the root
is "". Every change of a collection's content bumps its ``revision`` by one and records the
href in the compacted change log, which is what sync tokens and CTags are made of.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import uuid
from dataclasses import dataclass
from typing import Iterable, Iterator, Mapping, Optional, Sequence

from sqlalchemy import (Row, and_, bindparam, delete, exists, func, insert, or_, select,
                        update)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, aliased

from server.crm.db import run
from server.crm.errors import AlreadyExists, InvalidSyncToken, NotFound
from server.crm.models import DavChange, DavCollection, DavItem, DavTrash, utcnow

SYNC_TOKEN_PREFIX = "http://radicale-crm/ns/sync/"
_CHUNK = 500


@dataclass(frozen=True)
class ItemData:
    """What the protocol layer hands the store for one object."""

    href: str
    uid: str
    name: str
    component: str
    text: str
    etag: str
    range_start: int
    range_end: int
    klass: Optional[str] = None
    occurrences: Optional[str] = None    # see DavItem.occurrences and occurs_in()

    def occurs_in(self, start: int, end: int) -> Optional[bool]:
        """Whether an occurrence overlaps [start, end) (RFC 4791 9.9), answered from the
        occurrence index; None when this item's occurrences are not indexed."""
        if self.occurrences is None:
            return None
        if not self.occurrences:
            return self.range_start < end and self.range_end > start
        bounds = self.occurrences.split()
        return any(int(bounds[i]) < end and int(bounds[i + 1]) > start
                   for i in range(0, len(bounds), 2))


@dataclass(frozen=True)
class StoredItem(ItemData):
    modified_at: dt.datetime = dt.datetime.min.replace(tzinfo=dt.timezone.utc)
    revision: int = 0   # the collection revision at which this item was last written


@dataclass
class CollectionState:
    """A snapshot of a collection row; cheap to read after the transaction ended."""

    id: int
    path: str
    tag: str
    props: dict
    sync_key: str
    revision: int
    pruned_revision: int
    modified_at: dt.datetime

    @property
    def etag(self) -> str:
        return '"%s-%d"' % (self.sync_key, self.revision)

    @property
    def sync_token(self) -> str:
        return "%s%s-%d" % (SYNC_TOKEN_PREFIX, self.sync_key, self.revision)

    def advanced(self, revision: int, at: dt.datetime) -> "CollectionState":
        """The snapshot after a write of ours produced ``revision`` (no re-read needed)."""
        return dataclasses.replace(self, revision=max(self.revision, revision), modified_at=at)


def parent_of(path: str) -> str:
    return path.rpartition("/")[0]


def _aware(value: dt.datetime) -> dt.datetime:
    # SQLite hands back naive datetimes; everything we store is UTC.
    return value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)


COLLECTION_COLUMNS = (DavCollection.id, DavCollection.path, DavCollection.tag,
                      DavCollection.props_json, DavCollection.sync_key, DavCollection.revision,
                      DavCollection.pruned_revision, DavCollection.modified_at)
_ITEM_COLUMNS = (DavItem.href, DavItem.uid, DavItem.name, DavItem.component, DavItem.text,
                 DavItem.etag, DavItem.range_start, DavItem.range_end,
                 DavItem.klass.label("klass"), DavItem.occurrences, DavItem.modified_at,
                 DavItem.revision)


def collection_from_row(row: Row, prefix: str = "") -> CollectionState:
    """A row of ``COLLECTION_COLUMNS`` (labelled ``<prefix><column>`` in a wider query)."""
    def col(name: str):
        return getattr(row, prefix + name)

    return CollectionState(id=col("id"), path=col("path"), tag=col("tag") or "",
                           props=json.loads(col("props_json") or "{}"),
                           sync_key=col("sync_key"), revision=col("revision"),
                           pruned_revision=col("pruned_revision"),
                           modified_at=_aware(col("modified_at")))


# Hot-path statements, built once (see db.run).
_COLLECTION_AT = select(*COLLECTION_COLUMNS).where(DavCollection.path == bindparam("path"))
_COLLECTION_AT_LOCKED = _COLLECTION_AT.with_for_update()
_COLLECTIONS_AT = select(*COLLECTION_COLUMNS).where(
    DavCollection.path.in_(bindparam("paths", expanding=True)))
_ITEM_AT = select(*_ITEM_COLUMNS).where(DavItem.collection_id == bindparam("cid"),
                                        DavItem.href == bindparam("href"))
_ITEMS_AT = select(*_ITEM_COLUMNS).where(DavItem.collection_id == bindparam("cid"),
                                         DavItem.href.in_(bindparam("hrefs", expanding=True)))
_HAS_UID = select(DavItem.id).where(DavItem.collection_id == bindparam("cid"),
                                    DavItem.uid == bindparam("uid")).limit(1)
_INSERT_ITEM = insert(DavItem.__table__)
_UPDATE_ITEM = update(DavItem.__table__).where(
    DavItem.__table__.c.collection_id == bindparam("c_id"),
    DavItem.__table__.c.href == bindparam("c_href"))
_BUMP = (update(DavCollection).where(DavCollection.id == bindparam("cid"))
         .values(revision=DavCollection.revision + 1, modified_at=bindparam("now"))
         .returning(DavCollection.revision))
_CHANGED_SINCE = select(DavChange.href).where(DavChange.collection_id == bindparam("cid"),
                                              DavChange.revision > bindparam("revision"))


def _upsert_change(dialect_name: str):
    dialect = postgresql if dialect_name == "postgresql" else sqlite
    stmt = dialect.insert(DavChange.__table__)
    return stmt.on_conflict_do_update(
        index_elements=["collection_id", "href"],
        set_=dict(revision=stmt.excluded.revision, deleted=stmt.excluded.deleted,
                  changed_at=stmt.excluded.changed_at))


_UPSERT_CHANGE = {name: _upsert_change(name) for name in ("postgresql", "sqlite")}


def _item(row: Row) -> StoredItem:
    return StoredItem(href=row.href, uid=row.uid or "", name=row.name, component=row.component,
                      text=row.text, etag=row.etag, range_start=row.range_start,
                      range_end=row.range_end, klass=row.klass, occurrences=row.occurrences,
                      modified_at=_aware(row.modified_at), revision=row.revision)


# A collection and an item of it, in one statement: what every request on an item path
# reads first (the item's path is also asked for as a collection, as Radicale does).
_ITEM_FIELDS = ("href", "uid", "name", "component", "text", "etag", "range_start",
                "range_end", "klass", "occurrences", "modified_at", "revision")
_WITH_ITEM_COLUMNS = (*COLLECTION_COLUMNS,
                      *[getattr(DavItem, f).label("item_" + f) for f in _ITEM_FIELDS])
_COLLECTIONS_AND_ITEM = (
    select(*_WITH_ITEM_COLUMNS).select_from(DavCollection)
    .outerjoin(DavItem, and_(DavItem.collection_id == DavCollection.id,
                             DavCollection.path == bindparam("parent"),
                             DavItem.href == bindparam("href")))
    .where(DavCollection.path.in_(bindparam("paths", expanding=True))))
_COLLECTIONS_AND_ITEMS = (
    select(*_WITH_ITEM_COLUMNS).select_from(DavCollection)
    .outerjoin(DavItem, and_(DavItem.collection_id == DavCollection.id,
                             DavItem.href.in_(bindparam("hrefs", expanding=True))))
    .where(DavCollection.path.in_(bindparam("paths", expanding=True))))


def get_collections_and_item(session: Session, path: str
                             ) -> tuple[dict[str, CollectionState], Optional[StoredItem]]:
    """The collections at an item's ``path`` and at its parent that exist, and the item
    at ``path`` in its parent (or None), in one query."""
    parent, _, href = path.rpartition("/")
    found, item = {}, None
    for row in run(session, _COLLECTIONS_AND_ITEM,
                   {"paths": sorted({path, parent}), "parent": parent, "href": href}):
        found[row.path] = collection_from_row(row)
        if row.item_href is not None:
            item = _item_of(row)
    return found, item


def _item_of(row: Row) -> StoredItem:
    """The item in a row of collection columns and ``item_<field>`` columns."""
    values = {f: getattr(row, "item_" + f) for f in _ITEM_FIELDS}
    values.update(uid=values["uid"] or "", modified_at=_aware(values["modified_at"]))
    return StoredItem(**values)


# --- collections -------------------------------------------------------------------------

def get_collection(session: Session, path: str, for_update: bool = False
                   ) -> Optional[CollectionState]:
    """The collection at ``path``; ``for_update`` row-locks it until commit (PostgreSQL)."""
    row = run(session, _COLLECTION_AT_LOCKED if for_update else _COLLECTION_AT,
              {"path": path}).first()
    return collection_from_row(row) if row else None


def get_collections(session: Session, paths: Iterable[str]) -> dict[str, CollectionState]:
    """The collections at ``paths`` that exist, by path (one query)."""
    wanted = set(paths)
    if not wanted:
        return {}
    rows = run(session, _COLLECTIONS_AT, {"paths": sorted(wanted)})
    return {row.path: collection_from_row(row) for row in rows}


def get_collection_by_id(session: Session, collection_id: int) -> Optional[CollectionState]:
    row = session.execute(select(*COLLECTION_COLUMNS)
                          .where(DavCollection.id == collection_id)).first()
    return collection_from_row(row) if row else None


_CHILD = aliased(DavCollection)
_COLLECTION_AND_CHILDREN = select(
    *COLLECTION_COLUMNS,
    exists().where(_CHILD.parent_path == DavCollection.path, _CHILD.path != "")
    .label("has_children")).where(DavCollection.path == bindparam("path"))


def get_collection_and_children(session: Session, path: str
                                ) -> tuple[Optional[CollectionState], bool]:
    """The collection at ``path`` (or None) and whether any collection lies inside it, in
    one query: a listing asks both, one after the other."""
    row = run(session, _COLLECTION_AND_CHILDREN, {"path": path}).first()
    return (collection_from_row(row), bool(row.has_children)) if row else (None, False)


def child_collections(session: Session, path: str) -> list[CollectionState]:
    rows = session.execute(select(*COLLECTION_COLUMNS)
                           .where(DavCollection.parent_path == path, DavCollection.path != "")
                           .order_by(DavCollection.path))
    return [collection_from_row(row) for row in rows]


def _insert_collection(session: Session, path: str, props: Mapping[str, str]) -> CollectionState:
    now = utcnow()
    values = dict(path=path, parent_path=parent_of(path), owner=path.split("/", 1)[0],
                  tag=props.get("tag", ""), props_json=json.dumps(dict(props), sort_keys=True),
                  sync_key=uuid.uuid4().hex, revision=0, pruned_revision=0,
                  created_at=now, modified_at=now)
    new_id = session.execute(insert(DavCollection).values(**values)
                             .returning(DavCollection.id)).scalar_one()
    return CollectionState(id=new_id, path=path, tag=values["tag"], props=dict(props),
                           sync_key=values["sync_key"], revision=0, pruned_revision=0,
                           modified_at=now)


def ensure_collection(session: Session, path: str) -> tuple[CollectionState, bool]:
    """The collection at ``path``, created (with missing ancestors, untagged) if absent."""
    existing = get_collection(session, path)
    if existing is not None:
        return existing, False
    if path and parent_of(path):
        ensure_collection(session, parent_of(path))
    return _insert_collection(session, path, {}), True


def create_collection(session: Session, path: str, props: Mapping[str, str],
                      actor: Optional[str] = None, replace: bool = False
                      ) -> tuple[CollectionState, list[StoredItem]]:
    """Create the collection; with ``replace``, replace an existing one's props and content.

    Returns the collection and the items it held before (moved to the trash). A replaced
    collection keeps its identity, so clients' sync tokens stay valid and see deletions.
    Without ``replace`` an existing collection is an error, never silently emptied.
    """
    existing = get_collection(session, path, for_update=True)
    if existing is None:
        if parent_of(path):
            ensure_collection(session, parent_of(path))
        return _insert_collection(session, path, props), []
    if not replace:
        raise AlreadyExists("collection", path)
    old_items = list(iter_items(session, existing.id))
    batch = uuid.uuid4().hex
    for item in old_items:
        _trash_item(session, existing, item, actor, batch)
        _record_change(session, existing.id, item.href, existing.revision + 1, deleted=True)
    for i in range(0, len(old_items), _CHUNK):
        hrefs = [item.href for item in old_items[i:i + _CHUNK]]
        session.execute(delete(DavItem).where(DavItem.collection_id == existing.id,
                                              DavItem.href.in_(hrefs)))
    return set_props(session, existing.id, props), old_items


def set_props(session: Session, collection_id: int, props: Mapping[str, str]) -> CollectionState:
    """Replace the whole property dict (Radicale merges before it calls us)."""
    session.execute(update(DavCollection).where(DavCollection.id == collection_id)
                    .values(props_json=json.dumps(dict(props), sort_keys=True),
                            tag=props.get("tag", "")))
    _bump(session, collection_id)
    row = session.execute(select(*COLLECTION_COLUMNS)
                          .where(DavCollection.id == collection_id)).one()
    return collection_from_row(row)


def delete_collection(session: Session, path: str, actor: Optional[str] = None) -> int:
    """Delete a collection and everything below it; all of it goes to the trash.

    Returns the number of items trashed.
    """
    root = get_collection(session, path)
    if root is None:
        raise NotFound("collection", path)
    prefix = path + "/" if path else ""
    rows = session.execute(select(*COLLECTION_COLUMNS).where(
        or_(DavCollection.id == root.id, DavCollection.path.startswith(prefix, autoescape=True))
        if path else DavCollection.path != "")).all()
    batch, count = uuid.uuid4().hex, 0
    for coll in map(collection_from_row, rows):
        session.add(DavTrash(batch=batch, kind="collection", path=coll.path,
                             owner=coll.path.split("/", 1)[0], tag=coll.tag,
                             props_json=json.dumps(coll.props, sort_keys=True), deleted_by=actor))
        for item in iter_items(session, coll.id):
            _trash_item(session, coll, item, actor, batch)
            count += 1
        session.execute(delete(DavChange).where(DavChange.collection_id == coll.id))
        session.execute(delete(DavItem).where(DavItem.collection_id == coll.id))
        session.execute(delete(DavCollection).where(DavCollection.id == coll.id))
    return count


# --- items ---------------------------------------------------------------------------------

def get_item(session: Session, collection_id: int, href: str) -> Optional[StoredItem]:
    row = run(session, _ITEM_AT, {"cid": collection_id, "href": href}).first()
    return _item(row) if row else None


def get_items(session: Session, collection_id: int, hrefs: Iterable[str]) -> dict[str, StoredItem]:
    wanted = list(dict.fromkeys(hrefs))
    found: dict[str, StoredItem] = {}
    for i in range(0, len(wanted), _CHUNK):
        rows = run(session, _ITEMS_AT, {"cid": collection_id, "hrefs": wanted[i:i + _CHUNK]})
        found.update((row.href, _item(row)) for row in rows)
    return found


def get_collections_and_items(session: Session, wanted: Mapping[str, Iterable[str]]
                              ) -> tuple[dict[str, CollectionState],
                                         dict[str, dict[str, StoredItem]]]:
    """The collections at the paths of ``wanted`` (path → hrefs) that exist, and the items
    found at those hrefs in each (path → href → item), in one query: where the same cards
    are published in a few books, the books and their cards are read together."""
    wanted = {path: set(hrefs) for path, hrefs in wanted.items()}
    found: dict[str, CollectionState] = {}
    items: dict[str, dict[str, StoredItem]] = {}
    if not wanted:
        return found, items
    every = sorted(set().union(*wanted.values()))
    for i in range(0, max(len(every), 1), _CHUNK):
        for row in run(session, _COLLECTIONS_AND_ITEMS, {"paths": sorted(wanted),
                                                         "hrefs": every[i:i + _CHUNK]}):
            if row.path not in found:       # a collection comes on each of its items' rows
                found[row.path] = collection_from_row(row)
            here = items.setdefault(row.path, {})
            if row.item_href is not None and row.item_href in wanted[row.path]:
                here[row.item_href] = _item_of(row)
    return found, items


def iter_items(session: Session, collection_id: int) -> Iterator[StoredItem]:
    stmt = (select(*_ITEM_COLUMNS).where(DavItem.collection_id == collection_id)
            .order_by(DavItem.href).execution_options(yield_per=_CHUNK))
    for row in session.execute(stmt):
        yield _item(row)


def items_in_range(session: Session, collection_id: int, component: Optional[str],
                   start: int, end: int) -> Iterator[StoredItem]:
    """Items whose occurrence span overlaps [start, end): the indexed candidate query.

    Fetched whole, not streamed: on PostgreSQL ``yield_per`` declares a server-side
    cursor, which is planned for its first 10 % of rows (``cursor_tuple_fraction``). For
    ``ORDER BY href`` that plan walked the (collection, href) index and filtered every
    item of the calendar (9,827 of 10,000 rows thrown away for a 1 % range, 15 ms) instead
    of reading the time-range index and sorting the few candidates (under 2 ms). The
    caller keeps every hit for its answer anyway."""
    conditions = [DavItem.collection_id == collection_id, DavItem.range_start < end,
                  DavItem.range_end > start]
    if component is not None:
        conditions.append(DavItem.component == component)
    stmt = select(*_ITEM_COLUMNS).where(and_(*conditions)).order_by(DavItem.href)
    for row in session.execute(stmt):
        yield _item(row)


@dataclass(frozen=True)
class ListedItem:
    """What a listing of a collection says of an item: no text."""

    href: str
    name: str
    component: str
    etag: str
    modified_at: dt.datetime


_LISTING = select(DavItem.href, DavItem.name, DavItem.component, DavItem.etag,
                  DavItem.modified_at).where(DavItem.collection_id == bindparam("cid"))
_LISTING_ALL = _LISTING.order_by(DavItem.href).execution_options(yield_per=_CHUNK)
_LISTING_OF = _LISTING.where(DavItem.href.in_(bindparam("hrefs", expanding=True)))


def _listed(row: Row) -> ListedItem:
    return ListedItem(row.href, row.name, row.component or "", row.etag,
                      _aware(row.modified_at))


def list_items(session: Session, collection_id: int) -> Iterator[ListedItem]:
    """Every item of a collection, by href, without its text (PROPFIND depth 1, sync)."""
    for row in run(session, _LISTING_ALL, {"cid": collection_id}):
        yield _listed(row)


def list_items_at(session: Session, collection_id: int, hrefs: Sequence[str]
                  ) -> dict[str, ListedItem]:
    found: dict[str, ListedItem] = {}
    for i in range(0, len(hrefs), _CHUNK):
        for row in run(session, _LISTING_OF, {"cid": collection_id,
                                             "hrefs": list(hrefs[i:i + _CHUNK])}):
            found[row.href] = _listed(row)
    return found


def item_hrefs(session: Session, collection_id: int) -> list[str]:
    return list(session.scalars(select(DavItem.href).where(DavItem.collection_id == collection_id)
                                .order_by(DavItem.href)))


def has_uid(session: Session, collection_id: int, uid: str) -> bool:
    return run(session, _HAS_UID, {"cid": collection_id, "uid": uid}).first() is not None


def put_item(session: Session, collection_id: int, data: ItemData,
             old: Optional[StoredItem] = None, old_known: bool = False
             ) -> tuple[StoredItem, Optional[StoredItem]]:
    """Create or replace the item at ``data.href``. Returns (stored, replaced or None).
    ``old_known``: the caller read the item at that href in this transaction, under the
    write lock (``old``, None if there was none), so it is not read again."""
    if not old_known:
        old = get_item(session, collection_id, data.href)
    revision, now = _bump(session, collection_id)
    row = _item_row(collection_id, data, revision, now)
    run(session, _INSERT_ITEM if old is None else _UPDATE_ITEM,
        row if old is None else _update_params(row))
    _record_change(session, collection_id, data.href, revision, deleted=False, now=now)
    stored = StoredItem(**{**data.__dict__, "modified_at": now, "revision": revision})
    return stored, old


def put_items(session: Session, collection_id: int, items: Sequence[ItemData],
              existing: Iterable[str] = ()) -> int:
    """Write many items under one revision: inserted, or replaced where their href is in
    ``existing`` (the caller has read them). A whole-collection import, a batch of cards."""
    return put_items_in(session, {collection_id: items}, {collection_id: existing})


def put_items_in(session: Session, batches: Mapping[int, Sequence[ItemData]],
                 existing: Optional[Mapping[int, Iterable[str]]] = None) -> int:
    """``put_items`` for several collections (collection id → items; ``existing``: collection
    id → hrefs to replace), each under a revision of its own, bumped in the order given
    (callers keep one order: those row locks are held to the commit). The rows of all
    collections are written together: one INSERT, one UPDATE and one change-log upsert at
    most, not one of each per collection."""
    rows, hrefs = [], []
    replace = set()
    for collection_id, items in batches.items():
        if not items:
            continue
        revision, now = _bump(session, collection_id)
        rows += [_item_row(collection_id, d, revision, now) for d in items]
        replace.update((collection_id, h) for h in (existing or {}).get(collection_id, ()))
        hrefs.append((collection_id, [d.href for d in items], revision, now))
    new = [r for r in rows if (r["collection_id"], r["href"]) not in replace]
    old = [_update_params(r) for r in rows if (r["collection_id"], r["href"]) in replace]
    for i in range(0, len(new), _CHUNK):
        run(session, _INSERT_ITEM, new[i:i + _CHUNK])
    if old:
        run(session, _UPDATE_ITEM, old)
    _record_changes_in(session, [
        dict(collection_id=collection_id, href=h, revision=revision, deleted=False,
             changed_at=now)
        for collection_id, names, revision, now in hrefs for h in dict.fromkeys(names)])
    return len(rows)


def _item_row(collection_id: int, d: ItemData, revision: int, now: dt.datetime) -> dict:
    """The ``dav_items`` row (by column name: ``class``, not ``klass``)."""
    return {"collection_id": collection_id, "href": d.href, "uid": d.uid or None,
            "name": d.name, "component": d.component, "text": d.text, "etag": d.etag,
            "range_start": d.range_start, "range_end": d.range_end, "class": d.klass,
            "occurrences": d.occurrences,
            "revision": revision, "modified_at": now}


def _update_params(row: dict) -> dict:
    """``_UPDATE_ITEM``'s parameters: the row, keyed by ``c_id``/``c_href``."""
    params = {k: v for k, v in row.items() if k not in ("collection_id", "href")}
    return {**params, "c_id": row["collection_id"], "c_href": row["href"]}


def delete_item(session: Session, collection: CollectionState, href: str,
                actor: Optional[str] = None, trash: bool = True
                ) -> tuple[StoredItem, int, dt.datetime]:
    """Delete (to the trash, unless the item is generated and ``trash`` is off). Returns the
    item and the revision and time of its tombstone."""
    old = get_item(session, collection.id, href)
    if old is None:
        raise NotFound("item", f"{collection.path}/{href}")
    if trash:
        _trash_item(session, collection, old, actor, uuid.uuid4().hex)
    session.execute(delete(DavItem).where(DavItem.collection_id == collection.id,
                                          DavItem.href == href))
    revision, now = _bump(session, collection.id)
    _record_change(session, collection.id, href, revision, deleted=True, now=now)
    return old, revision, now


def move_item(session: Session, source: CollectionState, href: str, target: CollectionState,
              to_href: str) -> tuple[StoredItem, StoredItem, Optional[StoredItem]]:
    """Move an item (same or other collection); an item at the target href is replaced.

    Returns (the item before, the item after, the item replaced at the target or None).
    """
    item = get_item(session, source.id, href)
    if item is None:
        raise NotFound("item", f"{source.path}/{href}")
    if source.id == target.id and href == to_href:
        return item, item, None
    session.execute(delete(DavItem).where(DavItem.collection_id == source.id,
                                          DavItem.href == href))
    revision, now = _bump(session, source.id)
    _record_change(session, source.id, href, revision, deleted=True, now=now)
    moved = ItemData(**{**{k: v for k, v in item.__dict__.items()
                           if k not in ("modified_at", "revision")}, "href": to_href})
    new, replaced = put_item(session, target.id, moved)
    return item, new, replaced


# --- sync ------------------------------------------------------------------------------------

def parse_sync_token(token: str) -> tuple[str, int]:
    if not token.startswith(SYNC_TOKEN_PREFIX):
        raise InvalidSyncToken(token, "not issued by this server")
    key, sep, rev = token[len(SYNC_TOKEN_PREFIX):].rpartition("-")
    if not sep or not key or not rev.isdigit():
        raise InvalidSyncToken(token, "malformed")
    return key, int(rev)


def changes_since(session: Session, collection: CollectionState, old_token: str) -> list[str]:
    """Hrefs created, changed or deleted since ``old_token`` (O(changes), indexed)."""
    key, revision = parse_sync_token(old_token)
    if key != collection.sync_key:
        raise InvalidSyncToken(old_token, "issued for another collection")
    if revision > collection.revision:
        raise InvalidSyncToken(old_token, "from the future")
    if revision < collection.pruned_revision:
        raise InvalidSyncToken(old_token, "too old, its deletions have been pruned")
    if revision == collection.revision:
        return []
    return list(run(session, _CHANGED_SINCE, {"cid": collection.id, "revision": revision})
                .scalars())


def prune_tombstones(session: Session, collection_id: int, older_than: dt.datetime) -> int:
    """Forget deletions older than ``older_than``; tokens from before them become invalid."""
    condition = and_(DavChange.collection_id == collection_id, DavChange.deleted.is_(True),
                     DavChange.changed_at < older_than)
    newest = session.scalar(select(func.max(DavChange.revision)).where(condition))
    if newest is None:
        return 0
    result = session.execute(delete(DavChange).where(condition))
    session.execute(update(DavCollection).where(DavCollection.id == collection_id,
                                                DavCollection.pruned_revision < newest)
                    .values(pruned_revision=newest))
    return result.rowcount or 0


# --- internals -------------------------------------------------------------------------------

def _bump(session: Session, collection_id: int) -> tuple[int, dt.datetime]:
    """Next revision of the collection; the UPDATE row-locks it until commit."""
    now = utcnow()
    revision = run(session, _BUMP, {"cid": collection_id, "now": now}).scalar_one()
    return revision, now


def _record_change(session: Session, collection_id: int, href: str, revision: int,
                   deleted: bool, now: Optional[dt.datetime] = None) -> None:
    _record_changes(session, collection_id, [href], revision, deleted, now or utcnow())


def _record_changes(session: Session, collection_id: int, hrefs: Sequence[str], revision: int,
                    deleted: bool, now: dt.datetime) -> None:
    """Upsert the change log rows of ``hrefs`` (one statement, executemany for several)."""
    _record_changes_in(session, [dict(collection_id=collection_id, href=h, revision=revision,
                                      deleted=deleted, changed_at=now)
                                 for h in dict.fromkeys(hrefs)])


def _record_changes_in(session: Session, rows: Sequence[dict]) -> None:
    """Upsert change log rows (of one collection or several; no (collection, href) twice)."""
    stmt = _UPSERT_CHANGE[session.get_bind().dialect.name]
    for i in range(0, len(rows), _CHUNK):
        run(session, stmt, rows[i:i + _CHUNK])


def _trash_item(session: Session, collection: CollectionState, item: StoredItem,
                actor: Optional[str], batch: str) -> None:
    session.add(DavTrash(batch=batch, kind="item", path=collection.path,
                         owner=collection.path.split("/", 1)[0], href=item.href,
                         uid=item.uid or None, tag=collection.tag, text=item.text,
                         name=item.name, component=item.component, etag=item.etag,
                         range_start=item.range_start, range_end=item.range_end,
                         klass=item.klass, deleted_by=actor))

