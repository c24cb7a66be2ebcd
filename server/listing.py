"""Listings and reports answered from the index, without building an item object per row.

How clients keep up with a collection: ``PROPFIND`` with ``Depth: 1`` or a
``sync-collection`` REPORT for the ETags of all items (or of those changed since a token),
a ``calendar-query`` for the ETags of a time range, then a ``calendar-multiget`` (or
``addressbook-multiget``) for the texts of those that changed. Radicale answers each by
loading items, checking the rights on their collection once per item (eight path
sanitisations each) and building an XML element tree of the whole answer before writing
it; a listing loads the text of every item. At 10,000 events a PROPFIND took about a second
and held the calendar's text in memory (issue 5).

Here, when a request asks only for what the store holds as columns (``getetag``,
``getcontenttype``, ``getlastmodified``, ``resourcetype``, and for a query or multiget the
object's text as ``calendar-data``/``address-data``, whole), its responses are written as
text from rows: a listing reads no text at all. Everything else stays Radicale's:

* the rights checks, made once for the collection (Radicale's per-item check gives the
  same answer for every item of a collection); a user who may be shown redacted copies
  (anyone but the owner and an admin, on a calendar) gets Radicale's answer, since their
  ETags and texts are those of the copies;
* a PROPFIND's response for the collection itself (Radicale answers ``Depth: 0`` and the
  items are added to it);
* a calendar-query's filter, where the index cannot decide: an item whose occurrences are
  not indexed is parsed and tested with Radicale's own ``test_filter``;
* every request this does not recognise, and every error (an invalid sync token, a
  malformed body, an href outside the collection, too many VEVENTs for
  ``[reporting] max_expand_occurrence``): those go to Radicale unchanged.

The answers are Radicale's XML (``tests/test_listing.py`` sends each request both ways and
compares them).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from http import client
from typing import Callable, Iterable, Optional
from urllib.parse import quote, unquote, urlparse
from xml.sax.saxutils import escape

import defusedxml.ElementTree as DefusedET
from radicale import pathutils, rights, types, xmlutils
from radicale.app import report as radicale_report
from radicale.app.base import Access
from radicale.item import filter as radicale_filter

from server import request_context
from server.crm import dav
from server.storage import mapping
from server.storage.collection import Collection

_D = "{DAV:}"
_C = "{urn:ietf:params:xml:ns:caldav}"
_CR = "{urn:ietf:params:xml:ns:carddav}"
_PROPFIND_PROPS = {f"{_D}getetag", f"{_D}getcontenttype", f"{_D}getlastmodified",
                   f"{_D}resourcetype"}
_ROW_PROPS = {f"{_D}getetag", f"{_D}getcontenttype"}
# REPORT -> (the collection tag it is for, the property that carries the object's text)
_REPORTS = {f"{_D}sync-collection": (None, None),
            f"{_C}calendar-query": ("VCALENDAR", f"{_C}calendar-data"),
            f"{_C}calendar-multiget": ("VCALENDAR", f"{_C}calendar-data"),
            f"{_CR}addressbook-multiget": ("VADDRESSBOOK", f"{_CR}address-data")}
_PREFIXES = {f"{_C}calendar-data": ("C", _C), f"{_CR}address-data": ("CR", _CR)}
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
    request = _request({f"{_D}propfind"})
    if request is None or len(request) != 1 or request[0].tag != f"{_D}prop":
        return None
    props = [prop.tag for prop in request[0]]
    if not props or not set(props) <= _PROPFIND_PROPS:
        return None
    with app._storage.acquire_lock("r", user):    # one transaction, as Radicale answers
        listing = _Listing.of(app, path, user, user_groups)
        if listing is None:
            return None
        answer = depth_zero({**environ, "HTTP_DEPTH": "0"})
        status, headers, body = answer[:3]
        end = body.rfind(b"</multistatus>") if status == client.MULTI_STATUS else -1
        if end < 0:
            return None       # not the answer this expects: Radicale answers Depth 1 itself
        parts = [body[:end], *listing.responses(base_prefix, props, app._encoding),
                 body[end:]]
    return status, headers, b"".join(parts), answer[3]


def report(app, environ: types.WSGIEnviron, base_prefix: str, path: str, user: str,
           user_groups: set, request_info: dict) -> Optional[types.WSGIResponse]:
    """The answer to a sync-collection, calendar-query or multiget REPORT, or None for
    Radicale."""
    if app._sharing._enabled:
        return None
    request = _request(set(_REPORTS))
    if request is None or request.find(f".//{_C}expand") is not None:
        return None
    tag, data = _REPORTS[request.tag]
    prop = request.find(f"{_D}prop")
    if prop is None or not len(prop) or any(
            p.tag not in _ROW_PROPS | {data} or len(p) or p.attrib for p in prop):
        return None   # a data property with children asks for part of the object
    props = [p.tag for p in prop]
    filters = request.findall(f"{_C}filter") + request.findall(f"{_CR}filter")
    if filters and request.tag != f"{_C}calendar-query":
        return None
    with app._storage.acquire_lock("r", user):    # one transaction, as Radicale answers
        listing = _Listing.of(app, path, user, user_groups)
        if listing is None or tag not in (None, listing.collection.tag):
            return None
        encoding, limit = app._encoding, app.configuration.get("reporting",
                                                               "max_expand_occurrence")
        head = ""
        if request.tag == f"{_D}sync-collection":
            old_token = (request.findtext(f"{_D}sync-token") or "").strip()
            try:
                token, names = listing.collection.sync(old_token)
            except ValueError:
                return None       # Radicale answers an invalid token (403 valid-sync-token)
            head = "<sync-token>%s</sync-token>" % escape(token)
            body = listing.changes(base_prefix, list(dict.fromkeys(names)), props, encoding) \
                if old_token else listing.responses(base_prefix, props, encoding)
        elif request.tag == f"{_C}calendar-query":
            body = listing.query(base_prefix, filters, props, encoding, limit)
        else:
            names = listing.names(base_prefix, [h.text or "" for h in
                                                request.findall(f"{_D}href")])
            body = None if names is None else listing.fetch(base_prefix, names, props, encoding,
                                                            limit)
        if body is None:
            return None
        prefix, namespace = _PREFIXES.get(data, ("", "")) if data in props else ("", "")
        declare = ' xmlns:%s="%s"' % (prefix, namespace[1:-1]) if prefix else ""
        parts = [("<?xml version='1.0' encoding='%s'?>\n<multistatus xmlns=\"DAV:\"%s>%s"
                  % (encoding, declare, head)).encode(encoding), *body, b"</multistatus>"]
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
        and for each item of it (the rights of the item's collection include r or w).
        Called inside the request's read lock."""
        access = Access(app._rights, user, user_groups, path)
        if not access.check("r"):
            return None
        found = next(iter(app._storage.discover(path)), None)
        if (not isinstance(found, Collection) or found.tag not in ("VCALENDAR", "VADDRESSBOOK")
                or not (found.tag != "VCALENDAR" or found.view.full)
                or not access.check("r", found)):
            return None
        raw = app._rights.authorization(user, user_groups,
                                        pathutils.unstrip_path(found.path, True))
        if not rights.intersect(raw, "rw"):
            return None
        with app._storage.reading() as session:
            if app._storage.has_children(session, found.state.path):
                return None       # Radicale lists those too (no client makes them)
        return cls(app, found, user)

    # --- the four answers ----------------------------------------------------------------
    def responses(self, base_prefix: str, props: list[str], encoding: str
                  ) -> Iterable[bytes]:
        """Every item's response, in Radicale's order (by href), encoded in batches."""
        with self.app._storage.reading() as session:
            batch: list[str] = []
            for item in dav.list_items(session, self.collection.id):
                batch.append(self._found(base_prefix, item, props, encoding))
                if len(batch) == _BATCH:
                    yield "".join(batch).encode(encoding)
                    batch = []
            yield "".join(batch).encode(encoding)

    def changes(self, base_prefix: str, names: list[str], props: list[str],
                encoding: str) -> list[bytes]:
        """Changed items' responses after deleted ones' 404s, as Radicale orders them."""
        with self.app._storage.reading() as session:
            found = dav.list_items_at(session, self.collection.id, names)
        return self._answer(base_prefix, names, found, props, encoding)

    def query(self, base_prefix: str, filters: list[ET.Element], props: list[str],
              encoding: str, limit: int) -> Optional[list[bytes]]:
        """A calendar-query with Radicale's simple filter (a component and a time range):
        the candidates from the index, each decided by its occurrences, or by Radicale's
        own test where they are not indexed."""
        tag, start, end, simple = radicale_filter.simplify_prefilters(
            filters, self.collection.tag)
        if not simple or tag is None:
            return None
        hits, undecided = [], []
        with self.app._storage.reading() as session:
            for stored in dav.items_in_range(session, self.collection.id, tag, start, end):
                occurs = True if start <= stored.range_start or stored.range_end <= end \
                    else stored.occurs_in(start, end)
                if occurs is None:
                    undecided.append(stored)
                if occurs is not False:
                    hits.append(stored)
        for stored in undecided:
            item = mapping.to_radicale(stored, self.collection)
            try:
                matches = all(radicale_report.test_filter(self.collection.tag, item, f)
                              for f in filters)
            except Exception:
                return None   # Radicale answers a filter it cannot apply (400)
            if not matches:
                hits.remove(stored)
        if _too_many_vevents(hits, props, limit):
            return None
        return [("".join(self._found(base_prefix, s, props, encoding) for s in hits)
                 ).encode(encoding)]

    def fetch(self, base_prefix: str, names: list[str], props: list[str], encoding: str,
              limit: int) -> Optional[list[bytes]]:
        """A multiget: the named items' responses after the 404s of those not found."""
        with self.app._storage.reading() as session:
            found = dav.get_items(session, self.collection.id, names)
        if _too_many_vevents(list(found.values()), props, limit):
            return None
        return self._answer(base_prefix, names, found, props, encoding)

    def names(self, base_prefix: str, hrefs: list[str]) -> Optional[list[str]]:
        """The item names a multiget asks for, as Radicale reads its hrefs; None when one
        is not an item of this collection (Radicale answers that)."""
        names = []
        for href in hrefs:
            path = _sanitized(unquote(urlparse(href).path))
            if not (path + "/").startswith(base_prefix + "/"):
                return None
            path = path[len(base_prefix):]
            name = path[len(self.prefix):]
            if not path.startswith(self.prefix) or not name or "/" in name:
                return None
            names.append(name)
        return list(dict.fromkeys(names))

    # --- writing responses ---------------------------------------------------------------
    def _answer(self, base_prefix: str, names: list[str], found: dict, props: list[str],
                encoding: str) -> list[bytes]:
        gone = "".join("<response><href>%s</href><status>%s</status></response>" % (
            self._href(base_prefix, name), _NOT_FOUND) for name in names if name not in found)
        return [gone.encode(encoding),
                "".join(self._found(base_prefix, found[name], props, encoding)
                        for name in names if name in found).encode(encoding)]

    def _href(self, base_prefix: str, name: str) -> str:
        # Radicale's xmlutils.make_href(pathutils.unstrip_path(posixpath.join(path, href))),
        # without sanitising again a path the store holds sanitised.
        return escape(quote(base_prefix + self.prefix + name))

    def _found(self, base_prefix: str, item, props: list[str], encoding: str) -> str:
        """The response for a ``dav.ListedItem`` (or a ``dav.StoredItem``, which also has
        the text for a data property)."""
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
            elif tag == f"{_D}resourcetype":
                values.append("<resourcetype />")
            else:
                name = "%s:%s" % (_PREFIXES[tag][0], tag.rsplit("}", 1)[1])
                values.append("<%s>%s</%s>" % (name, escape(item.text), name))
        return ("<response><href>%s</href><propstat><prop>%s</prop><status>%s</status>"
                "</propstat></response>" % (self._href(base_prefix, item.href),
                                            "".join(values), _OK))


