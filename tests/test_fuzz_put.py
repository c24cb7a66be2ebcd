"""Property-based fuzzing of PUT bodies (issue 6, section 3), with hypothesis.

Bodies are mutations of valid objects: random bytes inserted and deleted, random property
lines, random Unicode (with surrogate-escaped bytes, so invalid UTF-8 too), truncation, line
folding at random places, LF for CRLF, duplicated lines; and RRULEs built from random parts.
Each is PUT to the in-process application on SQLite. Whatever the body:

* the answer is never a 5xx, and comes within a time bound;
* a refusal (4xx) leaves the database exactly as it was;
* an acceptance (201/204) stores one item at that href, which GET returns: the text sent
  (decoded as Radicale decodes it, less the control characters it drops) whenever that text
  is the object Radicale parsed;
* for random RRULEs, a time-range REPORT over the calendar also answers in bounded time.

hypothesis rather than a hand-rolled mutator: a failure is shrunk to a minimal body and
printed, the runs are reproducible (``derandomize=True``: the same examples on every
machine, no example database), and the strategies are a maintained library's.
"""

from __future__ import annotations

import re
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import event as label
from hypothesis import strategies as st
from sqlalchemy import text

from conftest import create_user, db_snapshot
from davclient import Dav, make_configuration
from davclient import bounded as within
from ical import event, time_range_query, vcard
from server.app import CrmApplication
from server.crm import db, rawtext

FUZZ = settings(max_examples=500, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow, HealthCheck.data_too_large])
BOUND = 20          # seconds any one request may take
_CONTROL = re.compile(r"[\x00-\x08\x0B\x0C\x0E-\x1F]")

BASE_EVENT = event("fuzz", extra=(
    "ORGANIZER;CN=Rep:mailto:rep@ourco.example\n"
    "ATTENDEE;CN=\"Novák, Ján\";PARTSTAT=ACCEPTED:mailto:jan@customer.example\n"
    "LOCATION:Bratislava\nDESCRIPTION:Quarterly review\\, pricing\n"
    "RRULE:FREQ=WEEKLY;COUNT=5\nCATEGORIES:Customer\n"))
BASE_CARD = vcard("fuzzcard")

PROPERTY_NAMES = ["DTSTART", "DTEND", "DURATION", "RRULE", "RDATE", "EXDATE", "EXRULE",
                  "RECURRENCE-ID", "UID", "ATTENDEE", "ORGANIZER", "SUMMARY", "BEGIN", "END",
                  "DTSTART;TZID=Europe/Bratislava", "DTSTART;VALUE=DATE", "CLASS", "STATUS",
                  "TZOFFSETFROM", "X-CRM-CUSTOMER", "ATTACH;ENCODING=BASE64;VALUE=BINARY",
                  "EMAIL", "FN", "N", "VERSION"]
VALUES = st.one_of(
    st.sampled_from(["20250110T100000Z", "20250110", "VEVENT", "VCALENDAR", "VTIMEZONE",
                     "VALARM", "FREQ=DAILY", "FREQ=SECONDLY", "FREQ=YEARLY;BYMONTH=2;BYMONTHDAY=30",
                     "mailto:x@y.example", "PT1H", "-PT1H", "P1W", "PRIVATE", "CANCELLED",
                     "2.0", "4.0", ";;;", "\\,\\;\\n", "", "=", ":"]),
    st.text(max_size=40))
# text with lone surrogates from U+DC80..U+DCFF: encoded with surrogateescape they become
# the raw bytes 0x80..0xFF, i.e. invalid UTF-8 inside otherwise valid text
ESCAPED_TEXT = st.text(alphabet=st.one_of(st.characters(blacklist_categories=("Cs",)),
                                          st.characters(min_codepoint=0xDC80,
                                                        max_codepoint=0xDCFF)),
                       max_size=30)


@st.composite
def mutation(draw, size: int):
    kind = draw(st.sampled_from(["insert", "delete", "line", "unicode", "truncate", "fold",
                                 "lf", "duplicate"]))
    at = draw(st.integers(0, size))
    if kind == "insert":
        return kind, at, draw(st.binary(min_size=1, max_size=12))
    if kind == "delete":
        return kind, at, draw(st.integers(1, 40))
    if kind == "line":
        name = draw(st.sampled_from(PROPERTY_NAMES))
        return kind, at, f"{name}:{draw(VALUES)}\r\n".encode("utf-8", "surrogatepass")
    if kind == "unicode":
        return kind, at, draw(ESCAPED_TEXT).encode("utf-8", "surrogateescape")
    if kind == "fold":
        return kind, at, draw(st.sampled_from([b"\r\n ", b"\r\n\t", b"\n "]))
    return kind, at, None


def apply(body: bytes, mutations) -> bytes:
    for kind, at, arg in mutations:
        at = min(at, len(body))
        if kind in ("insert", "unicode", "fold"):
            body = body[:at] + arg + body[at:]
        elif kind == "delete":
            body = body[:at] + body[at + arg:]
        elif kind == "line":               # at the start of the line holding ``at``
            start = body.rfind(b"\n", 0, at) + 1
            body = body[:start] + arg + body[start:]
        elif kind == "truncate":
            body = body[:at]
        elif kind == "lf":
            body = body.replace(b"\r\n", b"\n")
        elif kind == "duplicate":
            start = body.rfind(b"\n", 0, at) + 1
            end = body.find(b"\n", at)
            end = len(body) if end < 0 else end + 1
            body = body[:end] + body[start:end] + body[end:]
    return body


