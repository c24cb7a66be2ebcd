"""CRM contacts published back to the calendar clients as plain CardDAV address books.

Each user has two read-only address books, kept by the server as real collections (so
CTags, ETags and sync-collection work exactly as for any other book):

* ``<user>/crm-contacts/``: contacts of the customers the user owns or collaborates on;
* ``<user>/crm-suggested/``: people the user met (visit attendees) who are not attached to a
  customer yet. An operator accepts a suggestion with ``crm-admin contact accept``.

``sync(session, contact_ids)`` reconciles where each contact's vCard should be with where it
is, writing only what changed. It runs in the caller's transaction.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from collections import defaultdict
from typing import Iterable, Optional

import vobject
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from server.crm import customers, dav
from server.crm.models import (Contact, ContactCard, ContactEmail, ContactPhone, Customer,
                               DavCollection, Visit, VisitAttendance, VisitPlacement)

CONTACTS_BOOK = "crm-contacts"
SUGGESTED_BOOK = "crm-suggested"
BOOKS = {
    CONTACTS_BOOK: {"tag": "VADDRESSBOOK", "D:displayname": "Customer contacts",
                    "CR:addressbook-description":
                        "Contacts of your customers, kept by radicale-crm (read-only)"},
    SUGGESTED_BOOK: {"tag": "VADDRESSBOOK", "D:displayname": "Suggested contacts",
                     "CR:addressbook-description":
                         "People you met who are not attached to a customer yet "
                         "(read-only; an administrator accepts them)"},
}
_UTC = dt.timezone.utc
# The span Radicale gives items without a time (vCards): all of time.
TIMESTAMP_MIN = int(dt.datetime.min.replace(tzinfo=_UTC).timestamp())
TIMESTAMP_MAX = int(dt.datetime.max.replace(tzinfo=_UTC).timestamp())
_CJK_NAME = re.compile(r"^[\u3400-\u9fff\uf900-\ufaff]{2,4}$")


def is_crm_book(path: str) -> bool:
    """Whether ``user/book`` (or an item in it) is one of the generated address books."""
    parts = path.strip("/").split("/")
    return len(parts) >= 2 and parts[1] in BOOKS


def href_of(contact_id: int) -> str:
    return f"crm-contact-{contact_id}.vcf"


def etag_of(text: str) -> str:
    return '"%s"' % hashlib.sha256(text.encode()).hexdigest()


def ensure_books(session: Session, user: str) -> dict[str, dav.CollectionState]:
    out = {}
    for book, props in BOOKS.items():
        path = f"{user}/{book}"
        state = dav.get_collection(session, path)
        if state is None:
            dav.ensure_collection(session, user)
            state, _ = dav.create_collection(session, path, props)
        out[book] = state
    return out


def sync(session: Session, contact_ids: Iterable[int]) -> int:
    """Publish the contacts' cards where they belong and remove them elsewhere.
    Returns the number of cards written or removed."""
    ids = sorted(set(contact_ids))
    if not ids:
        return 0
    wanted = _wanted_books(session, ids)
    placed: dict[int, dict[str, int]] = defaultdict(dict)
    for contact_id, path, collection_id in session.execute(
            select(ContactCard.contact_id, DavCollection.path, ContactCard.collection_id)
            .join(DavCollection, DavCollection.id == ContactCard.collection_id)
            .where(ContactCard.contact_id.in_(ids))):
        placed[contact_id][path] = collection_id
    texts = _cards(session, ids)
    books: dict[str, dav.CollectionState] = {}
    changes = 0
    for contact_id in ids:
        href, text = href_of(contact_id), texts.get(contact_id)
        targets = wanted.get(contact_id, set()) if text else set()
        for user, book in sorted(targets):
            path = f"{user}/{book}"
            if path not in books:
                books.update({f"{user}/{b}": s for b, s in ensure_books(session, user).items()})
            state = books[path]
            current = dav.get_item(session, state.id, href)
            if current is None or current.text != text:
                dav.put_item(session, state.id, dav.ItemData(
                    href=href, uid=f"crm-contact-{contact_id}", name="VCARD", component="",
                    text=text, etag=etag_of(text), range_start=TIMESTAMP_MIN,
                    range_end=TIMESTAMP_MAX))
                changes += 1
            if path not in placed[contact_id]:
                session.add(ContactCard(contact_id=contact_id, collection_id=state.id))
        for path, collection_id in placed[contact_id].items():
            if tuple(path.split("/", 1)) in targets:
                continue
            state = dav.get_collection(session, path)
            if state is not None and dav.get_item(session, state.id, href) is not None:
                dav.delete_item(session, state, href, trash=False)
                changes += 1
            session.execute(delete(ContactCard).where(ContactCard.contact_id == contact_id,
                                                      ContactCard.collection_id == collection_id))
    session.flush()
    return changes


def attendance_changed(session: Session, contact_ids: Iterable[int]) -> int:
    """Re-publish after contacts joined or left visits. Only unattached contacts' books
    depend on visits (the Suggested books of the reps who met them); an attached contact's
    books follow its customer, so its card is left alone."""
    ids = set(contact_ids)
    if not ids:
        return 0
    loose = session.scalars(select(Contact.id).where(Contact.id.in_(ids),
                                                     Contact.customer_id.is_(None))).all()
    return sync(session, loose)


def remove(session: Session, contact_id: int) -> None:
    """Take a contact's cards down everywhere (before the contact is deleted)."""
    href = href_of(contact_id)
    for path, in session.execute(select(DavCollection.path).join(
            ContactCard, ContactCard.collection_id == DavCollection.id)
            .where(ContactCard.contact_id == contact_id)):
        state = dav.get_collection(session, path)
        if state is not None and dav.get_item(session, state.id, href) is not None:
            dav.delete_item(session, state, href, trash=False)
    session.execute(delete(ContactCard).where(ContactCard.contact_id == contact_id))