def _sanitized(path: str) -> str:
    """``pathutils.sanitize_path(path)``, which returns an absolute path without empty,
    ``.`` or ``..`` segments as it is: such a path (every multiget href a client sends) is
    not taken apart and joined again (a fifth of a multiget's time)."""
    tail = path + "/"
    if path.startswith("/") and "//" not in path and "/./" not in tail and "/../" not in tail:
        return path
    return pathutils.sanitize_path(path)


def _too_many_vevents(items: list, props: list[str], limit: int) -> bool:
    """Radicale refuses (400) a REPORT serving more VEVENTs than
    ``[reporting] max_expand_occurrence``; it says so itself."""
    copies = sum(p in _PREFIXES for p in props)    # each data property counts its text
    if not limit or not copies:
        return False
    # Every such line holds the substring: a count of it bounds theirs, and is a tenth of
    # the cost of splitting each text into lines (6 % of a multiget's time).
    if copies * sum(s.text.upper().count("BEGIN:VEVENT") for s in items) <= limit:
        return False
    return copies * sum(1 for s in items for line in s.text.splitlines()
                        if line.upper() == "BEGIN:VEVENT") > limit


def _request(root_tags: set[str]) -> Optional[ET.Element]:
    """The request's XML body when its root is one of ``root_tags`` (else None: Radicale
    reads and answers it, errors included)."""
    context = request_context.current()
    if context is None or not context.raw_body:
        return None
    try:
        root = DefusedET.fromstring(context.body_text)
    except Exception:
        return None
    return root if root.tag in root_tags else None
