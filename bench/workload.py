"""The events bench/compare.py writes, and what each query over them must return.

The events are bench/ingest_cost.py's (its generator is imported, not copied): ~1 KB, written
as calendar clients write them, organizer = the rep, 2-4 external attendees with CN and
mailto (names in English, Slovak/Czech, German and Chinese), LOCATION, a VTIMEZONE or UTC,
~5 % weekly series, spread over a year from 2025-09-01. Here the people come from a small
in-memory population instead of a seeded CRM database, and half of the weekly series end by
UNTIL (13 occurrences) instead of COUNT=10. Every event's occurrences are computed here in
UTC, so a time-range query's hits and a free-busy answer's periods are known exactly.
"""

from __future__ import annotations

import datetime as dt
import os
import random
import sys
from collections import defaultdict
from dataclasses import dataclass
from zoneinfo import ZoneInfo

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import ingest_cost  # noqa: E402  (its generator; importing it seeds nothing)
from ingest_cost import (CUSTOMER_MIX, FREE_MAIL, LANGUAGES, Addresses, EventPlan,  # noqa: E402
                         Seeded, company, person, plan_events)

REP, INTERNAL = ingest_cost.REP, ingest_cost.INTERNAL   # the user; the company's domain

UTC = dt.timezone.utc
COUNT_RULE = "RRULE:FREQ=WEEKLY;COUNT=10"
UNTIL_WEEKS = 12          # an UNTIL series: the start and 12 more weeks, 13 occurrences

Period = tuple[dt.datetime, dt.datetime]


@dataclass(frozen=True)
class Event:
    href: str                     # e.g. "e17.ics"
    uid: str
    text: str                     # the iCalendar object as PUT
    occurrences: tuple[Period, ...]   # UTC (start, end) of every occurrence
    external: int                 # attendees outside the company: CRM ingestion's contacts

    @property
    def recurring(self) -> bool:
        return len(self.occurrences) > 1

    def overlaps(self, start: dt.datetime, end: dt.datetime) -> bool:
        """Whether any occurrence overlaps [start, end) (RFC 4791 9.9, DTEND given)."""
        return any(s < end and e > start for s, e in self.occurrences)


def population(rng: random.Random, n_customers: int = 2000, n_contacts: int = 10_000
               ) -> Seeded:
    """Customers and people for plan_events, in memory (the server's CRM starts empty: its
    contacts are the attendees ingestion meets, new at first, known after a while)."""
    addresses = Addresses()
    customers: list[tuple[int, str, str, str]] = []
    while len(customers) < n_customers:
        lang = rng.choices(LANGUAGES, CUSTOMER_MIX)[0]
        name, domain_slug = company(rng, lang)
        cid = len(customers) + 1
        customers.append((cid, name, f"{domain_slug}{cid}.example", lang))
    contacts_of: dict[int, list[tuple[str, str]]] = defaultdict(list)
    free_contacts: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for _ in range(n_contacts):
        if rng.random() < 0.7:
            cid, _, domain, lang = rng.choice(customers)
            name, local = person(rng, lang)
            contacts_of[cid].append((name, addresses.make(local, domain)))
        else:
            lang = rng.choices(LANGUAGES, CUSTOMER_MIX)[0]
            name, local = person(rng, lang)
            free_contacts[lang].append((name, addresses.make(local, rng.choice(FREE_MAIL[lang]),
                                                             rng)))
    return Seeded(customers, contacts_of, free_contacts, addresses)


def _utc(wall: dt.datetime, tzid: str | None) -> dt.datetime:
    """A wall time of the event's zone in UTC. The events' VTIMEZONEs carry the EU and
    China rules, which agree with the tz database for the day hours events have."""
    if tzid is None:
        return wall.replace(tzinfo=UTC)
    return wall.replace(tzinfo=ZoneInfo(tzid)).astimezone(UTC)


def _occurrences(plan: EventPlan, until: bool) -> tuple[Period, ...]:
    weeks = (UNTIL_WEEKS + 1 if until else 10) if plan.weekly else 1
    length = dt.timedelta(minutes=plan.minutes)
    # Weekly repeats keep the wall time (RFC 5545 3.3.10), so the UTC time moves with DST.
    return tuple((_utc(plan.start + dt.timedelta(weeks=k), plan.tzid),
                  _utc(plan.start + dt.timedelta(weeks=k) + length, plan.tzid))
                 for k in range(weeks))


def _until_rule(plan: EventPlan) -> str:
    # UNTIL is UTC when DTSTART has a zone (RFC 5545): the end of the last occurrence's
    # UTC day, which is its local day too for the zones and hours used (08:00-16:30).
    last = _utc(plan.start + dt.timedelta(weeks=UNTIL_WEEKS), plan.tzid)
    return f"RRULE:FREQ=WEEKLY;UNTIL={last:%Y%m%d}T235959Z"


def make_events(n: int, seed: int, prefix: str) -> list[Event]:
    """n events, the same ones for the same seed; UIDs ``<prefix>-<i>@bench.ourco.example``
    and hrefs ``e<i>.ics``."""
    rng = random.Random(seed)
    plans = plan_events(rng, population(rng), n)
    events, series = [], 0
    for i, plan in enumerate(plans):
        uid = f"{prefix}-{i}@bench.{INTERNAL}"
        text = ingest_cost.render(plan, uid)
        until = plan.weekly and series % 2 == 1
        series += plan.weekly
        if until:
            assert COUNT_RULE in text, "ingest_cost.render changed its RRULE"
            text = text.replace(COUNT_RULE, _until_rule(plan))
        events.append(Event(f"e{i}.ics", uid, text, _occurrences(plan, until),
                            len(plan.attendees)))
    return events


def busy_periods(events: list[Event], start: dt.datetime, end: dt.datetime) -> list[Period]:
    """What Radicale's free-busy REPORT answers for [start, end): every overlapping
    occurrence clipped to the range, overlapping or touching ones merged (all events are
    OPAQUE and CONFIRMED, so all are BUSY)."""
    clipped = sorted((max(s, start), min(e, end)) for ev in events for s, e in ev.occurrences
                     if s < end and e > start)
    merged: list[Period] = []
    for s, e in clipped:
        if merged and s <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], e))
        else:
            merged.append((s, e))
    return merged
