"""Who may see what: a pure function of facts (no database, no Radicale), tested as a table.

The facts are the requesting user (:class:`Subject`: name, role, teams), the collection
(:class:`Target`: owner and the owner's role and teams, kind) and the grants on it. The
answer is a :class:`Decision`: the level of access and the reasons for it, which the rights
plugin turns into Radicale's permission letters and the storage plugin into redaction.

Levels, lowest first: ``busy`` (times only), ``summary`` (times, location, the customer's
short name), ``read`` (everything), ``write``. Role tiers (``docs/rights.md``):

====================  =============  ==================================  =====================
role                  own            team members' calendars             others
====================  =============  ==================================  =====================
admin                 write          write                               write
manager               write          write (assign visits)               by grant
rep                   write          summary (avoid double visits)       by grant
viewer                (owns none)    by grant, read at most              by grant, read at most
external              (owns none)    by grant, summary at most           by grant, summary at most
====================  =============  ==================================  =====================

Item classes narrow the level further for everyone but the owner and admins: ``PRIVATE``
is shown as ``busy``, ``CONFIDENTIAL`` as ``summary`` at most; an unknown class counts as
PRIVATE (RFC 5545 §3.8.1.3).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Optional

ROLES = ("admin", "manager", "rep", "viewer", "external")
LEVELS = ("busy", "summary", "read", "write")
REDACTED_LEVELS = frozenset({"busy", "summary"})
ROLE_CAP = {"viewer": "read", "external": "summary"}
OWNS_COLLECTIONS = frozenset({"admin", "manager", "rep"})
TEAM_DEFAULT = {"manager": "write", "rep": "summary"}
GRANT_KINDS = ("user", "team", "role")

# Collections the server writes (the CRM's address books): nobody's client writes them.
READ_ONLY_BOOKS = frozenset({"crm-contacts", "crm-suggested"})
# A collection shared with a user appears in their home as ``<home>/shared-<id>``.
MIRROR_PREFIX = "shared-"

CLASS_CAP = {"PUBLIC": None, "CONFIDENTIAL": "summary", "PRIVATE": "busy"}
CLASS_MEANING = ("CLASS:PRIVATE items are shown as busy time (no title, place, notes, people "
                 "or alarms) to everyone but the owner and admins; CLASS:CONFIDENTIAL items "
                 "at summary at most (times, place, customer short name)")


def rank(level: Optional[str]) -> int:
    return LEVELS.index(level) + 1 if level else 0


def lower(a: Optional[str], b: Optional[str]) -> Optional[str]:
    return a if rank(a) <= rank(b) else b


@dataclass(frozen=True)
class Subject:
    """The user asking."""

    name: str
    role: str
    teams: frozenset = frozenset()


@dataclass(frozen=True)
class Owner:
    name: str
    role: str
    teams: frozenset = frozenset()


@dataclass(frozen=True)
class GrantFact:
    kind: str       # user / team / role
    subject: str
    level: str

    def applies_to(self, subject: Subject) -> bool:
        return ((self.kind == "user" and self.subject == subject.name)
                or (self.kind == "team" and self.subject in subject.teams)
                or (self.kind == "role" and self.subject == subject.role))

    def __str__(self) -> str:
        return f"{self.kind}:{self.subject}"


@dataclass(frozen=True)
class Target:
    """A calendar or address book (existing or about to be created) in ``owner``'s home."""

    owner: Owner
    name: str
    tag: str = ""            # VCALENDAR / VADDRESSBOOK / "" (plain folder, or not created yet)
    exists: bool = True


@dataclass(frozen=True)
class Decision:
    level: Optional[str]
    reasons: tuple = ()
    full: bool = False       # owner or admin: item classes do not narrow the view

    @property
    def writable(self) -> bool:
        return self.level == "write"


NO_ACCESS = Decision(None, ("no role default and no grant applies",))


