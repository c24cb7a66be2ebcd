"""The rights matrix over real HTTP: every role x every target calendar x every method, against
a ``crm-server`` process on 127.0.0.1, on SQLite and PostgreSQL.

The expected outcome of every cell is written out in ``EXPECTED`` below, from the rules (see
server/rights/policy.py), not from what the server answers:

* own calendar: admin, manager and rep write; viewers and externals own no calendars (theirs
  does not exist and cannot be created).
* a teammate's calendar: admin and manager write, rep summary, viewer and external nothing.
* another team's calendar: admin write, everybody else nothing.
* a calendar granted at ``write``: admin, manager, rep write; viewer capped at read,
  external capped at summary.
* busy/summary readers get redacted copies; only owners and admins PROPPATCH a collection or
  create one in a home (MKCALENDAR); no access is 403.

One server per backend; every cell is tried, every mismatch collected, and the test fails
once listing all of them. A refused write must change nothing (checked over HTTP as an
admin, and in the database), a granted one must take effect.
"""

from __future__ import annotations

import contextlib
import io
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from typing import Callable, Optional
from urllib.parse import unquote, urlsplit

from sqlalchemy import bindparam, text

from admin_cli.main import main as admin_main
from conftest import PASSWORD, create_user, unique_name
from davclient import Response, http_request
from ical import crlf
from server.crm import db

ROLES = ("admin", "manager", "rep", "viewer", "external")
TARGETS = ("own", "teammate", "other_team", "granted")
# QUERY = REPORT calendar-query, MULTIGET = REPORT calendar-multiget, SYNC = REPORT
# sync-collection (initial), FREEBUSY = REPORT free-busy-query.
METHODS = ("PROPFIND", "QUERY", "MULTIGET", "SYNC", "FREEBUSY", "GET",
           "PUT", "DELETE", "MOVE", "MKCALENDAR", "PROPPATCH")

