"""``BaseCollection`` over the store. Reads come from indexed columns, never from parsing."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import TYPE_CHECKING, Iterable, Iterator, Mapping, Optional, Tuple

from radicale import item as radicale_item
from radicale import storage
from radicale.item import filter as radicale_filter

from server.crm import dav
from server.crm.dav import CollectionState
from server.storage import mapping

if TYPE_CHECKING:
    from server.storage.plugin import Storage


class Collection(storage.BaseCollection):

    def __init__(self, storage_: "Storage", state: CollectionState) -> None:
        self._storage = storage_
        self._state = state
        self._crlf = False

    # --- identity and metadata (answered from the snapshot: valid outside the lock) -----
    @property
    def path(self) -> str:
        return self._state.path

    @property
    def id(self) -> int:
        return self._state.id

    @property
    def etag(self) -> str:
        return self._state.etag

    @property
    def last_modified(self) -> str:
        return mapping.http_date(self._state.modified_at)

    def get_meta(self, key: Optional[str] = None):
        if key is None:
            return dict(self._state.props)
        return self._state.props.get(key)

    def set_meta(self, props: Mapping[str, str]) -> None:
        with self._storage.writing() as session:
            self._state = dav.set_props(session, self._state.id, props)

    # --- reads ----------------------------------------------------------------------------
    def get_multi(self, hrefs: Iterable[str]
                  ) -> Iterable[Tuple[str, Optional[radicale_item.Item]]]:
        wanted = list(dict.fromkeys(hrefs))
        with self._storage.reading() as session:
            found = dav.get_items(session, self._state.id, wanted)
        return [(href, self._item(found[href]) if href in found else None) for href in wanted]

    def get_all(self) -> Iterator[radicale_item.Item]:
        with self._storage.reading() as session:
            for stored in dav.iter_items(session, self._state.id):
                yield self._item(stored)

    def get_filtered(self, filters: Iterable[ET.Element]
                     ) -> Iterator[Tuple[radicale_item.Item, bool]]:
        if not self.tag:
            return
        tag, start, end, simple = radicale_filter.simplify_prefilters(filters, self.tag)
        with self._storage.reading() as session:
            for stored in dav.items_in_range(session, self._state.id, tag, start, end):
                yield (self._item(stored),
                       simple and (start <= stored.range_start or stored.range_end <= end))

    def has_uid(self, uid: str) -> bool:
        with self._storage.reading() as session:
            return dav.has_uid(session, self._state.id, uid)

    def sync(self, old_token: str = "") -> Tuple[str, Iterable[str]]:
        if not old_token:
            # Lazy: PROPFIND asks for the token only and never iterates the hrefs.
            return self._state.sync_token, self._all_hrefs()
        with self._storage.reading() as session:
            state = dav.get_collection(session, self.path) or self._state
            hrefs = self._storage.translate(lambda: dav.changes_since(session, state, old_token))
        return state.sync_token, hrefs

    def _all_hrefs(self) -> Iterator[str]:
        with self._storage.reading() as session:
            yield from dav.item_hrefs(session, self._state.id)

    # --- writes ---------------------------------------------------------------------------
    def upload(self, href: str, item: radicale_item.Item
               ) -> Tuple[radicale_item.Item, Optional[radicale_item.Item]]:
        data = mapping.to_data(href, item, mapping.client_text(item))
        actor = self._storage.actor()
        with self._storage.writing() as session:
            stored, old = self._storage.translate(
                lambda: dav.put_item(session, self._state.id, data))
            self._storage.hooks.item_written(session, self._state, stored, old, actor,
                                             item.vobject_item)
        self._state = self._state.advanced(stored.revision, stored.modified_at)
        return self._item(stored), self._item(old) if old else None

    def delete(self, href: Optional[str] = None) -> None:
        actor = self._storage.actor()
        with self._storage.writing() as session:
            if href is None:
                self._storage.hooks.collection_deleting(session, self._state, actor)
                self._storage.translate(lambda: dav.delete_collection(session, self.path, actor))
                return
            old, revision, at = self._storage.translate(
                lambda: dav.delete_item(session, self._state, href, actor))
            self._storage.hooks.item_deleted(session, self._state, old, actor)
            self._storage.prune(session, self._state.id)
        self._state = self._state.advanced(revision, at)

    def serialize(self, vcf_to_ics: bool = False, ShareActions: dict = {}) -> str:
        # The base class splits each item on CRLF; a client that sent bare LF still exports.
        self._crlf = True
        try:
            return super().serialize(vcf_to_ics, ShareActions)
        finally:
            self._crlf = False

    # --- helpers --------------------------------------------------------------------------
    def _item(self, stored: dav.StoredItem) -> radicale_item.Item:
        return mapping.to_radicale(stored, self, crlf=self._crlf)

    @property
    def state(self) -> CollectionState:
        return self._state

