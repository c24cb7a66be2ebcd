"""End to end over a real socket: the ``caldav`` client library (and raw HTTP where the
library has no helper, e.g. CardDAV) against a ``crm-server`` process.

One server per database per module (SQLite file, and PostgreSQL when
``CRM_TEST_DATABASE_URL`` is set); every test works as a user of its own, so tests never
see each other's data.
"""

from __future__ import annotations

import datetime as dt
import shutil
import threading
import uuid
import xml.etree.ElementTree as ET
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Optional
from urllib.parse import unquote, urlsplit

import caldav
import icalendar
import pytest
from caldav.lib import error as caldav_error

from conftest import create_user
from davclient import LiveServer, http_request
from davclient import Response as Reply

pytestmark = pytest.mark.e2e

UTC = dt.timezone.utc
SYNC_TOKEN_PREFIX = "http://radicale-crm/ns/sync/"
NS = {"D": "DAV:", "C": "urn:ietf:params:xml:ns:caldav",
      "CR": "urn:ietf:params:xml:ns:carddav", "CS": "http://calendarserver.org/ns/"}


# --- the server and its users --------------------------------------------------------------

@pytest.fixture(scope="module", params=["sqlite",
                                        pytest.param("postgresql", marks=pytest.mark.postgresql)])
def server(request, tmp_path_factory, sqlite_template):
    """One ``crm-server`` per database for the whole module (``.db_url`` is its database)."""
    folder = tmp_path_factory.mktemp(f"e2e-{request.param}")
    if request.param == "sqlite":
        path = folder / "crm.db"
        shutil.copy(sqlite_template, path)
        url = f"sqlite:///{path}"
    else:
        url = request.getfixturevalue("pg_server_url")
    live = LiveServer(url, str(folder / "server.log"))
    live.db_url = url
    yield live
    live.stop()


@dataclass
class Account:
    """One fresh user on the module's server: a caldav client and a raw HTTP driver."""

    server: LiveServer
    name: str
    password: str
    client: caldav.DAVClient

    @property
    def home(self) -> str:
        return f"/{self.name}/"

    def url(self, path: str) -> str:
        return self.server.url + path

    def http(self, method: str, path: str, body: bytes | str = b"",
             headers: Optional[dict] = None) -> Reply:
        return http_request(self.server.url, self.name, self.password, method, path, body,
                            headers, timeout=30)

    def put(self, path: str, text: str, content_type: str = "text/calendar", **headers):
        return self.http("PUT", path, text, {"Content-Type": content_type, **_h(headers)})

    def get(self, path: str, **headers) -> Reply:
        return self.http("GET", path, b"", _h(headers))

    def delete(self, path: str, **headers) -> Reply:
        return self.http("DELETE", path, b"", _h(headers))

    def propfind(self, path: str, body: str = "", depth: str = "1") -> Reply:
        return self.http("PROPFIND", path, body, {"Depth": depth,
                                                  "Content-Type": "application/xml"})

    def report(self, path: str, body: str, depth: Optional[str] = "1") -> Reply:
        headers = {"Content-Type": "application/xml"}
        if depth is not None:
            headers["Depth"] = depth
        return self.http("REPORT", path, body, headers)

    def log_tail(self, chars: int = 3000) -> str:
        with open(self.server.log_path, encoding="utf-8", errors="replace") as f:
            return f.read()[-chars:]


def _h(headers: dict) -> dict:
    """Keyword headers: if_match → If-Match."""
    return {"-".join(p.capitalize() for p in k.split("_")): v for k, v in headers.items()}


@pytest.fixture
def account(server):
    name, password = create_user(server.db_url)
    client = caldav.DAVClient(url=server.url + "/", username=name, password=password)
    yield Account(server, name, password, client)
    client.close()


@pytest.fixture
def principal(account):
    return account.client.principal()


@pytest.fixture
def calendar(account, principal):
    """The user's default calendar (/<user>/calendar/), empty."""
    calendars = principal.calendars()
    assert [str(c.url) for c in calendars] == [account.url(account.home + "calendar/")]
    return calendars[0]


# --- iCalendar / vCard texts and XML helpers ------------------------------------------------

def vevent(uid: str, start: dt.datetime, end: dt.datetime, summary: str = "Meeting",
           extra: str = "") -> str:
    return ("BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//radicale-crm//e2e//EN\r\n"
            "BEGIN:VEVENT\r\n"
            f"UID:{uid}\r\nDTSTAMP:20240101T000000Z\r\n"
            f"DTSTART:{start:%Y%m%dT%H%M%SZ}\r\nDTEND:{end:%Y%m%dT%H%M%SZ}\r\n"
            f"SUMMARY:{summary}\r\n{extra}"
            "END:VEVENT\r\nEND:VCALENDAR\r\n")


