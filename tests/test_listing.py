"""Whole-collection listings (``server/listing.py``): PROPFIND depth 1 and sync-collection
answered from the index give the same XML as Radicale's own code, which answers whatever
the listing does not take."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from urllib.parse import quote

import pytest
from hypothesis import example, given, settings, strategies as st

from davclient import Dav, make_configuration
from ical import event, multiget, sync_collection, vcard
from server.app import CrmApplication
from server import listing
import test_redaction

NAMES = ["plain.ics", "a b.ics", "x&y.ics", "ü-visit.ics", "z~1.ics"]
office = test_redaction.office     # the fixture: a calendar and its readers at every level
PROP_SETS = [["getetag"], ["getetag", "getcontenttype"], ["resourcetype", "getetag"],
             ["getcontenttype", "getlastmodified", "resourcetype", "getetag"]]


def propfind_body(props: list[str]) -> str:
    return ('<?xml version="1.0" encoding="utf-8"?><D:propfind xmlns:D="DAV:"><D:prop>'
            + "".join(f"<D:{p}/>" for p in props) + "</D:prop></D:propfind>")


def sync_body(token: str, props: list[str]) -> str:
    return sync_collection(token).replace("<D:getetag/>", "".join(f"<D:{p}/>" for p in props))


def canonical(body: bytes, ordered: bool = True):
    if ordered:
        return ET.canonicalize(body.decode("utf-8"), strip_text=False)
    # a multiget's responses come in the order of a Python set in Radicale
    root = ET.fromstring(body)
    return sorted(ET.canonicalize(ET.tostring(r, "unicode"), strip_text=False)
                  for r in root.findall("{DAV:}response")), len(root)


@pytest.fixture
def compare(monkeypatch):
    """Send a request with the listing on, then with it off (Radicale answers): the same
    status and XML; returns whether the listing answered the first."""
    answered = [0]
    for name in ("propfind", "report"):
        original = getattr(listing, name)

        def counted(*args, _original=original, **kwargs):
            answer = _original(*args, **kwargs)
            answered[0] += answer is not None
            return answer

        monkeypatch.setattr(listing, name, counted)

    def run(client, method: str, path: str, body: str, headers: dict | None = None,
            ordered: bool = True):
        headers = {"Depth": "1", "Content-Type": "application/xml", **(headers or {})}
        answered[0] = 0
        fast = client.request(method, path, body, headers)
        used = answered[0] > 0
        with monkeypatch.context() as off:
            off.setattr(listing, "propfind", lambda *a, **k: None)
            off.setattr(listing, "report", lambda *a, **k: None)
            slow = client.request(method, path, body, headers)
        assert fast.status == slow.status, (fast.status, slow.status, slow.text)
        assert fast.headers.get("content-type") == slow.headers.get("content-type")
        if slow.status == 207:
            assert canonical(fast.body, ordered) == canonical(slow.body, ordered)
        else:
            assert fast.body == slow.body
        return used, fast

    return run


def fill(dav) -> tuple[str, str]:
    cal, book = f"/{dav.user}/calendar/", f"/{dav.user}/book/"
    for i, name in enumerate(NAMES):
        assert dav.put(cal + name, event(f"u{i}", summary=f"Visit {i}")).status == 201
    todo = event("todo").replace("VEVENT", "VTODO").replace("DTEND:", "DUE:")
    assert dav.put(cal + "todo.ics", todo).status == 201
    assert dav.request("MKCOL", book, """<?xml version="1.0" encoding="utf-8"?>
