"""The only place that converts between Radicale ``Item`` objects and the store's records."""

from __future__ import annotations

import math
import re
import time
from typing import Optional

from radicale import item as radicale_item
from radicale.item import filter as radicale_filter

from server import request_context
from server.crm import rawtext
from server.crm.dav import ItemData, StoredItem

# Radicale's read_components drops these control characters before parsing (a workaround
# for clients that send them); the text kept is the one it parsed. PostgreSQL cannot store
# NUL in a text column at all.
_CONTROL = re.compile(r"[\x00-\x08\x0B\x0C\x0E-\x1F]")


def http_date(value) -> str:
    return time.strftime("%a, %d %b %Y %H:%M:%S GMT", value.utctimetuple())


def to_radicale(stored: StoredItem, collection, crlf: bool = False) -> radicale_item.Item:
    """A fully loaded Item: Radicale may read it after the transaction ended."""
    text = stored.text
    if crlf and "\r\n" not in text:
        text = text.replace("\n", "\r\n")
    return radicale_item.Item(
        collection=collection, href=stored.href, last_modified=http_date(stored.modified_at),
        text=text, etag=stored.etag, uid=stored.uid, name=stored.name,
        component_name=stored.component, time_range=(stored.range_start, stored.range_end))


def to_data(href: str, item: radicale_item.Item, text: Optional[str] = None,
            klass: Optional[str] = None) -> ItemData:
    """Record for an incoming item; ``text`` is the client's own text when we have it."""
    if text is None:
        text = item.serialize()
        etag = item.etag
    else:
        etag = radicale_item.get_etag(text)
    start, end = item.time_range
    return ItemData(href=href, uid=item.uid or "", name=item.name,
                    component=item.component_name or "", text=text, etag=etag,
                    range_start=start, range_end=end,
                    klass=klass if klass is not None else class_of(item),
                    occurrences=occurrence_index(item))


# Beyond this many occurrences a series is not indexed (its time-range REPORTs parse it).
MAX_INDEXED_OCCURRENCES = 500
_RECURRENCE = ("rrule", "rdate", "exdate", "exrule", "recurrence-id")


def occurrence_index(item: radicale_item.Item) -> Optional[str]:
    """``DavItem.occurrences`` for an item: each (start, end) Radicale's time-range filter
    tests (``visit_time_ranges``, RFC 4791 9.9), rounded as its ``find_time_range`` rounds
    the item's span. "" when the span is the only occurrence; None for an endless series,
    one over ``MAX_INDEXED_OCCURRENCES``, or one the visitor cannot walk."""
    tag = item.component_name
    if item.name != "VCALENDAR" or not tag:
        return ""
    components = [c for c in item.vobject_item.getChildren() if c.name == tag]
    if tag == "VEVENT" and len(components) == 1 and \
            not any(name in components[0].contents for name in _RECURRENCE):
        return ""
    bounds: list[int] = []
    endless = False

    def occurrence(start, end, _is_recurrence: bool) -> bool:
        nonlocal endless
        bounds.extend((math.floor(start.timestamp()), math.ceil(end.timestamp())))
        endless = len(bounds) > 2 * MAX_INDEXED_OCCURRENCES
        return endless

    def infinity(_start) -> bool:
        nonlocal endless
        endless = True
        return True

    try:
        radicale_filter.visit_time_ranges(item.vobject_item, tag, occurrence, infinity)
    except Exception:
        return None
    return None if endless else " ".join(map(str, bounds))


def class_of(item: radicale_item.Item) -> Optional[str]:
    """CLASS of the object's first component (PUBLIC when absent is left as None)."""
    if item.name != "VCALENDAR":
        return None
    for component in item.vobject_item.getChildren():
        if component.name in ("VEVENT", "VTODO", "VJOURNAL"):
            prop = component.contents.get("class")
            if prop:
                return str(prop[0].value).upper()[:40]
            return None
    return None


def client_text(item: radicale_item.Item) -> Optional[str]:
    """The text the client PUT for this item, if it is the object Radicale parsed.

    A single-item PUT makes exactly one ``upload``; the body is that object when it is one
    object whose components all carry the item's UID (Radicale adds a UID when the client
    sent none, and then its own text is the one to keep).
    """
    context = request_context.current()
    if context is None or context.method != "PUT" or not context.raw_body:
        return None
    key = ("client_text", item.uid)     # asked for when preparing and when storing
    if key not in context.memo:
        text = _CONTROL.sub("", context.body_text)
        context.memo[key] = text if rawtext.object_uids(text) == {item.uid} else None
    return context.memo[key]


def imported_texts() -> dict[str, str]:
    """Per-UID texts of a whole-collection PUT body (an .ics/.vcf import)."""
    context = request_context.current()
    if context is None or context.method != "PUT" or not context.raw_body:
        return {}
    return rawtext.split_objects(_CONTROL.sub("", context.body_text))
