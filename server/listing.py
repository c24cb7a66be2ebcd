"""Whole-collection listings answered from the index, without building an item per row.

``PROPFIND`` with ``Depth: 1`` on a calendar or address book and a ``sync-collection``
REPORT are how every client keeps up with a collection: they ask for ETags (and content
types) of all items, or of those changed since a token. Radicale answers them by loading
each item, text included, checking the rights on its collection once per item, and building
an XML element tree of the whole answer before writing it: at 10,000 events that was about
a second and the whole calendar's text in memory (issue 5).

Here, when the request asks only for properties the index holds (``getetag``,
``getcontenttype``, ``getlastmodified``, ``resourcetype``), the items are listed from the
index (no text) and their responses written as text. Everything else stays Radicale's:
the rights checks (made once for the collection, as Radicale's per-item check would give
the same answer for every item of it), the collection's own response (Radicale answers a
``Depth: 0`` PROPFIND and the items are added to it), and every other request, including
any this does not recognise, which go to Radicale unchanged. The answers are the same XML
as Radicale's (``tests/test_listing.py`` compares them); a user shown redacted items gets
Radicale's answer, since their ETags are those of the redacted copies.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from http import client
from typing import Callable, Iterable, Optional
from urllib.parse import quote
from xml.sax.saxutils import escape

import defusedxml.ElementTree as DefusedET
from radicale import pathutils, rights, types, xmlutils
from radicale.app.base import Access

from server import request_context
from server.crm import dav
from server.storage import mapping
from server.storage.collection import Collection

_D = "{DAV:}"
_PROPFIND_PROPS = {f"{_D}getetag", f"{_D}getcontenttype", f"{_D}getlastmodified",
                   f"{_D}resourcetype"}
_SYNC_PROPS = {f"{_D}getetag", f"{_D}getcontenttype"}
_OK = xmlutils.make_response(client.OK)
_NOT_FOUND = xmlutils.make_response(client.NOT_FOUND)
_BATCH = 500


def propfind(app, environ: types.WSGIEnviron, base_prefix: str, path: str, user: str,
             user_groups: set, request_info: dict,
             depth_zero: Callable[[types.WSGIEnviron], types.WSGIResponse]
             ) -> Optional[types.WSGIResponse]:
    """The answer to a ``Depth: 1`` PROPFIND listing a collection, or None for Radicale."""
    if environ.get("HTTP_DEPTH") != "1" or app._sharing._enabled:
        return None
    request = _request(f"{_D}propfind")
    if request is None or len(request) != 1 or request[0].tag != f"{_D}prop":
        return None
    props = [prop.tag for prop in request[0]]
    if not props or not set(props) <= _PROPFIND_PROPS:
        return None
    listing = _Listing.of(app, path, user, user_groups)
    if listing is None:
        return None
    answer = depth_zero({**environ, "HTTP_DEPTH": "0"})
    status, headers, body = answer[:3]
    end = body.rfind(b"</multistatus>") if status == client.MULTI_STATUS else -1
    if end < 0:
        return None           # not the answer this expects: Radicale answers Depth 1 itself
    encoding = app._encoding
    parts = [body[:end]]
    parts.extend(listing.responses(base_prefix, props, encoding))
    parts.append(body[end:])
    return status, headers, b"".join(parts), answer[3]


def sync_collection(app, environ: types.WSGIEnviron, base_prefix: str, path: str, user: str,
                    user_groups: set, request_info: dict) -> Optional[types.WSGIResponse]:
    """The answer to a sync-collection REPORT asking for ETags, or None for Radicale."""
    if app._sharing._enabled:
        return None
    request = _request(f"{_D}sync-collection")
    if request is None:
        return None
    prop = request.find(f"{_D}prop")
    props = [p.tag for p in prop] if prop is not None else []
    if not props or not set(props) <= _SYNC_PROPS or request.find(
            ".//{urn:ietf:params:xml:ns:caldav}filter") is not None:
        return None
    listing = _Listing.of(app, path, user, user_groups)
    if listing is None:
        return None
    old_token = (request.findtext(f"{_D}sync-token") or "").strip()
    try:
        token, names = listing.collection.sync(old_token)
    except ValueError:
        return None           # Radicale answers an invalid token (403 valid-sync-token)
    encoding = app._encoding
    parts = [("<?xml version='1.0' encoding='%s'?>\n<multistatus xmlns=\"DAV:\">"
              "<sync-token>%s</sync-token>" % (encoding, escape(token))).encode(encoding)]
    if old_token:
        parts.extend(listing.changes(base_prefix, list(dict.fromkeys(names)), props,
                                     encoding))
    else:
        parts.extend(listing.responses(base_prefix, props, encoding))
    parts.append(b"</multistatus>")
    request_info["status"] = client.MULTI_STATUS
    headers = {"Content-Type": "text/xml; charset=%s" % encoding}
    return client.MULTI_STATUS, headers, b"".join(parts), xmlutils.pretty_xml(request)


class _Listing:
    """A collection whose items this user sees as stored, with read rights on them."""

    def __init__(self, app, collection: Collection, user: str) -> None:
        self.app = app
        self.collection = collection
        self.user = user
        self.prefix = "/%s/" % collection.path

    @classmethod
    def of(cls, app, path: str, user: str, user_groups: set) -> Optional["_Listing"]:
        """Radicale's checks for the request (read access to the path and the collection)
        and for each item of it (the rights of the item's collection include r or w)."""
        access = Access(app._rights, user, user_groups, path)
        if not access.check("r"):
            return None
        with app._storage.acquire_lock("r", user):
            found = next(iter(app._storage.discover(path)), None)
            if (not isinstance(found, Collection) or found.tag not in ("VCALENDAR",
                                                                      "VADDRESSBOOK")
                    or not (found.tag != "VCALENDAR" or found.view.full)
                    or not access.check("r", found)):
                return None
            raw = app._rights.authorization(user, user_groups,
                                            pathutils.unstrip_path(found.path, True))
            if not rights.intersect(raw, "rw"):
                return None
            with app._storage.reading() as session:
                if dav.child_collections(session, found.state.path):
                    return None   # Radicale lists those too (no client makes them)
        return cls(app, found, user)

    def responses(self, base_prefix: str, props: list[str], encoding: str
                  ) -> Iterable[bytes]:
        """Every item's response, in Radicale's order (by href), encoded in batches."""
        with self.app._storage.acquire_lock("r", self.user):
            with self.app._storage.reading() as session:
                batch: list[str] = []
                for item in dav.list_items(session, self.collection.id):
                    batch.append(self._found(base_prefix, item, props, encoding))
                    if len(batch) == _BATCH:
                        yield "".join(batch).encode(encoding)
                        batch = []
                yield "".join(batch).encode(encoding)

    def changes(self, base_prefix: str, names: list[str], props: list[str],
                encoding: str) -> Iterable[bytes]:
        """Changed items' responses after deleted ones' 404s, as Radicale orders them."""
        with self.app._storage.acquire_lock("r", self.user):
            with self.app._storage.reading() as session:
                found = dav.list_items_at(session, self.collection.id, names)
        gone = "".join("<response><href>%s</href><status>%s</status></response>" % (
            self._href(base_prefix, name), _NOT_FOUND) for name in names if name not in found)
        yield gone.encode(encoding)
        yield "".join(self._found(base_prefix, found[name], props, encoding)
                      for name in names if name in found).encode(encoding)

    def _href(self, base_prefix: str, name: str) -> str:
        # Radicale's xmlutils.make_href(pathutils.unstrip_path(posixpath.join(path, href))),
        # without sanitising again a path the store holds sanitised.
        return escape(quote(base_prefix + self.prefix + name))

    def _found(self, base_prefix: str, item: dav.ListedItem, props: list[str],
               encoding: str) -> str:
        values = []
        for tag in props:
            if tag == f"{_D}getetag":
                values.append("<getetag>%s</getetag>" % escape(item.etag))
            elif tag == f"{_D}getcontenttype":
                content_type = "%s;charset=%s" % (xmlutils.OBJECT_MIMETYPES[item.name],
                                                  encoding)
                if item.component:
                    content_type += ";component=%s" % item.component
                values.append("<getcontenttype>%s</getcontenttype>" % escape(content_type))
            elif tag == f"{_D}getlastmodified":
                values.append("<getlastmodified>%s</getlastmodified>"
                              % mapping.http_date(item.modified_at))
            else:
                values.append("<resourcetype />")
        return ("<response><href>%s</href><propstat><prop>%s</prop><status>%s</status>"
                "</propstat></response>" % (self._href(base_prefix, item.href),
                                            "".join(values), _OK))


def _request(root_tag: str) -> Optional[ET.Element]:
    """The request's XML body when its root is ``root_tag`` (else None: Radicale reads and
    answers it, errors included)."""
    context = request_context.current()
    if context is None or not context.raw_body:
        return None
    try:
        root = DefusedET.fromstring(context.body_text)
    except Exception:
        return None
    return root if root.tag == root_tag else None

