"""CRM effects of DAV writes: the contract the storage plugin calls, in the write transaction.

Every mutating storage method calls one of these with the open session, inside the same
savepoint as the write itself: if a hook raises, the write is rolled back with it and the
client gets an error, never a stored-but-failed reply. Hooks get domain objects only
(``CollectionState``, ``StoredItem``), never Radicale's; ``parsed`` is the object the
protocol layer already parsed (a vobject component), so the CRM need not parse it again.

``NoHooks`` is the store without CRM effects; ``Hooks`` runs several in order (the audit
record of the DAV change first, then CRM ingestion).
"""

from __future__ import annotations

from typing import Any, Optional, Protocol, Sequence

from sqlalchemy.orm import Session

from server.crm.dav import CollectionState, StoredItem


class WriteHooks(Protocol):
    def item_written(self, session: Session, collection: CollectionState, new: StoredItem,
                     old: Optional[StoredItem], actor: Optional[str],
                     parsed: Any = None) -> None:
        """An item was created (``old`` is None) or replaced."""

    def item_deleted(self, session: Session, collection: CollectionState, old: StoredItem,
                     actor: Optional[str]) -> None:
        """An item was deleted (it is in the trash)."""

    def item_moved(self, session: Session, source: CollectionState, target: CollectionState,
                   old: StoredItem, new: StoredItem, actor: Optional[str]) -> None:
        """An item moved to another href and/or collection."""

    def collection_created(self, session: Session, collection: CollectionState,
                           replaced: list[StoredItem], actor: Optional[str],
                           created: Sequence[StoredItem] = ()) -> None:
        """A collection was created or replaced: a whole-collection PUT lists the items it
        replaced (now in the trash) and the items it created."""

    def collection_deleting(self, session: Session, collection: CollectionState,
                            actor: Optional[str]) -> None:
        """A collection and everything below it is about to be deleted."""


class NoHooks:
    """The DAV store alone: no CRM effects."""

    def item_written(self, session, collection, new, old, actor, parsed=None) -> None:
        pass

    def item_deleted(self, session, collection, old, actor) -> None:
        pass

    def item_moved(self, session, source, target, old, new, actor) -> None:
        pass

    def collection_created(self, session, collection, replaced, actor, created=()) -> None:
        pass

    def collection_deleting(self, session, collection, actor) -> None:
        pass


class Hooks:
    """Several hooks, called in order."""

    def __init__(self, *hooks: WriteHooks) -> None:
        self.hooks = list(hooks)

    def item_written(self, session, collection, new, old, actor, parsed=None) -> None:
        for hook in self.hooks:
            hook.item_written(session, collection, new, old, actor, parsed)

    def item_deleted(self, session, collection, old, actor) -> None:
        for hook in self.hooks:
            hook.item_deleted(session, collection, old, actor)

    def item_moved(self, session, source, target, old, new, actor) -> None:
        for hook in self.hooks:
            hook.item_moved(session, source, target, old, new, actor)

    def collection_created(self, session, collection, replaced, actor, created=()) -> None:
        for hook in self.hooks:
            hook.collection_created(session, collection, replaced, actor, created)

    def collection_deleting(self, session, collection, actor) -> None:
        for hook in self.hooks:
            hook.collection_deleting(session, collection, actor)