def vcard(uid: str, name: str, email: str, extra: str = "") -> str:
    family, _, given = name.partition(" ")[::-1]
    return ("BEGIN:VCARD\r\nVERSION:3.0\r\n"
            f"UID:{uid}\r\nFN:{name}\r\nN:{family};{given};;;\r\n"
            f"EMAIL;TYPE=INTERNET:{email}\r\n{extra}"
            "END:VCARD\r\n")


def utc(*args) -> dt.datetime:
    return dt.datetime(*args, tzinfo=UTC)


def multistatus(reply: Reply) -> dict[str, ET.Element]:
    """href (unquoted path) → its <D:response> element."""
    assert reply.status == 207, (reply.status, reply.text)
    root = ET.fromstring(reply.body)
    out = {}
    for response in root.findall("D:response", NS):
        href = unquote(urlsplit(response.findtext("D:href", namespaces=NS)).path)
        assert href not in out, f"{href} reported twice"
        out[href] = response
    return out


def prop(response: ET.Element, name: str) -> Optional[ET.Element]:
    """The property from the 200 propstat of a response, or None."""
    for propstat in response.findall("D:propstat", NS):
        if " 200 " in propstat.findtext("D:status", namespaces=NS):
            found = propstat.find("D:prop/" + name, NS)
            if found is not None:
                return found
    return None


def response_status(response: ET.Element) -> Optional[int]:
    status = response.findtext("D:status", namespaces=NS)
    return int(status.split()[1]) if status else None


def sync_report(account: Account, path: str, token: str = "") -> tuple[str, dict]:
    body = ('<?xml version="1.0" encoding="utf-8"?>'
            '<D:sync-collection xmlns:D="DAV:">'
            f'<D:sync-token>{token}</D:sync-token><D:sync-level>1</D:sync-level>'
            '<D:prop><D:getetag/></D:prop></D:sync-collection>')
    reply = account.report(path, body, depth=None)
    assert reply.status == 207, (reply.status, reply.text)
    new_token = ET.fromstring(reply.body).findtext("D:sync-token", namespaces=NS)
    return new_token, multistatus(reply)


def getctag(account: Account, path: str) -> str:
    reply = account.propfind(path, '<?xml version="1.0"?><D:propfind xmlns:D="DAV:" '
                                   'xmlns:CS="http://calendarserver.org/ns/"><D:prop>'
                                   '<CS:getctag/><D:sync-token/></D:prop></D:propfind>', "0")
    (response,) = multistatus(reply).values()
    return prop(response, "CS:getctag").text


def occurrences(objects) -> set[tuple[str, Optional[dt.datetime], dt.datetime, dt.datetime]]:
    """(UID, RECURRENCE-ID, DTSTART, DTEND) of every VEVENT in the caldav objects, in UTC."""
    out = set()
    for obj in objects:
        cal = icalendar.Calendar.from_ical(obj.data)
        for comp in cal.walk("VEVENT"):
            rid = comp.get("RECURRENCE-ID")
            out.add((str(comp["UID"]), rid.dt.astimezone(UTC) if rid else None,
                     comp["DTSTART"].dt.astimezone(UTC), comp["DTEND"].dt.astimezone(UTC)))
    return out


# --- discovery and collections ---------------------------------------------------------------

def test_principal_discovery_and_default_collections(account, principal):
    assert str(principal.url) == account.url(account.home)
    home = principal.calendar_home_set
    assert str(home.url) == account.url(account.home)
    calendars = principal.calendars()
    assert [str(c.url) for c in calendars] == [account.url(account.home + "calendar/")]
    assert calendars[0].get_display_name() == "Calendar"
    # The default address book is there too (a collection the caldav library doesn't list),
    # and the CRM's two read-only books.
    listing = multistatus(account.propfind(account.home, depth="1"))
    assert set(listing) == {account.home, account.home + "calendar/",
                            account.home + "contacts/", account.home + "crm-contacts/",
                            account.home + "crm-suggested/"}
    contacts = listing[account.home + "contacts/"]
    assert prop(contacts, "D:resourcetype").find("CR:addressbook", NS) is not None
    calendar_rt = prop(listing[account.home + "calendar/"], "D:resourcetype")
    assert calendar_rt.find("C:calendar", NS) is not None


def test_wrong_password_is_refused(server, account):
    bad = caldav.DAVClient(url=server.url + "/", username=account.name, password="wrong")
    try:
        with pytest.raises(caldav_error.AuthorizationError):
            bad.principal()
    finally:
        bad.close()
    anonymous = Account(server, account.name, "nope", account.client)
    assert anonymous.propfind(account.home, depth="0").status == 401