# Reads: "<status> full" (every secret present), "<status> redacted" (none present; for
# PROPFIND: the item's ETag is the redacted copy's, not the stored one), "200 freebusy".
# Writes and refusals: the status alone.
EXPECTED = {
    # --- admin: write everywhere, and RW on every home -------------------------------------
    ("admin", "own"): {
        "PROPFIND": "207 full", "QUERY": "207 full", "MULTIGET": "207 full", "SYNC": "207 full",
        "FREEBUSY": "200 freebusy", "GET": "200 full",
        "PUT": 201, "DELETE": 200, "MOVE": 201, "MKCALENDAR": 201, "PROPPATCH": 207},
    ("admin", "teammate"): {
        "PROPFIND": "207 full", "QUERY": "207 full", "MULTIGET": "207 full", "SYNC": "207 full",
        "FREEBUSY": "200 freebusy", "GET": "200 full",
        "PUT": 201, "DELETE": 200, "MOVE": 201, "MKCALENDAR": 201, "PROPPATCH": 207},
    ("admin", "other_team"): {
        "PROPFIND": "207 full", "QUERY": "207 full", "MULTIGET": "207 full", "SYNC": "207 full",
        "FREEBUSY": "200 freebusy", "GET": "200 full",
        "PUT": 201, "DELETE": 200, "MOVE": 201, "MKCALENDAR": 201, "PROPPATCH": 207},
    ("admin", "granted"): {
        "PROPFIND": "207 full", "QUERY": "207 full", "MULTIGET": "207 full", "SYNC": "207 full",
        "FREEBUSY": "200 freebusy", "GET": "200 full",
        "PUT": 201, "DELETE": 200, "MOVE": 201, "MKCALENDAR": 201, "PROPPATCH": 207},
    # --- manager: own write; teammates write (items only); others nothing; grant write ------
    ("manager", "own"): {
        "PROPFIND": "207 full", "QUERY": "207 full", "MULTIGET": "207 full", "SYNC": "207 full",
        "FREEBUSY": "200 freebusy", "GET": "200 full",
        "PUT": 201, "DELETE": 200, "MOVE": 201, "MKCALENDAR": 201, "PROPPATCH": 207},
    ("manager", "teammate"): {
        "PROPFIND": "207 full", "QUERY": "207 full", "MULTIGET": "207 full", "SYNC": "207 full",
        "FREEBUSY": "200 freebusy", "GET": "200 full",
        "PUT": 201, "DELETE": 200, "MOVE": 201, "MKCALENDAR": 403, "PROPPATCH": 403},
    ("manager", "other_team"): {
        "PROPFIND": 403, "QUERY": 403, "MULTIGET": 403, "SYNC": 403,
        "FREEBUSY": 403, "GET": 403,
        "PUT": 403, "DELETE": 403, "MOVE": 403, "MKCALENDAR": 403, "PROPPATCH": 403},
    ("manager", "granted"): {
        "PROPFIND": "207 full", "QUERY": "207 full", "MULTIGET": "207 full", "SYNC": "207 full",
        "FREEBUSY": "200 freebusy", "GET": "200 full",
        "PUT": 201, "DELETE": 200, "MOVE": 201, "MKCALENDAR": 403, "PROPPATCH": 403},
    # --- rep: own write; teammates summary; others nothing; grant write ---------------------
    ("rep", "own"): {
        "PROPFIND": "207 full", "QUERY": "207 full", "MULTIGET": "207 full", "SYNC": "207 full",
        "FREEBUSY": "200 freebusy", "GET": "200 full",
        "PUT": 201, "DELETE": 200, "MOVE": 201, "MKCALENDAR": 201, "PROPPATCH": 207},
    ("rep", "teammate"): {
        "PROPFIND": "207 redacted", "QUERY": "207 redacted", "MULTIGET": "207 redacted",
        "SYNC": "207 redacted", "FREEBUSY": "200 freebusy", "GET": "200 redacted",
        "PUT": 403, "DELETE": 403, "MOVE": 403, "MKCALENDAR": 403, "PROPPATCH": 403},
    ("rep", "other_team"): {
        "PROPFIND": 403, "QUERY": 403, "MULTIGET": 403, "SYNC": 403,
        "FREEBUSY": 403, "GET": 403,
        "PUT": 403, "DELETE": 403, "MOVE": 403, "MKCALENDAR": 403, "PROPPATCH": 403},
    ("rep", "granted"): {
        "PROPFIND": "207 full", "QUERY": "207 full", "MULTIGET": "207 full", "SYNC": "207 full",
        "FREEBUSY": "200 freebusy", "GET": "200 full",
        "PUT": 201, "DELETE": 200, "MOVE": 201, "MKCALENDAR": 403, "PROPPATCH": 403},
    # --- viewer: owns nothing; teammates nothing; others nothing; grant capped at read ------
    ("viewer", "own"): {
        "PROPFIND": 403, "QUERY": 403, "MULTIGET": 403, "SYNC": 403,
        "FREEBUSY": 403, "GET": 403,
        "PUT": 403, "DELETE": 403, "MOVE": 403, "MKCALENDAR": 403, "PROPPATCH": 403},
    ("viewer", "teammate"): {
        "PROPFIND": 403, "QUERY": 403, "MULTIGET": 403, "SYNC": 403,
        "FREEBUSY": 403, "GET": 403,
        "PUT": 403, "DELETE": 403, "MOVE": 403, "MKCALENDAR": 403, "PROPPATCH": 403},
    ("viewer", "other_team"): {
        "PROPFIND": 403, "QUERY": 403, "MULTIGET": 403, "SYNC": 403,
        "FREEBUSY": 403, "GET": 403,
        "PUT": 403, "DELETE": 403, "MOVE": 403, "MKCALENDAR": 403, "PROPPATCH": 403},
    ("viewer", "granted"): {
        "PROPFIND": "207 full", "QUERY": "207 full", "MULTIGET": "207 full", "SYNC": "207 full",
        "FREEBUSY": "200 freebusy", "GET": "200 full",
        "PUT": 403, "DELETE": 403, "MOVE": 403, "MKCALENDAR": 403, "PROPPATCH": 403},
    # --- external: owns nothing; teammates nothing; others nothing; grant capped at summary --
    ("external", "own"): {
        "PROPFIND": 403, "QUERY": 403, "MULTIGET": 403, "SYNC": 403,
        "FREEBUSY": 403, "GET": 403,
        "PUT": 403, "DELETE": 403, "MOVE": 403, "MKCALENDAR": 403, "PROPPATCH": 403},
    ("external", "teammate"): {
        "PROPFIND": 403, "QUERY": 403, "MULTIGET": 403, "SYNC": 403,
        "FREEBUSY": 403, "GET": 403,
        "PUT": 403, "DELETE": 403, "MOVE": 403, "MKCALENDAR": 403, "PROPPATCH": 403},
    ("external", "other_team"): {
        "PROPFIND": 403, "QUERY": 403, "MULTIGET": 403, "SYNC": 403,
        "FREEBUSY": 403, "GET": 403,
        "PUT": 403, "DELETE": 403, "MOVE": 403, "MKCALENDAR": 403, "PROPPATCH": 403},
    ("external", "granted"): {
        "PROPFIND": "207 redacted", "QUERY": "207 redacted", "MULTIGET": "207 redacted",
        "SYNC": "207 redacted", "FREEBUSY": "200 freebusy", "GET": "200 redacted",
        "PUT": 403, "DELETE": 403, "MOVE": 403, "MKCALENDAR": 403, "PROPPATCH": 403},
}

