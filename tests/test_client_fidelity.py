"""Events as Google, Outlook and Apple write them come back byte for byte.

vobject's re-serialisation loses information (a comma in an X- property value cuts it off,
parameters are re-quoted, lines re-folded); the store keeps the client's own text."""

from __future__ import annotations

import hashlib
import os

import pytest
import vobject

from ical import time_range_query
from xmlparse import responses

DATA = os.path.join(os.path.dirname(__file__), "data")
SAMPLES = ["google.ics", "outlook.ics", "apple.ics"]


def sample(name: str) -> str:
    with open(os.path.join(DATA, name), encoding="utf-8", newline="") as f:
        return f.read()


def test_vobject_alone_would_lose_the_apple_location():
    """Guards the premise: if vobject ever stops being lossy this test says so."""
    rewritten = vobject.readOne(sample("apple.ics")).serialize()
    assert "geo:31.235929,121.506058" not in rewritten.replace("\r\n ", "")


@pytest.mark.parametrize("name", SAMPLES)
def test_single_put_round_trips_byte_for_byte(dav, name):
    text = sample(name)
    path = f"/{dav.user}/calendar/{name}"
    created = dav.put(path, text)
    assert created.status == 201
    got = dav.get(path)
    assert got.body == text.encode("utf-8")
    expected_etag = '"%s"' % hashlib.sha256(text.encode("utf-8")).hexdigest()
    assert created.headers["etag"] == got.headers["etag"] == expected_etag


def test_apple_recurring_visit_with_exdate_and_override_is_found_by_time_range(dav):
    base = f"/{dav.user}/calendar/"
    dav.put(base + "apple.ics", sample("apple.ics"))
    # Jan 13: the override moved 10:00 to 15:00 Shanghai (07:00Z); Jan 20 is excluded.
    hit = responses(dav.report(base, time_range_query("20250113T063000Z",
                                                      "20250113T073000Z")).body)
    assert set(hit) == {base + "apple.ics"}
    excluded = responses(dav.report(base, time_range_query("20250120T000000Z",
                                                           "20250121T000000Z")).body)
    assert excluded == {}
    later = responses(dav.report(base, time_range_query("20250127T000000Z",
                                                        "20250128T000000Z")).body)
    assert set(later) == {base + "apple.ics"}


def test_import_of_all_three_keeps_every_line(dav):
    base = f"/{dav.user}/imported/"
    bodies = [sample(n) for n in SAMPLES]
    # One calendar file with all three objects (own headers of the first, all timezones).
    inner = "".join("BEGIN:VTIMEZONE" + b.split("BEGIN:VTIMEZONE", 1)[1]
                    .rsplit("END:VCALENDAR", 1)[0] for b in bodies)
    combined = ("BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//mixed//EN\r\n" + inner
                + "END:VCALENDAR\r\n")
    assert dav.put(base, combined).status == 201
    listing = [h for h in responses(dav.propfind(base, depth="1").body) if h != base]
    assert len(listing) == 3
    texts = {h: dav.get(h).text for h in listing}
    joined = "".join(texts.values())
    for line in ("X-APPLE-STRUCTURED-LOCATION;VALUE=URI;X-ADDRESS=浦东新区世纪大道100号;X-APPLE-RE\r\n"
                 " FERENCEFRAME=1;X-TITLE=上海华宇科技有限公司:geo:31.235929,121.506058\r\n",
                 'DTSTART;TZID="Central Europe Standard Time":20250214T100000\r\n',
                 "X-ALT-DESC;FMTTYPE=text/html:<html><body><p>Prehliadka stavby, cenová ponuka\r\n",
                 "RECURRENCE-ID;TZID=Asia/Shanghai:20250113T100000\r\n",
                 "X-GOOGLE-CONFERENCE:https://meet.google.com/abc-defg-hij\r\n"):
        assert line in joined
    apple = next(t for t in texts.values() if "Asia/Shanghai" in t)
    assert "Central Europe" not in apple  # each object carries only its own time zones
    assert apple.count("BEGIN:VEVENT") == 2  # master and override stay together
