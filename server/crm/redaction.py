"""Redacted copies of calendar objects for readers who may not see everything.

Works on the text, line by line, with an allow-list: what is not named here is dropped, so a
property a client invents tomorrow (an ``X-`` one, a new RFC) never leaks. Time zones are
kept verbatim; in every event, to-do and journal, recurrence overrides included:

* ``busy``: the times (start, end or duration, recurrence rules and exceptions), UID,
  status, transparency and class; the title becomes "Busy".
* ``summary``: ``busy`` plus LOCATION, and the title becomes the visit's customer short
  name (or "Busy" when the event is not tagged with a customer).

Everything else goes: DESCRIPTION, ATTENDEE, ORGANIZER, CONTACT, URL, ATTACH, CATEGORIES,
COMMENT, alarms and any other sub-component, and all ``X-`` properties and parameters. The
output is deterministic, so a redacted copy has a stable ETag of its own.
"""

from __future__ import annotations

import re
from typing import Iterator, Optional

BUSY_TITLE = "Busy"
_TIME_PROPS = frozenset({"UID", "DTSTAMP", "DTSTART", "DTEND", "DUE", "DURATION", "RRULE",
                         "RDATE", "EXDATE", "RECURRENCE-ID", "SEQUENCE", "STATUS", "TRANSP",
                         "CLASS"})
KEEP = {"busy": _TIME_PROPS, "summary": _TIME_PROPS | {"LOCATION"}}
_KEEP_PARAMS = frozenset({"TZID", "VALUE", "RANGE"})
_CALENDAR_PROPS = frozenset({"VERSION", "PRODID", "CALSCALE", "METHOD"})
_REDACTED_COMPONENTS = frozenset({"VEVENT", "VTODO", "VJOURNAL", "VFREEBUSY"})
_CLASS_RANK = {"PUBLIC": 0, "CONFIDENTIAL": 1}
_LINE_BREAK = re.compile(r"\r\n|\n|\r")


def unfold(text: str) -> Iterator[str]:
    current: Optional[str] = None
    for line in _LINE_BREAK.split(text):
        if line[:1] in (" ", "\t") and current is not None:
            current += line[1:]
            continue
        if current:
            yield current
        current = line
    if current:
        yield current


def _split(line: str) -> tuple[str, list[str], str]:
    """(NAME, [params], value) of a content line; quoted parameter values may hold : and ;."""
    parts, i, start, quoted = [], 0, 0, False
    while i < len(line):
        c = line[i]
        if c == '"':
            quoted = not quoted
        elif not quoted and c in ";:":
            parts.append(line[start:i])
            start = i + 1
            if c == ":":
                break
        i += 1
    else:
        parts.append(line[start:])
        return parts[0].upper(), parts[1:], ""
    name = parts[0].rpartition(".")[2].upper()   # a vCard-style group prefix is dropped
    return name, parts[1:], line[start:]


def object_class(text: str) -> str:
    """The most restrictive CLASS among the object's events, to-dos and journals
    (PUBLIC when none has one; an unknown value counts as PRIVATE, RFC 5545 §3.8.1.3)."""
    if "CLASS" not in text.upper():
        return "PUBLIC"
    worst, depth = "PUBLIC", 0
    for line in unfold(text):
        name, _params, value = _split(line)
        if name == "BEGIN":
            depth += 1
        elif name == "END":
            depth -= 1
        elif name == "CLASS" and depth == 2:
            value = value.strip().upper() or "PUBLIC"
            if _CLASS_RANK.get(value, 2) > _CLASS_RANK.get(worst, 2):
                worst = value
    return worst


def escape_text(value: str) -> str:
    return (value.replace("\\", "\\\\").replace(";", "\\;").replace(",", "\\,")
            .replace("\r\n", "\\n").replace("\n", "\\n").replace("\r", "\\n"))


def redact(text: str, level: str, customer: Optional[str] = None) -> str:
    """The copy of ``text`` a ``level`` reader ("busy" or "summary") receives."""
    keep = KEEP[level]
    title = escape_text(customer) if level == "summary" and customer else BUSY_TITLE
    out: list[str] = []
    stack: list[str] = []   # per open component: calendar / keep / redact / drop
    for line in unfold(text):
        name, params, value = _split(line)
        mode = stack[-1] if stack else "drop"
        if name == "BEGIN":
            component = value.strip().upper()
            if not stack:
                new = "calendar" if component == "VCALENDAR" else "drop"
            elif mode == "calendar":
                new = ("redact" if component in _REDACTED_COMPONENTS else
                       "keep" if component == "VTIMEZONE" else "drop")
            else:
                new = "keep" if mode == "keep" else "drop"
            stack.append(new)
            if new != "drop":
                out.append(f"BEGIN:{component}")
        elif name == "END":
            if not stack:
                continue
            closed = stack.pop()
            if closed == "redact":
                out.append(f"SUMMARY:{title}")
            if closed != "drop":
                out.append(f"END:{value.strip().upper()}")
        elif mode == "keep":
            out.append(line)
        elif mode == "calendar" and name in _CALENDAR_PROPS:
            out.append(line)
        elif mode == "redact" and name in keep:
            kept = [p for p in params if p.partition("=")[0].strip().upper() in _KEEP_PARAMS]
            out.append(";".join([name, *kept]) + ":" + value)
    return "".join(fold(line) + "\r\n" for line in out)


def fold(line: str, limit: int = 75) -> str:
    """RFC 5545 §3.1: lines of at most 75 octets, never splitting a UTF-8 sequence."""
    data = line.encode("utf-8")
    if len(data) <= limit:
        return line
    pieces, chunk, size, first = [], [], 0, True
    for ch in line:
        n = len(ch.encode("utf-8"))
        if size + n > (limit if first else limit - 1):
            pieces.append("".join(chunk))
            chunk, size, first = [], 0, False
        chunk.append(ch)
        size += n
    pieces.append("".join(chunk))
    return "\r\n ".join(pieces)
