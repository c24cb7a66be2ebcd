"""The occurrence index: a time-range REPORT answers for a series spanning the range from
``dav_items.occurrences`` instead of parsing it, and answers exactly as Radicale's own test
of the parsed object does (the same series with the index cleared is the reference)."""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import random

import pytest
from radicale.app import report as radicale_report
from sqlalchemy import event as sa_event, text
from sqlalchemy.engine import Engine

from admin_cli.main import main
from conftest import create_user
from davclient import Dav, make_configuration
from ical import crlf, event, time_range_query
from xmlparse import responses
from server.app import CrmApplication
from server.crm import db, schema
from server.storage import mapping

UTC = dt.timezone.utc

# vobject keeps the first VTIMEZONE it parsed under a TZID for the whole process (stock
# Radicale too), and other tests define Europe/Bratislava without summer time: a TZID of
# this file's own keeps these rules.
TZID = "Test/Occurrences-Bratislava"
ZONE = f"""BEGIN:VTIMEZONE
TZID:{TZID}
BEGIN:STANDARD
DTSTART:19701025T030000
RRULE:FREQ=YEARLY;BYMONTH=10;BYDAY=-1SU
TZOFFSETFROM:+0200
TZOFFSETTO:+0100
END:STANDARD
BEGIN:DAYLIGHT
DTSTART:19700329T020000
RRULE:FREQ=YEARLY;BYMONTH=3;BYDAY=-1SU
TZOFFSETFROM:+0100
TZOFFSETTO:+0200
END:DAYLIGHT
END:VTIMEZONE
"""


def calendar(*components: str, zone: bool = False) -> str:
    return crlf("BEGIN:VCALENDAR\nVERSION:2.0\nPRODID:-//radicale-crm tests//EN\n"
                + (ZONE if zone else "") + "".join(components) + "END:VCALENDAR")


def vevent(uid: str, lines: str) -> str:
    return f"BEGIN:VEVENT\nUID:{uid}\nDTSTAMP:20250101T000000Z\nSUMMARY:s\n{lines}END:VEVENT\n"


def series() -> dict[str, str]:
    """Objects whose occurrences are not their span: every way a series can skip a range."""
    return {
        "weekly.ics": event("weekly", "20250106T090000Z", "20250106T100000Z",
                            extra="RRULE:FREQ=WEEKLY;COUNT=20\n"),
        "until.ics": calendar(vevent("until", f"DTSTART;TZID={TZID}:20250106T080000\n"
                                     f"DTEND;TZID={TZID}:20250106T093000\n"
                                     "RRULE:FREQ=WEEKLY;UNTIL=20250630T215959Z\n"), zone=True),
        "exdate.ics": event("exdate", "20250107T140000Z", "20250107T150000Z",
                            extra="RRULE:FREQ=WEEKLY;COUNT=10\nEXDATE:20250121T140000Z\n"),
        "rdate.ics": event("rdate", "20250108T120000Z", "20250108T130000Z",
                           extra="RDATE:20250301T120000Z,20250415T120000Z\n"),
        "moved.ics": calendar(
            vevent("moved", "DTSTART:20250109T100000Z\nDTEND:20250109T110000Z\n"
                   "RRULE:FREQ=WEEKLY;COUNT=8\n"),
            vevent("moved", "RECURRENCE-ID:20250123T100000Z\nDTSTART:20250124T160000Z\n"
                   "DTEND:20250124T170000Z\n")),
        "allday.ics": event("allday", extra="RRULE:FREQ=MONTHLY;COUNT=6\n").replace(
            "DTSTART:20250110T100000Z", "DTSTART;VALUE=DATE:20250110").replace(
            "DTEND:20250110T110000Z", "DTEND;VALUE=DATE:20250111"),
        "duration.ics": calendar(vevent("duration", "DTSTART:20250111T080000Z\n"
                                        "DURATION:PT30M\nRRULE:FREQ=DAILY;INTERVAL=9;COUNT=15\n")),
        "nodtend.ics": calendar(vevent("nodtend", "DTSTART:20250112T080000Z\n"
                                       "RRULE:FREQ=WEEKLY;INTERVAL=2;COUNT=8\n")),
        "long.ics": event("long", "20250101T000000Z", "20250305T000000Z"),
        "endless.ics": event("endless", "20250106T070000Z", "20250106T073000Z",
                             extra="RRULE:FREQ=WEEKLY;BYDAY=MO\n"),
    }


