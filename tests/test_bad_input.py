"""Bad input: the right status, one line of reason, and nothing changed in the database."""

from __future__ import annotations

import logging
import time

import pytest

from davclient import Dav, make_configuration
from ical import crlf, event, vcard
from server import request_context
from server.app import CrmApplication


def one_line(response) -> str:
    text = response.text
    assert text.endswith("\n") and text.count("\n") == 1, text
    return text.strip()


TWO_UIDS = crlf("""BEGIN:VCALENDAR
VERSION:2.0
PRODID:x
BEGIN:VEVENT
UID:one
DTSTART:20250101T100000Z
END:VEVENT
BEGIN:VEVENT
UID:two
DTSTART:20250101T100000Z
END:VEVENT
END:VCALENDAR""")

BAD_PUTS = {
    "garbage": ("this is not a calendar", "invalid iCalendar/vCard object"),
    "truncated": (event("t").rsplit("END:VEVENT", 1)[0], "invalid iCalendar/vCard object"),
    "two uids": (TWO_UIDS, "different UIDs"),
    "bad date": (event("d").replace("DTSTART:20250110T100000Z", "DTSTART:2025-13-45"),
                 "invalid iCalendar/vCard object"),
    "empty": ("", "empty request body"),
}


@pytest.mark.parametrize("case", sorted(BAD_PUTS))
def test_malformed_calendar_put(dav, snapshot, case):
    body, reason = BAD_PUTS[case]
    before = snapshot()
    response = dav.put(f"/{dav.user}/calendar/bad.ics", body)
    assert response.status == 400
    assert reason in one_line(response)
    assert snapshot() == before


def test_vcard_into_calendar_and_event_into_addressbook(dav, snapshot):
    before = snapshot()
    r = dav.put(f"/{dav.user}/calendar/c.vcf", vcard("c"), "text/vcard")
    assert r.status == 400 and one_line(r)
    r = dav.put(f"/{dav.user}/contacts/e.ics", event("e"))
    assert r.status == 400 and one_line(r)
    r = dav.put(f"/{dav.user}/contacts/bad.vcf", "BEGIN:VCARD\r\nFN:x\r\n", "text/vcard")
    assert r.status == 400 and "invalid iCalendar/vCard object" in one_line(r)
    assert snapshot() == before


def test_paths_that_do_not_exist(dav, snapshot):
    before = snapshot()
    assert dav.put(f"/{dav.user}/nope/e.ics", event("e")).status == 409
    assert dav.get(f"/{dav.user}/calendar/nope.ics").status == 404
    assert dav.propfind(f"/{dav.user}/nope/").status == 404
    assert dav.delete(f"/{dav.user}/nope/").status == 404
    assert dav.request("MOVE", f"/{dav.user}/calendar/nope.ics", b"",
                       {"Destination": f"http://127.0.0.1:5232/{dav.user}/calendar/x.ics"}).status == 404
    assert snapshot() == before


@pytest.mark.parametrize("method", ["PROPFIND", "REPORT", "PROPPATCH"])
def test_malformed_xml(dav, snapshot, method):
    before = snapshot()
    response = dav.request(method, f"/{dav.user}/calendar/", "<D:propfind xmlns:D='DAV:'><oops",
                           {"Content-Type": "application/xml", "Depth": "0"})
    assert response.status == 400
    assert one_line(response).startswith("malformed XML body")
    assert snapshot() == before


def test_xml_entity_expansion_is_refused(dav, snapshot):
    bomb = ('<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaaaaaaaa">'
            '<!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">]>'
            '<D:propfind xmlns:D="DAV:"><D:prop>&b;</D:prop></D:propfind>')
    before = snapshot()
    response = dav.request("PROPFIND", f"/{dav.user}/calendar/", bomb,
                           {"Content-Type": "application/xml", "Depth": "0"})
    assert response.status == 400
    assert "malformed XML body" in one_line(response)
    assert snapshot() == before


def test_body_over_the_limit_is_413_under_any_server(db_url, make_user, snapshot):
    app = CrmApplication(make_configuration(db_url, server={"max_content_length": "2000"}))
    name, password = make_user()
    dav = Dav(app, name, password)
    assert dav.propfind(f"/{name}/").status == 207
    before = snapshot()
    big = event("big", extra="DESCRIPTION:" + "x" * 3000 + "\n")
    response = dav.put(f"/{name}/calendar/big.ics", big)
    assert response.status == 413
    assert one_line(response) == "request body of %d bytes exceeds the limit of 2000 bytes" % (
        len(big.encode()))
    assert snapshot() == before


def test_invalid_content_length(dav, snapshot):
    before = snapshot()
    response = dav.request("PUT", f"/{dav.user}/calendar/x.ics", b"", {"Content-Length": "abc"})
    assert response.status == 400 and one_line(response) == "invalid Content-Length header"
    assert snapshot() == before


def test_wrong_credentials_and_anonymous(app, make_user, snapshot):
    name, password = make_user()
    before = snapshot()
    wrong = Dav(app, name, "wrong password")
    r = wrong.propfind(f"/{name}/")
    assert r.status == 401 and "www-authenticate" in r.headers
    assert Dav(app, "nobody-here", "whatever1").propfind("/nobody-here/").status == 401
    assert Dav(app).propfind(f"/{name}/").status == 401
    assert snapshot() == before


def test_database_down_gives_503_with_retry_after(monkeypatch, caplog):
    monkeypatch.setattr(request_context, "outage_log", request_context.OutageLog())
    # Nothing listens on port 1: every connection attempt fails at once.
    app = CrmApplication(make_configuration("postgresql://postgres@127.0.0.1:1/nothing"))
    caplog.clear()
    for _ in range(5):
        response = Dav(app, "alice", "secret123").propfind("/alice/")
        assert response.status == 503
        assert response.headers["retry-after"] == "5"
        assert one_line(response) == "the database is unavailable, retry later"
    anonymous = Dav(app).request("OPTIONS", "/")
    assert anonymous.status == 200  # requests that need no database still work
    # The outage is logged once, in one line, not as an error and a traceback per request.
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert [r.getMessage().split(":")[0] for r in errors] == [
        "Database unavailable (requests get 503 until it is back)"], errors
    assert "Traceback" not in caplog.text


def test_an_outage_is_logged_when_it_starts_every_few_seconds_and_when_it_ends(caplog):
    log = request_context.OutageLog(every=0.2)
    caplog.set_level(logging.INFO)
    for _ in range(3):
        log.failed(ConnectionError("connection refused"))
    time.sleep(0.25)
    log.failed(ConnectionError("connection refused"))
    log.worked()
    log.worked()
    lines = [r.getMessage() for r in caplog.records if r.name == "radicale-crm"]
    assert lines[0] == ("Database unavailable (requests get 503 until it is back): "
                        "connection refused")
    assert lines[1].startswith("Database still unavailable after 0 s (4 requests answered 503 "
                               "so far)")
    assert lines[2].startswith("Database available again after 0.")
    assert lines[2].endswith("(4 requests answered 503)") and len(lines) == 3