def _wanted_books(session: Session, ids: list[int]) -> dict[int, set[tuple[str, str]]]:
    wanted: dict[int, set[tuple[str, str]]] = defaultdict(set)
    rows = session.execute(select(Contact.id, Contact.customer_id).where(Contact.id.in_(ids))).all()
    by_customer = customers.audience(session, {r.customer_id for r in rows if r.customer_id})
    loose = []
    for contact_id, customer_id in rows:
        if customer_id:
            wanted[contact_id] |= {(user, CONTACTS_BOOK) for user in by_customer[customer_id]}
        else:
            loose.append(contact_id)
    if loose:
        for contact_id, rep in session.execute(
                select(VisitAttendance.contact_id, VisitPlacement.rep).distinct()
                .join(Visit, Visit.id == VisitAttendance.visit_id)
                .join(VisitPlacement, VisitPlacement.visit_id == Visit.id)
                .where(VisitAttendance.contact_id.in_(loose), Visit.deleted_at.is_(None))):
            wanted[contact_id].add((rep, SUGGESTED_BOOK))
    return wanted


def _cards(session: Session, ids: list[int]) -> dict[int, str]:
    emails, phones = defaultdict(list), defaultdict(list)
    for contact_id, address in session.execute(select(ContactEmail.contact_id, ContactEmail.email)
                                               .where(ContactEmail.contact_id.in_(ids))
                                               .order_by(ContactEmail.id)):
        emails[contact_id].append(address)
    for contact_id, number in session.execute(select(ContactPhone.contact_id, ContactPhone.phone)
                                              .where(ContactPhone.contact_id.in_(ids))
                                              .order_by(ContactPhone.id)):
        phones[contact_id].append(number)
    out = {}
    for contact, company in session.execute(
            select(Contact, Customer.name).outerjoin(Customer, Customer.id == Contact.customer_id)
            .where(Contact.id.in_(ids))):
        out[contact.id] = vcard(contact.id, contact.name, contact.title, company,
                                emails[contact.id], phones[contact.id])
    return out


def vcard(contact_id: int, name: str, title: Optional[str], company: Optional[str],
          emails: list[str], phones: list[str]) -> str:
    card = vobject.vCard()
    card.add("uid").value = f"crm-contact-{contact_id}"
    card.add("fn").value = name
    family, given = _split_name(name)
    card.add("n").value = vobject.vcard.Name(family=family, given=given)
    if company:
        card.add("org").value = [company]
    if title:
        card.add("title").value = title
    for address in emails:
        line = card.add("email")
        line.value = address
        line.type_param = "INTERNET"
    for number in phones:
        card.add("tel").value = number
    return card.serialize()


def _split_name(name: str) -> tuple[str, str]:
    if _CJK_NAME.match(name):           # 王小明: family name first
        return name[0], name[1:]
    words = name.split()
    if len(words) < 2:
        return name, ""
    return words[-1], " ".join(words[:-1])
