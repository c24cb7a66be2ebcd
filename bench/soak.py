"""A soak run: simulated sales reps syncing and writing against gunicorn for a bounded time.

N reps (``--reps``, default 20), each its own user with its own calendar, run at once
against our server under gunicorn (``--workers`` gthread workers, default 4) on PostgreSQL
(a fresh database on ``--pg-url``, dropped afterwards) or SQLite (``--database sqlite``),
for ``--minutes`` (default 10; ``--quick``: 1 minute, 10 events pre-filled per rep). Each
rep is one thread with its own keep-alive ``http.client`` connection (closed now and then,
as mobile clients do, so its requests land on other workers too) and behaves like a
calendar client of one of three kinds, assigned in turn:

- ``davx5``: PROPFIND depth 0 on its calendar (getctag, sync-token); a sync-collection
  REPORT from its last token when the CTag changed;
- ``apple``: PROPFIND depth 1 on its home (every collection's CTag), then the same;
- ``thunderbird``: a sync-collection REPORT from its last token on every poll.

It polls every ``--poll-seconds`` (mean, ±50 % jitter). After a poll it writes with
probability 0.35: creates a visit (bench/workload.py's events: 2-4 external attendees, so
CRM ingestion runs; PUT with ``If-None-Match: *``), updates one (``If-Match`` with its ETag:
a new SUMMARY, a move by a day, or STATUS:CANCELLED), deletes one (``If-Match``), or sends a
deliberately stale ``If-Match`` (an ETag the item had before), which must get 412. It also
runs a time-range REPORT over two weeks (probability 0.15), a GET (0.15) and a
calendar-multiget of up to 10 items (0.05). Before the timed phase each rep discovers its
home, PUTs ``--prefill`` events and syncs from scratch.

Every answer is checked as it comes: the expected status (anything else is an error; the
412s asked for are counted apart), a CTag that changes exactly when the rep wrote, a sync
that reports exactly what the rep changed since its token with the ETags the writes
returned (a deletion as 404), a GET with the bytes and ETag of the last acknowledged write,
a time-range answer with exactly the rep's events overlapping the range (moves included).
At the end, verification: a last sync; the rep's view built from its syncs, a PROPFIND and a
GET of every item each equal to its acknowledged writes (deleted ones 404); every event a
live CRM visit with the right start and status, every deleted one's visit in the trash;
``crm-admin audit verify`` and ``crm-admin db check`` exit 0; no ERROR or traceback in the
server log; no worker restarted.

Memory: the RSS of gunicorn's master and workers (sum) and the private RSS of the
database's PostgreSQL backends, sampled every ``--sample-seconds`` from /proc; "flat" means
the mean of the last quarter of the timed phase over the mean of the second quarter (after
warm-up) stays within ``--max-rss-growth`` (default 1.25).

Exit status 0 when all of that holds; 1 with a one-line reason otherwise (unexpected
errors, a failed check or verification, memory growth over the limit); 2 for a bad option.
Figures go to bench/results/soak-<quick|full>.json (or ``--out``) and a table is printed.
``--inject lose-write`` or ``alter-write`` deletes or rewrites one acknowledged event behind
its rep's back before the verification, to show that it catches it (exit 1; nothing is
written unless ``--out`` is given).

    .venv/bin/python bench/soak.py [--quick] [--reps 20] [--workers 4] [--threads 4]
        [--minutes 10] [--poll-seconds 4] [--prefill 40] [--database pg|sqlite]
        [--pg-url URL] [--sample-seconds 3] [--max-rss-growth 1.25] [--seed N]
        [--inject lose-write|alter-write] [--out FILE]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import random
import re
import shlex
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import uuid
import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass, field
from types import SimpleNamespace
from typing import Iterator, Optional

import psycopg
import sqlalchemy
from sqlalchemy.engine import make_url

import compare
import ingest_cost
import workload
from compare import CheckFailed, Listing, children, multiget_body, parse_multistatus, sync_body
from workload import Event

ROOT = compare.ROOT
BIN = compare.BIN
sys.path.insert(0, ROOT)   # the server's own package, to create the users

PASSWORD = "soakpass1"
INTERNAL = workload.INTERNAL
STYLES = ("davx5", "apple", "thunderbird")
D, C, CS = "{DAV:}", "{urn:ietf:params:xml:ns:caldav}", "{http://calendarserver.org/ns/}"
XML = {"Content-Type": "application/xml; charset=utf-8"}
ICS = {"Content-Type": "text/calendar; charset=utf-8"}
NS = 'xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav" xmlns:CS="http://calendarserver.org/ns/"'
CTAG_BODY = (f'<?xml version="1.0" encoding="utf-8"?><D:propfind {NS}><D:prop><CS:getctag/>'
             '<D:sync-token/><D:displayname/><D:resourcetype/></D:prop></D:propfind>')
ETAG_BODY = (f'<?xml version="1.0" encoding="utf-8"?><D:propfind {NS}><D:prop><D:getetag/>'
             '</D:prop></D:propfind>')

# One poll cycle: the poll, then each of these with its probability.
P_WRITE, P_TIME_RANGE, P_GET, P_MULTIGET, P_RECONNECT = 0.35, 0.15, 0.15, 0.05, 0.25
WRITES = {"create": 0.45, "update": 0.35, "delete": 0.10, "stale": 0.10}
UPDATES = {"summary": 0.5, "move": 0.35, "cancel": 0.15}
RANGE_DAYS = 14
RANGE_FIRST = dt.datetime(2025, 8, 25, tzinfo=dt.timezone.utc)   # the events' year and then
RANGE_LAST = dt.datetime(2026, 11, 30, tzinfo=dt.timezone.utc)   # some (13-week series)
EXPECTED = {"poll_ctag": {207}, "poll_home": {207}, "sync": {207}, "put_create": {201},
            "put_update": {204}, "put_stale": {412}, "delete": {200, 204}, "get": {200},
            "time_range": {207}, "multiget": {207}, "setup_discovery": {207},
            "setup_put": {201}, "setup_sync": {207}}
TIMED = ("poll_ctag", "poll_home", "sync", "put_create", "put_update", "put_stale", "delete",
         "get", "time_range", "multiget")
LOG_FAILURE = re.compile(r"\[(ERROR|CRITICAL)\]|Traceback|WORKER TIMEOUT|was sent SIG|"
                         r"Worker \(pid:\d+\) exited")
MAX_EXAMPLES = 20
# gunicorn's logging configuration for the run: server/wsgi.py does not install Radicale's
# log handler, so without one Radicale's records reach stderr through Python's last-resort
# handler, without their level, and the log check could not tell an error from a warning.
LOG_CONFIG = {
    "version": 1, "disable_existing_loggers": False,
    "root": {"level": "INFO", "handlers": ["console"]},
    "loggers": {"gunicorn.error": {"level": "INFO", "handlers": ["console"], "propagate": False},
                "gunicorn.access": {"level": "INFO", "handlers": [], "propagate": False}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "generic",
                             "stream": "ext://sys.stderr"}},
    "formatters": {"generic": {
        "format": "%(asctime)s [%(process)d] [%(levelname)s] %(name)s: %(message)s",
        "datefmt": "[%Y-%m-%d %H:%M:%S %z]"}}}


# --- HTTP -----------------------------------------------------------------------------------------

REQUEST_TIMEOUT = 60   # seconds: a soak request slower than this is an error


def collection_props(reply: compare.Reply) -> dict[str, dict[str, str]]:
    """A PROPFIND answer over collections: href (unquoted) -> {property tag: text}."""
    found = {}
    for response in ET.fromstring(reply.body).iter(f"{D}response"):
        href = urllib.parse.unquote(response.findtext(f"{D}href", ""))
        props = {}
        for propstat in response.iter(f"{D}propstat"):
            if " 200 " in propstat.findtext(f"{D}status", ""):
                props.update({child.tag: child.text or "" for child in propstat.find(f"{D}prop")})
        found[href] = props
    return found


# --- events and their edits -----------------------------------------------------------------------

def unfold(text: str) -> list[str]:
    return text.replace("\r\n ", "").split("\r\n")[:-1]


def refold(lines: list[str]) -> str:
    return "\r\n".join(ingest_cost.fold(line) for line in lines) + "\r\n"


def personal(event: Event, user: str) -> str:
    """The workload's event as this rep's: organizer and chair are the rep."""
    lines = [line.replace(ingest_cost.REP_EMAIL, f"{user}@{INTERNAL}")
             .replace("CN=Bench Rep", f"CN=Rep {user}") for line in unfold(event.text)]
    return refold(lines)


WHEN = re.compile(r"^(DTSTART|DTEND)(;TZID=([^:;]+))?:(\d{8}T\d{6})(Z?)$")
SUMMARY_REVISION = re.compile(r" \[r\d+\]$")


def revise(item: "Item", how: str, revision: int) -> tuple[str, tuple, bool]:
    """A new version of the item's text: SUMMARY marked with the revision, SEQUENCE and
    LAST-MODIFIED moved on; ``move`` shifts a single event by a day (wall time in its zone),
    ``cancel`` sets STATUS:CANCELLED. Returns (text, UTC occurrences, cancelled)."""
    lines, out, in_event = unfold(item.text), [], False
    occurrences, cancelled = item.occurrences, item.cancelled
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    moved: dict[str, dt.datetime] = {}
    for line in lines:
        if line == "BEGIN:VEVENT":
            in_event = True
        elif line == "END:VEVENT":
            in_event = False
        elif in_event:
            name = re.split(r"[;:]", line, 1)[0]
            if name == "SUMMARY":
                line = SUMMARY_REVISION.sub("", line) + f" [r{revision}]"
            elif name == "SEQUENCE":
                line = f"SEQUENCE:{revision}"
            elif name in ("LAST-MODIFIED", "DTSTAMP"):
                line = f"{name}:{stamp}"
            elif name == "STATUS" and how == "cancel":
                line, cancelled = "STATUS:CANCELLED", True
            elif name in ("DTSTART", "DTEND") and how == "move":
                match = WHEN.match(line)
                prop, tz_part, tzid, wall, z = match.groups()
                wall = dt.datetime.strptime(wall, "%Y%m%dT%H%M%S") + dt.timedelta(days=1)
                moved[prop] = workload._utc(wall, tzid)
                line = f"{prop}{tz_part or ''}:{wall:%Y%m%dT%H%M%S}{z}"
        out.append(line)
    if how == "move":
        occurrences = ((moved["DTSTART"], moved["DTEND"]),)
    return refold(out), occurrences, cancelled


# --- one rep --------------------------------------------------------------------------------------

@dataclass
class Item:
    uid: str
    text: str
    etag: str
    occurrences: tuple
    revision: int = 0
    cancelled: bool = False
    old_etags: list = field(default_factory=list)

    @property
    def single(self) -> bool:
        return len(self.occurrences) == 1 and "RRULE:" not in self.text

    def overlaps(self, start: dt.datetime, end: dt.datetime) -> bool:
        return any(s < end and e > start for s, e in self.occurrences)


@dataclass
class Sample:
    kind: str
    at: float          # seconds since the timed phase began (negative: set-up)
    ms: float
    status: int        # 0: no answer (an exception)


class Rep:
    """A simulated rep and what it knows: its acknowledged writes (the model), its view
    as built from its syncs, and every request it made."""

    def __init__(self, k: int, port: int, events: list[Event], style: str, seed: int,
                 poll: float) -> None:
        self.k, self.user, self.port, self.style, self.poll = k, f"rep{k:02d}", port, style, poll
        self.calendar = f"/{self.user}/calendar/"
        self.client = compare.Client(port, self.user, REQUEST_TIMEOUT, PASSWORD)
        self.rng = random.Random(seed)
        self.unused = list(events)
        self.items: dict[str, Item] = {}
        self.deleted: set[str] = set()
        self.deleted_uids: dict[str, str] = {}
        self.uncertain: set[str] = set()      # a write without a clear answer: not checked
        self.synced: dict[str, str] = {}      # href -> ETag, as the rep's syncs reported
        self.changed_since_sync: set[str] = set()
        self.deleted_since_sync: set[str] = set()
        self.dirty_since_ctag = False
        self.token = ""
        self.ctag: Optional[str] = None
        self.samples: list[Sample] = []
        self.errors: list[str] = []           # unexpected status or no answer
        self.checks: list[str] = []           # an answer with the wrong content
        self.stale_tried = 0
        self.t0 = 0.0

    # -- requests --

    def call(self, kind: str, method: str, path: str, body: str | bytes = b"",
             headers: Optional[dict] = None) -> Optional[compare.Reply]:
        """One request; an unexpected status or no answer is recorded as an error and
        returns None."""
        started = time.perf_counter()
        try:
            reply = self.client.request(method, path, body, headers)
        except Exception as e:
            self.samples.append(Sample(kind, started - self.t0,
                                       (time.perf_counter() - started) * 1000, 0))
            self.errors.append(f"{self.user} {method} {path}: {type(e).__name__}: {e}")
            return None
        self.samples.append(Sample(kind, started - self.t0, reply.seconds * 1000, reply.status))
        if reply.status not in EXPECTED[kind]:
            self.errors.append(f"{self.user} {method} {path}: status {reply.status}, expected "
                               f"{'/'.join(map(str, sorted(EXPECTED[kind])))}: "
                               f"{reply.body[:160]!r}")
            return None
        return reply

    def check(self, ok: bool, text: str) -> bool:
        if not ok:
            self.checks.append(f"{self.user}: {text}")
        return ok

    # -- set-up --

    def setup(self, prefill: int) -> None:
        self.call("setup_discovery", "PROPFIND", f"/{self.user}/", CTAG_BODY,
                  {**XML, "Depth": "1"})
        for _ in range(prefill):
            self.create("setup_put")
        reply = self.call("setup_sync", "REPORT", self.calendar, sync_body(""),
                          {**XML, "Depth": "1"})
        if reply is not None:
            listing = parse_multistatus(reply, "initial sync")
            self.check(set(listing.ok) == set(self.items) and not listing.gone,
                       f"initial sync listed {len(listing.ok)} items, {len(self.items)} PUT")
            self.synced = {h: p.get(f"{D}getetag", "") for h, p in listing.ok.items()}
            self.token = listing.token
        self.changed_since_sync.clear()
        self.deleted_since_sync.clear()
        self.dirty_since_ctag = True   # no CTag seen yet

    # -- the timed phase --

    def run(self, t0: float, deadline: float) -> None:
        self.t0 = t0
        time.sleep(max(0.0, min(deadline - time.perf_counter(), self.rng.uniform(0, self.poll))))
        while time.perf_counter() < deadline:
            try:
                self.cycle()
            except Exception as e:   # a bug in the checker itself: say so, go on
                self.checks.append(f"{self.user}: soak.py raised {type(e).__name__}: {e}")
            pause = self.poll * self.rng.uniform(0.5, 1.5)
            time.sleep(max(0.0, min(pause, deadline - time.perf_counter())))

    def cycle(self) -> None:
        if self.rng.random() < P_RECONNECT:
            self.client.close()
        self.poll_once()
        rng = self.rng
        if rng.random() < P_WRITE:
            what = rng.choices(list(WRITES), list(WRITES.values()))[0]
            if what != "create" and not self.live():
                what = "create"
            if what == "create":
                self.create("put_create")
            elif what == "update":
                self.update()
            elif what == "delete":
                self.delete()
            elif not self.stale():
                self.update()
        if rng.random() < P_TIME_RANGE:
            self.time_range()
        if rng.random() < P_GET and self.live():
            self.get(rng.choice(self.live()))
        if rng.random() < P_MULTIGET and self.live():
            self.multiget(rng.sample(self.live(), min(10, len(self.live()))))

    def live(self) -> list[str]:
        return sorted(h for h in self.items if h not in self.uncertain)

    def poll_once(self) -> None:
        if self.style == "thunderbird":
            self.sync()
            return
        if self.style == "apple":
            reply = self.call("poll_home", "PROPFIND", f"/{self.user}/", CTAG_BODY,
                              {**XML, "Depth": "1"})
        else:
            reply = self.call("poll_ctag", "PROPFIND", self.calendar, CTAG_BODY,
                              {**XML, "Depth": "0"})
        if reply is None:
            return
        props = collection_props(reply).get(self.calendar)
        if not self.check(props is not None and props.get(f"{CS}getctag"),
                          f"PROPFIND {self.style}: no getctag for {self.calendar}"):
            return
        ctag = props[f"{CS}getctag"]
        if ctag == self.ctag:
            self.check(not self.dirty_since_ctag or self.uncertain,
                       f"CTag {ctag} unchanged after a write")
            return
        self.check(self.ctag is None or self.dirty_since_ctag or self.uncertain,
                   f"CTag changed ({self.ctag} -> {ctag}) though nothing was written")
        self.ctag, self.dirty_since_ctag = ctag, False
        self.sync()

    def sync(self, kind: str = "sync") -> None:
        reply = self.call(kind, "REPORT", self.calendar, sync_body(self.token),
                          {**XML, "Depth": "1"})
        if reply is None:
            return
        listing = parse_multistatus(reply, "sync-collection")
        self.apply_sync(listing)

    def apply_sync(self, listing: Listing) -> None:
        """A sync answer must report exactly what this rep changed since its token, with
        the ETags its writes got back; then the rep's view takes it in."""
        skip = self.uncertain
        changed = {h for h in self.changed_since_sync if h in self.items} - skip
        must_go = {h for h in self.deleted_since_sync if h in self.synced} - skip
        may_go = {h for h in self.deleted_since_sync if h not in self.synced}
        got = set(listing.ok) - skip
        self.check(got == changed, "sync reported changes " + _diff(got, changed))
        for href in got & changed:
            etag = listing.ok[href].get(f"{D}getetag", "")
            self.check(etag == self.items[href].etag, f"sync reported {href} with ETag {etag},"
                       f" the last write got {self.items[href].etag}")
        gone = listing.gone - skip
        self.check(must_go <= gone <= must_go | may_go, "sync reported deletions " +
                   _diff(gone, must_go))
        self.check(bool(listing.token), "sync answer without a sync-token")
        for href, props in listing.ok.items():
            self.synced[href] = props.get(f"{D}getetag", "")
        for href in listing.gone:
            self.synced.pop(href, None)
        self.token = listing.token or self.token
        self.changed_since_sync.clear()
        self.deleted_since_sync.clear()

    def wrote(self, href: str) -> None:
        self.changed_since_sync.add(href)
        self.dirty_since_ctag = True

    def create(self, kind: str) -> None:
        if not self.unused:
            return
        event = self.unused.pop(0)
        text = personal(event, self.user)
        reply = self.call(kind, "PUT", self.calendar + event.href, text,
                          {**ICS, "If-None-Match": "*"})
        if reply is None:
            self.uncertain.add(event.href)
            self.dirty_since_ctag = True
            return
        etag = reply.headers.get("etag")
        if not self.check(bool(etag), f"PUT {event.href}: 201 without an ETag"):
            self.uncertain.add(event.href)
        self.items[event.href] = Item(event.uid, text, etag or "", event.occurrences)
        self.wrote(event.href)

    def update(self) -> None:
        href = self.rng.choice(self.live())
        item = self.items[href]
        how = self.rng.choices(list(UPDATES), list(UPDATES.values()))[0]
        if (how == "move" and not item.single) or (how == "cancel" and item.cancelled):
            how = "summary"
        text, occurrences, cancelled = revise(item, how, item.revision + 1)
        reply = self.call("put_update", "PUT", self.calendar + href, text,
                          {**ICS, "If-Match": item.etag})
        if reply is None:
            self.uncertain.add(href)
            self.dirty_since_ctag = True
            return
        etag = reply.headers.get("etag", "")
        self.check(bool(etag) and etag != item.etag,
                   f"PUT {href} (update): ETag {etag!r}, before {item.etag}")
        item.old_etags.append(item.etag)
        item.text, item.etag, item.occurrences, item.cancelled = text, etag, occurrences, cancelled
        item.revision += 1
        self.wrote(href)

    def stale(self) -> bool:
        """A write with an ETag the item had before: must get 412 and change nothing."""
        candidates = [h for h in self.live() if self.items[h].old_etags]
        if not candidates:
            return False
        href = self.rng.choice(candidates)
        item = self.items[href]
        text, _, _ = revise(item, "summary", item.revision + 1)
        self.stale_tried += 1
        if self.call("put_stale", "PUT", self.calendar + href, text,
                     {**ICS, "If-Match": self.rng.choice(item.old_etags)}) is None:
            self.uncertain.add(href)   # it may have overwritten: a lost update
            self.dirty_since_ctag = True
        return True

    def delete(self) -> None:
        href = self.rng.choice(self.live())
        reply = self.call("delete", "DELETE", self.calendar + href, b"",
                          {"If-Match": self.items[href].etag})
        if reply is None:
            self.uncertain.add(href)
            self.dirty_since_ctag = True
            return
        self.deleted_uids[href] = self.items.pop(href).uid
        self.deleted.add(href)
        self.changed_since_sync.discard(href)
        self.deleted_since_sync.add(href)
        self.dirty_since_ctag = True

    def get(self, href: str, kind: str = "get") -> None:
        reply = self.call(kind, "GET", self.calendar + href)
        if reply is None:
            return
        item = self.items[href]
        self.check(reply.body == item.text.encode(), f"GET {href}: body is not the last write's")
        self.check(reply.headers.get("etag") == item.etag,
                   f"GET {href}: ETag {reply.headers.get('etag')}, the last write got {item.etag}")

    def multiget(self, hrefs: list[str]) -> None:
        reply = self.call("multiget", "REPORT", self.calendar,
                          multiget_body([self.calendar + h for h in hrefs]),
                          {**XML, "Depth": "1"})
        if reply is None:
            return
        listing = parse_multistatus(reply, "calendar-multiget")
        self.check(set(listing.ok) == set(hrefs), "calendar-multiget answered " +
                   _diff(set(listing.ok), set(hrefs)))
        for href in set(listing.ok) & set(hrefs):
            data = listing.ok[href].get(f"{C}calendar-data", "")
            # XML parsing turns CRLF into LF.
            self.check(data == self.items[href].text.replace("\r\n", "\n"),
                       f"calendar-multiget: {href}'s calendar-data is not the last write's")
            self.check(listing.ok[href].get(f"{D}getetag") == self.items[href].etag,
                       f"calendar-multiget: {href}'s ETag is not the last write's")

    def time_range(self) -> None:
        span = (RANGE_LAST - RANGE_FIRST).total_seconds()
        start = RANGE_FIRST + dt.timedelta(seconds=int(self.rng.uniform(0, span)) // 60 * 60)
        end = start + dt.timedelta(days=RANGE_DAYS)
        body = (f'<?xml version="1.0" encoding="utf-8"?><C:calendar-query {NS}>'
                '<D:prop><D:getetag/></D:prop><C:filter><C:comp-filter name="VCALENDAR">'
                '<C:comp-filter name="VEVENT"><C:time-range '
                f'start="{start:%Y%m%dT%H%M%SZ}" end="{end:%Y%m%dT%H%M%SZ}"/>'
                '</C:comp-filter></C:comp-filter></C:filter></C:calendar-query>')
        reply = self.call("time_range", "REPORT", self.calendar, body, {**XML, "Depth": "1"})
        if reply is None:
            return
        got = set(parse_multistatus(reply, "calendar-query").ok) - self.uncertain
        expected = {h for h, item in self.items.items() if item.overlaps(start, end)} \
            - self.uncertain
        self.check(got == expected, f"time-range {start:%Y-%m-%d %H:%M}+{RANGE_DAYS}d answered "
                   + _diff(got, expected))

    # -- the end --

    def verify(self) -> list[str]:
        """After the timed phase: a last sync, then the rep's view, a PROPFIND and a GET of
        every item against its acknowledged writes. Failures are returned (not counted as
        the timed phase's)."""
        saved, failures = (self.errors, self.checks), []
        self.errors = self.checks = failures   # in the order they happen
        self.sync("verify_sync")
        live = set(self.items) - self.uncertain
        view = {h: e for h, e in self.synced.items() if h not in self.uncertain}
        self.check(set(view) == live, "its syncs' view of the calendar differs from its "
                   "acknowledged writes: " + _diff(set(view), live))
        wrong = sorted(h for h in set(view) & live if view[h] != self.items[h].etag)
        self.check(not wrong, f"its syncs' view has old ETags for {_few(wrong)}")
        reply = self.call("verify_propfind", "PROPFIND", self.calendar, ETAG_BODY,
                          {**XML, "Depth": "1"})
        if reply is not None:
            listing = parse_multistatus(reply, "PROPFIND depth 1")
            stored = set(listing.ok) - self.uncertain
            self.check(stored == live, "the calendar holds " + _diff(stored, live))
            wrong = sorted(h for h in stored & live
                           if listing.ok[h].get(f"{D}getetag") != self.items[h].etag)
            self.check(not wrong, f"stored ETags differ from the acknowledged ones: {_few(wrong)}")
        for href in sorted(live):
            self.get(href, "verify_get")
        for href in sorted(self.deleted - self.uncertain):
            self.call("verify_gone", "GET", self.calendar + href)
        self.errors, self.checks = saved
        return failures


EXPECTED.update({"verify_sync": {207}, "verify_propfind": {207}, "verify_get": {200},
                 "verify_gone": {404}})


def _few(hrefs: list[str] | set[str], n: int = 3) -> str:
    hrefs = sorted(hrefs)
    return ", ".join(hrefs[:n]) + (f" and {len(hrefs) - n} more" if len(hrefs) > n else "") \
        if hrefs else "none"


def _diff(got: set[str], expected: set[str]) -> str:
    if got == expected:
        return f"{len(got)} as expected"
    return (f"{len(got)}, expected {len(expected)}: missing {_few(expected - got)}, "
            f"unexpected {_few(got - expected)}")


# --- the server, its database and its memory ---------------------------------------------------

@contextlib.contextmanager
def pg_database(url: str) -> Iterator[tuple[str, SimpleNamespace]]:
    """A fresh database on that PostgreSQL server: its URL, and the server's version and
    whether autovacuum is on (what compare.machine reports of a server)."""
    admin_url = make_url(url).set(drivername="postgresql")
    with psycopg.connect(admin_url.render_as_string(hide_password=False), autocommit=True,
                         connect_timeout=5) as admin:
        server = SimpleNamespace(
            version=admin.execute("SHOW server_version").fetchone()[0],
            autovacuum=admin.execute("SHOW autovacuum").fetchone()[0] == "on")
        name = "crm_soak_" + uuid.uuid4().hex[:10]
        admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield (admin_url.set(drivername="postgresql+psycopg", database=name)
                   .render_as_string(hide_password=False), server)
        finally:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def admin(db_url: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([os.path.join(BIN, "crm-admin"), "--db-url", db_url, *args],
                          text=True, capture_output=True, cwd=ROOT, timeout=600)


def create_users(db_url: str, names: list[str]) -> None:
    from sqlalchemy.orm import Session
    from server.crm import db, users
    engine = db.make_engine(db_url, pool_size=1)
    try:
        with Session(engine) as session, session.begin():
            for name in names:
                users.add_user(session, name, PASSWORD, role="rep", email=f"{name}@{INTERNAL}")
    finally:
        engine.dispose()


class Gunicorn:
    def __init__(self, db_url: str, workdir: str, workers: int, threads: int) -> None:
        self.log_path = os.path.join(workdir, "server.log")
        overrides = os.path.join(workdir, "soak.conf")
        with open(overrides, "w") as f:
            f.write(f"[storage]\ndb_url = {db_url}\ncrm_internal_domains = {INTERNAL}\n"
                    "[logging]\nlevel = warning\n")
        env = {k: v for k, v in os.environ.items() if k not in ("RADICALE_CONFIG", "CRM_CONFIG")}
        env["RADICALE_CONFIG"] = os.pathsep.join([os.path.join(ROOT, "config", "radicale.conf"),
                                                 overrides])
        log_config = os.path.join(workdir, "log.json")
        with open(log_config, "w") as f:
            json.dump(LOG_CONFIG, f)
        self.port = compare.free_port()
        # keep-alive longer than a rep's pause (a reverse proxy keeps its upstream
        # connections open too); no --max-requests, which would hide a leak.
        self.argv = [os.path.join(BIN, "gunicorn"), "--workers", str(workers), "--worker-class",
                     "gthread", "--threads", str(threads), "--keep-alive", "30", "--timeout",
                     "120", "--log-config-json", log_config, "--bind", f"127.0.0.1:{self.port}",
                     "server.wsgi:application"]
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT,
                                            env=env, cwd=ROOT)
        deadline = time.monotonic() + 60
        while len(self.workers()) < workers or not self._answers():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"gunicorn did not start: {self.log_tail()}")
            time.sleep(0.2)

    def _answers(self) -> bool:
        with contextlib.suppress(OSError), socket.create_connection(
                ("127.0.0.1", self.port), timeout=1) as probe:
            probe.sendall(b"GET /.well-known/caldav HTTP/1.0\r\n\r\n")
            return probe.recv(12).startswith(b"HTTP/")
        return False

    def workers(self) -> list[int]:
        return children(self.process.pid)

    def log_tail(self) -> str:
        with open(self.log_path, errors="replace") as f:
            return f.read()[-1500:]

    def log_failures(self) -> tuple[list[str], list[str]]:
        """Lines that say something went wrong (errors, tracebacks, worker restarts), and
        the warnings."""
        failures, warnings = [], []
        with open(self.log_path, errors="replace") as f:
            for line in f:
                if LOG_FAILURE.search(line):
                    failures.append(line.rstrip()[:300])
                elif "[WARNING]" in line:
                    warnings.append(line.rstrip()[:300])
        return failures, warnings

    def stop(self) -> None:
        compare.stop_process(self.process)


