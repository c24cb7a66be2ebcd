"""Recurrence rules that would make the server spin, refused before anything expands them.

Radicale, vobject and the CRM expand RRULEs with dateutil, which walks a rule period by
period until it finds the next occurrence, and only stops at the year 9999. So:

* a rule that has no occurrence at all (``FREQ=YEARLY;BYMONTH=2;BYMONTHDAY=30``) is walked
  to the year 9999 by every reader: vobject looks for its first occurrence on every parse,
  Radicale on every PUT and time-range REPORT (minutes for ``FREQ=SECONDLY``);
* an endless rule with an occurrence every second (``FREQ=SECONDLY``, or ``BYSECOND=0,...,59``
  under a coarser FREQ) costs a REPORT one step per second between DTSTART and the range;
* a rule ending with UNTIL is counted in full by Radicale before it compares the count with
  ``[server] max_vevent_rrule_occurrence``, and its estimate ignores BYxxx expansions;
* EXRULE (removed from iCalendar by RFC 5545) can cancel every occurrence of a dense RRULE;
* FREQ=SECONDLY (MINUTELY) with BYHOUR/BYMINUTE (BYHOUR) and a day filter makes dateutil
  step through every second (minute) of each day the filter skips; such rules are refused
  (FREQ=DAILY with BYHOUR/BYMINUTE says the same thing), as is a BYSETPOS outside the set
  of a daily or finer period.

``problem(text, limit)`` answers, for a PUT body, why it is refused or None. Each rule is
tried on its own with bounded work: the calendar (weekdays and leap years included) repeats
every 400 years, so the rule is moved by a multiple of 400 years to start between the years
9500 and 9899, where dateutil's own year-9999 stop cuts the search for a first occurrence
after at most 500 years; a rule with none in that window never has one. Its occurrences in
its first year then show its density, and a rule with UNTIL is counted up to the limit.
"""

from __future__ import annotations

import datetime as dt
import functools
import re
from typing import Iterator, Optional

from dateutil import rrule

_FIRST_YEAR = 9500                 # the window: [9500, 9899] .. 9999
_YEAR = dt.timedelta(days=366)
_TIMEZONE_PARTS = {"STANDARD", "DAYLIGHT"}
# seconds per period, as Radicale estimates a rule with UNTIL (radicale/item/__init__.py)
_PERIOD = {"YEARLY": 31536000, "MONTHLY": 2628000, "WEEKLY": 604800, "DAILY": 86400,
           "HOURLY": 3600, "MINUTELY": 60, "SECONDLY": 1}
# the BYxxx parts that expand a period into its set, for the frequencies BYSETPOS counts in
_EXPANSIONS = {"DAILY": ("BYHOUR", "BYMINUTE", "BYSECOND"), "HOURLY": ("BYMINUTE", "BYSECOND"),
               "MINUTELY": ("BYSECOND",), "SECONDLY": ()}
# dateutil steps a SECONDLY (MINUTELY) rule through up to every second (minute) of a day
# to meet these filters, and does so again for each day a day filter skips: 86,400 steps a
# day, for each of the days up to the year 9999 if the days never match.
_TIME_FILTERS = {"SECONDLY": ("BYHOUR", "BYMINUTE"), "MINUTELY": ("BYHOUR",)}
_DAY_FILTERS = ("BYMONTH", "BYWEEKNO", "BYYEARDAY", "BYMONTHDAY", "BYDAY", "BYEASTER")
_FOLD = re.compile(r"\r?\n[ \t]")
_LINES = re.compile(r"^[ \t]*(?:[A-Za-z0-9-]+\.)?(BEGIN|END|DTSTART|RRULE|EXRULE)([;:].*?)\r?$",
                    re.IGNORECASE | re.MULTILINE)
_DATE = re.compile(r"(\d{4})(\d{2})(\d{2})(?:T(\d{2})(\d{2})(\d{2}))?")


def problem(text: str, limit: int) -> Optional[str]:
    """Why the recurrence rules of ``text`` (an iCalendar body) are refused, or None.
    ``limit``: most occurrences a rule may have in total (UNTIL) or a year (endless)."""
    if "RULE" not in text.upper():
        return None
    for component, dtstart, name, value in _rules(text):
        if name == "EXRULE":
            return ("EXRULE is not supported (RFC 5545 removed it): exclude occurrences "
                    "with EXDATE")
        why = _rule_problem(component, dtstart, value, limit)
        if why:
            return f"recurrence rule {value[:120]!r} in {component}: {why}"
    return None


