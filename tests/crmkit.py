"""The CRM test kit: two reps on one server with the CLI beside it, and events shaped the way
Apple Calendar, Thunderbird and Outlook write them."""

from __future__ import annotations

import contextlib
import io
import json

from admin_cli.main import main
from davclient import Dav
from ical import crlf

INTERNAL = "ourco.example"


class Crm:
    def __init__(self, url: str, alice: Dav, bob: Dav) -> None:
        self.url, self.alice, self.bob = url, alice, bob

    def cli(self, *argv: str, expect: int = 0):
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(["--db-url", self.url, *argv])
            except SystemExit as usage:     # argparse refuses malformed arguments
                code = usage.code
        assert code == expect, (argv, code, out.getvalue(), err.getvalue())
        return json.loads(out.getvalue()) if "--json" in argv else out.getvalue() + err.getvalue()

    def visits(self, *args: str) -> list[dict]:
        return self.cli("visit", "list", *args, "--json")

    def visit(self, uid: str, *args: str) -> dict:
        [found] = [v for v in self.visits(*args) if v["uid"] == uid]
        return found

    def contacts(self, *args: str) -> list[dict]:
        return self.cli("contact", "list", *args, "--json")

    def contact(self, email: str) -> dict:
        return self.cli("contact", "show", email, "--json")[0]

    def customer(self, name: str, *args: str) -> int:
        out = self.cli("customer", "add", name, *args)
        return int(out.split("(id ")[1].split(")")[0])

    def put(self, rep: Dav, name: str, text: str, status: int = 201) -> None:
        reply = rep.put(f"/{rep.user}/calendar/{name}", text)
        assert reply.status == status, (reply.status, reply.text)


# --- events as clients write them --------------------------------------------------------

def apple(uid: str, summary: str, attendees: list[tuple[str, str]], organizer: str,
          extra: str = "") -> str:
    """Apple Calendar: quoted CN, EMAIL parameter, structured location."""
    people = "".join(
        f'ATTENDEE;CN="{cn}";CUTYPE=INDIVIDUAL;EMAIL={mail};PARTSTAT=NEEDS-ACTION;'
        f"ROLE=REQ-PARTICIPANT;RSVP=TRUE:mailto:{mail}\n" for cn, mail in attendees)
    return crlf(f"""BEGIN:VCALENDAR
VERSION:2.0
PRODID:-//Apple Inc.//macOS 14.5//EN
CALSCALE:GREGORIAN
BEGIN:VTIMEZONE
TZID:Europe/Bratislava
BEGIN:STANDARD
TZOFFSETFROM:+0200
TZOFFSETTO:+0100
DTSTART:19961027T030000
RRULE:FREQ=YEARLY;BYMONTH=10;BYDAY=-1SU
TZNAME:CET
END:STANDARD
BEGIN:DAYLIGHT
TZOFFSETFROM:+0100
TZOFFSETTO:+0200
DTSTART:19810329T020000
RRULE:FREQ=YEARLY;BYMONTH=3;BYDAY=-1SU
TZNAME:CEST
END:DAYLIGHT
END:VTIMEZONE
BEGIN:VEVENT
UID:{uid}
DTSTAMP:20261101T080000Z
CREATED:20261101T080000Z
DTSTART;TZID=Europe/Bratislava:20261203T100000
DTEND;TZID=Europe/Bratislava:20261203T113000
SUMMARY:{summary}
LOCATION:Hodžovo námestie 3\\nBratislava
X-APPLE-STRUCTURED-LOCATION;VALUE=URI;X-TITLE="Hodžovo námestie 3":geo:48.1486,17.1077
ORGANIZER;CN="Rep";EMAIL={organizer}:mailto:{organizer}
{people}{extra}SEQUENCE:0
END:VEVENT
END:VCALENDAR""".replace("\n\n", "\n"))


def thunderbird(uid: str, summary: str, attendees: list[tuple[str, str]], organizer: str,
                extra: str = "", start: str = "20261204T020000Z") -> str:
    people = "".join(f"ATTENDEE;RSVP=TRUE;PARTSTAT=NEEDS-ACTION;ROLE=REQ-PARTICIPANT;"
                     f"CN={cn}:mailto:{mail}\n" for cn, mail in attendees)
    return crlf(f"""BEGIN:VCALENDAR
PRODID:-//Mozilla.org/NONSGML Mozilla Calendar V1.1//EN
VERSION:2.0
BEGIN:VEVENT
CREATED:20261101T090000Z
LAST-MODIFIED:20261101T090000Z
DTSTAMP:20261101T090000Z
UID:{uid}
SUMMARY:{summary}
ORGANIZER;CN=Rep:mailto:{organizer}
{people}DTSTART:{start}
DTEND:20261204T040000Z
TRANSP:OPAQUE
X-MOZ-GENERATION:1
{extra}END:VEVENT
END:VCALENDAR""".replace("\n\n", "\n"))


def outlook(uid: str, summary: str, attendees: list[tuple[str, str]], organizer: str,
            extra: str = "") -> str:
    people = "".join(f'ATTENDEE;CN="{cn}";RSVP=TRUE:mailto:{mail}\n' for cn, mail in attendees)
    return crlf(f"""BEGIN:VCALENDAR
PRODID:-//Microsoft Corporation//Outlook 16.0 MIMEDIR//EN
VERSION:2.0
METHOD:REQUEST
X-MS-OLK-FORCEINSPECTOROPEN:TRUE
BEGIN:VEVENT
{people}CLASS:PUBLIC
CREATED:20261101T100000Z
DESCRIPTION:Agenda: pricing\\n
DTEND:20261205T150000Z
DTSTAMP:20261101T100000Z
DTSTART:20261205T140000Z
LAST-MODIFIED:20261101T100000Z
LOCATION:Their office
ORGANIZER;CN="Rep":mailto:{organizer}
PRIORITY:5
SEQUENCE:0
SUMMARY;LANGUAGE=en-us:{summary}
TRANSP:OPAQUE
UID:{uid}
X-MICROSOFT-CDO-BUSYSTATUS:BUSY
X-MICROSOFT-CDO-IMPORTANCE:1
{extra}END:VEVENT
END:VCALENDAR""".replace("\n\n", "\n"))


def me(rep: Dav) -> str:
    return f"{rep.user}@{INTERNAL}"
