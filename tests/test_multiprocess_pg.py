"""Two ``crm-server`` processes on one PostgreSQL database, written to concurrently.

Every acknowledged write must be stored exactly once, a UID never twice in a collection,
races between the processes must have exactly one winner, and sync tokens and CTags must
stay consistent whichever process answers.
"""

from __future__ import annotations

import collections
import itertools
import threading
import time
import xml.etree.ElementTree as ET
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Optional
from urllib.parse import unquote, urlsplit

import icalendar
import pytest
from sqlalchemy import text
from sqlalchemy.orm import Session

from conftest import create_user
from davclient import LiveServer, http_request
from davclient import Response as Reply
from server.crm import audit, db

pytestmark = [pytest.mark.postgresql, pytest.mark.e2e]

NS = {"D": "DAV:", "C": "urn:ietf:params:xml:ns:caldav", "CS": "http://calendarserver.org/ns/"}
THREADS = 8
STORM = 200


@dataclass
class Client:
    """Raw HTTP with Basic auth against one server process (thread-safe: a connection per
    request)."""

    server: LiveServer
    user: str
    password: str

    def request(self, method: str, path: str, body: bytes | str = b"",
                headers: Optional[dict] = None) -> Reply:
        return http_request(self.server.url, self.user, self.password, method, path, body,
                            headers)

    def put(self, path: str, text: str, **headers) -> Reply:
        return self.request("PUT", path, text, {"Content-Type": "text/calendar", **headers})

    def delete(self, path: str) -> Reply:
        return self.request("DELETE", path)

    def propfind(self, path: str, body: str, depth: str) -> Reply:
        return self.request("PROPFIND", path, body, {"Depth": depth,
                                                     "Content-Type": "application/xml"})

    def report(self, path: str, body: str, depth: Optional[str] = "1") -> Reply:
        headers = {"Content-Type": "application/xml"}
        if depth is not None:
            headers["Depth"] = depth
        return self.request("REPORT", path, body, headers)


@pytest.fixture(scope="module")
def pg_servers(pg_server_url, tmp_path_factory):
    folder = tmp_path_factory.mktemp("multiprocess")
    servers = []
    try:
        for name in ("a", "b"):
            servers.append(LiveServer(pg_server_url, str(folder / f"server-{name}.log")))
        yield pg_server_url, servers
    finally:
        for server in servers:
            server.stop()


def clients_for(pg_servers, user: str, password: str) -> tuple[Client, Client]:
    _, (a, b) = pg_servers
    return Client(a, user, password), Client(b, user, password)


def event(uid: str, n: int, summary: str = "Call") -> str:
    day, hour = 1 + n % 28, 8 + n % 10
    return ("BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//radicale-crm//multiprocess//EN\r\n"
            f"BEGIN:VEVENT\r\nUID:{uid}\r\nDTSTAMP:20240101T000000Z\r\n"
            f"DTSTART:202405{day:02d}T{hour:02d}0000Z\r\nDTEND:202405{day:02d}T{hour:02d}3000Z\r\n"
            f"SUMMARY:{summary}\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n")


def crm_books(user: str) -> set[str]:
    """The two read-only address books the CRM creates with every home."""
    return {f"/{user}/crm-contacts/", f"/{user}/crm-suggested/"}


def invitation(uid: str, n: int) -> str:
    """One customer meeting as it lands in every invited rep's calendar."""
    return event(uid, n, "Customer meeting").replace(
        "END:VEVENT", f"ATTENDEE;CN=Guest {n}:mailto:guest{n}@client.example\r\n"
                      "ATTENDEE;CN=Shared Person:mailto:shared@client.example\r\nEND:VEVENT")


def multistatus(reply: Reply) -> tuple[ET.Element, dict[str, ET.Element]]:
    assert reply.status == 207, (reply.status, reply.text)
    root = ET.fromstring(reply.body)
    out: dict[str, ET.Element] = {}
    for response in root.findall("D:response", NS):
        href = unquote(urlsplit(response.findtext("D:href", namespaces=NS)).path)
        assert href not in out, f"{href} reported twice in one multistatus"
        out[href] = response
    return root, out


def prop_text(response: ET.Element, name: str) -> Optional[str]:
    for propstat in response.findall("D:propstat", NS):
        if " 200 " in propstat.findtext("D:status", namespaces=NS):
            found = propstat.find("D:prop/" + name, NS)
            if found is not None:
                return found.text
    return None


def response_status(response: ET.Element) -> Optional[int]:
    status = response.findtext("D:status", namespaces=NS)
    return int(status.split()[1]) if status else None


