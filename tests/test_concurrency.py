"""Many clients editing the same events with If-Match, as calendar clients do.

Every client loops read → modify → PUT with ``If-Match``: it reads the event's counter, writes
counter + 1. If the server ever let two writes of one version both succeed, an increment
would be lost and the final counter would be below the number of 2xx answers; every 412 must
be a real conflict (the version it named was gone). A follower syncs all along: every change
is reported by the first poll after it whose token predates it, and never twice in one
answer. Run on SQLite (one process), PostgreSQL (one process) and PostgreSQL with two server
processes under the same load.
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass

import pytest

from conftest import create_user
from davclient import LiveServer
from test_multiprocess_pg import Client, listing, multistatus, prop_text, sync

pytestmark = pytest.mark.e2e

EVENTS = 3
WRITERS = 8
ROUNDS = 12          # successful increments each writer aims for
COUNT = re.compile(r"SUMMARY:count (\d+)\r\n")


def event(uid: str, count: int) -> str:
    return ("BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//radicale-crm//concurrency//EN\r\n"
            f"BEGIN:VEVENT\r\nUID:{uid}\r\nDTSTAMP:20260101T000000Z\r\n"
            "DTSTART:20261201T100000Z\r\nDTEND:20261201T110000Z\r\n"
            f"SUMMARY:count {count}\r\n"
            "ATTENDEE;CN=Guest Person:mailto:guest@client.example\r\n"
            "END:VEVENT\r\nEND:VCALENDAR\r\n")


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgresql),
                        pytest.param("postgresql-2-processes", marks=pytest.mark.postgresql)])
def servers(request, tmp_path):
    if request.param == "sqlite":
        url, count = request.getfixturevalue("sqlite_url"), 1
    else:
        url = request.getfixturevalue("pg_server_url")
        count = 2 if request.param.endswith("processes") else 1
    started = []
    try:
        for n in range(count):
            started.append(LiveServer(url, str(tmp_path / f"server{n}.log")))
        yield url, started
    finally:
        for server in started:
            server.stop()


@dataclass
class Write:
    href: str
    sent: float
    acknowledged: float
    count: int


def test_if_match_edits_lose_nothing_and_sync_reports_each_change(servers):
    url, processes = servers
    user, password = create_user(url)
    clients = [Client(server, user, password) for server in processes]
    cal = f"/{user}/calendar/"
    assert clients[0].propfind(f"/{user}/", "", "1").status == 207
    hrefs = [f"shared-{k}.ics" for k in range(EVENTS)]
    for k, href in enumerate(hrefs):
        assert clients[0].put(cal + href, event(f"shared-{k}", 0),
                              **{"If-None-Match": "*"}).status == 201

    writes: list[Write] = []
    conflicts: list[str] = []
    errors: list[str] = []
    lock = threading.Lock()

    def writer(n: int) -> None:
        client = clients[n % len(clients)]
        done = 0
        deadline = time.monotonic() + 90
        while done < ROUNDS and time.monotonic() < deadline:
            href = hrefs[(n + done) % EVENTS]
            got = client.request("GET", cal + href)
            if got.status != 200:
                errors.append(f"GET {href}: {got.status}")
                return
            count = int(COUNT.search(got.text).group(1))
            sent = time.monotonic()
            put = client.put(cal + href, event(f"shared-{hrefs.index(href)}", count + 1),
                             **{"If-Match": got.headers["etag"]})
            acknowledged = time.monotonic()
            with lock:
                if put.status in (201, 204):
                    writes.append(Write(href, sent, acknowledged, count + 1))
                    done += 1
                elif put.status == 412:
                    conflicts.append(href)
                else:
                    errors.append(f"PUT {href}: {put.status} {put.text.strip()}")
                    return

    polls: list[tuple[float, float, set[str]]] = []   # (token taken, poll sent, reported)
    stop = threading.Event()

    def follower() -> None:
        token, _ = sync(clients[-1], cal)
        taken = time.monotonic()
        while True:
            last = stop.is_set()
            sent = time.monotonic()
            try:
                token, found = sync(clients[len(polls) % len(clients)], cal, token)
            except AssertionError as e:   # multistatus() refuses an href reported twice
                errors.append(f"sync: {e}")
                return
            polls.append((taken, sent, {h.rsplit("/", 1)[1] for h in found}))
            taken = time.monotonic()
            if last:
                return
            time.sleep(0.02)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(WRITERS)]
    follow = threading.Thread(target=follower)
    follow.start()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    stop.set()
    follow.join(60)
    assert not any(t.is_alive() for t in threads + [follow]), "a client hung"
    assert not errors, errors[:5]
    assert len(writes) == WRITERS * ROUNDS, (len(writes), len(conflicts))

    # No lost update: each event's counter is the number of successful writes to it, and
    # every acknowledged value is distinct (two writers never both wrote "n + 1").
    final = {}
    for href in hrefs:
        got = clients[0].request("GET", cal + href)
        final[href] = int(COUNT.search(got.text).group(1))
        values = sorted(w.count for w in writes if w.href == href)
        assert values == list(range(1, len(values) + 1)), (href, values)
        assert final[href] == len(values)
    assert conflicts, "no conflict happened: the test did not race"

    # Sync: every acknowledged change is reported by each poll sent after it was
    # acknowledged with a token taken before it was sent.
    for w in writes:
        for taken, sent, reported in polls:
            if taken < w.sent and sent > w.acknowledged:
                assert w.href in reported, (w, taken, sent, reported)
    # ... and a client that kept up holds the server's final state.
    etags = listing(clients[0], cal)
    assert set(etags) == {cal + h for h in hrefs}
    _, found = multistatus(clients[0].report(cal, (
        '<?xml version="1.0"?><C:calendar-multiget xmlns:D="DAV:" '
        'xmlns:C="urn:ietf:params:xml:ns:caldav"><D:prop><D:getetag/></D:prop>'
        + "".join(f"<D:href>{cal}{h}</D:href>" for h in hrefs) + "</C:calendar-multiget>")))
    assert {h: prop_text(r, "D:getetag") for h, r in found.items()} == etags
