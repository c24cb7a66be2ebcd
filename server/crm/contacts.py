"""Contacts: found by e-mail, created from attendees, possible duplicates recorded for review,
merged only on an operator's command."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Callable, Iterable, Optional, Sequence

from rapidfuzz import fuzz, process
from sqlalchemy import bindparam, delete, func, insert, or_, select, update
from sqlalchemy.orm import Session

from server.crm import cards, normalize
from server.crm.db import run
from server.crm.errors import AlreadyExists, InvalidInput, NotFound
from server.crm.events import Person
from server.crm.models import (Contact, ContactCard, ContactEmail, ContactKey, ContactPhone,
                               Customer, DuplicateCandidate, VisitAttendance, utcnow)

SOURCES = ("attendee", "import", "manual")
_MAX_CANDIDATES = 200


@dataclass(frozen=True)
class Duplicate:
    contact_id: int
    other_id: int
    score: int
    reason: str


# --- finding and creating ----------------------------------------------------------------

_BY_EMAILS = select(ContactEmail.email, ContactEmail.contact_id).where(
    ContactEmail.email.in_(bindparam("emails", expanding=True)))


def by_emails(session: Session, addresses: Iterable[str]) -> dict[str, int]:
    wanted = {a.lower() for a in addresses}
    if not wanted:
        return {}
    return dict(run(session, _BY_EMAILS, {"emails": sorted(wanted)}).all())


def customers_of(session: Session, contact_ids: Iterable[int]) -> dict[int, Optional[int]]:
    ids = set(contact_ids)
    if not ids:
        return {}
    return dict(session.execute(select(Contact.id, Contact.customer_id)
                                .where(Contact.id.in_(ids))).all())


def create(session: Session, name: str, *, emails: Sequence[str] = (),
           phones: Sequence[str] = (), title: Optional[str] = None,
           customer_id: Optional[int] = None, source: str = "manual",
           created_by: Optional[str] = None, threshold: int = 80
           ) -> tuple[Contact, list[Duplicate]]:
    """A new contact and the possible duplicates it has (recorded, not merged)."""
    name = " ".join((name or "").split())[:255]
    if not name:
        raise InvalidInput("a contact needs a name")
    if source not in SOURCES:
        raise InvalidInput(f"source must be one of {', '.join(SOURCES)}")
    clean_emails = []
    for address in emails:
        clean = normalize.email(address)
        if clean is None:
            raise InvalidInput(f"{address!r} is not an e-mail address")
        clean_emails.append(clean)
    taken = by_emails(session, clean_emails)
    if taken:
        address, holder = next(iter(taken.items()))
        raise AlreadyExists("e-mail address", f"{address} (contact {holder})")
    contact = Contact(name=name, normalized_name=normalize.person_name(name), title=title,
                      customer_id=customer_id, source=source, created_by=created_by)
    session.add(contact)
    session.flush()
    if clean_emails:
        session.execute(insert(ContactEmail), [{"contact_id": contact.id, "email": e}
                                               for e in dict.fromkeys(clean_emails)])
    numbers = [n for n in (normalize.phone(p) for p in phones) if n]
    if numbers:
        session.execute(insert(ContactPhone), [{"contact_id": contact.id, "phone": n}
                                               for n in dict.fromkeys(numbers)])
    _index_keys(session, contact.id, contact.normalized_name)
    return contact, record_duplicates(session, contact.id, contact.normalized_name, numbers,
                                      threshold)


@dataclass(frozen=True)
class NewContact:
    id: int
    name: str
    customer_id: Optional[int]


_INSERT_CONTACTS = insert(Contact.__table__).returning(Contact.__table__.c.id,
                                                       sort_by_parameter_order=True)
_INSERT_EMAILS = insert(ContactEmail.__table__)
_INSERT_KEYS = insert(ContactKey.__table__)


def from_attendees(session: Session, people: Sequence[Person],
                   customer_of: Callable[[str], Optional[int]], created_by: Optional[str],
                   threshold: int) -> list[tuple[NewContact, list[Duplicate]]]:
    """New contacts for attendees the caller found unknown by e-mail (in this transaction),
    inserted together: a handful of statements however many there are."""
    people = list({p.email: p for p in people}.values())
    if not people:
        return []
    now = utcnow()
    rows = []
    for person in people:
        name = person.name if person.name and normalize.email(person.name) is None \
            else normalize.display_name_from_email(person.email)
        name = " ".join(name.split())[:255] or person.email[:255]
        rows.append(dict(name=name, normalized_name=normalize.person_name(name), title=None,
                         customer_id=customer_of(person.email), source="attendee",
                         created_by=created_by, created_at=now, updated_at=now))
    ids = run(session, _INSERT_CONTACTS, rows).scalars().all()
    made = [NewContact(i, r["name"], r["customer_id"]) for i, r in zip(ids, rows)]
    run(session, _INSERT_EMAILS, [{"contact_id": c.id, "email": p.email}
                                  for c, p in zip(made, people)])
    normalized = {c.id: r["normalized_name"] for c, r in zip(made, rows)}
    keys = [{"key": k, "contact_id": c.id} for c in made
            for k in sorted(normalize.keys(normalized[c.id]))]
    if keys:
        run(session, _INSERT_KEYS, keys)
    out, pairs, fresh = [], set(), []
    for contact in made:
        found = [d for d in _similar(session, contact.id, normalized[contact.id], (), threshold)
                 if (d.other_id, d.contact_id) not in pairs]    # A~B and B~A: once
        pairs.update((d.contact_id, d.other_id) for d in found)
        fresh += found
        out.append((contact, found))
    _insert_duplicates(session, fresh)
    return out


def _index_keys(session: Session, contact_id: int, normalized: str) -> None:
    words = normalize.keys(normalized)
    if words:
        session.execute(insert(ContactKey), [{"key": k, "contact_id": contact_id}
                                             for k in sorted(words)])


def record_duplicates(session: Session, contact_id: int, normalized: str,
                      phones: Sequence[str], threshold: int) -> list[Duplicate]:
    """Record the contact's possible duplicates not recorded yet; returns those."""
    found = _similar(session, contact_id, normalized, phones, threshold)
    if not found:
        return []
    existing = set(session.execute(select(DuplicateCandidate.contact_id,
                                          DuplicateCandidate.other_id).where(or_(
        DuplicateCandidate.contact_id == contact_id,
        DuplicateCandidate.other_id == contact_id))).all())
    fresh = [d for d in found if (d.contact_id, d.other_id) not in existing
             and (d.other_id, d.contact_id) not in existing]
    _insert_duplicates(session, fresh)
    return fresh


