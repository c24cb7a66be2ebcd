"""server.vobject_tz: one tzinfo per distinct VTIMEZONE block, and the same answers as
vobject's own handling (it is a cache, so everything it changes is speed)."""

from __future__ import annotations

import pytest
from radicale import item as radicale_item

from ical import crlf
from server import vobject_tz

LONDON = """BEGIN:VTIMEZONE
TZID:Europe/London
BEGIN:DAYLIGHT
TZOFFSETFROM:+0000
TZOFFSETTO:+0100
TZNAME:BST
DTSTART:19810329T010000
RRULE:FREQ=YEARLY;BYMONTH=3;BYDAY=-1SU
END:DAYLIGHT
BEGIN:STANDARD
TZOFFSETFROM:+0100
TZOFFSETTO:+0000
TZNAME:GMT
DTSTART:19961027T020000
RRULE:FREQ=YEARLY;BYMONTH=10;BYDAY=-1SU
END:STANDARD
END:VTIMEZONE"""
# Same TZID, another definition (a client's stale or odd block): it must not share.
LONDON_ODD = LONDON.replace("BYMONTH=3;BYDAY=-1SU", "BYMONTH=4;BYDAY=1SU")


def calendar(uid: str, zone: str, start: str = "20250705T093000") -> str:
    return crlf(f"""BEGIN:VCALENDAR
VERSION:2.0
PRODID:-//radicale-crm tests//EN
{zone}
BEGIN:VEVENT
UID:{uid}
DTSTAMP:20250101T000000Z
DTSTART;TZID=Europe/London:{start}
DTEND;TZID=Europe/London:20250705T103000
RRULE:FREQ=WEEKLY;COUNT=30
SUMMARY:Visit
END:VEVENT
END:VCALENDAR""")


def facts(text: str):
    item = radicale_item.Item(collection_path="u/c", text=text)
    item.prepare()
    return item.serialize(), item.time_range, item.vobject_item.vevent.dtstart.value


@pytest.fixture
def installed():
    vobject_tz.install()
    yield
    vobject_tz.install()        # the storage plugin's state for the rest of the run


def test_the_same_block_gives_the_same_zone_object(installed):
    first = radicale_item.Item(collection_path="u/c", text=calendar("a", LONDON))
    second = radicale_item.Item(collection_path="u/c", text=calendar("b", LONDON))
    assert first.vobject_item.vtimezone.tzinfo is second.vobject_item.vtimezone.tzinfo
    odd = radicale_item.Item(collection_path="u/c", text=calendar("c", LONDON_ODD))
    assert odd.vobject_item.vtimezone.tzinfo is not first.vobject_item.vtimezone.tzinfo


@pytest.mark.parametrize("zone", [LONDON, LONDON_ODD])
@pytest.mark.parametrize("start", ["20250705T093000", "20250105T093000", "20251026T013000"])
def test_answers_match_vobjects_own(installed, zone, start):
    text = calendar("same", zone, start)
    cached = facts(text)
    facts(text)                              # and again, from the cache
    assert facts(text) == cached
    vobject_tz.uninstall()
    try:
        plain = facts(text)
    finally:
        vobject_tz.install()
    assert cached == plain
    serialized, (begin, end), dtstart = cached
    assert dtstart.utcoffset() is not None and begin < end