def decide(subject: Subject, target: Target, grants: Iterable[GrantFact] = ()) -> Decision:
    """The level ``subject`` has on ``target``, and why."""
    if subject.role not in ROLES:
        return Decision(None, (f"unknown role {subject.role!r}",))
    own = subject.name == target.owner.name
    if own:
        if target.name.startswith(MIRROR_PREFIX) and not target.exists:
            return Decision(None, (f"names starting with {MIRROR_PREFIX!r} are reserved for "
                                   "collections shared with you",))
        if subject.role not in OWNS_COLLECTIONS:
            # Viewers and externals own no calendars; what the server puts in their home
            # (their CRM address books) they may read.
            if target.exists and target.tag:
                return _read_only(target, Decision("read", (f"own, role {subject.role} "
                                                            "(read-only)",), full=True))
            return Decision(None, (f"role {subject.role} owns no calendars",))
        return _read_only(target, Decision("write", ("owner",), full=True))
    if subject.role == "admin":
        return _read_only(target, Decision("write", ("role admin",), full=True))
    candidates: list[tuple[str, str]] = []
    shared_teams = sorted(subject.teams & target.owner.teams)
    default = TEAM_DEFAULT.get(subject.role)
    if default and shared_teams and target.tag == "VCALENDAR":
        candidates.append((default, f"role {subject.role}, teammate of {target.owner.name} "
                                    f"in team {', '.join(shared_teams)}"))
    for grant in grants:
        if grant.applies_to(subject) and grant.level in LEVELS:
            candidates.append((grant.level, f"grant to {grant} at {grant.level}"))
    if not candidates:
        return NO_ACCESS
    best = max(rank(level) for level, _ in candidates)
    level = LEVELS[best - 1]
    reasons = [reason for lvl, reason in candidates if rank(lvl) == best]
    cap = ROLE_CAP.get(subject.role)
    if cap and rank(level) > rank(cap):
        level = cap
        reasons.append(f"capped at {cap} for role {subject.role}")
    if target.tag == "VADDRESSBOOK" and level in REDACTED_LEVELS:
        return Decision(None, (*reasons, "busy and summary do not apply to address books"))
    return _read_only(target, Decision(level, tuple(reasons)))


def _read_only(target: Target, decision: Decision) -> Decision:
    if decision.level == "write" and target.name in READ_ONLY_BOOKS:
        return Decision("read", (*decision.reasons, "written by the CRM only"), decision.full)
    return decision


def item_level(decision: Decision, klass: Optional[str]) -> Optional[str]:
    """The level at which one item is shown: the collection's, narrowed by the item's CLASS
    for everyone but the owner and admins."""
    if decision.full or decision.level is None:
        return decision.level
    klass = (klass or "PUBLIC").upper()
    cap = CLASS_CAP.get(klass, "busy")
    return lower(decision.level, cap) if cap else decision.level


# --- Radicale permission letters ----------------------------------------------------------

@dataclass(frozen=True)
class PathFacts:
    """What the rights plugin knows about a path, resolved from the database."""

    kind: str                         # root / principal / collection / mirror / deep
    home: str = ""                    # the first path segment
    target: Optional[Target] = None   # collection and mirror
    grants: tuple = field(default=())
    sees_home: bool = False           # principal of another user: subject is a teammate


def letters(subject: Optional[Subject], facts: PathFacts) -> str:
    """Radicale 3.9 letters: ``R``/``W`` on principals, ``r``/``w`` on collections, plus
    ``d`` (no collection delete), ``o`` (no collection overwrite) and ``l`` (properties
    locked) where the subject is not the collection's owner."""
    if subject is None:
        return ""
    if facts.kind == "root":
        return "R"
    if facts.kind == "principal":
        if facts.home == subject.name or subject.role == "admin":
            return "RW"
        return "R" if facts.sees_home else ""
    if facts.kind not in ("collection", "mirror") or facts.target is None:
        return ""
    if facts.kind == "mirror" and facts.home != subject.name:
        return ""
    if facts.kind == "mirror" and facts.target.owner.name == subject.name:
        return ""
    decision = decide(subject, facts.target, facts.grants)
    if decision.level is None:
        return ""
    out = "rw" if decision.writable else "r"
    owner = facts.target.owner.name == subject.name
    if facts.kind == "mirror" or not (owner or subject.role == "admin"):
        out += "dol"
    return out