WRITES = ("PUT", "DELETE", "MOVE", "MKCALENDAR", "PROPPATCH")
NS = {"D": "DAV:", "C": "urn:ietf:params:xml:ns:caldav"}

# --- the events ------------------------------------------------------------------------------

START, END = "20270115T100000Z", "20270115T110000Z"
RANGE = 'start="20270101T000000Z" end="20270201T000000Z"'
SECRETS = ("Secret pricing talk", "secret-notes", "secret.attendee@customer.example",
           "organizer.secret@ourco.example", "xsecret-value", "VALARM", "alarm-secret")


def event(uid: str) -> str:
    return crlf(f"""BEGIN:VCALENDAR
VERSION:2.0
PRODID:-//radicale-crm rights matrix//EN
BEGIN:VEVENT
UID:{uid}
DTSTAMP:20260101T000000Z
DTSTART:{START}
DTEND:{END}
SUMMARY:Secret pricing talk
DESCRIPTION:secret-notes
LOCATION:Room 7
ORGANIZER:mailto:organizer.secret@ourco.example
ATTENDEE;CN=Jo:mailto:secret.attendee@customer.example
X-SECRET:xsecret-value
BEGIN:VALARM
ACTION:DISPLAY
TRIGGER:-PT15M
DESCRIPTION:alarm-secret
END:VALARM
END:VEVENT
END:VCALENDAR""")


# --- request bodies ----------------------------------------------------------------------------

PROPFIND_BODY = """<?xml version="1.0" encoding="utf-8"?>
<D:propfind xmlns:D="DAV:"><D:prop><D:getetag/><D:resourcetype/></D:prop></D:propfind>"""
DISPLAYNAME_BODY = """<?xml version="1.0" encoding="utf-8"?>
<D:propfind xmlns:D="DAV:"><D:prop><D:displayname/><D:resourcetype/></D:prop></D:propfind>"""
QUERY_BODY = f"""<?xml version="1.0" encoding="utf-8"?>
<C:calendar-query xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav">
<D:prop><D:getetag/><C:calendar-data/></D:prop>
<C:filter><C:comp-filter name="VCALENDAR"><C:comp-filter name="VEVENT">
<C:time-range {RANGE}/></C:comp-filter></C:comp-filter></C:filter></C:calendar-query>"""
SYNC_BODY = """<?xml version="1.0" encoding="utf-8"?>
<D:sync-collection xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav">
<D:sync-token/><D:sync-level>1</D:sync-level>
<D:prop><D:getetag/><C:calendar-data/></D:prop></D:sync-collection>"""
FREEBUSY_BODY = f"""<?xml version="1.0" encoding="utf-8"?>
<C:free-busy-query xmlns:C="urn:ietf:params:xml:ns:caldav">
<C:time-range {RANGE}/></C:free-busy-query>"""


def multiget_body(href: str) -> str:
    return f"""<?xml version="1.0" encoding="utf-8"?>
<C:calendar-multiget xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav">
<D:prop><D:getetag/><C:calendar-data/></D:prop><D:href>{href}</D:href></C:calendar-multiget>"""