def status_kb(pid: int, field_name: str) -> Optional[int]:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field_name + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


class Sampler(threading.Thread):
    """Every few seconds: the RSS of gunicorn's master and of each worker, the private RSS
    (RssAnon) of the database's PostgreSQL backends, and the CPU time all of them used
    since the first sample (a backend that started and ended between two samples is
    missed: pooled connections live long, so that is little)."""

    def __init__(self, server: Gunicorn, every: float, db_url: Optional[str]) -> None:
        super().__init__(daemon=True)
        self.server, self.every, self.t0 = server, every, 0.0
        self.samples: list[dict] = []
        self.worker_pids: set[int] = set(server.workers())
        self.cpu_first: dict[tuple[str, int], float] = {}   # (server|db, pid) -> seconds
        self.cpu_last: dict[tuple[str, int], float] = {}
        self._halt = threading.Event()
        self._pg = None
        if db_url and make_url(db_url).get_backend_name() == "postgresql":
            url = make_url(db_url).set(drivername="postgresql")
            self._pg = psycopg.connect(url.render_as_string(hide_password=False),
                                       autocommit=True)
            self._db = url.database

    def run(self) -> None:
        while True:
            self.sample()
            if self._halt.wait(self.every):
                break
        self.sample()

    def sample(self) -> None:
        workers = self.server.workers()
        self.worker_pids.update(workers)
        rss = {pid: status_kb(pid, "VmRSS") for pid in [self.server.process.pid, *workers]}
        backends, pids = None, []
        if self._pg is not None:
            pids = [row[0] for row in self._pg.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> "
                "pg_backend_pid()", (self._db,))]
            anon = [status_kb(pid, "RssAnon") for pid in pids]
            backends = dict(count=len(pids), rss_anon_mb=sum(a for a in anon if a) / 1024
                            if all(a is not None for a in anon) else None)
        first = not self.samples
        for key in [*(("server", p) for p in rss), *(("db", p) for p in pids)]:
            cpu = compare.cpu_seconds(key[1])
            if cpu is not None:
                self.cpu_last[key] = cpu
                self.cpu_first.setdefault(key, cpu if first else 0.0)
        self.samples.append(dict(
            at=time.perf_counter() - self.t0,
            server_mb=sum(v for v in rss.values() if v) / 1024,
            workers_mb=[round((rss[p] or 0) / 1024, 1) for p in workers],
            pg_backends=backends))

    def cpu_seconds(self, kind: str) -> float:
        return sum(v - self.cpu_first[k] for k, v in self.cpu_last.items() if k[0] == kind)

    def stop(self) -> None:
        self._halt.set()
        self.join()
        if self._pg is not None:
            self._pg.close()


