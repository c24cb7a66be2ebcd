"""Audit records for every DAV change, written in the write's own transaction."""

from __future__ import annotations

from collections import Counter
from typing import Optional

from server import request_context
from server.crm import audit, rawtext
from server.crm.dav import CollectionState, StoredItem

# Properties clients rewrite on every save; a change in them alone is not worth naming.
_NOISE = {"DTSTAMP", "LAST-MODIFIED", "SEQUENCE", "PRODID", "X-MOZ-GENERATION",
          "X-MOZ-LASTACK", "REV"}

_client = request_context.client_address   # past trusted proxies


def changed_properties(old: str, new: str) -> list[str]:
    """Names of the properties whose lines differ between two texts, in order."""
    def lines(text: str) -> Counter:
        return Counter((line.name, line.params, line.value) for line in
                       rawtext.logical_lines(text) if line.name not in ("BEGIN", "END"))

    before, after = lines(old), lines(new)
    names = {key[0] for key in (before - after) + (after - before)}
    return sorted(names - _NOISE) or sorted(names)


def _digest(item: Optional[StoredItem]) -> Optional[str]:
    return item.etag.strip('"') if item else None


def _kind(item: StoredItem) -> str:
    return item.component or item.name or "item"


class AuditHooks:
    """Implements ``WriteHooks``: one audit record per change."""

    def _append(self, owner_path: str, action: str, obj: str, actor: Optional[str],
                session, before=None, after=None, summary: str = "") -> None:
        owner = owner_path.split("/", 1)[0]
        audit.record(session, audit.dav_stream(owner), [audit.Note(
            action, obj, actor, _client(), before, after, summary)])

    def item_written(self, session, collection: CollectionState, new: StoredItem,
                     old: Optional[StoredItem], actor: Optional[str], parsed=None) -> None:
        obj = f"/{collection.path}/{new.href}"
        if old is None:
            summary = f"created {_kind(new)} {new.uid}"
            action = "item.create"
        else:
            changed = changed_properties(old.text, new.text)
            summary = "changed " + (", ".join(changed) if changed else "nothing")
            action = "item.update"
        self._append(collection.path, action, obj, actor, session, _digest(old), _digest(new),
                     summary)

    def item_deleted(self, session, collection: CollectionState, old: StoredItem,
                     actor: Optional[str]) -> None:
        self._append(collection.path, "item.delete", f"/{collection.path}/{old.href}", actor,
                     session, _digest(old), None, f"deleted {_kind(old)} {old.uid} (to trash)")

    def item_moved(self, session, source: CollectionState, target: CollectionState,
                   old: StoredItem, new: StoredItem, actor: Optional[str]) -> None:
        src, dst = f"/{source.path}/{old.href}", f"/{target.path}/{new.href}"
        self._append(source.path, "item.move", src, actor, session, _digest(old), _digest(new),
                     f"moved to {dst}")
        if target.path.split("/", 1)[0] != source.path.split("/", 1)[0]:
            self._append(target.path, "item.move", dst, actor, session, _digest(old),
                         _digest(new), f"moved here from {src}")

    def collection_created(self, session, collection: CollectionState,
                           replaced: list[StoredItem], actor: Optional[str],
                           created=()) -> None:
        tag = collection.tag or "folder"
        if replaced:
            action, summary = "collection.replace", (f"replaced {tag}, {len(replaced)} "
                                                     "previous items to trash")
        else:
            action, summary = "collection.create", f"created {tag}"
        self._append(collection.path, action, f"/{collection.path}/", actor, session,
                     summary=summary)

    def collection_deleting(self, session, collection: CollectionState,
                            actor: Optional[str]) -> None:
        self._append(collection.path, "collection.delete", f"/{collection.path}/", actor,
                     session, summary=f"deleted {collection.tag or 'folder'} and everything "
                                      "below it (to trash)")