def proppatch_body(name: str) -> str:
    return f"""<?xml version="1.0" encoding="utf-8"?>
<D:propertyupdate xmlns:D="DAV:"><D:set><D:prop>
<D:displayname>{name}</D:displayname></D:prop></D:set></D:propertyupdate>"""


# --- the world: users, teams, grants, calendars ----------------------------------------------

@dataclass
class Cell:
    role: str
    target: str
    user: str              # who asks
    owner: str             # whose calendar (and home, for MKCALENDAR)
    exists: bool           # whether /<owner>/calendar/ exists (not for viewers, externals)

    @property
    def cal(self) -> str:
        return f"/{self.owner}/calendar/"

    @property
    def base(self) -> str:
        return self.cal + "base.ics"

    def path(self, kind: str) -> str:
        """A path of this cell's own (events it moves or deletes, the new calendar)."""
        return {"put": f"{self.cal}put-{self.role}-{self.target}.ics",
                "del": f"{self.cal}del-{self.role}.ics",
                "mv": f"{self.cal}mv-{self.role}.ics",
                "moved": f"{self.cal}moved-{self.role}.ics",
                "new": f"/{self.owner}/new-{self.role}-{self.target}/"}[kind]


@dataclass
class World:
    url: str
    db_url: str
    checker: str                                        # an admin in no team: sees all
    subjects: dict = field(default_factory=dict)        # role -> user name
    owners: dict = field(default_factory=dict)          # target -> owner (not "own")
    etags: dict = field(default_factory=dict)           # item path -> stored ETag

    def http(self, user: str, method: str, path: str, body: str = "",
             headers: Optional[dict] = None) -> Response:
        return http_request(self.url, user, PASSWORD, method, path, body, headers, timeout=30)

    def check(self, method: str, path: str, body: str = "", depth: str = "0") -> Response:
        headers = {"Depth": depth, "Content-Type": "application/xml"} if body else {}
        return self.http(self.checker, method, path, body, headers)

    def cell(self, role: str, target: str) -> Cell:
        user = self.subjects[role]
        if target == "own":
            return Cell(role, target, user, user, role in ("admin", "manager", "rep"))
        return Cell(role, target, user, self.owners[target], True)

    def users(self) -> list[str]:
        return [self.checker, *self.subjects.values(), *self.owners.values()]


def cli(url: str, *argv: str) -> None:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        code = admin_main(["--db-url", url, *argv])
    assert code == 0, (argv, out.getvalue())


def build_world(url: str, db_url: str) -> World:
    north, south = unique_name("north"), unique_name("south")
    cli(db_url, "team", "add", north)
    cli(db_url, "team", "add", south)
    checker, _ = create_user(db_url, unique_name("checker"), role="admin")
    world = World(url, db_url, checker)
    for role in ROLES:
        world.subjects[role], _ = create_user(db_url, unique_name(role), role=role)
        cli(db_url, "team", "add-member", north, world.subjects[role])
    for target, team in (("teammate", north), ("other_team", south), ("granted", None)):
        world.owners[target], _ = create_user(db_url, unique_name(target.replace("_", "")))
        if team:
            cli(db_url, "team", "add-member", team, world.owners[target])
    for user in world.users():                      # first request: the home is created
        reply = world.http(user, "PROPFIND", f"/{user}/", "", {"Depth": "0"})
        assert reply.status == 207, (user, reply.status, reply.text)
    for role in ROLES:
        cli(db_url, "grant", "add", f"{world.owners['granted']}/calendar",
            "--to", f"user:{world.subjects[role]}", "--level", "write")
    # The events, each written by its calendar's owner: one everybody reads, and one to delete
    # and one to move per subject, so that no cell depends on another.
    calendars = [(o, f"/{o}/calendar/") for o in world.owners.values()]
    calendars += [(world.subjects[r], f"/{world.subjects[r]}/calendar/")
                  for r in ("admin", "manager", "rep")]
    for owner, cal in calendars:
        names = ["base"] + [f"{kind}-{role}" for role in ROLES for kind in ("del", "mv")]
        for name in names:
            path = f"{cal}{name}.ics"
            reply = world.http(owner, "PUT", path, event(f"{owner}-{name}"),
                               {"Content-Type": "text/calendar"})
            assert reply.status == 201, (path, reply.status, reply.text)
            world.etags[path] = reply.headers["etag"]
    return world


