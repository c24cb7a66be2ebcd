"""Redaction: a busy or summary reader, and any non-owner for PRIVATE and CONFIDENTIAL
items, receives a rewritten copy, by every method a client reads with."""

from __future__ import annotations

import contextlib
import io
import logging
import re
from types import SimpleNamespace

import pytest

from admin_cli.main import main
from conftest import create_user, unique_name
from davclient import Dav, make_configuration
from ical import crlf, multiget, sync_collection
from server.app import CrmApplication
from server.crm import redaction

SECRETS = ("Secret pricing talk", "override-secret", "notes-secret", "mailto:jo@",
           "X-SECRET", "x-leak", "VALARM", "alarm-secret", "ORGANIZER", "boss@ourco.example",
           "CATEGORIES", "https://crm.example/deal")
TZ = """BEGIN:VTIMEZONE
TZID:Europe/Bratislava
BEGIN:STANDARD
TZOFFSETFROM:+0200
TZOFFSETTO:+0100
DTSTART:19961027T030000
RRULE:FREQ=YEARLY;BYMONTH=10;BYDAY=-1SU
TZNAME:CET
END:STANDARD
END:VTIMEZONE
"""
SECRET_PROPS = """DESCRIPTION:notes-secret
ORGANIZER;CN=Boss:mailto:boss@ourco.example
ATTENDEE;CN=Jo;X-LEAK=x-leak:mailto:jo@{domain}
CATEGORIES:Deals
URL:https://crm.example/deal
X-SECRET:yes
BEGIN:VALARM
ACTION:DISPLAY
TRIGGER:-PT15M
DESCRIPTION:alarm-secret
END:VALARM
"""


def event(uid: str, klass: str = "", extra: str = "", domain: str = "acme.example") -> str:
    return crlf(f"""BEGIN:VCALENDAR
VERSION:2.0
PRODID:-//radicale-crm tests//EN
X-WR-CALNAME:x-leak
{TZ}BEGIN:VEVENT
UID:{uid}
DTSTAMP:20260101T000000Z
DTSTART;TZID=Europe/Bratislava;X-LEAK=x-leak:20261207T100000
DTEND;TZID=Europe/Bratislava:20261207T110000
RRULE:FREQ=WEEKLY;COUNT=4
SUMMARY:Secret pricing talk
LOCATION:Vienna HQ
{klass}{SECRET_PROPS.format(domain=domain)}END:VEVENT
BEGIN:VEVENT
UID:{uid}
DTSTAMP:20260101T000000Z
RECURRENCE-ID;TZID=Europe/Bratislava:20261214T100000
DTSTART;TZID=Europe/Bratislava:20261214T140000
DTEND;TZID=Europe/Bratislava:20261214T150000
SUMMARY:override-secret
LOCATION:Vienna HQ
{klass}{SECRET_PROPS.format(domain=domain)}END:VEVENT
{extra}END:VCALENDAR""")


def cli(url: str, *argv: str) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        code = main(["--db-url", url, *argv])
    assert code == 0, out.getvalue()
    return out.getvalue()