def test_make_calendar_and_delete_it(account, principal):
    work = principal.make_calendar(name="Work", cal_id="work")
    assert str(work.url) == account.url(account.home + "work/")
    assert work.get_display_name() == "Work"
    assert sorted(str(c.url) for c in principal.calendars()) == [
        account.url(account.home + "calendar/"), account.url(account.home + "work/")]
    event = work.add_event(vevent("work-1", utc(2024, 5, 1, 9), utc(2024, 5, 1, 10)))
    assert [e.id for e in work.events()] == ["work-1"]
    assert str(event.url) == account.url(account.home + "work/work-1.ics")
    # MKCALENDAR on an existing collection is refused (RFC 4791 5.3.1), nothing changes.
    again = account.http("MKCALENDAR", account.home + "work/")
    assert again.status == 409, (again.status, again.text)
    assert "resource-must-be-null" in again.text
    assert [e.id for e in work.events()] == ["work-1"]
    work.delete()
    assert account.get(account.home + "work/").status == 404
    assert account.get(account.home + "work/work-1.ics").status == 404
    assert [str(c.url) for c in principal.calendars()] == [
        account.url(account.home + "calendar/")]


EXTENDED_MKCOL = """<?xml version="1.0" encoding="utf-8"?>
<D:mkcol xmlns:D="DAV:" xmlns:CR="urn:ietf:params:xml:ns:carddav">
  <D:set><D:prop>
    <D:resourcetype><D:collection/><CR:addressbook/></D:resourcetype>
    <D:displayname>Customers</D:displayname>
    <CR:addressbook-description>Key accounts</CR:addressbook-description>
  </D:prop></D:set>
</D:mkcol>"""


def test_make_addressbook_with_extended_mkcol(account, principal):
    path = account.home + "customers/"
    created = account.http("MKCOL", path, EXTENDED_MKCOL, {"Content-Type": "application/xml"})
    assert created.status == 201, (created.status, created.text)
    (response,) = multistatus(account.propfind(path, depth="0")).values()
    assert prop(response, "D:resourcetype").find("CR:addressbook", NS) is not None
    assert prop(response, "D:displayname").text == "Customers"
    assert prop(response, "CR:addressbook-description").text == "Key accounts"
    # It is an address book, not a calendar: the library's calendar list is unchanged.
    assert [str(c.url) for c in principal.calendars()] == [
        account.url(account.home + "calendar/")]
    assert account.put(path + "acme.vcf", vcard("acme", "Ann Acme", "ann@acme.test"),
                       "text/vcard").status == 201
    # An iCalendar object does not belong in an address book.
    wrong = account.put(path + "ev.ics", vevent("ev", utc(2024, 1, 1), utc(2024, 1, 2)))
    assert wrong.status == 400, (wrong.status, wrong.text)
    assert wrong.text.strip(), "a 400 without a reason"
    # MKCOL over an existing collection is refused (RFC 4918 9.3.1) and keeps its content.
    again = account.http("MKCOL", path, EXTENDED_MKCOL, {"Content-Type": "application/xml"})
    assert again.status == 405, (again.status, again.text)
    listing = multistatus(account.propfind(path, depth="1"))
    assert set(listing) == {path, path + "acme.vcf"}


def test_parallel_requests_recreating_the_principal_lose_no_write(account):
    """Radicale creates a user's principal and default collections on any request that finds
    none (first contact, or after the user deleted the principal). Parallel requests that all
    find none - a client's initial sync - must not wipe each other's acknowledged writes."""
    cal = account.home + "calendar/"
    lost, refused = {}, {}
    for attempt in range(3):
        assert account.propfind(account.home, depth="0").status == 207
        gone = account.delete(account.home)
        assert gone.status == 200, (gone.status, gone.text)
        barrier = threading.Barrier(8)

        def put(i: int) -> Reply:
            barrier.wait(timeout=30)
            return account.put(cal + f"p{attempt}-{i}.ics",
                               vevent(f"p{attempt}-{i}", utc(2024, 2, 1 + i, 9),
                                      utc(2024, 2, 1 + i, 10)))

        with ThreadPoolExecutor(8) as pool:
            replies = list(pool.map(put, range(8)))
        acknowledged = {cal + f"p{attempt}-{i}.ics" for i, r in enumerate(replies)
                        if r.status == 201}
        refused.update({cal + f"p{attempt}-{i}.ics": (r.status, r.text)
                        for i, r in enumerate(replies) if r.status != 201})
        stored = set(multistatus(account.propfind(cal, depth="1"))) - {cal}
        if acknowledged - stored:
            lost[attempt] = sorted(acknowledged - stored)
        assert set(multistatus(account.propfind(account.home, depth="1"))) == {
            account.home, cal, account.home + "contacts/", account.home + "crm-contacts/",
            account.home + "crm-suggested/"}
    assert not lost, f"acknowledged (201) PUTs missing afterwards: {lost}"
    assert not refused, refused


# --- events ------------------------------------------------------------------------------------