def store_state(world: World):
    """What the database holds for this test's users (collections, items, trash)."""
    users = world.users()
    with db.shared_engine(world.db_url).connect() as conn:
        collections = conn.execute(text(
            "SELECT id, path, tag, props_json, revision FROM dav_collections "
            "WHERE owner IN :users ORDER BY path").bindparams(
                bindparam("users", expanding=True)), {"users": users}).all()
        items = conn.execute(text(
            "SELECT collection_id, href, etag, text FROM dav_items WHERE collection_id IN :ids "
            "ORDER BY collection_id, href").bindparams(bindparam("ids", expanding=True)),
            {"ids": [c.id for c in collections] or [-1]}).all()
        trash = conn.execute(text(
            "SELECT count(*) FROM dav_trash WHERE owner IN :users").bindparams(
                bindparam("users", expanding=True)), {"users": users}).scalar()
    return collections, items, trash


# --- reading responses -------------------------------------------------------------------------

def first_line(reply: Response) -> str:
    body = reply.body.decode("utf-8", "replace").strip()
    return f"{reply.status} {body.splitlines()[0][:160] if body else '(empty body)'}"


def unfold(value: str) -> str:
    return value.replace("\r\n ", "").replace("\n ", "").replace("\r\n\t", "")


def responses(reply: Response) -> dict[str, ET.Element]:
    """href (path) -> <D:response> of a multistatus."""
    out = {}
    for response in ET.fromstring(reply.body).findall("D:response", NS):
        out[unquote(urlsplit(response.findtext("D:href", namespaces=NS)).path)] = response
    return out


def prop_text(response: ET.Element, name: str) -> Optional[str]:
    """The value of a property found (200) in a response, else None."""
    for propstat in response.findall("D:propstat", NS):
        if " 200 " in (propstat.findtext("D:status", namespaces=NS) or ""):
            found = propstat.find("D:prop/" + name, NS)
            if found is not None:
                return found.text or ""
    return None


def content_problems(marker: str, data: str, raw: str, uid: str) -> list[str]:
    """``data``: the calendar data returned (unfolded); ``raw``: the whole response body."""
    problems = []
    if uid not in data:
        problems.append(f"the event {uid} is missing from the response")
    if marker == "full":
        missing = [s for s in SECRETS if s not in data]
        if missing:
            problems.append(f"full read, but {missing} missing")
    elif marker == "redacted":
        leaked = [s for s in SECRETS if s in data or s in raw]
        if leaked:
            problems.append(f"redacted read, but {leaked} leaked")
    return problems


# --- one helper per method: the request, then what its answer must show ------------------------

def do_propfind(w: World, c: Cell) -> Response:
    return w.http(c.user, "PROPFIND", c.cal, PROPFIND_BODY,
                  {"Depth": "1", "Content-Type": "application/xml"})


def check_propfind(w: World, c: Cell, marker: str, reply: Response) -> list[str]:
    found = responses(reply).get(c.base)
    if found is None:
        return [f"{c.base} not listed"]
    etag, stored = prop_text(found, "D:getetag"), w.etags[c.base]
    if marker == "full" and etag != stored:
        return [f"full read, but ETag {etag} is not the stored {stored}"]
    if marker == "redacted" and etag == stored:
        return [f"redacted read, but ETag {etag} is the stored item's"]
    return []


def do_report(body: str, depth: Optional[str] = "1"):
    def run(w: World, c: Cell) -> Response:
        headers = {"Content-Type": "application/xml"}
        if depth is not None:
            headers["Depth"] = depth
        return w.http(c.user, "REPORT", c.cal, body(c) if callable(body) else body, headers)
    return run


def check_report(w: World, c: Cell, marker: str, reply: Response) -> list[str]:
    found = responses(reply)
    if c.base not in found:
        return [f"{c.base} not in the multistatus"]
    data = prop_text(found[c.base], "C:calendar-data")
    if not data:
        return [f"no calendar-data for {c.base}"]
    return content_problems(marker, unfold(data), reply.text, f"{c.owner}-base")


