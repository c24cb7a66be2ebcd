"""One time-zone object per distinct VTIMEZONE, instead of one per parsed calendar object.

Every calendar PUT carries its VTIMEZONE blocks, and vobject (0.9.x) turns each block into a
fresh ``dateutil`` tzinfo, then compares it with the one it registered under the same TZID
by walking both zones' transitions over twenty years (``icalendar.tzinfo_eq``). Profiled,
that was about a third of a plain PUT. Clients send the same few blocks again and again, so
the tzinfo is kept per exact block text: a block seen before yields the *same* object, which
``tzinfo_eq`` accepts at once, and whose rrule caches stay warm across requests. A block
that differs in any line (another definition under the same TZID) gets its own object, as
before. dateutil's VTIMEZONE objects are immutable and lock their own caches, so sharing
them between threads is safe.

``install()`` is idempotent; the storage plugin calls it at import.
"""

from __future__ import annotations

import io
import threading
from collections import OrderedDict

from dateutil import tz
from vobject import icalendar
from vobject.base import Component, foldOneLine

_MAX = 512                              # distinct blocks kept (a few per client time zone)
_LINES = ("rdate", "rrule", "dtstart", "tzname", "tzoffsetfrom", "tzoffsetto", "tzid")
_cache: "OrderedDict[str, object]" = OrderedDict()
_lock = threading.Lock()
_original_property = icalendar.TimezoneComponent.__dict__["tzinfo"]
_original_eq = icalendar.tzinfo_eq
_shared: dict[int, object] = {}          # id -> tzinfo, for the objects in _cache
_same: dict[tuple[int, int], tuple[object, object, bool]] = {}


def _definition(component: Component) -> str:
    """The block as vobject's own ``gettzinfo`` hands it to dateutil (the lines dateutil
    reads, folded), which is also the cache key."""
    buffer = io.StringIO()

    def emit(obj) -> None:
        foldOneLine(buffer, "BEGIN:" + obj.name)
        for child in obj.lines():
            if child.name.lower() in _LINES:
                child.serialize(buffer, 75, validate=False)
        for sub in obj.components():
            emit(sub)
        foldOneLine(buffer, "END:" + obj.name)

    emit(component)
    return buffer.getvalue()


def shared_tzinfo(component: Component):
    if len(component.contents) == 0:    # vobject allows empty VTIMEZONEs
        return None
    key = _definition(component)
    with _lock:
        found = _cache.get(key)
        if found is not None:
            _cache.move_to_end(key)
            return found
    made = tz.tzical(io.StringIO(key)).get()
    with _lock:
        found = _cache.setdefault(key, made)
        _shared[id(found)] = found
        _cache.move_to_end(key)
        while len(_cache) > _MAX:
            _shared.pop(id(_cache.popitem(last=False)[1]), None)
    return found


def tzinfo_eq(tzinfo1, tzinfo2, *args) -> bool:
    """vobject's comparison, remembered for pairs of long-lived zones. Serialising every
    DTSTART asks whether its zone is UTC; for a zone at UTC+0 in January (London, Lisbon)
    that walks twenty years of transitions, on every property of every PUT."""
    if args or tzinfo1 is tzinfo2 or tzinfo1 is None or tzinfo2 is None:
        return _original_eq(tzinfo1, tzinfo2, *args)
    key = (id(tzinfo1), id(tzinfo2))
    found = _same.get(key)
    if found is not None and found[0] is tzinfo1 and found[1] is tzinfo2:
        return found[2]
    result = _original_eq(tzinfo1, tzinfo2)
    if _is_shared(tzinfo1) and _is_shared(tzinfo2):
        with _lock:
            if len(_same) >= 4 * _MAX:
                _same.clear()
            _same[key] = (tzinfo1, tzinfo2, result)    # the references keep the ids valid
    return result


def _is_shared(tzinfo) -> bool:
    return tzinfo is icalendar.utc or _shared.get(id(tzinfo)) is tzinfo


def install() -> None:
    icalendar.TimezoneComponent.tzinfo = property(shared_tzinfo, _original_property.fset)
    icalendar.tzinfo_eq = tzinfo_eq


def uninstall() -> None:
    """Back to vobject's own behaviour (the tests compare the two)."""
    icalendar.TimezoneComponent.tzinfo = _original_property
    icalendar.tzinfo_eq = _original_eq
    with _lock:
        _cache.clear()
        _shared.clear()
        _same.clear()