def test_event_save_load_modify_delete(account, calendar):
    event = calendar.add_event(vevent("crud-1", utc(2024, 6, 3, 9), utc(2024, 6, 3, 10),
                                      "Kick-off"))
    assert str(event.url) == account.url(account.home + "calendar/crud-1.ics")
    first_etag = event.etag
    assert first_etag and first_etag.startswith('"')

    loaded = calendar.event_by_uid("crud-1")
    assert str(loaded.url) == str(event.url)
    assert str(loaded.icalendar_component["SUMMARY"]) == "Kick-off"
    assert [e.id for e in calendar.events()] == ["crud-1"]

    with loaded.edit_icalendar_component() as component:
        component["SUMMARY"] = "Kick-off (moved)"
        component["LOCATION"] = "Room 4"
    loaded.save()
    assert loaded.etag and loaded.etag != first_etag

    again = calendar.event_by_uid("crud-1")
    assert str(again.icalendar_component["SUMMARY"]) == "Kick-off (moved)"
    assert str(again.icalendar_component["LOCATION"]) == "Room 4"
    raw = account.get(account.home + "calendar/crud-1.ics")
    assert raw.status == 200 and raw.headers["etag"] == loaded.etag
    assert raw.headers["content-type"].startswith("text/calendar")
    assert len(calendar.events()) == 1

    again.delete()
    assert account.get(account.home + "calendar/crud-1.ics").status == 404
    assert calendar.events() == []
    with pytest.raises(caldav_error.NotFoundError):
        calendar.event_by_uid("crud-1")


def test_event_text_is_stored_as_sent(account, calendar):
    text = vevent("verbatim", utc(2024, 6, 4, 9), utc(2024, 6, 4, 10), "As sent",
                  "X-CRM-CUSTOMER:ACME-42\r\nDESCRIPTION:line one\\nline two\r\n")
    put = account.put(account.home + "calendar/verbatim.ics", text)
    assert put.status == 201, (put.status, put.text)
    got = account.get(account.home + "calendar/verbatim.ics")
    assert got.status == 200
    assert got.text == text
    assert got.headers["etag"] == put.headers["etag"]


def test_uid_conflicts_are_refused(account, calendar):
    base = account.home + "calendar/"
    assert account.put(base + "one.ics", vevent("same", utc(2024, 1, 1, 9),
                                                utc(2024, 1, 1, 10))).status == 201
    # The same UID at another href: CalDAV precondition no-uid-conflict (RFC 4791 5.3.2.1).
    other = account.put(base + "two.ics", vevent("same", utc(2024, 1, 2, 9), utc(2024, 1, 2, 10)))
    assert other.status == 409, (other.status, other.text)
    assert "no-uid-conflict" in other.text
    # Another UID over the existing href is refused too.
    swap = account.put(base + "one.ics", vevent("different", utc(2024, 1, 3, 9),
                                                utc(2024, 1, 3, 10)))
    assert swap.status == 409, (swap.status, swap.text)
    assert account.get(base + "two.ics").status == 404
    assert [(str(e.url), e.id) for e in calendar.events()] == [(account.url(base + "one.ics"),
                                                               "same")]
    assert "20240101T090000Z" in account.get(base + "one.ics").text


# --- contacts (CardDAV over raw HTTP: the caldav library has no CardDAV helpers) -----------

def test_contact_save_load_modify_delete(account):
    book = account.home + "contacts/"
    href = book + "ann.vcf"
    text = vcard("contact-ann", "Ann Smith", "ann@example.test", "ORG:Acme Ltd\r\n")
    created = account.put(href, text, "text/vcard; charset=utf-8", if_none_match="*")
    assert created.status == 201, (created.status, created.text)
    etag = created.headers["etag"]

    got = account.get(href)
    assert got.status == 200
    assert got.headers["content-type"].startswith("text/vcard")
    assert got.headers["etag"] == etag
    assert got.text == text

    # Creating it again with If-None-Match: * is a precondition failure.
    assert account.put(href, text, "text/vcard", if_none_match="*").status == 412

    listing = multistatus(account.propfind(book, depth="1"))
    assert set(listing) == {book, href}
    assert prop(listing[href], "D:getetag").text == etag

    changed = text.replace("ORG:Acme Ltd", "ORG:Acme Holdings")
    updated = account.put(href, changed, "text/vcard", if_match=etag)
    assert updated.status == 204, (updated.status, updated.text)
    new_etag = updated.headers["etag"]
    assert new_etag != etag
    assert account.get(href).text == changed

    multiget = account.report(book, f"""<?xml version="1.0" encoding="utf-8"?>
<CR:addressbook-multiget xmlns:D="DAV:" xmlns:CR="urn:ietf:params:xml:ns:carddav">
  <D:prop><D:getetag/><CR:address-data/></D:prop>
  <D:href>{href}</D:href><D:href>{book}nobody.vcf</D:href>
</CR:addressbook-multiget>""")
    found = multistatus(multiget)
    assert set(found) == {href, book + "nobody.vcf"}
    assert prop(found[href], "D:getetag").text == new_etag
    assert "ORG:Acme Holdings" in prop(found[href], "CR:address-data").text
    assert response_status(found[book + "nobody.vcf"]) == 404

    query = account.report(book, """<?xml version="1.0" encoding="utf-8"?>
<CR:addressbook-query xmlns:D="DAV:" xmlns:CR="urn:ietf:params:xml:ns:carddav">
  <D:prop><D:getetag/></D:prop>
  <CR:filter><CR:prop-filter name="EMAIL">
    <CR:text-match collation="i;unicode-casemap" match-type="contains">ann@example</CR:text-match>
  </CR:prop-filter></CR:filter>
</CR:addressbook-query>""")
    assert set(multistatus(query)) == {href}

    deleted = account.delete(href, if_match=new_etag)
    assert deleted.status == 200, (deleted.status, deleted.text)
    assert account.get(href).status == 404
    assert set(multistatus(account.propfind(book, depth="1"))) == {book}
    assert account.delete(href).status == 404