def check_freebusy(w: World, c: Cell, marker: str, reply: Response) -> list[str]:
    body = unfold(reply.text)
    problems = []
    if "BEGIN:VFREEBUSY" not in body:
        problems.append("no VFREEBUSY")
    if not any(line.startswith("FREEBUSY") and START in line for line in body.splitlines()):
        problems.append(f"no FREEBUSY period starting {START}")
    leaked = [s for s in SECRETS if s in body]
    if leaked:
        problems.append(f"free-busy leaked {leaked}")
    return problems


def do_get(w: World, c: Cell) -> Response:
    return w.http(c.user, "GET", c.base)


def check_get(w: World, c: Cell, marker: str, reply: Response) -> list[str]:
    return content_problems(marker, unfold(reply.text), reply.text, f"{c.owner}-base")


def do_put(w: World, c: Cell) -> Response:
    return w.http(c.user, "PUT", c.path("put"), event(f"put-{c.role}-{c.target}-{c.owner}"),
                  {"Content-Type": "text/calendar"})


def do_delete(w: World, c: Cell) -> Response:
    return w.http(c.user, "DELETE", c.path("del"))


def do_move(w: World, c: Cell) -> Response:
    return w.http(c.user, "MOVE", c.path("mv"), "", {"Destination": w.url + c.path("moved")})


def do_mkcalendar(w: World, c: Cell) -> Response:
    return w.http(c.user, "MKCALENDAR", c.path("new"))


def do_proppatch(w: World, c: Cell) -> Response:
    return w.http(c.user, "PROPPATCH", c.cal, proppatch_body(f"renamed by {c.user}"),
                  {"Content-Type": "application/xml"})


# --- what a write did (checked as the admin "checker"), given it was to succeed or not -------

def item_is(w: World, path: str, there: bool) -> list[str]:
    reply = w.check("GET", path)
    if there and reply.status != 200:
        return [f"{path} should exist: checker GET {first_line(reply)}"]
    if not there and reply.status != 404:
        return [f"{path} should not exist: checker GET {first_line(reply)}"]
    if there and path in w.etags and reply.headers.get("etag") != w.etags[path]:
        return [f"{path} changed: ETag {reply.headers.get('etag')} != {w.etags[path]}"]
    return []


def collection_is(w: World, path: str, there: bool) -> list[str]:
    reply = w.check("PROPFIND", path, DISPLAYNAME_BODY)
    if reply.status != (207 if there else 404):
        return [f"{path} should {'' if there else 'not '}exist: checker PROPFIND "
                f"{first_line(reply)}"]
    return []


def displayname(w: World, c: Cell) -> Optional[str]:
    reply = w.check("PROPFIND", c.cal, DISPLAYNAME_BODY)
    if reply.status != 207:
        return None
    return prop_text(responses(reply)[c.cal], "D:displayname")


def effect_put(w: World, c: Cell, done: bool, before) -> list[str]:
    return item_is(w, c.path("put"), done)


def effect_delete(w: World, c: Cell, done: bool, before) -> list[str]:
    return item_is(w, c.path("del"), c.exists and not done)


def effect_move(w: World, c: Cell, done: bool, before) -> list[str]:
    return item_is(w, c.path("mv"), c.exists and not done) + item_is(w, c.path("moved"), done)


def effect_mkcalendar(w: World, c: Cell, done: bool, before) -> list[str]:
    return collection_is(w, c.path("new"), done)


def effect_proppatch(w: World, c: Cell, done: bool, before) -> list[str]:
    now = displayname(w, c)
    wanted = f"renamed by {c.user}" if done else before
    return [] if now == wanted else [f"displayname is {now!r}, expected {wanted!r}"]


@dataclass(frozen=True)
class Method:
    request: Callable[[World, Cell], Response]
    check: Optional[Callable] = None       # content of a successful read
    effect: Optional[Callable] = None      # a write's effect (done or not)
    before: Optional[Callable] = None      # state the effect check compares with