def listing(client: Client, collection: str) -> dict[str, str]:
    """href → getetag of every item in the collection (PROPFIND depth 1)."""
    _, found = multistatus(client.propfind(
        collection, '<?xml version="1.0"?><D:propfind xmlns:D="DAV:"><D:prop><D:getetag/>'
                    '</D:prop></D:propfind>', "1"))
    return {href: prop_text(r, "D:getetag") for href, r in found.items() if href != collection}


def uids_by_href(client: Client, collection: str) -> dict[str, list[str]]:
    """href → the UIDs in its text, from a calendar-query REPORT (all VEVENTs)."""
    _, found = multistatus(client.report(collection, """<?xml version="1.0" encoding="utf-8"?>
<C:calendar-query xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav">
  <D:prop><C:calendar-data/></D:prop>
  <C:filter><C:comp-filter name="VCALENDAR"><C:comp-filter name="VEVENT"/></C:comp-filter>
  </C:filter>
</C:calendar-query>"""))
    out = {}
    for href, response in found.items():
        cal = icalendar.Calendar.from_ical(prop_text(response, "C:calendar-data"))
        out[href] = [str(c["UID"]) for c in cal.walk("VEVENT")]
    return out


def sync(client: Client, collection: str, token: str = "") -> tuple[str, dict[str, ET.Element]]:
    body = ('<?xml version="1.0" encoding="utf-8"?><D:sync-collection xmlns:D="DAV:">'
            f'<D:sync-token>{token}</D:sync-token><D:sync-level>1</D:sync-level>'
            '<D:prop><D:getetag/></D:prop></D:sync-collection>')
    root, found = multistatus(client.report(collection, body, depth=None))
    return root.findtext("D:sync-token", namespaces=NS), found


def getctag(client: Client, collection: str) -> str:
    _, found = multistatus(client.propfind(
        collection, '<?xml version="1.0"?><D:propfind xmlns:D="DAV:" '
                    'xmlns:CS="http://calendarserver.org/ns/"><D:prop><CS:getctag/></D:prop>'
                    '</D:propfind>', "0"))
    return prop_text(found[collection], "CS:getctag")


def log_tails(pg_servers, chars: int = 2500) -> str:
    _, servers = pg_servers
    out = []
    for server in servers:
        with open(server.log_path, encoding="utf-8", errors="replace") as f:
            out.append(f"--- {server.log_path}\n" + f.read()[-chars:])
    return "\n".join(out)