@pytest.fixture
def office(db_url):
    """alice (rep, team north) owns the events; bob is her teammate (summary), carol has a
    busy grant, dave a read grant, mia is their manager (write), ada an admin."""
    app = CrmApplication(make_configuration(db_url, storage={
        "crm_internal_domains": "ourco.example"}))
    north = unique_name("north")
    cli(db_url, "team", "add", north)
    people = {}
    for key, role in (("alice", "rep"), ("bob", "rep"), ("carol", "rep"), ("dave", "rep"),
                      ("mia", "manager"), ("ada", "admin")):
        name, password = create_user(db_url, unique_name(key), role=role)
        people[key] = Dav(app, name, password)
        assert people[key].propfind(f"/{name}/").status == 207
    for key in ("alice", "bob", "mia"):
        cli(db_url, "team", "add-member", north, people[key].user)
    cal = f"{people['alice'].user}/calendar"
    cli(db_url, "grant", "add", cal, "--to", f"user:{people['carol'].user}", "--level", "busy")
    cli(db_url, "grant", "add", cal, "--to", f"user:{people['dave'].user}", "--level", "read")
    customer, domain = unique_name("ACME Corporation "), unique_name("acme") + ".example"
    cli(db_url, "customer", "add", customer, "--short-name", "ACME-short", "--domain", domain)
    alice = people["alice"]
    for uid, klass in (("pub", ""), ("priv", "CLASS:PRIVATE\n"),
                       ("conf", "CLASS:CONFIDENTIAL\n")):
        reply = alice.put(f"/{cal}/{uid}.ics", event(uid, klass, domain=domain))
        assert reply.status == 201, reply.text
    return SimpleNamespace(url=db_url, cal=f"/{cal}/", domain=domain, **people)


def reads(reader: Dav, cal: str) -> dict[str, str]:
    """Everything ``reader`` can read of the calendar, by every method, keyed by method."""
    query = """<?xml version="1.0" encoding="utf-8"?>
<C:calendar-query xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav">
<D:prop><D:getetag/><C:calendar-data/></D:prop>
<C:filter><C:comp-filter name="VCALENDAR"><C:comp-filter name="VEVENT">
<C:time-range start="20261201T000000Z" end="20270101T000000Z"/></C:comp-filter>
</C:comp-filter></C:filter></C:calendar-query>"""
    expand = query.replace("<C:calendar-data/>", '<C:calendar-data><C:expand start='
                           '"20261201T000000Z" end="20270101T000000Z"/></C:calendar-data>')
    sync = sync_collection().replace("<D:getetag/>", "<D:getetag/><C:calendar-data/>") \
        .replace('xmlns:D="DAV:"', 'xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav"')
    freebusy = """<?xml version="1.0" encoding="utf-8"?>
<C:free-busy-query xmlns:C="urn:ietf:params:xml:ns:caldav">
<C:time-range start="20261201T000000Z" end="20270101T000000Z"/></C:free-busy-query>"""
    out = {}
    for uid in ("pub", "priv", "conf"):
        out[f"GET {uid}"] = reader.get(f"{cal}{uid}.ics")
    out["multiget"] = reader.report(cal, multiget([f"{cal}{u}.ics"
                                                   for u in ("pub", "priv", "conf")]))
    out["calendar-query"] = reader.report(cal, query)
    out["calendar-query expand"] = reader.report(cal, expand)
    out["sync-collection"] = reader.report(cal, sync)
    out["free-busy"] = reader.report(cal, freebusy)
    out["collection GET"] = reader.get(cal)
    for method, reply in out.items():
        assert reply.status in (200, 207), (method, reply.status, reply.text)
    return {method: reply.text for method, reply in out.items()}


def leaks(text: str) -> list[str]:
    return [secret for secret in SECRETS if secret.lower() in text.lower()]


def test_owner_reads_everything(office):
    for method, text in reads(office.alice, office.cal).items():
        if method != "free-busy":
            assert "Secret pricing talk" in text and "VALARM" in text, method


@pytest.mark.parametrize("who", ["bob", "carol"])
def test_busy_and_summary_readers_get_no_hidden_property_by_any_method(office, who):
    texts = reads(getattr(office, who), office.cal)
    for method, text in texts.items():
        assert leaks(text) == [], (method, leaks(text))
    # the times are all there: four weekly occurrences, the third moved to the afternoon
    assert texts["free-busy"].count("FREEBUSY") >= 4
    assert "20261214T130000Z/20261214T140000Z" in texts["free-busy"].replace("\r\n ", "")
    summary = who == "bob"   # bob: teammate (summary); carol: busy grant
    assert ("Vienna HQ" in texts["GET pub"]) is summary
    assert ("SUMMARY:ACME-short" in texts["GET pub"]) is summary
    assert "SUMMARY:Busy" in texts["GET priv"] and "Vienna" not in texts["GET priv"]