def put_all(dav, base: str, objects: dict[str, str]) -> None:
    for href, body in objects.items():
        reply = dav.put(base + href, body)
        assert reply.status == 201, (href, reply.status, reply.text)


def hits(dav, base: str, start: dt.datetime, end: dt.datetime, component="VEVENT") -> set[str]:
    reply = dav.report(base, time_range_query(f"{start:%Y%m%dT%H%M%SZ}",
                                              f"{end:%Y%m%dT%H%M%SZ}", component))
    assert reply.status == 207, reply.text
    return {href.rsplit("/", 1)[1] for href in responses(reply.body)}


def index_of(db_url: str, user: str) -> dict[str, str | None]:
    with db.shared_engine(db_url).connect() as conn:
        return dict(conn.execute(text(
            "SELECT i.href, i.occurrences FROM dav_items i JOIN dav_collections c "
            "ON c.id = i.collection_id WHERE c.path = :path"),
            {"path": f"{user}/calendar"}).all())


def clear_index(db_url: str, user: str) -> None:
    """The index as rows written before it have it (schema 0006)."""
    with db.shared_engine(db_url).begin() as conn:
        conn.execute(text("UPDATE dav_items SET occurrences = NULL WHERE collection_id = "
                          "(SELECT id FROM dav_collections WHERE path = :path)"),
                     {"path": f"{user}/calendar"})


@pytest.fixture
def parses(monkeypatch):
    """How many objects Radicale parsed to test a filter."""
    count = [0]
    original = radicale_report.test_filter

    def counted(*args, **kwargs):
        count[0] += 1
        return original(*args, **kwargs)

    monkeypatch.setattr(radicale_report, "test_filter", counted)
    return count


def test_the_index_holds_each_occurrence(dav, db_url):
    base = f"/{dav.user}/calendar/"
    put_all(dav, base, series())
    index = index_of(db_url, dav.user)

    def stamp(text_: str) -> int:
        return int(dt.datetime.strptime(text_, "%Y%m%dT%H%M%S").replace(tzinfo=UTC).timestamp())

    assert index["long.ics"] == ""            # one occurrence: its span
    assert index["endless.ics"] is None       # not indexed: parsed when asked
    weekly = index["weekly.ics"].split()
    assert len(weekly) == 40
    assert weekly[:4] == [str(stamp("20250106T090000")), str(stamp("20250106T100000")),
                          str(stamp("20250113T090000")), str(stamp("20250113T100000"))]
    exdate = index["exdate.ics"].split()[::2]
    assert len(exdate) == 9 and str(stamp("20250121T140000")) not in exdate
    moved = index["moved.ics"].split()[::2]
    assert str(stamp("20250124T160000")) in moved and str(stamp("20250123T100000")) not in moved
    # Bratislava: 08:00 is 07:00Z in winter, 06:00Z in summer.
    until = index["until.ics"].split()[::2]
    assert str(stamp("20250106T070000")) in until and str(stamp("20250623T060000")) in until


def test_over_the_limit_a_series_is_not_indexed(dav, db_url):
    base = f"/{dav.user}/calendar/"
    count = mapping.MAX_INDEXED_OCCURRENCES
    put_all(dav, base, {
        "at.ics": event("at", extra=f"RRULE:FREQ=DAILY;COUNT={count}\n"),
        "over.ics": event("over", extra=f"RRULE:FREQ=DAILY;COUNT={count + 1}\n")})
    index = index_of(db_url, dav.user)
    assert len(index["at.ics"].split()) == 2 * count and index["over.ics"] is None