HANDLERS = {
    "PROPFIND": Method(do_propfind, check_propfind),
    "QUERY": Method(do_report(QUERY_BODY), check_report),
    "MULTIGET": Method(do_report(lambda c: multiget_body(c.base)), check_report),
    "SYNC": Method(do_report(SYNC_BODY, depth=None), check_report),
    "FREEBUSY": Method(do_report(FREEBUSY_BODY), check_freebusy),
    "GET": Method(do_get, check_get),
    "PUT": Method(do_put, effect=effect_put),
    "DELETE": Method(do_delete, effect=effect_delete),
    "MOVE": Method(do_move, effect=effect_move),
    "MKCALENDAR": Method(do_mkcalendar, effect=effect_mkcalendar),
    "PROPPATCH": Method(do_proppatch, effect=effect_proppatch, before=displayname),
}


def parse(expected) -> tuple[int, Optional[str]]:
    if isinstance(expected, int):
        return expected, None
    status, _, marker = expected.partition(" ")
    return int(status), marker


def proppatch_refused(reply: Response) -> bool:
    """A 207 whose displayname propstat is not 200 (how WebDAV may refuse one property)."""
    try:
        return all(prop_text(r, "D:displayname") is None for r in responses(reply).values())
    except ET.ParseError:
        return False


def run_cell(w: World, c: Cell, method: str, expected) -> list[str]:
    status, marker = parse(expected)
    handler = HANDLERS[method]
    before_db = store_state(w) if method in WRITES and status >= 300 else None
    before = handler.before(w, c) if handler.before else None
    reply = handler.request(w, c)
    problems = []
    if reply.status != status:
        problems.append(f"got {first_line(reply)} (expected {expected})")
    elif method == "PROPPATCH" and status == 207 and proppatch_refused(reply):
        problems.append(f"got 207 but the property was refused: {reply.text[:300]}")
    elif handler.check and marker:
        try:
            problems += handler.check(w, c, marker, reply)
        except ET.ParseError as e:
            problems.append(f"unparsable multistatus ({e}): {first_line(reply)}")
    if handler.effect:
        problems += handler.effect(w, c, status < 300, before)
        if not c.exists:
            problems += collection_is(w, c.cal, False)
    if before_db is not None and store_state(w) != before_db:
        problems.append("refused, but the database changed")
    return problems


def run_matrix(w: World) -> list[str]:
    failures = []
    for role in ROLES:
        for target in TARGETS:
            c = w.cell(role, target)
            for method in METHODS:
                expected = EXPECTED[(role, target)][method]
                for problem in run_cell(w, c, method, expected):
                    failures.append(f"{role:8} {target:10} {method:10} {problem}")
    # Viewers and externals cannot create the calendar they do not have.
    for role in ("viewer", "external"):
        c = w.cell(role, "own")
        reply = w.http(c.user, "MKCALENDAR", c.cal)
        if reply.status != 403:
            failures.append(f"{role:8} own        MKCALENDAR {c.cal}: got {first_line(reply)} "
                            "(expected 403)")
        failures += [f"{role:8} own        MKCALENDAR {p}" for p in collection_is(w, c.cal,
                                                                                   False)]
    return failures


# --- the test ----------------------------------------------------------------------------------

def test_the_table_has_every_cell():
    assert set(EXPECTED) == {(r, t) for r in ROLES for t in TARGETS}
    cells = {(r, t, m) for (r, t), row in EXPECTED.items() for m in row}
    assert cells == {(r, t, m) for r in ROLES for t in TARGETS for m in METHODS}
    for row in EXPECTED.values():
        for value in row.values():
            status, marker = parse(value)
            assert marker in (None, "full", "redacted", "freebusy"), value


def test_rights_matrix_over_http(db_url, live_server):
    test_the_table_has_every_cell()
    started = time.monotonic()
    server = live_server(db_url)
    world = build_world(server.url, db_url)
    set_up = time.monotonic()
    failures = run_matrix(world)
    done = time.monotonic()
    print(f"\nrights matrix: set-up {set_up - started:.1f}s, "
          f"{len(ROLES) * len(TARGETS) * len(METHODS)} cells {done - set_up:.1f}s")
    assert not failures, (f"{len(failures)} cell(s) disagree with the rules:\n"
                          + "\n".join(failures))