def test_contact_uid_conflict_in_addressbook(account):
    book = account.home + "contacts/"
    assert account.put(book + "a.vcf", vcard("dup", "Bob One", "b1@x.test"),
                       "text/vcard").status == 201
    second = account.put(book + "b.vcf", vcard("dup", "Bob Two", "b2@x.test"), "text/vcard")
    assert second.status == 409, (second.status, second.text)
    assert "no-uid-conflict" in second.text
    assert set(multistatus(account.propfind(book, depth="1"))) == {book, book + "a.vcf"}


# --- date search --------------------------------------------------------------------------------

WINDOW = (utc(2024, 3, 10), utc(2024, 4, 10))

WEEKLY = """BEGIN:VCALENDAR\r
VERSION:2.0\r
PRODID:-//radicale-crm//e2e//EN\r
BEGIN:VEVENT\r
UID:weekly-standup\r
DTSTAMP:20240101T000000Z\r
DTSTART:20240304T090000Z\r
DTEND:20240304T093000Z\r
RRULE:FREQ=WEEKLY;COUNT=8\r
EXDATE:20240318T090000Z\r
SUMMARY:Standup\r
END:VEVENT\r
BEGIN:VEVENT\r
UID:weekly-standup\r
DTSTAMP:20240101T000000Z\r
RECURRENCE-ID:20240325T090000Z\r
DTSTART:20240327T140000Z\r
DTEND:20240327T143000Z\r
SUMMARY:Standup (moved to Wednesday)\r
END:VEVENT\r
BEGIN:VEVENT\r
UID:weekly-standup\r
DTSTAMP:20240101T000000Z\r
RECURRENCE-ID:20240415T090000Z\r
DTSTART:20240409T090000Z\r
DTEND:20240409T093000Z\r
SUMMARY:Standup (pulled forward)\r
END:VEVENT\r
END:VCALENDAR\r
"""

# Occurrences of WEEKLY inside WINDOW: Mondays 3/11, 4/1, 4/8 (3/18 is excluded, 3/4 and
# 4/22 are outside), the 3/25 one moved to Wednesday 3/27, and the 4/15 one moved into the
# window on 4/9.
WEEKLY_IN_WINDOW = {
    ("weekly-standup", utc(2024, 3, 11, 9), utc(2024, 3, 11, 9), utc(2024, 3, 11, 9, 30)),
    ("weekly-standup", utc(2024, 3, 25, 9), utc(2024, 3, 27, 14), utc(2024, 3, 27, 14, 30)),
    ("weekly-standup", utc(2024, 4, 1, 9), utc(2024, 4, 1, 9), utc(2024, 4, 1, 9, 30)),
    ("weekly-standup", utc(2024, 4, 8, 9), utc(2024, 4, 8, 9), utc(2024, 4, 8, 9, 30)),
    ("weekly-standup", utc(2024, 4, 15, 9), utc(2024, 4, 9, 9), utc(2024, 4, 9, 9, 30)),
}
SINGLE_IN_WINDOW = ("in-window", None, utc(2024, 3, 20, 15), utc(2024, 3, 20, 16))