def quarters(samples: list[dict], seconds: float, value) -> dict:
    """Median of ``value(sample)`` per quarter of the timed phase, and last / second. The
    median, not the mean: a first login in a worker (argon2id, 64 MiB) lifts its RSS for
    a second or so, which is no leak."""
    by_quarter: list[list[float]] = [[], [], [], []]
    for s in samples:
        v = value(s)
        if v is not None and 0 <= s["at"] <= seconds:
            by_quarter[min(3, int(4 * s["at"] / seconds))].append(v)
    medians = [statistics.median(q) if q else None for q in by_quarter]
    ratio = medians[3] / medians[1] if medians[1] and medians[3] else None
    return dict(quarter_medians_mb=medians, last_over_second=ratio,
                max_mb=max((v for q in by_quarter for v in q), default=None))


# --- verification against the database ---------------------------------------------------------

def verify_crm(db_url: str, reps: list[Rep]) -> list[str]:
    """Every live event a live visit with the event's start, status and SUMMARY revision;
    every deleted one's visit in the trash."""
    from server.crm.models import Visit   # typed columns: SQLite's dates come back parsed
    engine = sqlalchemy.create_engine(db_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(sqlalchemy.select(Visit.uid, Visit.start, Visit.status,
                                                  Visit.summary, Visit.deleted_at)).all()
    finally:
        engine.dispose()
    visits = {row.uid: row for row in rows}
    failures = []
    for rep in reps:
        wrong: list[str] = []
        for href, item in rep.items.items():
            if href in rep.uncertain:
                continue
            visit = visits.get(item.uid)
            start = visit.start if visit else None
            if start is not None and start.tzinfo is None:
                start = start.replace(tzinfo=dt.timezone.utc)
            status = "cancelled" if item.cancelled else "confirmed"
            if visit is None:
                wrong.append(f"{href}: no visit")
            elif visit.deleted_at is not None:
                wrong.append(f"{href}: its visit is in the trash")
            elif start != item.occurrences[0][0]:
                wrong.append(f"{href}: visit starts {start}, the event {item.occurrences[0][0]}")
            elif visit.status != status:
                wrong.append(f"{href}: visit {visit.status}, the event {status}")
            elif item.revision and not visit.summary.endswith(f"[r{item.revision}]"):
                wrong.append(f"{href}: visit summary {visit.summary[-20:]!r}, the event's "
                             f"revision is r{item.revision}")
        for href in rep.deleted - rep.uncertain:
            visit = visits.get(rep.deleted_uids[href])
            if visit is not None and visit.deleted_at is None:
                wrong.append(f"{href}: deleted, but its visit is live")
        if wrong:
            failures.append(f"{rep.user}: CRM visits wrong for {len(wrong)} events, e.g. "
                            + "; ".join(wrong[:3]))
    return failures


def database_stats(db_url: str) -> dict:
    """Rows and bytes per table at the end (PostgreSQL: table, indexes and TOAST; SQLite:
    the file only), for sizing estimates."""
    from server.crm.models import Base
    engine = sqlalchemy.create_engine(db_url)
    tables = {}
    try:
        with engine.connect() as conn:
            pg = conn.dialect.name == "postgresql"
            for name in sorted(Base.metadata.tables):
                rows = conn.execute(sqlalchemy.text(f'SELECT count(*) FROM "{name}"')).scalar()
                size = conn.execute(sqlalchemy.text("SELECT pg_total_relation_size(:t)"),
                                    {"t": f'public."{name}"'}).scalar() if pg else None
                tables[name] = dict(rows=rows, bytes=size,
                                    bytes_per_row=round(size / rows) if size and rows else None)
            total = conn.execute(sqlalchemy.text(
                "SELECT pg_database_size(current_database())")).scalar() if pg else \
                sum(os.path.getsize(f) for f in (engine.url.database + x for x in ("", "-wal"))
                    if os.path.exists(f))
    finally:
        engine.dispose()
    return dict(tables=tables, database_bytes=total)


# --- the run --------------------------------------------------------------------------------------

@dataclass
class Options:
    reps: int
    workers: int
    threads: int
    minutes: float
    poll_seconds: float
    prefill: int
    database: str
    sample_seconds: float
    max_rss_growth: float
    seed: int
    inject: Optional[str]
    quick: bool


def inject_fault(rep: Rep, how: str) -> str:
    """Change one acknowledged event behind its rep's back (a server that lost or altered
    a write would look like this)."""
    href = rep.live()[0]
    client = compare.Client(rep.port, rep.user, REQUEST_TIMEOUT, PASSWORD)
    try:
        if how == "lose-write":
            reply = client.request("DELETE", rep.calendar + href)
        else:
            text, _, _ = revise(rep.items[href], "summary", 999)
            reply = client.request("PUT", rep.calendar + href, text, ICS)
    finally:
        client.close()
    return f"--inject {how}: {rep.calendar}{href} {'deleted' if how == 'lose-write' else 'rewritten'}" \
        f" behind {rep.user}'s back (status {reply.status})"


def run(opts: Options, db_url: str, workdir: str) -> dict:
    seconds = opts.minutes * 60
    most_cycles = seconds / (0.5 * opts.poll_seconds)   # pauses are 0.5-1.5 x the mean
    per_rep = opts.prefill + int(most_cycles * P_WRITE) + 20
    events = workload.make_events(per_rep * opts.reps, opts.seed, "soak")
    admin_run = admin(db_url, "db", "upgrade")
    if admin_run.returncode:
        raise RuntimeError(f"crm-admin db upgrade: {admin_run.stderr.strip()}")
    names = [f"rep{k:02d}" for k in range(1, opts.reps + 1)]
    create_users(db_url, names)
    server = Gunicorn(db_url, workdir, opts.workers, opts.threads)
    try:
        reps = [Rep(k, server.port, events[k - 1::opts.reps], STYLES[(k - 1) % len(STYLES)],
                    opts.seed + k, opts.poll_seconds) for k in range(1, opts.reps + 1)]
        setup_started = time.perf_counter()
        for rep in reps:
            rep.t0 = setup_started
        _together(reps, lambda rep: rep.setup(opts.prefill))
        setup_seconds = time.perf_counter() - setup_started
        print(f"set-up: {opts.reps} reps, {opts.prefill} events each, in {setup_seconds:.0f} s; "
              f"timed phase {seconds:.0f} s", flush=True)
        sampler = Sampler(server, opts.sample_seconds, db_url)
        t0 = time.perf_counter()
        sampler.t0 = t0
        sampler.start()
        deadline = t0 + seconds
        _together(reps, lambda rep: rep.run(t0, deadline), progress=seconds)
        timed_seconds = time.perf_counter() - t0
        sampler.stop()
        injected = inject_fault(reps[0], opts.inject) if opts.inject else None
        verification: list[str] = []
        _together(reps, lambda rep: verification.extend(rep.verify()))
        verification += verify_crm(db_url, reps)
        for args in (("audit", "verify"), ("db", "check")):
            done = admin(db_url, *args)
            if done.returncode:
                reason = (done.stderr or done.stdout).strip().splitlines()
                verification.append(f"crm-admin {' '.join(args)}: exit {done.returncode}: "
                                    f"{reason[0] if reason else ''}")
        restarted = len(sampler.worker_pids - set(server.workers()))
        stats = database_stats(db_url)
    finally:
        server.stop()
    log_failures, log_warnings = server.log_failures()
    return dict(reps=reps, sampler=sampler, timed_seconds=timed_seconds,
                setup_seconds=setup_seconds, verification=verification, injected=injected,
                restarted=restarted, log_failures=log_failures, log_warnings=log_warnings,
                argv=server.argv, database=stats)


def _together(reps: list[Rep], work, progress: Optional[float] = None) -> None:
    """``work(rep)`` for every rep at once, each in its own thread; with ``progress``
    (seconds), a line every 30 s."""
    threads = [threading.Thread(target=work, args=(rep,), daemon=True) for rep in reps]
    for thread in threads:
        thread.start()
    started = time.perf_counter()
    for thread in threads:
        while thread.is_alive():
            thread.join(timeout=30)
            if progress is None or not thread.is_alive():
                continue
            done = sum(len(r.samples) for r in reps)
            errors = sum(len(r.errors) + len(r.checks) for r in reps)
            print(f"  {min(progress, time.perf_counter() - started):.0f} / {progress:.0f} s: "
                  f"{done} requests, {errors} errors/failed checks", flush=True)


# --- figures and the report ---------------------------------------------------------------------

def percentile(values: list[float], q: float) -> Optional[float]:
    if not values:
        return None
    s = sorted(values)
    k = (len(s) - 1) * q
    lo = int(k)
    return s[lo] + (s[min(lo + 1, len(s) - 1)] - s[lo]) * (k - lo)


def figures(result: dict, opts: Options) -> dict:
    reps: list[Rep] = result["reps"]
    seconds = result["timed_seconds"]
    samples = [s for rep in reps for s in rep.samples]
    by_kind: dict[str, dict] = {}
    for kind in [*TIMED, "setup_put", "verify_get"]:
        mine = [s for s in samples if s.kind == kind]
        timed = kind in TIMED
        ms = [s.ms for s in mine if s.status]
        by_quarter = [[s.ms for s in mine if s.status and
                       q * seconds / 4 <= s.at < (q + 1) * seconds / 4] for q in range(4)]
        by_kind[kind] = dict(
            count=len(mine), per_second=len(mine) / seconds if timed else None,
            unexpected=sum(1 for s in mine if s.status not in EXPECTED[kind]),
            p50_ms=percentile(ms, 0.5), p95_ms=percentile(ms, 0.95),
            p99_ms=percentile(ms, 0.99), max_ms=max(ms, default=None),
            p50_ms_by_quarter=[percentile(q, 0.5) for q in by_quarter] if timed else None,
            p95_ms_by_quarter=[percentile(q, 0.95) for q in by_quarter] if timed else None)
    timed = [s for s in samples if s.kind in TIMED]
    ms = [s.ms for s in timed if s.status]
    by_kind["all"] = dict(count=len(timed), per_second=len(timed) / seconds,
                          unexpected=sum(1 for s in timed if s.status not in EXPECTED[s.kind]),
                          p50_ms=percentile(ms, 0.5), p95_ms=percentile(ms, 0.95),
                          p99_ms=percentile(ms, 0.99), max_ms=max(ms, default=None))
    writes = sum(by_kind[k]["count"] for k in ("put_create", "put_update", "delete"))
    sampler: Sampler = result["sampler"]
    memory = quarters(sampler.samples, seconds, lambda s: s["server_mb"])
    pg = quarters(sampler.samples, seconds,
                  lambda s: (s["pg_backends"] or {}).get("rss_anon_mb"))
    last = sampler.samples[-1] if sampler.samples else {}
    server_cpu, db_cpu = sampler.cpu_seconds("server"), sampler.cpu_seconds("db")
    return dict(
        cpu=dict(server_seconds=server_cpu, db_seconds=db_cpu,
                 server_ms_per_request=server_cpu * 1000 / max(1, len(timed)),
                 db_ms_per_request=db_cpu * 1000 / max(1, len(timed)),
                 cores_busy=(server_cpu + db_cpu) / seconds,
                 pg_backends_max=max(((s["pg_backends"] or {}).get("count", 0)
                                      for s in sampler.samples), default=None)),
        requests=by_kind, writes_per_second=writes / seconds,
        stale_if_match=dict(tried=sum(r.stale_tried for r in reps),
                            answered_412=by_kind["put_stale"]["count"]
                            - by_kind["put_stale"]["unexpected"]),
        errors=sum(len(r.errors) for r in reps), checks_failed=sum(len(r.checks) for r in reps),
        error_examples=[e for r in reps for e in r.errors][:MAX_EXAMPLES],
        check_examples=[e for r in reps for e in r.checks][:MAX_EXAMPLES],
        connections=sum(r.client.connections for r in reps),
        items_at_end=sum(len(r.items) for r in reps), deleted=sum(len(r.deleted) for r in reps),
        memory=dict(server=memory, workers_at_end_mb=last.get("workers_mb"),
                    pg_backends=pg, pg_backend_count_at_end=(last.get("pg_backends") or {})
                    .get("count"), samples=sampler.samples),
        worker_restarts=result["restarted"], log_failures=result["log_failures"][:MAX_EXAMPLES],
        log_failure_count=len(result["log_failures"]), log_warnings=len(result["log_warnings"]),
        log_warning_kinds=warning_kinds(result["log_warnings"]),
        verification=result["verification"], injected=result["injected"],
        database=result["database"],
        timed_seconds=seconds, setup_seconds=result["setup_seconds"])


def warning_kinds(lines: list[str]) -> dict[str, int]:
    """Warnings counted by kind: the message with quoted values (paths, ETags) elided."""
    kinds: dict[str, int] = {}
    for line in lines:
        kind = re.sub(r"'[^']*'|\"[^\"]*\"", "…", line.split("] ", 3)[-1])[:160]
        kinds[kind] = kinds.get(kind, 0) + 1
    return dict(sorted(kinds.items(), key=lambda kv: -kv[1])[:MAX_EXAMPLES])


def verdict(fig: dict, opts: Options) -> list[str]:
    """Why the run failed (empty: it passed), most important first."""
    reasons = []
    if fig["errors"]:
        reasons.append(f"{fig['errors']} unexpected answers (first: {fig['error_examples'][0]})")
    if fig["checks_failed"]:
        reasons.append(f"{fig['checks_failed']} failed checks during the run (first: "
                       f"{fig['check_examples'][0]})")
    if fig["verification"]:
        reasons.append(f"verification failed ({len(fig['verification'])}): "
                       f"{fig['verification'][0]}"
                       + (f" [{fig['injected']}]" if fig["injected"] else ""))
    ratio = fig["memory"]["server"]["last_over_second"]
    if ratio is None:
        reasons.append("memory: no RSS samples in the second or last quarter")
    elif ratio > opts.max_rss_growth:
        reasons.append(f"memory grew: last quarter / second quarter RSS = {ratio:.2f} "
                       f"(limit {opts.max_rss_growth:g})")
    if fig["worker_restarts"]:
        reasons.append(f"{fig['worker_restarts']} gunicorn worker(s) restarted")
    if fig["log_failure_count"]:
        reasons.append(f"{fig['log_failure_count']} error lines in the server log (first: "
                       f"{fig['log_failures'][0]})")
    return reasons


LABELS = {"poll_ctag": "PROPFIND getctag (d0)", "poll_home": "PROPFIND home (d1)",
          "sync": "sync-collection", "put_create": "PUT create", "put_update": "PUT update",
          "put_stale": "PUT stale If-Match", "delete": "DELETE", "get": "GET",
          "time_range": "time-range REPORT", "multiget": "calendar-multiget",
          "all": "all timed requests", "setup_put": "(set-up PUT)",
          "verify_get": "(verification GET)"}


def _n(value: Optional[float], digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def report(fig: dict, opts: Options, info: dict, command: str, reasons: list[str]) -> str:
    lines = [f"soak run, {info['date']}", f"command: {command}",
             f"machine: {info['cores']} cores, {info['cpu']}, Python {info['python']}, "
             f"{info['database']}, gunicorn {info['gunicorn']}, load average at start "
             f"{', '.join(f'{x:.2f}' for x in info['load_average'])}",
             f"{opts.reps} reps ({', '.join(STYLES)} in turn), gunicorn {opts.workers} gthread "
             f"workers x {opts.threads} threads, timed phase {fig['timed_seconds']:.0f} s after "
             f"a {fig['setup_seconds']:.0f} s set-up ({opts.prefill} events per rep), poll every "
             f"{opts.poll_seconds:g} s ±50 %", "",
             f"  {'request':<24}{'count':>7}{'per s':>8}{'p50 ms':>9}{'p95 ms':>9}"
             f"{'p99 ms':>9}{'max ms':>9}{'unexpected':>12}   p95 ms by quarter"]
    for kind, r in fig["requests"].items():
        if not r["count"]:
            continue
        quarter = " / ".join(_n(q, 0) for q in r.get("p95_ms_by_quarter") or [])
        lines.append(f"  {LABELS[kind]:<24}{r['count']:>7}{_n(r['per_second'], 2):>8}"
                     f"{_n(r['p50_ms']):>9}{_n(r['p95_ms']):>9}{_n(r['p99_ms']):>9}"
                     f"{_n(r['max_ms'], 0):>9}{r['unexpected']:>12}   {quarter}")
    mem, pg, cpu = fig["memory"]["server"], fig["memory"]["pg_backends"], fig["cpu"]
    q = mem["quarter_medians_mb"]
    lines += ["", f"writes: {fig['writes_per_second']:.2f}/s; stale If-Match: "
              f"{fig['stale_if_match']['answered_412']} of {fig['stale_if_match']['tried']} "
              f"answered 412 as they must; connections opened: {fig['connections']}; "
              f"at the end {fig['items_at_end']} events live, {fig['deleted']} deleted",
              f"CPU in the timed phase: server {cpu['server_ms_per_request']:.1f} ms"
              + (f" + PostgreSQL {cpu['db_ms_per_request']:.1f} ms" if cpu["pg_backends_max"]
                 else "") + f" per request (mix above); {cpu['cores_busy']:.2f} cores busy "
              "on average" + (f"; at most {cpu['pg_backends_max']} database connections"
                              if cpu["pg_backends_max"] else ""),
              f"memory, gunicorn master + workers (sum of RSS), median by quarter: "
              f"{' / '.join(_n(x, 0) for x in q)} MB; last / second quarter = "
              f"{_n(mem['last_over_second'], 3)} (limit {opts.max_rss_growth:g}); max "
              f"{_n(mem['max_mb'], 0)} MB; workers at the end: "
              f"{', '.join(_n(w, 0) for w in fig['memory']['workers_at_end_mb'] or [])} MB"]
    if pg["max_mb"] is not None:
        lines.append(f"PostgreSQL backends of the database (sum of private RSS), by quarter: "
                     f"{' / '.join(_n(x, 0) for x in pg['quarter_medians_mb'])} MB; last / second"
                     f" = {_n(pg['last_over_second'], 3)}; {fig['memory']['pg_backend_count_at_end']}"
                     " backends at the end")
    tables = fig["database"]["tables"]
    big = sorted(tables, key=lambda t: -(tables[t]["bytes"] or tables[t]["rows"]))[:6]
    lines.append(f"database at the end: {fig['database']['database_bytes'] / 2**20:.1f} MB; "
                 + ", ".join(f"{t} {tables[t]['rows']:,}" + (
                     f" ({tables[t]['bytes_per_row']} B/row)" if tables[t]["bytes_per_row"]
                     else "") for t in big))
    lines += [f"server log: {fig['log_failure_count']} error lines, {fig['log_warnings']} "
              f"warnings; worker restarts: {fig['worker_restarts']}",
              f"unexpected answers: {fig['errors']}; failed checks: {fig['checks_failed']}; "
              f"verification: {'passed' if not fig['verification'] else 'FAILED'}"]
    lines += [f"  {e}" for e in (fig["error_examples"] + fig["check_examples"]
                                 + fig["verification"])[:10]]
    if fig["injected"]:
        lines.append(f"injected: {fig['injected']}")
    lines.append("result: " + ("PASSED" if not reasons else "FAILED: " + "; ".join(reasons)))
    return "\n".join(lines)


# --- options and main ---------------------------------------------------------------------------

def parse_options(argv: Optional[list[str]]) -> tuple[Options, str, str]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="1 minute, 10 events pre-filled per rep, a sample every 2 s")
    parser.add_argument("--reps", type=int, default=20, help="simulated reps (threads)")
    parser.add_argument("--workers", type=int, default=4, help="gunicorn gthread workers")
    parser.add_argument("--threads", type=int, default=4, help="threads per gunicorn worker")
    parser.add_argument("--minutes", type=float, help="timed phase (default 10)")
    parser.add_argument("--poll-seconds", type=float, default=4.0,
                        help="mean pause between a rep's polls (±50 %%)")
    parser.add_argument("--prefill", type=int, help="events each rep PUTs before the timed "
                        "phase (default 40)")
    parser.add_argument("--database", choices=("pg", "sqlite"), default="pg")
    parser.add_argument("--pg-url", default="postgresql://postgres@127.0.0.1:5432/postgres",
                        help="a PostgreSQL server (a fresh database is made and dropped)")
    parser.add_argument("--sample-seconds", type=float, help="memory sampling period "
                        "(default 3)")
    parser.add_argument("--max-rss-growth", type=float, default=1.25,
                        help="limit of last-quarter / second-quarter RSS")
    parser.add_argument("--seed", type=int, default=20251124)
    parser.add_argument("--inject", choices=("lose-write", "alter-write"),
                        help="a fault the verification must catch (exit 1)")
    parser.add_argument("--out", default="", metavar="FILE",
                        help="default: bench/results/soak-<quick|full>.json")
    args = parser.parse_args(argv)

    def pick(value, full, fast):
        return value if value is not None else (fast if args.quick else full)

    opts = Options(reps=args.reps, workers=args.workers, threads=args.threads,
                   minutes=pick(args.minutes, 10.0, 1.0), poll_seconds=args.poll_seconds,
                   prefill=pick(args.prefill, 40, 10), database=args.database,
                   sample_seconds=pick(args.sample_seconds, 3.0, 2.0),
                   max_rss_growth=args.max_rss_growth, seed=args.seed, inject=args.inject,
                   quick=args.quick)
    for name in ("reps", "workers", "threads"):
        if getattr(opts, name) < 1:
            parser.error(f"--{name} must be at least 1")
    for name in ("minutes", "poll_seconds", "sample_seconds"):
        if not getattr(opts, name) > 0:
            parser.error(f"--{name.replace('_', '-')} must be positive")
    if opts.prefill < 0:
        parser.error("--prefill must not be negative")
    if not opts.max_rss_growth >= 1:
        parser.error("--max-rss-growth must be at least 1")
    if opts.minutes * 60 / 4 < opts.sample_seconds:
        parser.error(f"--minutes {opts.minutes:g} is too short for a memory sample every "
                     f"{opts.sample_seconds:g} s in each quarter")
    if opts.inject and opts.prefill < 1:
        parser.error("--inject needs --prefill of at least 1")
    out = args.out or ("" if opts.inject else os.path.join(
        ROOT, "bench", "results", f"soak-{'quick' if opts.quick else 'full'}.json"))
    return opts, out, args.pg_url


def main(argv: Optional[list[str]] = None) -> None:
    opts, out, pg_url = parse_options(argv)
    command = " ".join(shlex.quote(a) for a in [os.path.relpath(sys.executable, ROOT),
                                                 os.path.relpath(sys.argv[0], ROOT),
                                                 *(sys.argv[1:] if argv is None else argv)])
    workdir = tempfile.mkdtemp(prefix="soak-")
    keep, server = False, None   # the work directory: kept only after a failed run
    try:
        with contextlib.ExitStack() as stack:
            if opts.database == "pg":
                try:
                    db_url, server = stack.enter_context(pg_database(pg_url))
                except psycopg.OperationalError as e:
                    sys.exit(f"soak.py: PostgreSQL at {pg_url} does not answer "
                             f"({str(e).strip().splitlines()[0]}); no results written")
                database = f"PostgreSQL {server.version}"
            else:
                db_url = f"sqlite:///{workdir}/soak.db"
                database = f"SQLite {__import__('sqlite3').sqlite_version}"
            info = compare.machine(server)
            info["database"] = database
            try:
                result = run(opts, db_url, workdir)
            except (RuntimeError, CheckFailed, OSError, subprocess.SubprocessError) as e:
                sys.exit(f"soak.py: {type(e).__name__}: {str(e).strip().splitlines()[0]}")
        fig = figures(result, opts)
        reasons = verdict(fig, opts)
        passed = not reasons
        keep = not passed and not opts.inject
        text = report(fig, opts, info, command, reasons)
        print("\n" + text)
        if out:
            document = dict(benchmark="soak", mode="quick" if opts.quick else "full",
                            command=command, machine=info, options=asdict(opts),
                            gunicorn=result["argv"][1:-3], passed=passed, failures=reasons,
                            figures=fig, report=text)
            os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
            with open(out + ".tmp", "w") as f:
                json.dump(document, f, indent=2, ensure_ascii=False)
            os.replace(out + ".tmp", out)
            print(f"written: {out}")
        if reasons:
            sys.exit("soak.py: FAILED: " + "; ".join(reasons)
                     + (f" (server log kept in {workdir})" if keep else ""))
    finally:
        if not keep:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