def test_write_grantee_sees_public_in_full_but_private_busy_and_confidential_summary(office):
    texts = reads(office.mia, office.cal)
    assert "notes-secret" in texts["GET pub"]
    assert leaks(texts["GET priv"]) == [] and "Vienna" not in texts["GET priv"]
    assert leaks(texts["GET conf"]) == [] and "SUMMARY:ACME-short" in texts["GET conf"]
    assert "Vienna HQ" in texts["GET conf"]
    assert texts["multiget"].count("notes-secret") == 2          # pub only: two components
    dave = reads(office.dave, office.cal)                         # read grant: same rule
    assert leaks(dave["GET priv"]) == [] and "notes-secret" in dave["GET pub"]


def test_admins_see_private_items_in_full(office):
    assert "notes-secret" in office.ada.get(f"{office.cal}priv.ics").text


def test_redacted_copies_carry_their_own_stable_etag(office):
    full = office.alice.get(f"{office.cal}pub.ics").headers["etag"]
    first = office.bob.get(f"{office.cal}pub.ics").headers["etag"]
    again = office.bob.get(f"{office.cal}pub.ics").headers["etag"]
    assert first == again != full
    listed = office.bob.report(office.cal, multiget([f"{office.cal}pub.ics"])).text
    assert first.strip('"') in listed.replace("&quot;", '"')


def test_text_match_cannot_probe_hidden_text(office):
    def probe(reader: Dav, prop: str, text: str) -> list[str]:
        body = f"""<?xml version="1.0" encoding="utf-8"?>
<C:calendar-query xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav">
<D:prop><D:getetag/></D:prop><C:filter><C:comp-filter name="VCALENDAR">
<C:comp-filter name="VEVENT"><C:prop-filter name="{prop}">
<C:text-match collation="i;ascii-casemap">{text}</C:text-match></C:prop-filter>
</C:comp-filter></C:comp-filter></C:filter></C:calendar-query>"""
        reply = reader.report(office.cal, body)
        assert reply.status == 207, reply.text
        return re.findall(r"/(\w+)\.ics<", reply.text)
    probes = [("SUMMARY", "pricing"), ("DESCRIPTION", "notes-secret"),
              ("ATTENDEE", "mailto:jo@"), ("X-SECRET", "yes")]
    for prop, text in probes:
        assert sorted(probe(office.alice, prop, text)) == ["conf", "priv", "pub"], prop
        assert probe(office.bob, prop, text) == [], prop
        assert probe(office.mia, prop, text) == ["pub"], prop      # conf/priv redacted for mia
    assert sorted(probe(office.bob, "LOCATION", "Vienna")) == ["conf", "pub"]
    assert probe(office.carol, "LOCATION", "Vienna") == []


def test_a_redacted_copy_can_never_overwrite_delete_or_move_the_full_event(office, snapshot,
                                                                           caplog):
    mia, cal = office.mia, office.cal
    before = snapshot()
    for uid in ("priv", "conf"):
        seen = mia.get(f"{cal}{uid}.ics")
        reply = mia.put(f"{cal}{uid}.ics", seen.text.replace("Busy", "Mine"),
                        **{"If-Match": seen.headers["etag"]})
        assert reply.status == 403, reply.text
        assert "redacted" in reply.text and reply.text.count("\n") == 1
        assert mia.delete(f"{cal}{uid}.ics").status == 403
        moved = mia.request("MOVE", f"{cal}{uid}.ics", headers={
            "Destination": f"http://127.0.0.1:5232{cal}{uid}-moved.ics"})
        assert moved.status == 403, moved.text
    assert snapshot() == before
    # a refusal is a normal answer, not a crash with a traceback in the log
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []
    assert any("Refused DELETE" in r.getMessage() for r in caplog.records)
    # what mia saw in full she may change
    changed = event("pub", domain=office.domain).replace("Vienna HQ", "Graz")
    assert mia.put(f"{cal}pub.ics", changed).status == 204


