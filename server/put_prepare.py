"""A PUT of one calendar object or card, prepared without vobject re-serialising it.

Radicale's ``app.put.prepare`` builds the item from the parsed object and calls
``Item.prepare()``, which serialises it with vobject, for a size check and an ETag. This
server stores the text the client sent, with that text's ETag (``mapping.client_text``),
so the serialisation was thrown away: 0.65 ms of a 1.3 KB event with attendees, about 7 %
of a PUT with CRM ingestion (profiled, issue 5). Here the single-object branch is
Radicale's, line for line, except that the item is built on the client's text when the body
is that object; the size ``[server] max_resource_size`` limits is then the size of what is
stored. Anything else (a whole-collection PUT, a body Radicale had to change, e.g. by adding
a UID, or no request context) goes through Radicale's own ``prepare`` unchanged.

``do_PUT`` looks ``prepare`` up in its module at each call; ``install()`` (idempotent,
called where ``server.app`` is imported) puts this one there.
"""

from __future__ import annotations

import posixpath
import sys

from radicale import item as radicale_item
from radicale import pathutils
from radicale.app import put as radicale_put
from radicale.log import logger

from server.storage import mapping

_original = radicale_put.prepare


def prepare(vobject_items, path, content_type, permission, parent_permission,
            max_resource_size, max_vevent_rrule_occurrence, tag=None,
            write_whole_collection=None):
    # Radicale's conditions for "one item into its parent collection"
    whole = write_whole_collection or (permission and not parent_permission)
    single = not whole and (write_whole_collection is False or
                            (write_whole_collection is None and not permission and
                             parent_permission))
    if tag is None and single:
        tag = radicale_item.predict_tag_of_parent_collection(vobject_items)
    if not (single and tag and len(vobject_items) == 1):
        return _original(vobject_items, path, content_type, permission, parent_permission,
                         max_resource_size, max_vevent_rrule_occurrence, tag,
                         write_whole_collection)
    collection_path = posixpath.dirname(pathutils.strip_path(path))
    items, stored_exc_info = [], None
    try:
        radicale_item.check_and_sanitize_items(
            vobject_items, max_vevent_rrule_occurrence=max_vevent_rrule_occurrence,
            is_collection=False, tag=tag)
        vobject_item, = vobject_items
        item = radicale_item.Item(collection_path=collection_path, vobject_item=vobject_item)
        text = mapping.client_text(item)
        if text is not None:
            item = radicale_item.Item(collection_path=collection_path,
                                      vobject_item=vobject_item, text=text, uid=item.uid)
        item.prepare()
        size = len(item.serialize())
        if size > max_resource_size:
            logger.warning("PUT request contains item with UID %r size %d above limit %d: %r",
                           item.uid, size, max_resource_size, path)
            raise OverflowError   # Radicale's flag for max_resource_size (412)
        items.append(item)
    except Exception:
        stored_exc_info = sys.exc_info()
    return iter(items), tag, False, None, stored_exc_info


def install() -> None:
    radicale_put.prepare = prepare
