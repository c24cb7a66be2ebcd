"""CRM ingestion as storage hooks: adapts ``WriteHooks`` calls to ``server.crm.ingest``."""

from __future__ import annotations

from typing import Callable, Optional

from sqlalchemy.exc import IntegrityError

from server import request_context
from server.crm import audit
from server.crm.errors import AlreadyExists
from server.crm.dav import CollectionState, StoredItem
from server.crm.ingest import Ingestion
from server.crm.settings import CrmSettings

_client = request_context.client_address   # past trusted proxies


def _settled(session, call: Callable[[], None]) -> None:
    """Run ``call`` in a savepoint; if a concurrent transaction inserted the same contact
    address or visit UID first (a unique violation once it committed), run it once more:
    it now finds that row instead of creating it (the same holds when the row appeared
    between our look-up and our insert). SQLite serialises writers, so this only
    happens on PostgreSQL, typically when one invitation reaches two reps' calendars at once."""
    try:
        with session.begin_nested(), audit.deferring(session):
            call()
    except (IntegrityError, AlreadyExists):
        # AlreadyExists: the other transaction committed between our look-up and insert.
        with session.begin_nested(), audit.deferring(session):
            call()


class CrmHooks:
    """Implements ``WriteHooks``: contacts, customer tagging and visits from calendar data."""

    def __init__(self, settings: CrmSettings) -> None:
        self.ingestion = Ingestion(settings)

    def item_written(self, session, collection: CollectionState, new: StoredItem,
                     old: Optional[StoredItem], actor: Optional[str], parsed=None) -> None:
        if collection.tag == "VCALENDAR":
            _settled(session, lambda: self.ingestion.item_written(
                session, collection.path, new.href, new.text, actor, _client(), parsed))

    def item_deleted(self, session, collection: CollectionState, old: StoredItem,
                     actor: Optional[str]) -> None:
        _settled(session, lambda: self.ingestion.item_removed(
            session, collection.path, old.href, actor, _client()))

    def item_moved(self, session, source: CollectionState, target: CollectionState,
                   old: StoredItem, new: StoredItem, actor: Optional[str]) -> None:
        if target.tag == "VCALENDAR":
            self.ingestion.item_moved(session, source.path, old.href, target.path, new.href,
                                      actor, _client())
        else:
            self.ingestion.item_removed(session, source.path, old.href, actor, _client())

    def collection_created(self, session, collection: CollectionState,
                           replaced: list[StoredItem], actor: Optional[str],
                           created=()) -> None:
        if "/" not in collection.path and not collection.tag:
            self.ingestion.principal_created(session, collection.path)
            return
        for old in replaced:
            self.ingestion.item_removed(session, collection.path, old.href, actor, _client())
        if collection.tag == "VCALENDAR":
            for item in created:
                self.ingestion.item_written(session, collection.path, item.href, item.text,
                                            actor, _client())

    def collection_deleting(self, session, collection: CollectionState,
                            actor: Optional[str]) -> None:
        self.ingestion.collection_removed(session, collection.path, actor, _client())