<D:mkcol xmlns:D="DAV:" xmlns:CR="urn:ietf:params:xml:ns:carddav"><D:set><D:prop>
<D:resourcetype><D:collection/><CR:addressbook/></D:resourcetype></D:prop></D:set></D:mkcol>""",
                       {"Content-Type": "application/xml"}).status == 201
    for i in range(3):
        assert dav.put(book + f"c{i}.vcf", vcard(f"c{i}", email=f"c{i}@example.sk"),
                       content_type="text/vcard").status == 201
    return cal, book


@pytest.mark.parametrize("props", PROP_SETS, ids="+".join)
def test_propfind_depth_1_is_radicales_answer(dav, compare, props):
    cal, book = fill(dav)
    for path in (cal, book):
        used, reply = compare(dav, "PROPFIND", path, propfind_body(props))
        assert used and reply.status == 207
        assert reply.text.count("<response>") == (len(NAMES) + 2 if path == cal else 4)
    used, reply = compare(dav, "PROPFIND", cal, propfind_body(props),
                          {"X-Script-Name": "/dav"})
    assert used and f"/dav/{dav.user}/calendar/a%20b.ics" in reply.text


@pytest.mark.parametrize("props", [["getetag"], ["getcontenttype", "getetag"]], ids="+".join)
def test_sync_collection_is_radicales_answer(dav, compare, props):
    cal, book = fill(dav)
    tokens = {}
    for path in (cal, book):
        used, first = compare(dav, "REPORT", path, sync_body("", props))
        assert used and first.text.count("<response>") == (len(NAMES) + 1 if path == cal else 3)
        tokens[path] = ET.fromstring(first.body).findtext("{DAV:}sync-token")
        used, same = compare(dav, "REPORT", path, sync_body(tokens[path], props))
        assert used and "<response>" not in same.text
    assert dav.put(cal + "new.ics", event("new")).status == 201
    assert dav.put(cal + "a b.ics", event("u1", summary="changed")).status == 204
    assert dav.delete(cal + "x&y.ics").status == 200
    used, changes = compare(dav, "REPORT", cal, sync_body(tokens[cal], props))
    assert used
    statuses = {r.findtext("{DAV:}href"): r.findtext(".//{DAV:}status")
                for r in ET.fromstring(changes.body).findall("{DAV:}response")}
    assert statuses == {f"/{dav.user}/calendar/new.ics": "HTTP/1.1 200 OK",
                        f"/{dav.user}/calendar/a%20b.ics": "HTTP/1.1 200 OK",
                        f"/{dav.user}/calendar/x%26y.ics": "HTTP/1.1 404 Not Found"}


@pytest.mark.parametrize("body", [
    propfind_body(["getetag", "displayname"]),
    propfind_body(["getetag", "getcontentlength"]),
    "",                                                         # allprop
    '<D:propfind xmlns:D="DAV:"><D:propname/></D:propfind>',
], ids=["displayname", "getcontentlength", "allprop", "propname"])
def test_other_propfinds_are_left_to_radicale(dav, compare, body):
    cal, _ = fill(dav)
    used, reply = compare(dav, "PROPFIND", cal, body)
    assert not used and reply.status == 207


def test_other_listings_are_left_to_radicale(dav, compare, make_user):
    cal, _ = fill(dav)
    # the home (no tag), depth 0, calendar-data in a sync, an invalid token, a stranger
    assert not compare(dav, "PROPFIND", f"/{dav.user}/", propfind_body(["getetag"]))[0]
    used, reply = compare(dav, "PROPFIND", cal, propfind_body(["getetag"]), {"Depth": "0"})
    assert not used and reply.text.count("<response>") == 1
    with_data = sync_body("", ["getetag"]).replace(
        "<D:getetag/>", '<D:getetag/><C:calendar-data xmlns:C="urn:ietf:params:xml:ns:caldav"/>')
    assert not compare(dav, "REPORT", cal, with_data)[0]
    used, reply = compare(dav, "REPORT", cal, sync_body("http://radicale-crm/ns/sync/x-1",
                                                        ["getetag"]))
    assert not used and reply.status == 403 and "valid-sync-token" in reply.text
    stranger = dav.as_user(*make_user())
    for method, body in (("PROPFIND", propfind_body(["getetag"])),
                         ("REPORT", sync_body("", ["getetag"]))):
        used, reply = compare(stranger, method, cal, body)
        assert not used and reply.status == 403


def test_a_reader_of_redacted_copies_gets_radicales_answer(office, compare):
    """Anyone but the owner and an admin may be shown redacted copies, each with its own
    ETag (bob: summary, carol: busy, dave: read, but PRIVATE and CONFIDENTIAL items are
    redacted for him): Radicale answers them. The owner's and the admin's come from the
    listing."""
    body = propfind_body(["getetag", "getcontenttype"])
    etags = {}
    for who in ("alice", "ada", "bob", "carol", "dave"):
        used, reply = compare(getattr(office, who), "PROPFIND", office.cal, body)
        assert used == (who in ("alice", "ada")), who
        etags[who] = {r.findtext("{DAV:}href").rsplit("/", 1)[1]: r.findtext(".//{DAV:}getetag")
                      for r in ET.fromstring(reply.body).findall("{DAV:}response")}
    items = ("pub.ics", "priv.ics", "conf.ics")
    assert [etags["ada"][i] for i in items] == [etags["alice"][i] for i in items]
    assert etags["dave"]["pub.ics"] == etags["alice"]["pub.ics"]
    for who in ("bob", "carol", "dave"):
        for item in items[0 if who != "dave" else 1:]:
            assert etags[who][item] != etags["alice"][item], (who, item)


def query_body(props: list[str], filter_: str) -> str:
    return ('<?xml version="1.0" encoding="utf-8"?><C:calendar-query xmlns:D="DAV:" '
            'xmlns:C="urn:ietf:params:xml:ns:caldav"><D:prop>'
            + "".join(f"<{p}/>" for p in props) + f"</D:prop><C:filter>{filter_}</C:filter>"
            "</C:calendar-query>")


def comp(name: str, inner: str = "") -> str:
    return f'<C:comp-filter name="VCALENDAR"><C:comp-filter name="{name}">{inner}' \
           '</C:comp-filter></C:comp-filter>'


def span(start: str, end: str) -> str:
    return f'<C:time-range start="{start}" end="{end}"/>'


def fill_series(dav) -> str:
    cal = f"/{dav.user}/calendar/"
    for href, body in {
            "weekly.ics": event("weekly", "20250106T090000Z", "20250106T100000Z",
                                extra="RRULE:FREQ=WEEKLY;COUNT=20\n"),
            "endless.ics": event("endless", "20250107T090000Z", "20250107T100000Z",
                                 extra="RRULE:FREQ=WEEKLY\n"),
            "old.ics": event("old", "20240107T090000Z", "20240107T100000Z"),
            "odd & <name>.ics": event("odd", "20250110T090000Z", "20250110T100000Z",
                                      summary="Tom & Jerry <b>"),
            "todo.ics": event("todo").replace("VEVENT", "VTODO").replace("DTEND:", "DUE:"),
    }.items():
        assert dav.put(cal + href, body).status in (201, 204), href
    return cal


@pytest.mark.parametrize("props", [["D:getetag"], ["D:getetag", "C:calendar-data"],
                                   ["D:getcontenttype", "D:getetag"]], ids="+".join)
@pytest.mark.parametrize("filter_", [
    comp("VEVENT", span("20250101T000000Z", "20250201T000000Z")),   # weekly, endless, odd
    comp("VEVENT", span("20250108T000000Z", "20250109T000000Z")),   # spans: index and parse
    comp("VEVENT", span("20250114T000000Z", "20250115T000000Z")),   # endless only
    comp("VEVENT"),                                                 # every event
    comp("VTODO", span("20250101T000000Z", "20250201T000000Z")),
], ids=["month", "between", "endless", "all", "todo"])
def test_calendar_query_is_radicales_answer(dav, compare, props, filter_):
    cal = fill_series(dav)
    used, reply = compare(dav, "REPORT", cal, query_body(props, filter_))
    assert used and reply.status == 207


@pytest.mark.parametrize("filter_", [
    '<C:comp-filter name="VCALENDAR">' + span("20250101T000000Z", "20250201T000000Z")
    + "</C:comp-filter>",                                            # a time range on VCALENDAR
    comp("VEVENT", '<C:prop-filter name="SUMMARY"><C:text-match>Tom</C:text-match>'
                   '</C:prop-filter>'),                              # not a simple filter
], ids=["calendar-range", "text-match"])
def test_other_calendar_queries_are_left_to_radicale(dav, compare, filter_):
    cal = fill_series(dav)
    used, reply = compare(dav, "REPORT", cal, query_body(["D:getetag"], filter_))
    assert not used and reply.status == 207
    expand = query_body(["D:getetag"], comp("VEVENT")).replace(
        "<D:getetag/>", '<D:getetag/><C:calendar-data><C:expand start="20250101T000000Z" '
        'end="20250201T000000Z"/></C:calendar-data>')
    assert not compare(dav, "REPORT", cal, expand)[0]


def test_multiget_is_radicales_answer(dav, compare):
    cal, book = fill(dav)
    fill_series(dav)
    wanted = [cal + quote(n) for n in NAMES + ["odd & <name>.ics", "missing.ics"]]
    used, reply = compare(dav, "REPORT", cal, multiget(wanted), ordered=False)
    assert used and reply.text.count("<response>") == len(wanted)
    assert "Tom &amp; Jerry &lt;b&gt;" in reply.text
    used, reply = compare(dav, "REPORT", cal, multiget(
        [f"http://127.0.0.1:5232{cal}weekly.ics", cal + "weekly.ics"]), ordered=False)
    assert used and reply.text.count("<response>") == 1
    cards = multiget([book + "c0.vcf", book + "c2.vcf", book + "gone.vcf"]).replace(
        "C:calendar-multiget", "CR:addressbook-multiget").replace(
        "C:calendar-data", "CR:address-data").replace(
        'xmlns:C="urn:ietf:params:xml:ns:caldav"', 'xmlns:CR="urn:ietf:params:xml:ns:carddav"')
    used, reply = compare(dav, "REPORT", book, cards, ordered=False)
    assert used and reply.text.count("<response>") == 3 and "FN:" in reply.text


def test_other_multigets_are_left_to_radicale(dav, compare, db_url):
    cal, _ = fill(dav)
    for hrefs in ([cal + "plain.ics", f"/{dav.user}/book/c0.vcf"],   # another collection
                  [cal + "plain.ics", cal],                          # the collection
                  ["/elsewhere/x.ics"]):
        used, reply = compare(dav, "REPORT", cal, multiget(hrefs), ordered=False)
        assert not used and reply.status == 207
    # an address book's multiget on a calendar: 403 supported-report
    used, reply = compare(dav, "REPORT", cal, multiget([cal + "plain.ics"]).replace(
        "C:calendar-multiget", "CR:addressbook-multiget").replace(
        'xmlns:C="urn:ietf:params:xml:ns:caldav"',
        'xmlns:C="urn:ietf:params:xml:ns:caldav" xmlns:CR="urn:ietf:params:xml:ns:carddav"'))
    assert not used and reply.status == 403
    # more VEVENTs than [reporting] max_expand_occurrence: Radicale's 400
    strict = Dav(CrmApplication(make_configuration(
        db_url, reporting={"max_expand_occurrence": "2"})), dav.user, dav.password)
    used, reply = compare(strict, "REPORT", cal, multiget([cal + n for n in NAMES[:3]]))
    assert not used and reply.status == 400
    used, reply = compare(strict, "REPORT", cal, multiget([cal + n for n in NAMES[:2]]),
                          ordered=False)
    assert used and reply.status == 207


def test_a_calendar_holding_a_collection_is_left_to_radicale(dav, compare, db_url):
    """No client makes a collection inside a calendar, but the store can hold one (an
    import, an older server): Radicale lists it too, so the listings leave those calendars
    to Radicale. Whether there is one is read with the calendar itself, not again."""
    from sqlalchemy.orm import Session

    from conftest import statements_run
    from server.crm import dav as store, db

    cal, _ = fill(dav)
    body = multiget([cal + n for n in NAMES[:2]])
    used, reply = compare(dav, "REPORT", cal, body, ordered=False)
    assert used and reply.text.count("<response>") == 2
    with statements_run(db_url) as seen:
        reply = dav.request("REPORT", cal, body, {"Depth": "1",
                                                  "Content-Type": "application/xml"})
    assert reply.status == 207
    assert not any("parent_path" in s and "EXISTS" not in s for s in seen), seen
    with Session(db.shared_engine(db_url)) as session, session.begin():
        store.create_collection(session, cal.strip("/") + "/inner", {})
    for method, request in (("REPORT", body), ("REPORT", sync_collection()),
                            ("PROPFIND", propfind_body(["getetag"]))):
        used, reply = compare(dav, method, cal, request, ordered=False)
        assert not used and reply.status == 207, (method, reply.status)


@settings(max_examples=400, deadline=None)
@given(st.text(alphabet="/.a~% ", max_size=14))
@example("/a b/c.ics")
@example("/a/./")
def test_multiget_hrefs_are_sanitised_as_radicale_does(path):
    from radicale import pathutils
    assert listing._sanitized(path) == pathutils.sanitize_path(path)