# Most shared name keys first, so the cut never drops the closest names.
_SIMILAR_NAMES = select(Contact.id, Contact.normalized_name).where(Contact.id.in_(
    select(ContactKey.contact_id)
    .where(ContactKey.key.in_(bindparam("keys", expanding=True)),
           ContactKey.contact_id != bindparam("me"))
    .group_by(ContactKey.contact_id)
    .order_by(func.count().desc(), ContactKey.contact_id).limit(_MAX_CANDIDATES)))
_INSERT_DUPLICATES = insert(DuplicateCandidate.__table__)


def _similar(session: Session, contact_id: int, normalized: str, phones: Sequence[str],
             threshold: int) -> list[Duplicate]:
    """Contacts with a similar name (blocked by name keys, then scored) or the same phone."""
    found: dict[int, Duplicate] = {}
    words = normalize.keys(normalized)
    if words:
        rows = run(session, _SIMILAR_NAMES, {"keys": sorted(words), "me": contact_id}).all()
        # Scored in one call (a third of the time of a call per name); a score rounding up
        # to the threshold counts, as it always did.
        scored = process.extract(normalized, [name for _, name in rows],
                                 scorer=fuzz.token_sort_ratio, score_cutoff=threshold - 0.5,
                                 limit=None)
        for _, raw, index in sorted(scored, key=lambda hit: hit[2]):
            score = int(round(raw))
            if score >= threshold:
                found[rows[index][0]] = Duplicate(contact_id, rows[index][0], score, "name")
    if phones:
        for other_id, in session.execute(select(ContactPhone.contact_id).distinct().where(
                ContactPhone.phone.in_(phones), ContactPhone.contact_id != contact_id)):
            found[other_id] = Duplicate(contact_id, other_id, 100, "phone")
    return list(found.values())


def _insert_duplicates(session: Session, found: Sequence[Duplicate]) -> None:
    if found:
        now = utcnow()
        run(session, _INSERT_DUPLICATES, [dict(
            contact_id=d.contact_id, other_id=d.other_id, score=d.score, reason=d.reason,
            status="open", created_at=now) for d in found])


def known_customer(session: Session, contact_ids: Sequence[int]) -> Optional[tuple[int, int]]:
    """The customer most of these contacts belong to: (customer id, share in percent), or
    None when none has one or two customers tie."""
    counts = Counter(c for c in customers_of(session, contact_ids).values() if c)
    if not counts:
        return None
    (best, n), *rest = counts.most_common()
    if rest and rest[0][1] == n:
        return None
    return best, int(round(100 * n / len(contact_ids)))


# --- operator commands -------------------------------------------------------------------

def find(session: Session, ref: str) -> Contact:
    """By id or e-mail address."""
    text = str(ref).strip()
    if text.isdigit():
        found = session.get(Contact, int(text))
    else:
        contact_id = by_emails(session, [text]).get(text.lower())
        found = session.get(Contact, contact_id) if contact_id else None
    if found is None:
        raise NotFound("contact", text)
    return found


