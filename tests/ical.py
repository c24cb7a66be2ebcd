"""Small builders for iCalendar/vCard/XML test bodies (CRLF line endings, as clients send)."""

from __future__ import annotations


def crlf(text: str) -> str:
    return "\r\n".join(text.strip("\n").split("\n")) + "\r\n"


def event(uid: str, start: str = "20250110T100000Z", end: str = "20250110T110000Z",
          summary: str = "Visit", extra: str = "") -> str:
    return crlf(f"""BEGIN:VCALENDAR
VERSION:2.0
PRODID:-//radicale-crm tests//EN
BEGIN:VEVENT
UID:{uid}
DTSTAMP:20250101T000000Z
DTSTART:{start}
DTEND:{end}
SUMMARY:{summary}
{extra}END:VEVENT
END:VCALENDAR""".replace("\n\nEND:VEVENT", "\nEND:VEVENT"))


def vcard(uid: str, name: str = "Jana Nováková", email: str = "jana@example.sk") -> str:
    return crlf(f"""BEGIN:VCARD
VERSION:3.0
UID:{uid}
FN:{name}
N:{name.split()[-1]};{name.split()[0]};;;
EMAIL;TYPE=INTERNET:{email}
END:VCARD""")


def time_range_query(start: str, end: str, component: str = "VEVENT") -> str:
    return f"""<?xml version="1.0" encoding="utf-8"?>
<C:calendar-query xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav">
  <D:prop><D:getetag/></D:prop>
  <C:filter><C:comp-filter name="VCALENDAR"><C:comp-filter name="{component}">
    <C:time-range start="{start}" end="{end}"/>
  </C:comp-filter></C:comp-filter></C:filter>
</C:calendar-query>"""


def sync_collection(token: str = "") -> str:
    return f"""<?xml version="1.0" encoding="utf-8"?>
<D:sync-collection xmlns:D="DAV:"><D:sync-token>{token}</D:sync-token>
<D:sync-level>1</D:sync-level><D:prop><D:getetag/></D:prop></D:sync-collection>"""


def multiget(hrefs: list[str]) -> str:
    refs = "".join(f"<D:href>{h}</D:href>" for h in hrefs)
    return f"""<?xml version="1.0" encoding="utf-8"?>
<C:calendar-multiget xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav">
<D:prop><D:getetag/><C:calendar-data/></D:prop>{refs}</C:calendar-multiget>"""


PROPFIND_CTAG = """<?xml version="1.0" encoding="utf-8"?>
<D:propfind xmlns:D="DAV:" xmlns:CS="http://calendarserver.org/ns/">
<D:prop><CS:getctag/><D:sync-token/><D:displayname/></D:prop></D:propfind>"""