def bodies(base: str):
    raw = base.encode()
    return st.lists(mutation(len(raw)), min_size=1, max_size=4).map(lambda m: apply(raw, m))


def bounded(fn, *args):
    return within(BOUND, fn, *args)[0]


class Target:
    """One SQLite database and application for all the examples of a test."""

    def __init__(self, url: str) -> None:
        self.url = url
        app = CrmApplication(make_configuration(url, storage={
            "crm_internal_domains": "ourco.example"}))
        name, password = create_user(url)
        self.dav = Dav(app, name, password)
        assert self.dav.propfind(f"/{name}/").status == 207

    def items_at(self, href: str) -> list[tuple[str, str]]:
        with db.shared_engine(self.url).connect() as conn:
            return conn.execute(text(
                "SELECT i.uid, i.text FROM dav_items i JOIN dav_collections c "
                "ON c.id = i.collection_id WHERE c.path LIKE :home AND i.href = :href"),
                {"home": self.dav.user + "/%", "href": href}).all()

    def check_put(self, collection: str, href: str, body: bytes, content_type: str):
        path = f"/{self.dav.user}/{collection}/{href}"
        before = db_snapshot(self.url)
        response = bounded(self.dav.put, path, body, content_type)
        label(f"status {response.status}")       # --hypothesis-show-statistics
        assert response.status < 500, (response.status, response.body[:300], body)
        if response.status >= 400:
            assert db_snapshot(self.url) == before, (response.status, body)
            return response
        assert response.status in (201, 204), (response.status, body)
        [(uid, kept)] = self.items_at(href)
        got = self.dav.get(path)
        assert got.status == 200 and got.body == kept.encode("utf-8")
        try:
            sent = body.decode("utf-8")
        except UnicodeDecodeError:
            sent = body.decode("latin-1")          # Radicale's fallback
        sent = _CONTROL.sub("", sent)
        if rawtext.object_uids(sent) == {uid}:
            assert kept == sent, body               # the client's own text, as parsed
        assert self.dav.delete(path).status == 200  # the next example starts clean
        return response


@pytest.fixture
def target(sqlite_url):
    return Target(sqlite_url)


@FUZZ
@given(body=bodies(BASE_EVENT))
def test_fuzzed_event_puts(target, body):
    target.check_put("calendar", "fuzz.ics", body, "text/calendar")


@settings(FUZZ, max_examples=150)
@given(body=bodies(BASE_CARD))
def test_fuzzed_vcard_puts(target, body):
    target.check_put("contacts", "fuzz.vcf", body, "text/vcard")


BY = {"BYMONTH": (1, 12), "BYMONTHDAY": (-31, 31), "BYYEARDAY": (-366, 366),
      "BYWEEKNO": (-53, 53), "BYHOUR": (0, 23), "BYMINUTE": (0, 59), "BYSECOND": (0, 59),
      "BYSETPOS": (-10, 10)}


@st.composite
def rrules(draw):
    parts = ["FREQ=" + draw(st.sampled_from(["SECONDLY", "MINUTELY", "HOURLY", "DAILY",
                                             "WEEKLY", "MONTHLY", "YEARLY"]))]
    if draw(st.booleans()):
        parts.append(f"INTERVAL={draw(st.integers(1, 500))}")
    end = draw(st.sampled_from(["", "COUNT", "UNTIL"]))
    if end == "COUNT":
        parts.append(f"COUNT={draw(st.integers(1, 20000))}")
    elif end == "UNTIL":
        parts.append(f"UNTIL={draw(st.integers(2025, 2200))}0101T000000Z")
    for name in draw(st.lists(st.sampled_from(sorted(BY)), max_size=4, unique=True)):
        low, high = BY[name]
        values = draw(st.lists(st.integers(low, high).filter(bool), min_size=1, max_size=12))
        parts.append(name + "=" + ",".join(map(str, values)))
    if draw(st.booleans()):
        days = draw(st.lists(st.sampled_from(["MO", "TU", "WE", "TH", "FR", "SA", "SU"]),
                             min_size=1, max_size=7, unique=True))
        prefix = draw(st.sampled_from(["", "1", "-1", "5", "53"]))
        parts.append("BYDAY=" + ",".join(prefix + d for d in days))
    return ";".join(parts)


@settings(FUZZ, max_examples=200)
@given(rule=rrules(), start=st.sampled_from(["20250110T100000Z", "20240229T235959Z",
                                             "20250110"]))
def test_random_recurrence_rules_answer_in_bounded_time(target, rule, start):
    dates = f"DTSTART;VALUE=DATE:{start}\nDTEND;VALUE=DATE:20250111\n" if len(start) == 8 \
        else f"DTSTART:{start}\nDTEND:{start[:9]}235959Z\n"
    body = event("rr", extra=f"RRULE:{rule}\n").replace(
        "DTSTART:20250110T100000Z\r\nDTEND:20250110T110000Z\r\n", dates.replace("\n", "\r\n"))
    path = f"/{target.dav.user}/calendar/rr.ics"
    before = db_snapshot(target.url)
    started = time.monotonic()
    response = bounded(target.dav.put, path, body)
    label(f"status {response.status}")
    assert response.status in (201, 400), (response.status, response.body, rule)
    if response.status == 400:
        assert db_snapshot(target.url) == before, rule
        return
    report = bounded(target.dav.report, f"/{target.dav.user}/calendar/",
                     time_range_query("20300101T000000Z", "20310101T000000Z"))
    assert report.status == 207, rule
    assert time.monotonic() - started < BOUND, rule
    assert target.dav.delete(path).status == 200