def emails_of(session: Session, contact_id: int) -> list[str]:
    return list(session.scalars(select(ContactEmail.email).where(
        ContactEmail.contact_id == contact_id).order_by(ContactEmail.id)))


def phones_of(session: Session, contact_id: int) -> list[str]:
    return list(session.scalars(select(ContactPhone.phone).where(
        ContactPhone.contact_id == contact_id).order_by(ContactPhone.id)))


def listing(session: Session, customer_id: Optional[int] = None, unattached: bool = False,
            limit: int = 1000) -> list[tuple[Contact, Optional[str]]]:
    stmt = select(Contact, Customer.name).outerjoin(
        Customer, Customer.id == Contact.customer_id).order_by(Contact.name, Contact.id)
    if customer_id is not None:
        stmt = stmt.where(Contact.customer_id == customer_id)
    if unattached:
        stmt = stmt.where(Contact.customer_id.is_(None))
    return [(c, n) for c, n in session.execute(stmt.limit(limit))]


def attach(session: Session, contact: Contact, customer_id: Optional[int]) -> None:
    """Attach to a customer (accepting a suggestion), or detach with None."""
    contact.customer_id = customer_id
    contact.updated_at = utcnow()
    session.flush()
    cards.sync(session, [contact.id])


def merge(session: Session, keep: Contact, gone: Contact, actor: Optional[str]) -> str:
    """Fold ``gone`` into ``keep``: addresses, phones, visits; ``gone`` is deleted.
    Returns a summary of what moved."""
    if keep.id == gone.id:
        raise InvalidInput("a contact cannot be merged into itself")
    moved_emails = session.execute(update(ContactEmail).where(
        ContactEmail.contact_id == gone.id).values(contact_id=keep.id)).rowcount
    mine = set(phones_of(session, keep.id))
    session.execute(delete(ContactPhone).where(ContactPhone.contact_id == gone.id,
                                               ContactPhone.phone.in_(mine)))
    session.execute(update(ContactPhone).where(ContactPhone.contact_id == gone.id)
                    .values(contact_id=keep.id))
    visits_kept = select(VisitAttendance.visit_id).where(VisitAttendance.contact_id == keep.id)
    session.execute(delete(VisitAttendance).where(VisitAttendance.contact_id == gone.id,
                                                  VisitAttendance.visit_id.in_(visits_kept)))
    moved_visits = session.execute(update(VisitAttendance).where(
        VisitAttendance.contact_id == gone.id).values(contact_id=keep.id)).rowcount
    if keep.customer_id is None and gone.customer_id is not None:
        keep.customer_id = gone.customer_id
    keep.title = keep.title or gone.title
    # Candidate rows naming the merged contact go with it; the audit keeps the story.
    session.execute(delete(DuplicateCandidate).where(or_(
        DuplicateCandidate.contact_id == gone.id, DuplicateCandidate.other_id == gone.id)))
    cards.remove(session, gone.id)
    summary = (f"merged contact {gone.id} ({gone.name}) into {keep.id} ({keep.name}): "
               f"{moved_emails} e-mail address(es), {moved_visits} visit(s) moved")
    session.delete(gone)
    keep.updated_at = utcnow()
    session.flush()
    cards.sync(session, [keep.id])
    return summary


def duplicates(session: Session, status: str = "open") -> list[tuple[DuplicateCandidate, str, str]]:
    a, b = Contact.__table__.alias("a"), Contact.__table__.alias("b")
    rows = session.execute(select(DuplicateCandidate, a.c.name, b.c.name)
                           .join(a, a.c.id == DuplicateCandidate.contact_id)
                           .join(b, b.c.id == DuplicateCandidate.other_id)
                           .where(DuplicateCandidate.status == status)
                           .order_by(DuplicateCandidate.score.desc(), DuplicateCandidate.id))
    return [(d, x, y) for d, x, y in rows]


def candidate(session: Session, candidate_id: int) -> DuplicateCandidate:
    found = session.get(DuplicateCandidate, candidate_id)
    if found is None:
        raise NotFound("duplicate candidate", str(candidate_id))
    if found.status != "open":
        raise InvalidInput(f"duplicate candidate {candidate_id} is already {found.status}")
    return found


def dismiss(session: Session, found: DuplicateCandidate, actor: Optional[str]) -> None:
    found.status, found.resolved_by, found.resolved_at = "dismissed", actor, utcnow()
    session.flush()


def count_cards(session: Session, contact_id: int) -> int:
    return session.scalar(select(func.count()).select_from(ContactCard)
                          .where(ContactCard.contact_id == contact_id)) or 0
