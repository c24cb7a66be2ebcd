"""``BaseCollection`` over the store. Reads come from indexed columns, never from parsing.

A collection object is seen by one user: unless that user owns it (or is an admin), items
are narrowed to the level the rights policy gives (``busy``/``summary`` are served as
redacted copies, each with its own ETag), and items a user saw only redacted cannot be
overwritten, deleted or moved by them. A collection shared with a user is also presented
in their home, as ``<home>/shared-<id>``, named after its owner.
"""

from __future__ import annotations

import dataclasses
import itertools
import xml.etree.ElementTree as ET
from http import client
from typing import TYPE_CHECKING, Iterable, Iterator, Mapping, Optional, Tuple

from radicale import item as radicale_item
from radicale import storage
from radicale.item import filter as radicale_filter

from server import request_context
from server.crm import dav, redaction, visits
from server.crm.dav import CollectionState
from server.rights import policy
from server.rights.policy import Decision
from server.storage import mapping

if TYPE_CHECKING:
    from server.storage.plugin import Storage


class Collection(storage.BaseCollection):

    def __init__(self, storage_: "Storage", state: CollectionState,
                 presented_path: Optional[str] = None, view: Optional[Decision] = None) -> None:
        self._storage = storage_
        self._state = state
        self._presented = presented_path
        self._view = view
        self._crlf = False

    # --- identity and metadata (answered from the snapshot: valid outside the lock) -----
    @property
    def path(self) -> str:
        return self._presented or self._state.path

    @property
    def is_mirror(self) -> bool:
        return self._presented is not None

    @property
    def owner(self) -> str:
        """The real owner, also where the collection is presented in a sharee's home
        (PROPFIND's DAV:owner)."""
        return self._state.path.split("/", 1)[0]

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
        props = dict(self._state.props)
        if self.is_mirror:
            owner, _, name = self._state.path.partition("/")
            props["D:displayname"] = f"{props.get('D:displayname') or name} ({owner})"
        return props if key is None else props.get(key)

    def set_meta(self, props: Mapping[str, str]) -> None:
        if self.is_mirror:  # the rights plugin locks them ("l"); never write the owner's
            self.refuse(f"the properties of a shared collection are its owner's; "
                         f"see /{self._state.path}/")
        with self._storage.writing() as session:
            self._state = dav.set_props(session, self._state.id, props)

    # --- reads ----------------------------------------------------------------------------
    def get_multi(self, hrefs: Iterable[str]
                  ) -> Iterable[Tuple[str, Optional[radicale_item.Item]]]:
        wanted = list(dict.fromkeys(hrefs))
        with self._storage.reading() as session:
            found = dav.get_items(session, self._state.id, wanted)
            items = dict(zip(found, self.visible(session, list(found.values()))))
        return [(href, items.get(href)) for href in wanted]

    def get_all(self) -> Iterator[radicale_item.Item]:
        with self._storage.reading() as session:
            for chunk in chunks(dav.iter_items(session, self._state.id)):
                yield from self.visible(session, chunk)

    def get_filtered(self, filters: Iterable[ET.Element]
                     ) -> Iterator[Tuple[radicale_item.Item, bool]]:
        if not self.tag:
            return
        tag, start, end, simple = radicale_filter.simplify_prefilters(filters, self.tag)
        with self._storage.reading() as session:
            for chunk in chunks(dav.items_in_range(session, self._state.id, tag, start, end)):
                for stored, item in zip(chunk, self.visible(session, chunk)):
                    if not simple or tag is None:
                        # A filter the index does not decide (or a time-range on the
                        # VCALENDAR itself): Radicale's own pre-filter answer, and its full
                        # test for the rest.
                        yield item, simple and (start <= stored.range_start
                                                or stored.range_end <= end)
                        continue
                    if start <= stored.range_start or stored.range_end <= end:
                        # An item starting or ending inside the range has an occurrence in
                        # it (Radicale's own test).
                        yield item, True
                        continue
                    # A span around the range: a series may have no occurrence in it. The
                    # index answers; an item without one is parsed and tested by Radicale.
                    occurs = stored.occurs_in(start, end)
                    if occurs is None:
                        yield item, False
                    elif occurs:
                        yield item, True

    def has_uid(self, uid: str) -> bool:
        with self._storage.reading() as session:
            return dav.has_uid(session, self._state.id, uid)

    def sync(self, old_token: str = "") -> Tuple[str, Iterable[str]]:
        if not old_token:
            # Lazy: PROPFIND asks for the token only and never iterates the hrefs.
            return self._state.sync_token, self._all_hrefs()
        with self._storage.reading() as session:
            state = dav.get_collection(session, self._state.path) or self._state
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
            self.check_seen_in_full(session, href, "overwrite")
            known, old = self._storage.item_read(self._state.id, href)
            stored, old = self._storage.translate(
                lambda: dav.put_item(session, self._state.id, data, old, known))
            self._storage.hooks.item_written(session, self._state, stored, old, actor,
                                             item.vobject_item)
            # The writer gets the ETag of the copy they will read back.
            new_item = self.visible(session, [stored])[0]
        self._state = self._state.advanced(stored.revision, stored.modified_at)
        return new_item, self._plain_item(old) if old else None

    def delete(self, href: Optional[str] = None) -> None:
        actor = self._storage.actor()
        with self._storage.writing() as session:
            if href is None:
                self._storage.hooks.collection_deleting(session, self._state, actor)
                self._storage.translate(
                    lambda: dav.delete_collection(session, self._state.path, actor))
                return
            self.check_seen_in_full(session, href, "delete")
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

    # --- what this user may see -------------------------------------------------------------
    @property
    def view(self) -> Decision:
        if self._view is None:
            self._view = self._storage.view_of(self._state)
        return self._view

    def visible(self, session, stored: list[dav.StoredItem]) -> list[radicale_item.Item]:
        """Items as this user may see them (redacted copies where the policy says so)."""
        view = self.view
        if view.full or self.tag != "VCALENDAR":
            return [self._plain_item(s) for s in stored]
        levels = [policy.item_level(view, redaction.object_class(s.text)) for s in stored]
        titles = {}
        if "summary" in levels:
            titles = visits.customer_titles(
                session, [s.uid for s, lvl in zip(stored, levels) if lvl == "summary"])
        out = []
        for s, level in zip(stored, levels):
            if level not in ("read", "write"):
                text = redaction.redact(s.text, level or "busy", titles.get(s.uid))
                s = dataclasses.replace(s, text=text, etag=radicale_item.get_etag(text))
            out.append(self._plain_item(s))
        return out

    def check_seen_in_full(self, session, href: str, what: str) -> None:
        """Refuse (403) to change an item this user was only shown redacted."""
        view = self.view
        if view.full or self.tag != "VCALENDAR":
            return
        old = dav.get_item(session, self._state.id, href)
        level = policy.item_level(view, redaction.object_class(old.text)) if old else None
        if level in policy.REDACTED_LEVELS:
            self.refuse(f"cannot {what} {href}: you were only shown a redacted copy of it "
                        f"({level} access), so you may not change it")

    @staticmethod
    def refuse(reason: str):
        raise request_context.refuse(client.FORBIDDEN, reason)

    # --- helpers --------------------------------------------------------------------------
    def _plain_item(self, stored: dav.StoredItem) -> radicale_item.Item:
        return mapping.to_radicale(stored, self, crlf=self._crlf)

    @property
    def state(self) -> CollectionState:
        return self._state


def chunks(stored: Iterable[dav.StoredItem], size: int = 200) -> Iterator[list[dav.StoredItem]]:
    iterator = iter(stored)
    while chunk := list(itertools.islice(iterator, size)):
        yield chunk
