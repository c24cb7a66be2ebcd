"""What the CRM reads from a calendar object: people, customer hints, times, occurrences.

``facts(calendar)`` takes a parsed VCALENDAR (vobject) and returns ``EventFacts`` for its
VEVENTs: the master and every override (RECURRENCE-ID) together, as one event. Times are
UTC; floating times and dates are taken as UTC. Recurring series are expanded with EXDATE and
overrides honoured, up to a horizon and a maximum count.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any, Iterable, Optional

import vobject

from server.crm import normalize

UTC = dt.timezone.utc
ParseError = vobject.base.ParseError


@dataclass(frozen=True)
class Person:
    email: str
    name: str
    partstat: str = "NEEDS-ACTION"
    role: str = "REQ-PARTICIPANT"
    cutype: str = "INDIVIDUAL"


@dataclass(frozen=True)
class Occurrence:
    start: dt.datetime
    end: dt.datetime
    recurrence_id: Optional[str] = None
    status: str = "confirmed"


@dataclass(frozen=True)
class EventFacts:
    uid: str
    summary: str
    location: str
    klass: str                      # PUBLIC / PRIVATE / CONFIDENTIAL
    status: str                     # confirmed / tentative / cancelled
    categories: tuple[str, ...]
    customer_hint: Optional[str]    # X-CRM-CUSTOMER
    organizer: Optional[Person]
    attendees: tuple[Person, ...]   # every component's, each address once
    start: Optional[dt.datetime]
    end: Optional[dt.datetime]
    recurring: bool
    occurrences: tuple[Occurrence, ...]


def parse(text: str) -> Any:
    return vobject.readOne(text)


def facts(calendar: Any, horizon: dt.datetime, max_occurrences: int) -> Optional[EventFacts]:
    """The event in ``calendar``, or None if it holds no VEVENT."""
    events = [c for c in calendar.getChildren() if c.name == "VEVENT"]
    if not events:
        return None
    master = next((e for e in events if not _has(e, "recurrence-id")), events[0])
    overrides = [e for e in events if e is not master and _has(e, "recurrence-id")]
    people: dict[str, Person] = {}
    for event in [master, *overrides]:
        for line in event.contents.get("attendee", []):
            person = _person(line)
            if person and person.email not in people:
                people[person.email] = person
    organizer = _person(master.contents["organizer"][0]) if _has(master, "organizer") else None
    classes = {_text(e, "class").upper() for e in events}
    klass = next((k for k in ("PRIVATE", "CONFIDENTIAL") if k in classes), "PUBLIC")
    start, end = _span(master)
    recurring = any(_has(master, name) for name in ("rrule", "rdate"))
    occurrences = _occurrences(master, overrides, horizon, max_occurrences) if recurring \
        else tuple(_single(master, start, end))
    return EventFacts(
        uid=_text(master, "uid"), summary=_text(master, "summary"),
        location=_text(master, "location"), klass=klass, status=_status(master),
        categories=tuple(_categories(events)),
        customer_hint=_text(master, "x-crm-customer") or None,
        organizer=organizer, attendees=tuple(people.values()), start=start, end=end,
        recurring=recurring, occurrences=occurrences)


# --- properties --------------------------------------------------------------------------

def _has(component: Any, name: str) -> bool:
    return bool(component.contents.get(name))


def _text(component: Any, name: str) -> str:
    lines = component.contents.get(name)
    if not lines:
        return ""
    value = lines[0].value
    if isinstance(value, (list, tuple)):
        value = ",".join(str(v) for v in value)
    return str(value).strip()


def _param(line: Any, name: str, default: str = "") -> str:
    values = line.params.get(name)
    return str(values[0]).strip() if values else default


def _person(line: Any) -> Optional[Person]:
    address = normalize.email(str(line.value)) or normalize.email(_param(line, "EMAIL"))
    if address is None:
        return None
    return Person(email=address, name=_param(line, "CN").strip('"'),
                  partstat=_param(line, "PARTSTAT", "NEEDS-ACTION").upper()[:20],
                  role=_param(line, "ROLE", "REQ-PARTICIPANT").upper()[:20],
                  cutype=_param(line, "CUTYPE", "INDIVIDUAL").upper()[:20])


def _status(component: Any) -> str:
    status = _text(component, "status").upper()
    return {"CANCELLED": "cancelled", "TENTATIVE": "tentative"}.get(status, "confirmed")


def _categories(events: Iterable[Any]) -> Iterable[str]:
    seen = set()
    for event in events:
        for line in event.contents.get("categories", []):
            values = line.value if isinstance(line.value, (list, tuple)) else [line.value]
            for value in values:
                for part in str(value).split(","):
                    part = part.strip()
                    if part and part not in seen:
                        seen.add(part)
                        yield part


# --- time --------------------------------------------------------------------------------

def utc(value: Any) -> dt.datetime:
    """A DATE or DATE-TIME value as an aware UTC datetime (floating and dates taken as UTC)."""
    if isinstance(value, dt.datetime):
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    return dt.datetime(value.year, value.month, value.day, tzinfo=UTC)


def _span(event: Any) -> tuple[Optional[dt.datetime], Optional[dt.datetime]]:
    if not _has(event, "dtstart"):
        return None, None
    raw = event.dtstart.value
    start = utc(raw)
    if _has(event, "dtend"):
        end = utc(event.dtend.value)
    elif _has(event, "duration"):
        end = start + event.duration.value
    else:
        end = start + (dt.timedelta(days=1) if not isinstance(raw, dt.datetime)
                       else dt.timedelta(0))
    return start, max(start, end)


def recurrence_key(value: Any) -> str:
    moment = utc(value)
    return moment.strftime("%Y%m%dT%H%M%SZ")


def _single(master: Any, start, end) -> Iterable[Occurrence]:
    if start is not None:
        yield Occurrence(start, end, None, _status(master))


def _occurrences(master: Any, overrides: list[Any], horizon: dt.datetime,
                 max_occurrences: int) -> tuple[Occurrence, ...]:
    start, end = _span(master)
    if start is None:
        return ()
    duration = end - start
    moved = {recurrence_key(o.recurrence_id.value): o for o in overrides}
    out: dict[str, Occurrence] = {}
    try:
        rules = master.getrruleset(addRDate=True)
    except Exception:
        rules = None
    for moment in rules or ():
        begin = utc(moment)
        if begin > horizon or len(out) >= max_occurrences:
            break
        key = recurrence_key(moment)
        out[key] = _from_override(moved.pop(key), key) if key in moved else \
            Occurrence(begin, begin + duration, key, _status(master))
    for key, override in moved.items():  # overrides of instances the rule no longer yields
        if len(out) < max_occurrences:
            out[key] = _from_override(override, key)
    return tuple(sorted(out.values(), key=lambda o: o.start))


def _from_override(override: Any, key: str) -> Occurrence:
    start, end = _span(override)
    if start is None:
        start = end = utc(override.recurrence_id.value)
    return Occurrence(start, end, key, _status(override))