def test_concurrent_writes_through_two_processes(pg_servers):
    user, password = create_user(pg_servers[0])
    a, b = clients_for(pg_servers, user, password)
    servers = (a, b)
    cal = f"/{user}/calendar/"
    assert a.propfind(f"/{user}/", "", "1").status == 207          # default collections

    # Items the lost-update races will fight over.
    race_etags = {}
    for k in range(5):
        created = a.put(cal + f"upd-{k}.ics", event(f"upd-{k}", k, "Original"))
        assert created.status == 201, (created.status, created.text)
        race_etags[k] = created.headers["etag"]
    start_token, _ = sync(a, cal)

    results: dict[tuple[str, str], Reply] = {}    # (href, who) → reply
    results_lock = threading.Lock()

    def put(client: Client, href: str, text: str, who: str, barrier=None, **headers):
        if barrier is not None:
            barrier.wait(timeout=30)
        reply = client.put(cal + href, text, **headers)
        with results_lock:
            results[(href, who)] = reply
        return reply

    # A follower keeps syncing incrementally (alternating processes) during the storm: the
    # chain of tokens must not skip any change.
    seen_by_follower: set[str] = set()
    stop = threading.Event()
    follower_errors: list[str] = []

    def follow():
        token = start_token
        for client in itertools.cycle(servers):
            done = stop.is_set()
            try:
                token, found = sync(client, cal, token)
            except AssertionError as e:
                follower_errors.append(str(e))
                return
            for href, response in found.items():
                if response_status(response) == 404:
                    follower_errors.append(f"{href} reported deleted")
                seen_by_follower.add(href)
            if done:
                return
            time.sleep(0.01)

    follower = threading.Thread(target=follow)
    follower.start()

    tasks = []
    for i in range(STORM):
        tasks.append((servers[i % 2], f"storm-{i:03d}.ics", event(f"storm-{i:03d}", i),
                      f"storm-{i}", None, {"If-None-Match": "*"}))
        if i % 20 == 10:
            k = i // 20
            # The same UID under two hrefs, one through each process.
            uid_race = threading.Barrier(2)
            tasks.append((a, f"uid-{k}-a.ics", event(f"uid-{k}", k, "via A"), "A", uid_race, {}))
            tasks.append((b, f"uid-{k}-b.ics", event(f"uid-{k}", k, "via B"), "B", uid_race, {}))
        if i % 40 == 30:
            k = i // 40
            # Two creations of the same href.
            href_race = threading.Barrier(2)
            tasks.append((a, f"new-{k}.ics", event(f"new-{k}", k, "A made it"), "A",
                          href_race, {"If-None-Match": "*"}))
            tasks.append((b, f"new-{k}.ics", event(f"new-{k}", k, "B made it"), "B",
                          href_race, {"If-None-Match": "*"}))
            # Two updates of the same version of an item.
            update_race = threading.Barrier(2)
            tasks.append((a, f"upd-{k}.ics", event(f"upd-{k}", k, "A updated"), "A",
                          update_race, {"If-Match": race_etags[k]}))
            tasks.append((b, f"upd-{k}.ics", event(f"upd-{k}", k, "B updated"), "B",
                          update_race, {"If-Match": race_etags[k]}))
    with ThreadPoolExecutor(THREADS) as pool:
        futures = [pool.submit(put, client, href, text, who, barrier, **headers)
                   for client, href, text, who, barrier, headers in tasks]
        for future in futures:
            future.result()
    stop.set()
    follower.join(60)
    assert not follower.is_alive()
    assert len(results) == len(tasks) == STORM + 10 * 2 + 5 * 4

    errors = {key: (r.status, r.text) for key, r in results.items() if r.status >= 500}
    assert not errors, f"{errors}\n{log_tails(pg_servers)}"

    # Plain distinct creations: all succeed.
    storm = {key[0]: r for key, r in results.items() if key[0].startswith("storm-")}
    assert len(storm) == STORM
    bad = {href: (r.status, r.text) for href, r in storm.items() if r.status != 201}
    assert not bad, f"{bad}\n{log_tails(pg_servers)}"

    # Same UID, two hrefs: exactly one winner; the loser is refused with a reason.
    uid_winners = {}
    for k in range(10):
        replies = {who: results[(f"uid-{k}-{who.lower()}.ics", who)] for who in ("A", "B")}
        statuses = sorted(r.status for r in replies.values())
        assert statuses in ([201, 409], [201, 400]), (k, {w: (r.status, r.text)
                                                         for w, r in replies.items()})
        winner = next(w for w, r in replies.items() if r.status == 201)
        loser = replies["B" if winner == "A" else "A"]
        if loser.status == 409:
            assert "no-uid-conflict" in loser.text, loser.text
        else:
            assert loser.text.strip(), "a 400 without a reason"
        uid_winners[f"uid-{k}"] = f"uid-{k}-{winner.lower()}.ics"

    # Same href, both with If-None-Match: * → one 201, one 412.
    new_winners = {}
    for k in range(5):
        replies = {who: results[(f"new-{k}.ics", who)] for who in ("A", "B")}
        assert sorted(r.status for r in replies.values()) == [201, 412], (
            k, {w: (r.status, r.text) for w, r in replies.items()})
        new_winners[k] = next(w for w, r in replies.items() if r.status == 201)

    # Same item, both with the same If-Match → one 204, one 412 (no lost update).
    update_winners = {}
    for k in range(5):
        replies = {who: results[(f"upd-{k}.ics", who)] for who in ("A", "B")}
        assert sorted(r.status for r in replies.values()) == [204, 412], (
            k, {w: (r.status, r.text) for w, r in replies.items()})
        update_winners[k] = next(w for w, r in replies.items() if r.status == 204)

    # What is stored is exactly what was acknowledged.
    acknowledged = {}      # href → ETag of the acknowledged write
    for (href, _who), reply in results.items():
        if reply.status in (201, 204):
            assert href not in acknowledged, f"{href} acknowledged twice"
            acknowledged[href] = reply.headers["etag"]
    for k in range(5):
        acknowledged.setdefault(f"upd-{k}.ics", race_etags[k])
    stored = listing(b, cal)
    assert set(stored) == {cal + href for href in acknowledged}
    assert len(stored) == len(acknowledged) == STORM + 10 + 5 + 5
    assert stored == {cal + href: etag for href, etag in acknowledged.items()}
    assert listing(a, cal) == stored

    uids = uids_by_href(a, cal)
    assert set(uids) == set(stored)
    counts = collections.Counter(uid for found in uids.values() for uid in found)
    assert [uid for uid, n in counts.items() if n != 1] == []
    assert all(len(found) == 1 for found in uids.values())
    for uid, href in uid_winners.items():
        assert uids[cal + href] == [uid]
    texts = {href: a.request("GET", href).text for href in
             [cal + f"new-{k}.ics" for k in range(5)] + [cal + f"upd-{k}.ics" for k in range(5)]}
    for k in range(5):
        assert f"SUMMARY:{new_winners[k]} made it" in texts[cal + f"new-{k}.ics"]
        assert f"SUMMARY:{update_winners[k]} updated" in texts[cal + f"upd-{k}.ics"]

    # The follower's chain of incremental syncs saw every change made during the storm.
    assert not follower_errors, follower_errors
    # (every stored item was created, or for upd-*, changed, after start_token)
    assert seen_by_follower == set(stored)

    # Both processes agree on the initial sync: exactly the stored hrefs, the same token.
    token_a, initial_a = sync(a, cal)
    token_b, initial_b = sync(b, cal)
    assert token_a == token_b
    assert set(initial_a) == set(initial_b) == set(stored)
    assert all(response_status(r) is None for r in initial_a.values())
    ctag_before = getctag(a, cal)
    assert getctag(b, cal) == ctag_before

    # Five creations and two deletions through the other process...
    changed = {}
    for k in range(5):
        reply = b.put(cal + f"later-{k}.ics", event(f"later-{k}", k, "later"))
        assert reply.status == 201, (reply.status, reply.text)
        changed[cal + f"later-{k}.ics"] = reply.headers["etag"]
    deleted = [cal + "storm-000.ics", cal + "storm-101.ics"]
    for href in deleted:
        reply = b.delete(href)
        assert reply.status == 200, (reply.status, reply.text)

    # ...are exactly what an incremental sync from the first token reports, on either side.
    new_token, changes = sync(a, cal, token_a)
    assert new_token != token_a
    assert set(changes) == set(changed) | set(deleted)
    for href in deleted:
        assert response_status(changes[href]) == 404, ET.tostring(changes[href])
    for href, etag in changed.items():
        assert response_status(changes[href]) is None
        assert prop_text(changes[href], "D:getetag") == etag
    token_via_b, changes_via_b = sync(b, cal, token_a)
    assert token_via_b == new_token and set(changes_via_b) == set(changes)
    ctag_after = getctag(a, cal)
    assert ctag_after != ctag_before
    assert getctag(b, cal) == ctag_after
    assert set(listing(a, cal)) == (set(stored) | set(changed)) - set(deleted)
    # Two processes appended to the same user's audit chain concurrently: it must still be
    # one unbroken chain.
    with Session(db.shared_engine(pg_servers[0])) as session:
        checked, problems = audit.verify(session, streams=[audit.dav_stream(user)])
    assert problems == [] and checked > 0