def mirrors(reader: Dav) -> dict[str, str]:
    """The collections shared with ``reader`` as listed in their home: display name → href."""
    listing = reader.propfind(f"/{reader.user}/", depth="1").text
    found = {}
    for response in listing.split("<response>")[1:]:
        href = re.search(r"<href>([^<]*)</href>", response).group(1)
        name = re.search(r"<displayname>([^<]*)</displayname>", response)
        if "/shared-" in href:
            found[name.group(1)] = href
    return found


def test_shared_calendar_appears_in_the_sharee_home_named_after_its_owner(office):
    # bob's teammates are alice and their manager mia: both calendars are listed
    listed = mirrors(office.bob)
    assert set(listed) == {f"Calendar ({office.alice.user})", f"Calendar ({office.mia.user})"}
    mirror = listed[f"Calendar ({office.alice.user})"]
    owner = office.bob.propfind(mirror, """<?xml version="1.0" encoding="utf-8"?>
<D:propfind xmlns:D="DAV:"><D:prop><D:owner/></D:prop></D:propfind>""").text
    assert f"<href>/{office.alice.user}/</href>" in owner, owner
    texts = reads(office.bob, mirror)
    for method, text in texts.items():
        assert leaks(text) == [], method
    assert f"{mirror}pub.ics" in texts["multiget"]
    # carol's home lists it too (a grant); nobody can use another user's mirror path
    assert list(mirrors(office.carol)) == [f"Calendar ({office.alice.user})"]
    assert office.carol.get(f"{mirror}pub.ics").status == 403
    assert office.ada.get(f"{mirror}pub.ics").status == 403
    # the sharee may not rename or delete the owner's calendar through it
    assert office.bob.delete(mirror).status == 403
    assert office.bob.get(f"{office.cal}pub.ics").status == 200


def test_writes_through_a_write_grant_land_in_the_owner_calendar(office):
    mirror = mirrors(office.mia)[f"Calendar ({office.alice.user})"]
    reply = office.mia.put(f"{mirror}new.ics", event("new", domain=office.domain))
    assert reply.status == 201, reply.text
    assert "notes-secret" in office.alice.get(f"{office.cal}new.ics").text
    visit = cli(office.url, "visit", "list", "--json")
    assert '"new"' in visit


# --- the redaction function itself ------------------------------------------------------------

def test_redaction_keeps_time_zones_verbatim_and_folds_long_lines():
    text = event("x", extra="")
    busy = redaction.redact(text, "busy")
    assert TZ.replace("\n", "\r\n") in busy
    assert "X-WR-CALNAME" not in busy and "X-LEAK" not in busy
    assert "DTSTART;TZID=Europe/Bratislava:20261207T100000" in busy
    long_name = "Ž" * 60
    summary = redaction.redact(text, "summary", customer=long_name + ", a.s.")
    assert all(len(line.encode()) <= 75 for line in summary.split("\r\n"))
    unfolded = summary.replace("\r\n ", "")
    assert f"SUMMARY:{long_name}\\, a.s." in unfolded


@pytest.mark.parametrize("text,klass", [
    (event("x"), "PUBLIC"),
    (event("x", "CLASS:CONFIDENTIAL\n"), "CONFIDENTIAL"),
    (event("x", "CLASS:PRIVATE\n"), "PRIVATE"),
    (event("x").replace("SUMMARY:override-secret", "SUMMARY:o\nCLASS:PRIVATE"), "PRIVATE"),
    (event("x", "CLASS:X-SECRET\n"), "X-SECRET"),
    (event("x").replace("notes-secret", "CLASS:PRIVATE in a description"), "PUBLIC"),
])
def test_object_class_is_the_most_restrictive_of_all_components(text, klass):
    assert redaction.object_class(text) == klass