def _populate_search_calendar(account: Account) -> None:
    base = account.home + "calendar/"
    texts = {
        "weekly-standup": WEEKLY,
        "in-window": vevent("in-window", utc(2024, 3, 20, 15), utc(2024, 3, 20, 16)),
        "before": vevent("before", utc(2024, 3, 1, 9), utc(2024, 3, 1, 10)),
        "after": vevent("after", utc(2024, 4, 20, 9), utc(2024, 4, 20, 10)),
        # Ends exactly when the window starts / starts exactly when it ends: no overlap.
        "touches-start": vevent("touches-start", utc(2024, 3, 9, 23), utc(2024, 3, 10)),
        "touches-end": vevent("touches-end", utc(2024, 4, 10), utc(2024, 4, 10, 1)),
        # Recurs only outside the window.
        "daily-before": vevent("daily-before", utc(2024, 2, 1, 8), utc(2024, 2, 1, 9),
                               extra="RRULE:FREQ=DAILY;UNTIL=20240309T080000Z\r\n"),
    }
    for uid, text in texts.items():
        reply = account.put(base + uid + ".ics", text)
        assert reply.status == 201, (uid, reply.status, reply.text)


def test_date_search_without_expansion(account, calendar):
    _populate_search_calendar(account)
    found = calendar.search(start=WINDOW[0], end=WINDOW[1], event=True, expand=False)
    assert sorted(e.id for e in found) == ["in-window", "weekly-standup"]
    weekly = next(e for e in found if e.id == "weekly-standup")
    # Unexpanded: the whole object, master and both overrides.
    assert len(icalendar.Calendar.from_ical(weekly.data).walk("VEVENT")) == 3
    # A window with nothing in it.
    assert calendar.search(start=utc(2024, 1, 1), end=utc(2024, 1, 31), event=True,
                           expand=False) == []
    # A window over only the moved occurrence (its original Monday is outside the window).
    found = calendar.search(start=utc(2024, 4, 9), end=utc(2024, 4, 10), event=True,
                            expand=False)
    assert [e.id for e in found] == ["weekly-standup"]


def test_date_search_with_expansion(account, calendar):
    _populate_search_calendar(account)
    expanded = calendar.search(start=WINDOW[0], end=WINDOW[1], event=True, expand=True)
    assert len(expanded) == 6
    assert occurrences(expanded) == WEEKLY_IN_WINDOW | {SINGLE_IN_WINDOW}


def test_date_search_with_server_side_expansion(account, calendar):
    _populate_search_calendar(account)
    expanded = calendar.search(start=WINDOW[0], end=WINDOW[1], event=True, expand=True,
                               server_expand=True)
    assert occurrences(expanded) == WEEKLY_IN_WINDOW | {SINGLE_IN_WINDOW}


def test_raw_calendar_query_with_expand(account, calendar):
    """The server's own expansion (RFC 4791 9.6.5), without the library in between."""
    _populate_search_calendar(account)
    start, end = (f"{t:%Y%m%dT%H%M%SZ}" for t in WINDOW)
    reply = account.report(account.home + "calendar/", f"""<?xml version="1.0" encoding="utf-8"?>
<C:calendar-query xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav">
  <D:prop><D:getetag/><C:calendar-data><C:expand start="{start}" end="{end}"/></C:calendar-data>
  </D:prop>
  <C:filter><C:comp-filter name="VCALENDAR"><C:comp-filter name="VEVENT">
    <C:time-range start="{start}" end="{end}"/>
  </C:comp-filter></C:comp-filter></C:filter>
</C:calendar-query>""")
    found = multistatus(reply)
    base = account.home + "calendar/"
    assert set(found) == {base + "weekly-standup.ics", base + "in-window.ics"}
    weekly = icalendar.Calendar.from_ical(
        prop(found[base + "weekly-standup.ics"], "C:calendar-data").text)
    events = weekly.walk("VEVENT")
    assert all("RRULE" not in e and "EXDATE" not in e for e in events)
    got = {(str(e["UID"]), e["RECURRENCE-ID"].dt.astimezone(UTC),
            e["DTSTART"].dt.astimezone(UTC), e["DTEND"].dt.astimezone(UTC)) for e in events}
    assert got == WEEKLY_IN_WINDOW


def test_search_far_future_of_unbounded_recurrence(account, calendar):
    """An endless RRULE that started years ago is found (and expanded) in any later window."""
    base = account.home + "calendar/"
    endless = vevent("endless", utc(2020, 1, 1, 12), utc(2020, 1, 1, 13), "Weekly review",
                     "RRULE:FREQ=WEEKLY;BYDAY=WE\r\n")
    assert account.put(base + "endless.ics", endless).status == 201
    assert account.put(base + "old.ics", vevent("old", utc(2020, 1, 8, 9),
                                                utc(2020, 1, 8, 10))).status == 201
    start, end = utc(2031, 1, 1), utc(2031, 1, 15)
    found = calendar.search(start=start, end=end, event=True, expand=False)
    assert [e.id for e in found] == ["endless"]
    expanded = calendar.search(start=start, end=end, event=True, expand=True)
    assert {(o[2], o[3]) for o in occurrences(expanded)} == {
        (utc(2031, 1, 1, 12), utc(2031, 1, 1, 13)), (utc(2031, 1, 8, 12), utc(2031, 1, 8, 13))}


