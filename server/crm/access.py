"""Teams, grants and the facts the access policy decides from, read from the database.

The decision itself is ``server.rights.policy`` (pure); this module loads what it needs
(who is asking, whose collection it is, which grants apply) and keeps teams and grants.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable, Optional

from sqlalchemy import Connection, bindparam, delete, or_, select
from sqlalchemy.orm import Session, aliased

from server.crm import dav, throttle
from server.crm.db import run
from server.crm.dav import CollectionState
from server.crm.errors import AlreadyExists, InvalidInput, NotFound
from server.crm.models import DavCollection, Grant, LoginThrottle, Team, TeamMember, User
from server.rights import policy
from server.rights.policy import (Decision, GrantFact, Owner, PathFacts, Subject,
                                  Target)

_TEAM_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
_MIRROR = re.compile(r"^%s(\d+)$" % re.escape(policy.MIRROR_PREFIX))


# --- who is asking, whose is it ---------------------------------------------------------------

def teams_of(session: Session, user_ids: Iterable[int]) -> dict[int, frozenset]:
    ids = list(user_ids)
    out: dict[int, set] = {i: set() for i in ids}
    if ids:
        for user_id, team in session.execute(
                select(TeamMember.user_id, Team.name).join(Team, Team.id == TeamMember.team_id)
                .where(TeamMember.user_id.in_(ids))):
            out[user_id].add(team)
    return {k: frozenset(v) for k, v in out.items()}


_HOME = aliased(DavCollection)
_ACCOUNT, _ADDRESS = aliased(LoginThrottle), aliased(LoginThrottle)
_LOGIN = (select(User.password_hash, User.disabled, User.role, Team.name,
                 _ACCOUNT.failures.label("account_failures"),
                 _ACCOUNT.window_start.label("account_window"),
                 _ADDRESS.failures.label("address_failures"),
                 _ADDRESS.window_start.label("address_window"),
                 *(getattr(_HOME, c.key).label(f"home_{c.key}") for c in dav.COLLECTION_COLUMNS))
          .select_from(User)
          .outerjoin(TeamMember, TeamMember.user_id == User.id)
          .outerjoin(Team, Team.id == TeamMember.team_id)
          .outerjoin(_HOME, _HOME.path == User.username)
          .outerjoin(_ACCOUNT, _ACCOUNT.key == bindparam("account_key"))
          .outerjoin(_ADDRESS, _ADDRESS.key == bindparam("address_key"))
          .where(User.username == bindparam("username")))


@dataclass(frozen=True)
class LoginFacts:
    password_hash: str
    disabled: bool
    groups: set[str]            # what the auth plugin hands Radicale: role:<r>, team:<t>
    home: Optional[CollectionState]
    account: Optional[throttle.Counter]   # failed logins of the account in its window
    address: Optional[throttle.Counter]   # ... and of the client's address


def login_facts(bind: Session | Connection, username: str, address: str = ""
                ) -> Optional[LoginFacts]:
    """What a login needs in one query, or None for an unknown user: the password hash, the
    groups, the home collection Radicale looks up next on every request, and the throttle
    counters of the account and of the client ``address``. ``bind`` is a session, or a
    connection outside a transaction (``db.read_once``)."""
    params = {"username": username, "account_key": throttle.account_key(username),
              "address_key": throttle.address_key(address) if address else ""}
    rows = (run(bind, _LOGIN, params) if isinstance(bind, Session)
            else bind.execute(_LOGIN, params)).all()
    if not rows:
        return None
    first = rows[0]
    groups = {f"role:{first.role}"} | {f"team:{row.name}" for row in rows if row.name}
    state = dav.collection_from_row(first, "home_") if first.home_id is not None else None
    return LoginFacts(
        first.password_hash or "", first.disabled, groups, state,
        throttle.Counter(first.account_failures, first.account_window)
        if first.account_failures is not None else None,
        throttle.Counter(first.address_failures, first.address_window)
        if first.address_failures is not None else None)


def subject_from_groups(name: str, groups: Iterable[str]) -> Optional[Subject]:
    roles = [g[5:] for g in groups if g.startswith("role:")]
    if len(roles) != 1:
        return None
    return Subject(name, roles[0], frozenset(g[5:] for g in groups if g.startswith("team:")))


def load_subject(session: Session, name: str) -> Optional[Subject]:
    """The subject for an enabled user, or None (unknown or disabled: no access at all)."""
    row = session.execute(select(User.id, User.role, User.disabled)
                          .where(User.username == name)).first()
    if row is None or row.disabled:
        return None
    return Subject(name, row.role, teams_of(session, [row.id])[row.id])


def subject_of(session: Session, user: str, groups: Iterable[str], memo: dict
               ) -> Optional[Subject]:
    """The requester, once per request (``memo``): from the auth plugin's groups, or, where
    there are none (a MOVE's destination, the storage plugin), from the database."""
    key = ("subject", user)
    if key not in memo:
        memo[key] = subject_from_groups(user, groups) or load_subject(session, user)
    return memo[key]


def load_owner(session: Session, name: str) -> Owner:
    row = session.execute(select(User.id, User.role).where(User.username == name)).first()
    if row is None:
        return Owner(name, "")
    return Owner(name, row.role, teams_of(session, [row.id])[row.id])


def grants_on(session: Session, collection_id: int) -> tuple[GrantFact, ...]:
    return tuple(GrantFact(kind, subject, level) for kind, subject, level in session.execute(
        select(Grant.subject_kind, Grant.subject, Grant.level)
        .where(Grant.collection_id == collection_id).order_by(Grant.id)))


def mirror_id(name: str) -> Optional[int]:
    match = _MIRROR.match(name)
    return int(match.group(1)) if match else None


def mirror_path(home: str, collection_id: int) -> str:
    return f"{home}/{policy.MIRROR_PREFIX}{collection_id}"


def resolve(session: Session, path: str, subject: Optional[Subject] = None) -> PathFacts:
    """The facts the policy needs about a sanitized path, as ``subject`` sees it."""
    if not path:
        return PathFacts("root")
    parts = path.split("/")
    home = parts[0]
    if len(parts) == 1:
        sees = False
        if subject is not None and subject.name != home and subject.teams:
            sees = bool(load_owner(session, home).teams & subject.teams)
        return PathFacts("principal", home, sees_home=sees)
    if len(parts) > 2:
        return PathFacts("deep", home)
    if subject is not None and home == subject.name and \
            subject.role in policy.OWNS_COLLECTIONS and \
            not parts[1].startswith(policy.MIRROR_PREFIX):
        # One's own collection, existing or not: the owner writes it (the policy keeps the
        # CRM's books read-only by name). No look-up needed.
        return PathFacts("collection", home,
                         Target(Owner(subject.name, subject.role, subject.teams), parts[1]))
    state = dav.get_collection(session, path)
    kind = "collection"
    if state is None and mirror_id(parts[1]) is not None:
        state = collection_by_id(session, mirror_id(parts[1]))
        if not shareable(state):
            return PathFacts("deep", home)
        kind = "mirror"
    owner_name = state.path.split("/")[0] if state else home
    name = state.path.split("/")[1] if state else parts[1]
    if subject is not None and owner_name == subject.name:
        owner, grants = Owner(subject.name, subject.role, subject.teams), ()
    else:
        owner = load_owner(session, owner_name)
        grants = grants_on(session, state.id) if state else ()
    target = Target(owner, name, state.tag if state else "", exists=state is not None)
    return PathFacts(kind, home, target, grants)


def collection_by_id(session: Session, collection_id: int) -> Optional[CollectionState]:
    return dav.get_collection_by_id(session, collection_id)


def shareable(state: Optional[CollectionState]) -> bool:
    """A calendar or address book directly in a home: what grants and mirrors are about."""
    return state is not None and bool(state.tag) and state.path.count("/") == 1


def shared_with(session: Session, subject: Subject) -> list[tuple[CollectionState, Decision]]:
    """Other users' calendars and address books ``subject`` can see through a grant or as a
    teammate: what appears in their home as ``shared-<id>``. (An admin's access to every
    collection is not listed: it would be every collection of the company.)"""
    conditions = [(Grant.subject_kind == "user") & (Grant.subject == subject.name),
                  (Grant.subject_kind == "role") & (Grant.subject == subject.role)]
    if subject.teams:
        conditions.append((Grant.subject_kind == "team") & Grant.subject.in_(subject.teams))
    ids = set(session.scalars(select(Grant.collection_id).where(or_(*conditions))))
    if subject.teams and subject.role in policy.TEAM_DEFAULT:
        mates = select(User.username).join(TeamMember, TeamMember.user_id == User.id) \
            .join(Team, Team.id == TeamMember.team_id).where(Team.name.in_(subject.teams))
        ids |= set(session.scalars(select(DavCollection.id).where(
            DavCollection.owner.in_(mates), DavCollection.tag == "VCALENDAR",
            DavCollection.parent_path == DavCollection.owner)))
    out = []
    for collection_id in sorted(ids):
        state = collection_by_id(session, collection_id)
        if not shareable(state):
            continue
        owner_name, name = state.path.split("/")
        if owner_name == subject.name:
            continue
        target = Target(load_owner(session, owner_name), name, state.tag)
        decision = policy.decide(subject, target, grants_on(session, state.id))
        if decision.level is not None:
            out.append((state, decision))
    return out


# --- teams -------------------------------------------------------------------------------------

def normalize_team(name: str) -> str:
    name = name.strip().lower()
    if not _TEAM_NAME.match(name):
        raise InvalidInput(f"invalid team name {name!r}: use lower-case letters, digits and "
                           "._- (at most 64)")
    return name


def find_team(session: Session, name: str) -> Team:
    team = session.scalar(select(Team).where(Team.name == name.strip().lower()))
    if team is None:
        raise NotFound("team", name)
    return team


def add_team(session: Session, name: str) -> Team:
    name = normalize_team(name)
    if session.scalar(select(Team.id).where(Team.name == name)) is not None:
        raise AlreadyExists("team", name)
    team = Team(name=name)
    session.add(team)
    session.flush()
    return team


def add_member(session: Session, team: Team, user: User) -> bool:
    """True if added, False if already a member."""
    exists = session.scalar(select(TeamMember.id).where(TeamMember.team_id == team.id,
                                                        TeamMember.user_id == user.id))
    if exists is not None:
        return False
    session.add(TeamMember(team_id=team.id, user_id=user.id))
    session.flush()
    return True


def remove_member(session: Session, team: Team, user: User) -> None:
    result = session.execute(delete(TeamMember).where(TeamMember.team_id == team.id,
                                                      TeamMember.user_id == user.id))
    if not result.rowcount:
        raise InvalidInput(f"{user.username} is not a member of team {team.name}")


def team_listing(session: Session) -> list[dict]:
    rows = session.execute(
        select(Team.name, User.username).outerjoin(TeamMember, TeamMember.team_id == Team.id)
        .outerjoin(User, User.id == TeamMember.user_id).order_by(Team.name, User.username))
    out: dict[str, list[str]] = {}
    for team, member in rows:
        out.setdefault(team, [])
        if member:
            out[team].append(member)
    return [{"team": team, "members": members} for team, members in out.items()]


# --- grants ----------------------------------------------------------------------------------

def parse_grantee(text: str) -> tuple[str, str]:
    kind, sep, name = text.partition(":")
    if not sep or kind not in policy.GRANT_KINDS or not name:
        raise InvalidInput(f"invalid grantee {text!r}: use user:NAME, team:NAME or role:ROLE")
    return kind, name.strip().lower()


def collection_at(session: Session, path: str) -> CollectionState:
    """A calendar or address book by path ("alice/calendar", slashes optional)."""
    clean = path.strip().strip("/")
    state = dav.get_collection(session, clean) if clean else None
    if not shareable(state):
        raise NotFound("calendar or address book", clean or path)
    return state


def check_grantee(session: Session, kind: str, name: str) -> str:
    if kind == "user":
        user = session.scalar(select(User).where(User.username == name))
        if user is None:
            raise NotFound("user", name)
        if user.disabled:
            raise InvalidInput(f"user {name} is disabled")
        return user.username
    if kind == "team":
        return find_team(session, name).name
    if name not in policy.ROLES:
        raise InvalidInput(f"unknown role {name!r}: choose one of {', '.join(policy.ROLES)}")
    return name


def add_grant(session: Session, path: str, grantee: str, level: str,
              by: Optional[str] = None) -> tuple[Grant, str]:
    """Create or change a grant; returns it and what happened ("added", "changed from X")."""
    if level not in policy.LEVELS:
        raise InvalidInput(f"unknown level {level!r}: choose one of {', '.join(policy.LEVELS)}")
    state = collection_at(session, path)
    kind, name = parse_grantee(grantee)
    name = check_grantee(session, kind, name)
    if kind == "user" and name == state.path.split("/")[0]:
        raise InvalidInput(f"{name} owns {state.path}: owners need no grant")
    if state.tag == "VADDRESSBOOK" and level in policy.REDACTED_LEVELS:
        raise InvalidInput(f"{level} applies to calendars only: grant read or write on "
                           "an address book")
    if state.path.split("/")[1] in policy.READ_ONLY_BOOKS and level == "write":
        raise InvalidInput(f"{state.path} is written by the CRM only: grant read")
    grant = session.scalar(select(Grant).where(Grant.collection_id == state.id,
                                               Grant.subject_kind == kind, Grant.subject == name))
    if grant is None:
        grant = Grant(collection_id=state.id, subject_kind=kind, subject=name, level=level,
                      created_by=by)
        session.add(grant)
        what = "added"
    elif grant.level == level:
        what = "unchanged"
    else:
        what = f"changed from {grant.level}"
        grant.level = level
    session.flush()
    return grant, what


def revoke_grant(session: Session, path: str, grantee: str) -> Grant:
    state = collection_at(session, path)
    kind, name = parse_grantee(grantee)
    grant = session.scalar(select(Grant).where(Grant.collection_id == state.id,
                                               Grant.subject_kind == kind, Grant.subject == name))
    if grant is None:
        raise NotFound("grant", f"{state.path} to {kind}:{name}")
    session.delete(grant)
    session.flush()
    return grant


def grant_listing(session: Session, path: Optional[str] = None) -> list[dict]:
    stmt = (select(DavCollection.path, Grant.subject_kind, Grant.subject, Grant.level,
                   Grant.created_by, Grant.created_at)
            .join(DavCollection, DavCollection.id == Grant.collection_id)
            .order_by(DavCollection.path, Grant.subject_kind, Grant.subject))
    if path is not None:
        stmt = stmt.where(Grant.collection_id == collection_at(session, path).id)
    return [{"collection": p, "grantee": f"{kind}:{subject}", "level": level,
             "created_by": by, "created_at": at.isoformat(timespec="seconds")}
            for p, kind, subject, level, by, at in session.execute(stmt)]


def access_report(session: Session, path: str) -> list[dict]:
    """Every enabled user who can see the collection, at which level and why."""
    state = collection_at(session, path)
    owner_name, name = state.path.split("/")
    target = Target(load_owner(session, owner_name), name, state.tag)
    grants = grants_on(session, state.id)
    rows = session.execute(select(User.id, User.username, User.role)
                           .where(User.disabled.is_(False)).order_by(User.username)).all()
    teams = teams_of(session, [r.id for r in rows])
    out = []
    for row in rows:
        decision = policy.decide(Subject(row.username, row.role, teams[row.id]), target, grants)
        if decision.level is None:
            continue
        out.append({"user": row.username, "role": row.role, "level": decision.level,
                    "private_items": "full" if decision.full else
                    policy.item_level(decision, "PRIVATE"),
                    "why": "; ".join(decision.reasons)})
    return out