def test_first_requests_of_new_users_race(pg_servers):
    """A brand-new user's very first requests arrive in parallel through both processes
    (a client's initial sync): each creates the default collections if it finds none, and
    no acknowledged write may be lost to that."""
    lost, failures = {}, {}
    for attempt in range(3):
        user, password = create_user(pg_servers[0])
        a, b = clients_for(pg_servers, user, password)
        cal = f"/{user}/calendar/"
        barrier = threading.Barrier(THREADS)

        def first_put(i: int) -> Reply:
            barrier.wait(timeout=30)
            return (a, b)[i % 2].put(cal + f"first-{i}.ics", event(f"first-{i}", i))

        with ThreadPoolExecutor(THREADS) as pool:
            replies = list(pool.map(first_put, range(THREADS)))
        statuses = [r.status for r in replies]
        if any(s != 201 for s in statuses):
            failures[user] = [(r.status, r.text) for r in replies]
        acknowledged = {cal + f"first-{i}.ics" for i, r in enumerate(replies) if r.status == 201}
        stored = set(listing(a, cal))
        if acknowledged - stored:
            lost[user] = sorted(acknowledged - stored)
        _, home = multistatus(a.propfind(f"/{user}/", "", "1"))
        assert set(home) == {f"/{user}/", f"/{user}/calendar/", f"/{user}/contacts/",
                             *crm_books(user)}
    assert not lost, f"acknowledged writes lost: {lost}\n{log_tails(pg_servers)}"
    assert not failures, f"{failures}\n{log_tails(pg_servers)}"