# --- sync tokens (RFC 6578) ----------------------------------------------------------------------

def test_sync_tokens(account, calendar):
    base = account.home + "calendar/"
    events = {uid: calendar.add_event(vevent(uid, utc(2024, 7, d, 9), utc(2024, 7, d, 10)))
              for d, uid in enumerate(["sync-a", "sync-b", "sync-c"], start=1)}

    initial = calendar.objects_by_sync_token(load_objects=False, disable_fallback=True)
    assert initial.sync_token.startswith(SYNC_TOKEN_PREFIX)
    assert {str(o.url) for o in initial} == {account.url(base + f"{u}.ics") for u in events}
    assert initial.deleted_urls == set()

    # Nothing changed: an empty answer with the same token.
    same = calendar.objects_by_sync_token(sync_token=initial.sync_token, disable_fallback=True)
    assert list(same) == [] and same.sync_token == initial.sync_token

    # Two changes (one modification, one creation) and one deletion.
    modified = events["sync-a"]
    with modified.edit_icalendar_component() as component:
        component["SUMMARY"] = "changed"
    modified.save()
    calendar.add_event(vevent("sync-d", utc(2024, 7, 4, 9), utc(2024, 7, 4, 10)))
    events["sync-b"].delete()

    changes = calendar.objects_by_sync_token(sync_token=initial.sync_token,
                                             disable_fallback=True)
    assert changes.sync_token.startswith(SYNC_TOKEN_PREFIX)
    assert changes.sync_token != initial.sync_token
    assert sorted(str(o.url) for o in changes) == sorted(
        account.url(base + f"{u}.ics") for u in ("sync-a", "sync-b", "sync-d"))
    assert {str(u) for u in changes.deleted_urls} == {account.url(base + "sync-b.ics")}

    # The same incremental sync over raw HTTP: deletions are bare 404 responses.
    token, found = sync_report(account, base, initial.sync_token)
    assert token == changes.sync_token
    assert set(found) == {base + "sync-a.ics", base + "sync-b.ics", base + "sync-d.ics"}
    assert response_status(found[base + "sync-b.ics"]) == 404
    assert prop(found[base + "sync-a.ics"], "D:getetag").text == modified.etag
    assert prop(found[base + "sync-d.ics"], "D:getetag") is not None

    # The newest token has nothing left to report; a full sync lists what is there now.
    latest = calendar.objects_by_sync_token(sync_token=changes.sync_token,
                                            disable_fallback=True)
    assert list(latest) == [] and latest.deleted_urls == set()
    token, found = sync_report(account, base)
    assert token == changes.sync_token
    assert set(found) == {base + "sync-a.ics", base + "sync-c.ics", base + "sync-d.ics"}

    # The library's own incremental sync() on the initial collection agrees.
    updated, deleted = initial.sync()
    assert sorted(o.id for o in updated) == ["sync-a", "sync-d"]
    assert [str(o.url) for o in deleted] == [account.url(base + "sync-b.ics")]


def test_invalid_sync_tokens_are_refused(account, calendar):
    base = account.home + "calendar/"
    calendar.add_event(vevent("tok", utc(2024, 8, 1, 9), utc(2024, 8, 1, 10)))
    current, _ = sync_report(account, base)
    contacts_token, _ = sync_report(account, account.home + "contacts/")
    key, _, revision = current[len(SYNC_TOKEN_PREFIX):].rpartition("-")
    invalid = [
        "http://example.com/not-ours",                              # not issued by us
        SYNC_TOKEN_PREFIX + "garbage",                              # malformed
        SYNC_TOKEN_PREFIX + uuid.uuid4().hex + "-1",                # unknown collection
        contacts_token,                                             # another collection
        f"{SYNC_TOKEN_PREFIX}{key}-{int(revision) + 5}",            # from the future
    ]
    for token in invalid:
        body = ('<?xml version="1.0" encoding="utf-8"?><D:sync-collection xmlns:D="DAV:">'
                f'<D:sync-token>{token}</D:sync-token><D:sync-level>1</D:sync-level>'
                '<D:prop><D:getetag/></D:prop></D:sync-collection>')
        reply = account.report(base, body, depth=None)
        assert reply.status == 403, (token, reply.status, reply.text)
        assert "valid-sync-token" in reply.text, (token, reply.text)
    with pytest.raises(caldav_error.DAVError):
        calendar.objects_by_sync_token(sync_token=invalid[2], disable_fallback=True)
    # The collection is unharmed and its token unchanged.
    token, found = sync_report(account, base)
    assert token == current and set(found) == {base + "tok.ics"}