def test_a_spanning_series_is_answered_without_parsing_it(dav, parses):
    base = f"/{dav.user}/calendar/"
    put_all(dav, base, {k: v for k, v in series().items() if k != "endless.ics"})
    # Thursday 2025-01-16 00:00 to 23:59Z: weekly (Mondays), until, exdate, rdate, allday,
    # nodtend span it without an occurrence; moved has its Thursday; long covers it.
    day = dt.datetime(2025, 1, 16, tzinfo=UTC)
    assert hits(dav, base, day, day + dt.timedelta(hours=23, minutes=59)) == {
        "moved.ics", "long.ics"}
    assert parses[0] == 0
    # The occurrence moved from Thursday 23 to Friday 24 counts on the Friday only.
    assert "moved.ics" not in hits(dav, base, dt.datetime(2025, 1, 23, tzinfo=UTC),
                                   dt.datetime(2025, 1, 24, tzinfo=UTC))
    assert "moved.ics" in hits(dav, base, dt.datetime(2025, 1, 24, 16, 30, tzinfo=UTC),
                               dt.datetime(2025, 1, 24, 16, 31, tzinfo=UTC))
    # The excluded Tuesday is no hit, the next one is.
    assert "exdate.ics" not in hits(dav, base, dt.datetime(2025, 1, 21, tzinfo=UTC),
                                    dt.datetime(2025, 1, 22, tzinfo=UTC))
    assert "exdate.ics" in hits(dav, base, dt.datetime(2025, 1, 28, tzinfo=UTC),
                                dt.datetime(2025, 1, 29, tzinfo=UTC))
    assert parses[0] == 0


def test_a_time_range_on_the_calendar_itself_tests_each_spanning_series(dav, db_url):
    """A time-range directly under VCALENDAR names no component: the index does not decide
    it, and a series spanning the range without an occurrence in it is no hit."""
    base = f"/{dav.user}/calendar/"
    put_all(dav, base, {k: v for k, v in series().items() if k != "endless.ics"})
    query = """<?xml version="1.0" encoding="utf-8"?>
<C:calendar-query xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav">
  <D:prop><D:getetag/></D:prop>
  <C:filter><C:comp-filter name="VCALENDAR">
    <C:time-range start="20250116T000000Z" end="20250116T235900Z"/>
  </C:comp-filter></C:filter>
</C:calendar-query>"""

    def answer() -> set[str]:
        reply = dav.report(base, query)
        assert reply.status == 207, reply.text
        return {href.rsplit("/", 1)[1] for href in responses(reply.body)}

    assert answer() == {"moved.ics", "long.ics"}
    clear_index(db_url, dav.user)
    assert answer() == {"moved.ics", "long.ics"}


@pytest.mark.postgresql
def test_time_range_candidates_are_not_read_through_a_cursor(pg_server_url):
    """PostgreSQL plans a server-side cursor (what ``yield_per`` declares with psycopg) for
    its first 10 % of rows: for the candidates in href order it walked the whole calendar
    by the (collection, href) index instead of reading the time-range index (at 10,000
    events 9,827 rows read and dropped per query, 15 ms instead of 2). SQLite has no such
    cursors."""
    import psycopg
    name, password = create_user(pg_server_url)
    dav = Dav(CrmApplication(make_configuration(pg_server_url)), name, password)
    base = f"/{name}/calendar/"
    put_all(dav, base, series())
    cursors = []

    def record(conn, cursor, statement, parameters, context, executemany):
        if "range_start <" in statement:
            cursors.append(isinstance(cursor, psycopg.ServerCursor))

    sa_event.listen(Engine, "before_cursor_execute", record)
    try:
        day = dt.datetime(2025, 1, 16, tzinfo=UTC)
        found = hits(dav, base, day, day + dt.timedelta(hours=23, minutes=59))
    finally:
        sa_event.remove(Engine, "before_cursor_execute", record)
    assert found == {"moved.ics", "long.ics"}
    assert cursors == [False]