def test_parallel_principal_recreation_through_both_processes(pg_servers):
    """Same race without the cost of a first login: the user deletes the principal, then
    parallel requests through both processes each find it missing and recreate it."""
    user, password = create_user(pg_servers[0])
    a, b = clients_for(pg_servers, user, password)
    cal = f"/{user}/calendar/"
    lost, failures = {}, {}
    for attempt in range(5):
        assert a.propfind(f"/{user}/", "", "0").status == 207   # logged in on both sides
        assert b.propfind(f"/{user}/", "", "0").status == 207
        gone = a.delete(f"/{user}/")
        assert gone.status == 200, (gone.status, gone.text)
        barrier = threading.Barrier(THREADS)

        def first_put(i: int) -> Reply:
            barrier.wait(timeout=30)
            return (a, b)[i % 2].put(cal + f"re-{attempt}-{i}.ics",
                                     event(f"re-{attempt}-{i}", i))

        with ThreadPoolExecutor(THREADS) as pool:
            replies = list(pool.map(first_put, range(THREADS)))
        failures.update({cal + f"re-{attempt}-{i}.ics": (r.status, r.text)
                         for i, r in enumerate(replies) if r.status != 201})
        acknowledged = {cal + f"re-{attempt}-{i}.ics" for i, r in enumerate(replies)
                        if r.status == 201}
        stored = set(listing(b, cal))
        if acknowledged - stored:
            lost[attempt] = sorted(acknowledged - stored)
        _, home = multistatus(b.propfind(f"/{user}/", "", "1"))
        assert set(home) == {f"/{user}/", cal, f"/{user}/contacts/", *crm_books(user)}
    assert not lost, f"acknowledged writes lost: {lost}\n{log_tails(pg_servers)}"
    assert not failures, f"{failures}\n{log_tails(pg_servers)}"


def test_concurrent_mkcalendar_of_the_same_path(pg_servers):
    user, password = create_user(pg_servers[0])
    a, b = clients_for(pg_servers, user, password)
    assert a.propfind(f"/{user}/", "", "0").status == 207
    for k in range(3):
        path = f"/{user}/team-{k}/"
        barrier = threading.Barrier(2)

        def make(client: Client) -> Reply:
            barrier.wait(timeout=30)
            return client.request("MKCALENDAR", path)

        with ThreadPoolExecutor(2) as pool:
            replies = list(pool.map(make, (a, b)))
        statuses = sorted(r.status for r in replies)
        # The loser: the collection exists (409 resource-must-be-null), or its insert hit
        # the other's at the same moment (400 with a reason).
        assert statuses in ([201, 409], [201, 400]), (
            [(r.status, r.text) for r in replies], log_tails(pg_servers))
        loser = next(r for r in replies if r.status != 201)
        assert loser.text.strip()
        if loser.status == 409:
            assert "resource-must-be-null" in loser.text, loser.text
        put = b.put(path + "x.ics", event("x", k))
        assert put.status == 201, (put.status, put.text)
    _, home = multistatus(a.propfind(f"/{user}/", "", "1"))
    assert set(home) == {f"/{user}/", f"/{user}/calendar/", f"/{user}/contacts/",
                         *crm_books(user)} | {
        f"/{user}/team-{k}/" for k in range(3)}


def test_one_invitation_reaching_two_reps_at_once_is_one_visit(pg_servers):
    """The same invitations PUT into two reps' calendars at the same moment, through both
    processes: every PUT succeeds, each UID is one visit with both reps, each attendee
    address one contact (a unique-key race is settled by looking again, not by an error)."""
    url = pg_servers[0]
    reps = [create_user(url) for _ in range(2)]
    clients = [clients_for(pg_servers, user, password)[i] for i, (user, password)
               in enumerate(reps)]
    for client in clients:
        assert client.propfind(f"/{client.user}/", "", "0").status == 207
    barrier = threading.Barrier(2)
    rounds = 25
    tag = f"{reps[0][0]}-"

    def put_all(client: Client) -> list[int]:
        statuses = []
        for n in range(rounds):
            barrier.wait(timeout=30)
            statuses.append(client.put(f"/{client.user}/calendar/inv{n}.ics",
                                       invitation(f"{tag}inv{n}", n)).status)
        return statuses

    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(put_all, clients))
    assert results == [[201] * rounds] * 2, f"{results}\n{log_tails(pg_servers)}"
    with Session(db.shared_engine(url)) as session:
        visits = session.execute(text(
            "SELECT v.uid, count(p.id) FROM crm_visits v JOIN crm_visit_placements p "
            "ON p.visit_id = v.id WHERE v.uid LIKE :tag GROUP BY v.uid"),
            {"tag": tag + "%"}).all()
        assert sorted(visits) == sorted((f"{tag}inv{n}", 2) for n in range(rounds))
        emails = session.execute(text(
            "SELECT email, count(*) FROM crm_contact_emails WHERE email LIKE 'guest%' "
            "OR email = 'shared@client.example' GROUP BY email")).all()
        assert all(count == 1 for _, count in emails) and len(emails) >= rounds + 1
