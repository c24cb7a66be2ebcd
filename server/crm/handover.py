"""Handing a user's work to another user (offboarding), in one transaction.

What moves from ``user`` to ``to``:

* every calendar and address book in ``user``'s home (the CRM's generated address books
  excepted: the server rebuilds those), whole, with its sync identity, under
  ``to``'s home; a name ``to`` already uses gets ``-from-<user>`` appended;
* the visits of those calendars that have not started yet: ``to`` becomes their rep (past
  visits keep the rep who made them: that is the CRM's history);
* the customers ``user`` owns;
* the grants ``user`` was given (a grant ``to`` already has on the same collection keeps the
  higher level; a grant on a collection ``to`` now owns is dropped). Grants on the moved
  collections stay with them.

:func:`plan` says what will happen without changing anything; :func:`apply` does it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import or_, select, update

from server.crm import cards, customers, dav
from server.crm.errors import InvalidInput
from server.crm.models import (Contact, Customer, DavCollection, Grant, Visit,
                               VisitAttendance, VisitPlacement, utcnow)
from server.crm.users import get_user
from server.rights import policy


@dataclass
class Plan:
    user: str
    to: str
    collections: list[tuple[str, str]] = field(default_factory=list)   # (old path, new path)
    future_visits: list[int] = field(default_factory=list)
    customers: list[tuple[int, str]] = field(default_factory=list)
    # (grant id, collection path, action: "move" / "merge" / "drop", the level it ends at)
    grants: list[tuple[int, str, str, str]] = field(default_factory=list)

    def lines(self) -> list[str]:
        out = [f"hand over {self.user} -> {self.to}:"]
        out += [f"  move collection {old} -> {new}" for old, new in self.collections]
        out.append(f"  {len(self.future_visits)} future visit(s) get rep {self.to}")
        out += [f"  customer {name} (id {cid}): owner -> {self.to}"
                for cid, name in self.customers]
        out += [f"  grant on {path}: {self._grant_line(action, level)}"
                for _gid, path, action, level in self.grants]
        if len(out) == 2 and not self.future_visits:
            out.append("  (nothing to hand over)")
        return out

    def _grant_line(self, action: str, level: str) -> str:
        if action == "drop":
            return f"dropped ({self.to} owns it)"
        if action == "merge":
            return f"merged with {self.to}'s grant at {level}"
        return f"{level} -> user:{self.to}"

    def summary(self) -> str:
        return (f"handed over {self.user} to {self.to}: {len(self.collections)} collection(s), "
                f"{len(self.future_visits)} future visit(s), {len(self.customers)} "
                f"customer(s), {len(self.grants)} grant(s)")


def plan(session, user_name: str, to_name: str) -> Plan:
    user, to = get_user(session, user_name), get_user(session, to_name)
    if user.id == to.id:
        raise InvalidInput("cannot hand a user's work over to the same user")
    if to.disabled:
        raise InvalidInput(f"user {to.username} is disabled: hand over to an active user")
    if to.role not in policy.OWNS_COLLECTIONS:
        raise InvalidInput(f"user {to.username} has role {to.role}, which owns no calendars "
                           "or customers: choose an admin, manager or rep")
    result = Plan(user.username, to.username)
    taken = set(session.scalars(select(DavCollection.path)
                                .where(DavCollection.parent_path == to.username)))
    moved_paths = []
    for path in session.scalars(select(DavCollection.path).where(
            DavCollection.parent_path == user.username).order_by(DavCollection.path)):
        name = path.split("/", 1)[1]
        if name in policy.READ_ONLY_BOOKS:
            continue
        new = f"{to.username}/{name}"
        suffix = 1
        while new in taken:
            new = f"{to.username}/{name}-from-{user.username}" + (f"-{suffix}" if suffix > 1
                                                                   else "")
            suffix += 1
        taken.add(new)
        result.collections.append((path, new))
        moved_paths.append(path)
    if moved_paths:
        now = utcnow()
        result.future_visits = sorted(set(session.scalars(
            select(VisitPlacement.visit_id).join(Visit, Visit.id == VisitPlacement.visit_id)
            .where(VisitPlacement.collection_path.in_(moved_paths), Visit.deleted_at.is_(None),
                   or_(Visit.start.is_(None), Visit.start >= now)))))
    result.customers = [(c.id, c.name) for c in session.scalars(
        select(Customer).where(Customer.owner == user.username).order_by(Customer.id))]
    held = {gid: level for gid, level in session.execute(
        select(Grant.collection_id, Grant.level).where(Grant.subject_kind == "user",
                                                       Grant.subject == to.username))}
    for grant, path in session.execute(
            select(Grant, DavCollection.path).join(DavCollection,
                                                   DavCollection.id == Grant.collection_id)
            .where(Grant.subject_kind == "user", Grant.subject == user.username)
            .order_by(DavCollection.path)):
        if path.split("/", 1)[0] == to.username or path in moved_paths:
            action, level = "drop", grant.level
        elif grant.collection_id in held:
            action = "merge"
            level = max(grant.level, held[grant.collection_id], key=policy.rank)
        else:
            action, level = "move", grant.level
        result.grants.append((grant.id, path, action, level))
    return result


def apply(session, result: Plan) -> None:
    to = result.to
    for old, new in result.collections:
        session.execute(update(DavCollection).where(DavCollection.path == old)
                        .values(path=new, parent_path=to, owner=to))
        prefix = old + "/"
        for child_id, child_path in session.execute(
                select(DavCollection.id, DavCollection.path)
                .where(DavCollection.path.startswith(prefix, autoescape=True))).all():
            moved = new + child_path[len(old):]
            session.execute(update(DavCollection).where(DavCollection.id == child_id).values(
                path=moved, parent_path=dav.parent_of(moved), owner=to))
        session.execute(update(VisitPlacement).where(VisitPlacement.collection_path == old)
                        .values(collection_path=new))
    if result.future_visits:
        session.execute(update(VisitPlacement).where(
            VisitPlacement.visit_id.in_(result.future_visits),
            VisitPlacement.collection_path.in_([new for _old, new in result.collections]))
            .values(rep=to))
    touched: set[int] = set()
    for customer_id, _name in result.customers:
        customers.transfer(session, session.get(Customer, customer_id), to)
    if result.customers:
        touched |= set(session.scalars(select(Contact.id).where(
            Contact.customer_id.in_([cid for cid, _ in result.customers]))))
    if result.future_visits:
        touched |= set(session.scalars(select(VisitAttendance.contact_id).where(
            VisitAttendance.visit_id.in_(result.future_visits))))
    for grant_id, _path, action, level in result.grants:
        grant = session.get(Grant, grant_id)
        if action == "move":
            grant.subject = to
            continue
        if action == "merge":
            session.scalar(select(Grant).where(
                Grant.collection_id == grant.collection_id, Grant.subject_kind == "user",
                Grant.subject == to)).level = level
        session.delete(grant)
    session.flush()
    if touched:
        cards.sync(session, touched)