def test_an_endless_series_is_still_parsed_and_found(dav, parses):
    base = f"/{dav.user}/calendar/"
    put_all(dav, base, {"endless.ics": series()["endless.ics"]})
    monday = dt.datetime(2026, 3, 2, tzinfo=UTC)
    assert hits(dav, base, monday, monday + dt.timedelta(days=1)) == {"endless.ics"}
    assert hits(dav, base, monday + dt.timedelta(days=1), monday + dt.timedelta(days=2)) == set()
    assert parses[0] == 2


def test_the_index_answers_as_radicale_parsing_does(dav, db_url, parses):
    """200 random ranges over every kind of series, answered from the index and then, with
    the index cleared, by Radicale parsing each candidate: the same hrefs each time."""
    base = f"/{dav.user}/calendar/"
    objects = series()
    rng = random.Random(4791)
    for i in range(12):           # random weekly/daily series with a skipped occurrence
        start = dt.datetime(2025, 1, 1, 8, tzinfo=UTC) + dt.timedelta(hours=rng.randrange(2000))
        freq = rng.choice(["DAILY;INTERVAL=3", "WEEKLY", "WEEKLY;INTERVAL=2", "MONTHLY"])
        skip = start + dt.timedelta(days={"D": 3, "W": 7, "M": 31}[freq[0]])
        objects[f"r{i}.ics"] = event(
            f"r{i}", f"{start:%Y%m%dT%H%M%SZ}", f"{start + dt.timedelta(hours=2):%Y%m%dT%H%M%SZ}",
            extra=f"RRULE:FREQ={freq};COUNT={rng.randrange(3, 30)}\n"
                  + (f"EXDATE:{skip:%Y%m%dT%H%M%SZ}\n" if freq[0] != "M" else ""))
    put_all(dav, base, objects)
    ranges = []
    for _ in range(200):
        start = dt.datetime(2025, 1, 1, tzinfo=UTC) + dt.timedelta(
            minutes=rng.randrange(60 * 24 * 200))
        ranges.append((start, start + dt.timedelta(minutes=rng.choice([1, 30, 600, 3000]))))
    indexed = [hits(dav, base, s, e) for s, e in ranges]
    parsed_with_index = parses[0]
    clear_index(db_url, dav.user)
    parsed = [hits(dav, base, s, e) for s, e in ranges]
    assert indexed == parsed
    assert sum(map(len, indexed)) > 100               # the ranges do hit series
    assert parses[0] - parsed_with_index > 10 * parsed_with_index  # and the index spared parses


def test_reindex_indexes_rows_older_than_the_index(dav, db_url, parses):
    base = f"/{dav.user}/calendar/"
    put_all(dav, base, series())
    indexed = index_of(db_url, dav.user)
    clear_index(db_url, dav.user)
    day = dt.datetime(2025, 1, 16, tzinfo=UTC), dt.datetime(2025, 1, 16, 23, 59, tzinfo=UTC)
    assert hits(dav, base, *day) == {"moved.ics", "long.ics"}
    parsed_before = parses[0]
    assert parsed_before > 5                         # unindexed spans are parsed

    code, out = crm_admin(db_url, "db", "reindex")
    assert code == 0 and out.startswith("ok: occurrences of ") and "left unindexed" in out
    assert index_of(db_url, dav.user) == indexed     # what the PUTs stored, endless NULL
    assert hits(dav, base, *day) == {"moved.ics", "long.ics"}
    assert parses[0] - parsed_before == 1            # the endless series only
    code, out = crm_admin(db_url, "db", "reindex")
    assert code == 0 and out.startswith("ok: occurrences of 0 item(s) indexed")


def crm_admin(db_url: str, *argv: str) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        code = main(["--db-url", db_url, *argv])
    return code, out.getvalue()


def test_reindex_on_a_schema_before_the_index_says_to_upgrade(tmp_path):
    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = db.make_engine(url)
    try:
        schema.upgrade(engine, "0006")
    finally:
        engine.dispose()
    code, out = crm_admin(url, "db", "reindex")
    assert (code, out) == (1, f"crm-admin: error: the schema is at 0006, not {schema.head()}: "
                              "run `crm-admin db upgrade` first\n")
