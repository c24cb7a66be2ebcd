"""``crm-admin db reindex``: the occurrence index for items stored before it existed.

Rows written before migration 0007 have no ``dav_items.occurrences`` (NULL). They are
answered right, but slowly: a time-range query parses such an item whenever its span
surrounds the range, as every item was before the index. This fills the column from each
text, exactly as a PUT of that text now does (``mapping.occurrence_index``).

It runs in short transactions of a few hundred items, so it is safe on a live database:
an item rewritten meanwhile (its ETag changed) is left to its writer, which indexes it
itself, and running it again does nothing more. Items that stay unindexed are those a PUT
would not index either (an endless series, one of more than ``MAX_INDEXED_OCCURRENCES``)
and texts that do not parse or hold a recurrence rule the server refuses (``db check``
names those).
"""

from __future__ import annotations

from dataclasses import dataclass

from radicale import item as radicale_item
from sqlalchemy import Engine, text

from server import vobject_tz
from server.crm import recurrence
from server.storage import mapping
from server.storage.check import RRULE_LIMIT

vobject_tz.install()   # the storage plugin's time-zone handling: the same occurrences

_TODO = text("""
    SELECT i.id, c.path, i.text, i.etag
    FROM dav_items i JOIN dav_collections c ON c.id = i.collection_id
    WHERE i.occurrences IS NULL AND i.name = 'VCALENDAR' AND i.id > :after
    ORDER BY i.id LIMIT :batch""")
_SET = text("""
    UPDATE dav_items SET occurrences = :occurrences
    WHERE id = :id AND etag = :etag AND occurrences IS NULL""")


@dataclass
class Result:
    indexed: int = 0        # items whose occurrences are now stored
    left: int = 0           # endless or very long series, unreadable texts: parsed when asked


def reindex(engine: Engine, batch: int = 500) -> Result:
    result, after = Result(), 0
    # SQLite: take the write lock up front, as the server's writers do.
    bind = engine.execution_options(sqlite_begin="IMMEDIATE") \
        if engine.dialect.name == "sqlite" else engine
    while True:
        with bind.begin() as connection:
            rows = connection.execute(_TODO, {"after": after, "batch": batch}).all()
            if not rows:
                return result
            for item_id, path, item_text, etag in rows:
                after = item_id
                occurrences = _occurrences(path, item_text)
                if occurrences is None:
                    result.left += 1
                    continue
                result.indexed += connection.execute(_SET, {
                    "occurrences": occurrences, "id": item_id, "etag": etag}).rowcount


def _occurrences(path: str, item_text: str):
    if recurrence.problem(item_text, RRULE_LIMIT):
        return None
    try:
        return mapping.occurrence_index(radicale_item.Item(collection_path=path,
                                                           text=item_text))
    except Exception:
        return None
