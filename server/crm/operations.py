"""Operator operations on CRM records, each with all its consequences (address books kept
current, visits re-read), in the caller's transaction. ``crm-admin`` calls one per command;
each returns a one-line summary for the command's audit record."""

from __future__ import annotations

from typing import Optional, Sequence

from sqlalchemy import select

from server.crm import cards, contacts, customers, dav, normalize, visits
from server.crm.errors import InvalidInput
from server.crm.ingest import Ingestion
from server.crm.models import Contact, ContactEmail, Customer, DuplicateCandidate
from server.crm.users import get_user


def add_customer(session, name: str, *, domains: Sequence[str] = (), owner: Optional[str] = None,
                 level: Optional[str] = None, tags: Sequence[str] = (),
                 short_name: Optional[str] = None, industry: Optional[str] = None,
                 region: Optional[str] = None) -> tuple[Customer, str]:
    owner_name = get_user(session, owner).username if owner else None
    customer = customers.add(session, name, domains=domains, owner=owner_name, level=level,
                             tags=tags, short_name=short_name, industry=industry, region=region)
    attached = _attach_by_domain(session, customer)
    summary = f"added customer {customer.name} (id {customer.id})"
    if domains:
        summary += f", domains {', '.join(customers.domains(session, customer.id))}"
    if attached:
        summary += f", {attached} existing contact(s) attached by domain"
    return customer, summary


def _attach_by_domain(session, customer: Customer) -> int:
    """Unattached contacts with an address in the customer's domains join it."""
    wanted = customers.domains(session, customer.id)
    if not wanted:
        return 0
    ids = set()
    for contact_id, address in session.execute(
            select(ContactEmail.contact_id, ContactEmail.email)
            .join(Contact, Contact.id == ContactEmail.contact_id)
            .where(Contact.customer_id.is_(None))):
        if normalize.domain_matches(normalize.domain_of(address), wanted):
            ids.add(contact_id)
    for contact_id in ids:
        session.get(Contact, contact_id).customer_id = customer.id
    session.flush()
    cards.sync(session, ids)
    return len(ids)


def _customer_contacts(session, customer: Customer) -> list[int]:
    return list(session.scalars(select(Contact.id).where(Contact.customer_id == customer.id)))


def transfer_customer(session, ref: str, to_user: str) -> str:
    customer = customers.find(session, ref)
    user = get_user(session, to_user)
    previous = customers.transfer(session, customer, user.username)
    cards.sync(session, _customer_contacts(session, customer))
    return f"customer {customer.name} (id {customer.id}): owner {previous or '-'} -> " \
           f"{user.username}"


def share_customer(session, ref: str, with_user: str, can_edit: bool) -> str:
    customer = customers.find(session, ref)
    user = get_user(session, with_user)
    change = customers.share(session, customer, user.username, can_edit)
    cards.sync(session, _customer_contacts(session, customer))
    return f"customer {customer.name} (id {customer.id}): collaborator {user.username} " \
           f"({'edit' if can_edit else 'view'}) {change}"


def add_contact(session, name: str, *, emails: Sequence[str], phones: Sequence[str],
                title: Optional[str], customer_ref: Optional[str], actor: str,
                threshold: int) -> tuple[Contact, list[contacts.Duplicate], str]:
    customer_id = customers.find(session, customer_ref).id if customer_ref else None
    contact, duplicates = contacts.create(session, name, emails=emails, phones=phones,
                                          title=title, customer_id=customer_id,
                                          source="manual", created_by=actor,
                                          threshold=threshold)
    cards.sync(session, [contact.id])
    summary = f"added contact {contact.name} (id {contact.id})"
    if duplicates:
        summary += "; possible duplicate of " + ", ".join(str(d.other_id) for d in duplicates)
    return contact, duplicates, summary


def accept_contact(session, ref: str, customer_ref: str) -> str:
    contact = contacts.find(session, ref)
    customer = customers.find(session, customer_ref)
    contacts.attach(session, contact, customer.id)
    return f"contact {contact.name} (id {contact.id}) attached to customer {customer.name} " \
           f"(id {customer.id})"


def merge_contacts(session, keep_ref: str, gone_ref: str, actor: str) -> str:
    keep, gone = contacts.find(session, keep_ref), contacts.find(session, gone_ref)
    return contacts.merge(session, keep, gone, actor)


def merge_duplicate(session, candidate_id: int, actor: str) -> str:
    """Merge a candidate pair; the older contact (lower id) is kept."""
    found = contacts.candidate(session, candidate_id)
    keep_id, gone_id = sorted((found.contact_id, found.other_id))
    return f"duplicate {candidate_id}: " + contacts.merge(
        session, session.get(Contact, keep_id), session.get(Contact, gone_id), actor)


def dismiss_duplicate(session, candidate_id: int, actor: str) -> str:
    found: DuplicateCandidate = contacts.candidate(session, candidate_id)
    contacts.dismiss(session, found, actor)
    return f"duplicate {candidate_id} dismissed: contacts {found.contact_id} and " \
           f"{found.other_id} are different people"


def tag_visit(session, visit_ref: str, customer_ref: str) -> str:
    visit = visits.find(session, visit_ref)
    customer = customers.find(session, customer_ref)
    before = visit.customer_id
    visits.tag(session, visit, customer.id)
    return f"visit {visit.id} ({visit.summary!r}) tagged with customer {customer.name} " \
           f"(id {customer.id}), was {before or 'untagged'}"


def reingest(session, ingestion: Ingestion, restored: Sequence[str], actor: str) -> None:
    """CRM effects of objects a trash restore brought back ("/path/href" or "/path/")."""
    for obj in restored:
        path, _, href = obj.strip("/").rpartition("/") if not obj.endswith("/") \
            else (obj.strip("/"), "", "")
        state = dav.get_collection(session, path)
        if state is None or state.tag != "VCALENDAR":
            continue
        items = [dav.get_item(session, state.id, href)] if href else \
            list(dav.iter_items(session, state.id))
        for item in items:
            if item is None:
                raise InvalidInput(f"restored item {obj} is missing")
            ingestion.item_written(session, state.path, item.href, item.text, actor)