def _rules(text: str) -> Iterator[tuple[str, Optional[dt.datetime], str, str]]:
    """(component, its DTSTART, RRULE or EXRULE, rule text) for every rule in ``text``."""
    stack: list[dict] = []
    for match in _LINES.finditer(_FOLD.sub("", text)):
        name = match.group(1).upper()
        value = match.group(2).rpartition(":")[2].strip()   # no colon in these values
        if name == "BEGIN":
            stack.append({"name": value.upper(), "dtstart": None, "rules": []})
        elif name == "END" and stack:
            done = stack.pop()
            for rule_name, rule in done["rules"]:
                yield done["name"], done["dtstart"], rule_name, rule
        elif stack and name == "DTSTART":
            stack[-1]["dtstart"] = _moment(value)
        elif stack and name in ("RRULE", "EXRULE"):
            stack[-1]["rules"].append((name, value))
    for done in stack:                               # unterminated: Radicale refuses it
        for rule_name, rule in done["rules"]:
            yield done["name"], done["dtstart"], rule_name, rule


def _moment(value: str) -> Optional[dt.datetime]:
    """A DATE or DATE-TIME value as a naive wall-clock datetime (what dateutil walks)."""
    match = _DATE.match(value.strip())
    if not match:
        return None
    try:
        return dt.datetime(*(int(g) for g in match.groups() if g is not None))
    except ValueError:
        return None


def _positions_possible(freq: str, parts: dict) -> bool:
    """False if every BYSETPOS lies outside the set of a period, for the frequencies whose
    set size is known from the rule (daily and finer). dateutil would walk such a rule
    period by period, every second for FREQ=SECONDLY, until the year 9999."""
    if "BYSETPOS" not in parts or freq not in _EXPANSIONS:
        return True
    size = 1
    for name in _EXPANSIONS[freq]:
        if name in parts:
            size *= len({v for v in parts[name].split(",") if v.strip()})
    try:
        positions = [int(v) for v in parts["BYSETPOS"].split(",") if v.strip()]
    except ValueError:
        return True                                  # Radicale refuses it
    return any(1 <= abs(p) <= size for p in positions)


@functools.lru_cache(maxsize=1024)   # clients send the same VTIMEZONE rules with every PUT
def _rule_problem(component: str, dtstart: Optional[dt.datetime], value: str,
                  limit: int) -> Optional[str]:
    parts = {}
    for part in value.split(";"):
        key, _, val = part.partition("=")
        parts[key.strip().upper()] = val.strip()
    if component in _TIMEZONE_PARTS and parts.get("FREQ", "").upper() != "YEARLY":
        return "time zone transitions must recur yearly"
    freq = parts.get("FREQ", "").upper()
    if freq in _TIME_FILTERS and any(n in parts for n in _TIME_FILTERS[freq]) and \
            any(n in parts for n in _DAY_FILTERS):
        return (f"FREQ={freq} with both {'/'.join(_TIME_FILTERS[freq])} and a day filter "
                f"is not supported (use FREQ=DAILY with BYHOUR/BYMINUTE)")
    if not _positions_possible(freq, parts):
        return "its BYSETPOS selects nothing (each period holds fewer occurrences)"
    until = _moment(parts["UNTIL"]) if "UNTIL" in parts else None
    endless = "UNTIL" not in parts and "COUNT" not in parts
    open_rule = ";".join(p for p in value.split(";")
                         if p.partition("=")[0].strip().upper() not in ("UNTIL", "COUNT"))
    start = dtstart or dt.datetime.now().replace(microsecond=0)
    shift = _FIRST_YEAR + (start.year - _FIRST_YEAR) % 400 - start.year
    try:
        moved = rrule.rrulestr(open_rule, dtstart=start.replace(year=start.year + shift),
                               ignoretz=True)
        first, in_first_year = None, 0
        for occurrence in moved:   # dateutil stops at the year 9999: <= 500 years on
            if first is None:
                first = occurrence
            if occurrence >= first + _YEAR or in_first_year > limit:
                break
            in_first_year += 1
    except Exception:
        return None    # not a rule dateutil reads: Radicale refuses it with its own reason
    if first is None:
        return "it has no occurrence at all (e.g. a day that no month has)"
    if endless and in_first_year > limit:
        return (f"more than {limit} occurrences a year without an end; give it a COUNT or "
                f"UNTIL ([server] max_vevent_rrule_occurrence = {limit})")
    if until is not None and dtstart is not None and freq in _PERIOD and \
            (until - dtstart).total_seconds() / _PERIOD[freq] <= limit:
        # Radicale refuses the others on this very estimate (periods between DTSTART and
        # UNTIL); under it, the walk below takes at most ``limit`` periods.
        try:
            real = rrule.rrulestr(open_rule, dtstart=start, ignoretz=True)
            count = 0
            for occurrence in real:   # it has occurrences, so each is found in bounded time
                if occurrence > until:
                    break
                count += 1
                if count > limit:
                    return (f"more than {limit} occurrences before its UNTIL "
                            f"([server] max_vevent_rrule_occurrence = {limit})")
        except Exception:
            return None
    return None