def test_addressbook_sync_token(account):
    book = account.home + "contacts/"
    for uid in ("s1", "s2"):
        assert account.put(book + f"{uid}.vcf", vcard(uid, f"Sync {uid}", f"{uid}@x.test"),
                           "text/vcard").status == 201
    token, found = sync_report(account, book)
    assert set(found) == {book + "s1.vcf", book + "s2.vcf"}
    assert account.put(book + "s3.vcf", vcard("s3", "Sync Three", "s3@x.test"),
                       "text/vcard").status == 201
    assert account.delete(book + "s1.vcf").status == 200
    new_token, changes = sync_report(account, book, token)
    assert new_token != token
    assert set(changes) == {book + "s1.vcf", book + "s3.vcf"}
    assert response_status(changes[book + "s1.vcf"]) == 404


# --- multiget -------------------------------------------------------------------------------------

def test_calendar_multiget(account, calendar):
    base = account.home + "calendar/"
    saved = [calendar.add_event(vevent(f"mg-{i}", utc(2024, 9, i, 9), utc(2024, 9, i, 10),
                                       f"Visit {i}")) for i in range(1, 5)]
    wanted = [saved[0].url, saved[2].url, saved[3].url]
    got = calendar.multiget(wanted)
    assert sorted(str(o.url) for o in got) == sorted(str(u) for u in wanted)
    for obj in got:
        number = obj.id.split("-")[1]
        assert str(obj.icalendar_component["SUMMARY"]) == f"Visit {number}"

    reply = account.report(base, f"""<?xml version="1.0" encoding="utf-8"?>
<C:calendar-multiget xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav">
  <D:prop><D:getetag/><C:calendar-data/></D:prop>
  <D:href>{base}mg-2.ics</D:href>
  <D:href>{base}mg-4.ics</D:href>
  <D:href>{base}missing.ics</D:href>
</C:calendar-multiget>""", depth=None)
    found = multistatus(reply)
    assert set(found) == {base + "mg-2.ics", base + "mg-4.ics", base + "missing.ics"}
    assert response_status(found[base + "missing.ics"]) == 404
    for n in (2, 4):
        response = found[base + f"mg-{n}.ics"]
        assert prop(response, "D:getetag").text == saved[n - 1].etag
        data = prop(response, "C:calendar-data").text
        assert f"UID:mg-{n}" in data and f"SUMMARY:Visit {n}" in data


# --- ETag preconditions ---------------------------------------------------------------------------

def test_stale_if_match_put_gets_412_and_changes_nothing(account, calendar):
    base = account.home + "calendar/"
    href = base + "etag.ics"
    v1 = vevent("etag", utc(2024, 10, 1, 9), utc(2024, 10, 1, 10), "Version 1")
    created = account.put(href, v1, if_none_match="*")
    assert created.status == 201, (created.status, created.text)
    etag1 = created.headers["etag"]

    v2 = v1.replace("Version 1", "Version 2")
    updated = account.put(href, v2, if_match=etag1)
    assert updated.status == 204, (updated.status, updated.text)
    etag2 = updated.headers["etag"]
    assert etag2 != etag1
    token_before, _ = sync_report(account, base)
    ctag_before = getctag(account, base)

    # A writer still holding version 1's ETag loses.
    stale = account.put(href, v1.replace("Version 1", "Version 3"), if_match=etag1)
    assert stale.status == 412, (stale.status, stale.text)
    # So does a creation that insists the resource does not exist, and a stale DELETE.
    assert account.put(href, v1, if_none_match="*").status == 412
    assert account.delete(href, if_match=etag1).status == 412
    # If-Match on a resource that does not exist.
    assert account.put(base + "nothing.ics", vevent("nothing", utc(2024, 10, 2, 9),
                                                    utc(2024, 10, 2, 10)),
                       if_match=etag1).status == 412

    got = account.get(href)
    assert got.status == 200
    assert got.text == v2 and got.headers["etag"] == etag2
    assert account.get(base + "nothing.ics").status == 404
    token_after, changes = sync_report(account, base, token_before)
    assert token_after == token_before and changes == {}
    assert getctag(account, base) == ctag_before

    # The library sees the same conflict: a copy loaded before someone else's change.
    mine = calendar.event_by_uid("etag")
    theirs = calendar.event_by_uid("etag")
    with theirs.edit_icalendar_component() as component:
        component["SUMMARY"] = "Theirs"
    theirs.save()
    with mine.edit_icalendar_component() as component:
        component["SUMMARY"] = "Mine"
    with pytest.raises(caldav_error.ETagMismatchError):
        mine.save()
    assert str(calendar.event_by_uid("etag").icalendar_component["SUMMARY"]) == "Theirs"

    # With the current ETag the delete goes through.
    current = account.get(href).headers["etag"]
    assert account.delete(href, if_match=current).status == 200
    assert account.get(href).status == 404
