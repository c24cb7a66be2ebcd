"""The trash: what DELETE removed, listed and restored (items, or whole collections)."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from typing import Optional

from sqlalchemy import delete, or_, select
from sqlalchemy.orm import Session

from server.crm import audit, dav
from server.crm.errors import AlreadyExists, DuplicateUid, InvalidInput, NotFound
from server.crm.models import DavTrash


@dataclass(frozen=True)
class TrashEntry:
    id: int
    kind: str
    object: str
    uid: Optional[str]
    deleted_at: str
    deleted_by: Optional[str]
    batch: str


def _object(row: DavTrash) -> str:
    return f"/{row.path}/{row.href}" if row.kind == "item" else f"/{row.path}/"


def entries(session: Session, owner: Optional[str] = None, limit: int = 200) -> list[TrashEntry]:
    """Newest first."""
    stmt = select(DavTrash).order_by(DavTrash.deleted_at.desc(), DavTrash.id.desc())
    if owner:
        stmt = stmt.where(DavTrash.owner == owner)
    return [TrashEntry(r.id, r.kind, _object(r), r.uid, _iso(r.deleted_at), r.deleted_by, r.batch)
            for r in session.scalars(stmt.limit(limit))]


def restore(session: Session, entry_id: int, actor: Optional[str]) -> list[str]:
    """Put an entry back where it was. An item needs its collection, its href and its UID
    free; a collection comes back with everything deleted with it. Returns what came back."""
    row = session.get(DavTrash, entry_id)
    if row is None:
        raise NotFound("trash entry", str(entry_id))
    restored = _restore_item(session, row) if row.kind == "item" else \
        _restore_collection(session, row)
    for obj in restored:
        kind = "item" if not obj.endswith("/") else "collection"
        audit.append(session, audit.dav_stream(row.owner), f"{kind}.restore", obj, actor=actor,
                     summary=f"restored from trash entry {entry_id}")
    return restored


def _item_data(row: DavTrash) -> dav.ItemData:
    if row.range_start is None or row.range_end is None or row.text is None:
        raise InvalidInput(f"trash entry {row.id} was written before restore was possible")
    return dav.ItemData(href=row.href, uid=row.uid or "", name=row.name or "",
                        component=row.component or "", text=row.text, etag=row.etag or "",
                        range_start=row.range_start, range_end=row.range_end, klass=row.klass)


def _restore_item(session: Session, row: DavTrash) -> list[str]:
    collection = dav.get_collection(session, row.path, for_update=True)
    if collection is None:
        raise InvalidInput(f"collection /{row.path}/ no longer exists: restore it first")
    data = _item_data(row)
    if dav.get_item(session, collection.id, row.href) is not None:
        raise AlreadyExists("item", _object(row))
    if row.uid and dav.has_uid(session, collection.id, row.uid):
        raise DuplicateUid(row.uid, "another item")
    dav.put_item(session, collection.id, data)
    session.delete(row)
    return [_object(row)]


def _restore_collection(session: Session, row: DavTrash) -> list[str]:
    """The collection and what was deleted with it (same batch, at or below its path)."""
    below = session.scalars(select(DavTrash).where(
        DavTrash.batch == row.batch,
        or_(DavTrash.path == row.path,
            DavTrash.path.startswith(row.path + "/", autoescape=True)))
        .order_by(DavTrash.path, DavTrash.id)).all()
    restored = []
    for coll in (r for r in below if r.kind == "collection"):
        if dav.get_collection(session, coll.path) is not None:
            raise AlreadyExists("collection", f"/{coll.path}/")
        state, _ = dav.create_collection(session, coll.path, json.loads(coll.props_json or "{}"))
        items = [_item_data(r) for r in below if r.kind == "item" and r.path == coll.path]
        dav.put_items(session, state.id, items)
        restored.append(f"/{coll.path}/")
    session.execute(delete(DavTrash).where(DavTrash.id.in_([r.id for r in below])))
    return restored


def _iso(value: dt.datetime) -> str:
    value = value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)
    return value.isoformat(timespec="seconds")
