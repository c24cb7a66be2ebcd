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

from sqlalchemy import (Integer, Row, and_, bindparam, delete, func, insert, literal_column,
                        null, select, union_all)
from sqlalchemy.orm import Session

from server.crm import dav
from server.crm.db import run
from server.crm.redaction import escape_text
from server.crm.models import (Contact, ContactCard, ContactEmail, ContactPhone, Customer,
                               CustomerCollaborator, DavCollection, VisitAttendance,
                               VisitPlacement)

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


def sync(session: Session, contact_ids: Iterable[int], *, refresh: bool = True,
         reconcile: Iterable[int] = ()) -> int:
    """Publish the contacts' cards where they belong and remove them elsewhere. Returns the
    number of cards written or removed.

    ``refresh``: the contacts' own data may have changed, so every card's text is compared.
    Without it only *where* the cards are is reconciled (after attendance changes), and a
    contact already in exactly its books costs nothing more than the look-ups.
    ``reconcile``: more contacts to reconcile that way in the same pass (one set of
    look-ups and one write per book, not two)."""
    given = set(contact_ids)
    refreshed = given if refresh else set()
    ids = sorted(given | set(reconcile))
    if not ids:
        return 0
    rows = _contacts(session, ids)
    wanted, placed = _books_of(session, ids, rows)
    ids = [c for c in ids if c in refreshed or set(placed[c]) != wanted[c]]
    if not ids:
        return 0
    texts = _cards(session, [rows[c] for c in ids if c in rows])
    for contact_id in ids:
        if contact_id not in texts:          # gone: its cards come down everywhere
            wanted[contact_id] = set()
    by_book: dict[str, list[int]] = defaultdict(list)
    for contact_id in ids:
        for path in wanted[contact_id]:
            by_book[path].append(contact_id)
    books, current = _books(session, {path: [href_of(c) for c in members]
                                      for path, members in by_book.items()})
    links = []
    batches: dict[int, list[dav.ItemData]] = {}
    for path in sorted(by_book):               # the books' revisions are bumped in this order
        state = books[path]
        batch = batches[state.id] = []
        for contact_id in by_book[path]:
            href, text = href_of(contact_id), texts[contact_id]
            found = current[path].get(href)
            if found is None or found.text != text:
                batch.append(dav.ItemData(
                    href=href, uid=f"crm-contact-{contact_id}", name="VCARD", component="",
                    text=text, etag=etag_of(text), range_start=TIMESTAMP_MIN,
                    range_end=TIMESTAMP_MAX))
            if path not in placed[contact_id]:
                links.append({"contact_id": contact_id, "collection_id": state.id})
    changes = dav.put_items_in(session, batches, {books[path].id: hrefs
                                                  for path, hrefs in current.items()})
    if links:
        run(session, _INSERT_CARD_LINKS, links)
    for contact_id in ids:
        href = href_of(contact_id)
        for path, collection_id in placed[contact_id].items():
            if path in wanted[contact_id]:
                continue
            state = dav.get_collection(session, path)
            if state is not None and dav.get_item(session, state.id, href) is not None:
                dav.delete_item(session, state, href, trash=False)
                changes += 1
            session.execute(delete(ContactCard).where(ContactCard.contact_id == contact_id,
                                                      ContactCard.collection_id == collection_id))
    return changes


def attendance_changed(session: Session, contact_ids: Iterable[int]) -> int:
    """Re-publish after contacts joined or left visits. Only unattached contacts' books
    depend on visits (the Suggested books of the reps who met them); an attached contact's
    books follow its customer, so its card is left alone."""
    ids = set(contact_ids)
    if not ids:
        return 0
    loose = run(session, _LOOSE, {"ids": sorted(ids)}).scalars().all()
    return sync(session, loose, refresh=False)


def met(session: Session, contact_ids: Iterable[int], reps: Iterable[str],
        created: Iterable[int] = ()) -> int:
    """These contacts attend a visit of these reps (newly placed, or they just joined it).
    That can only add the reps' Suggested books to where a loose contact's card belongs, so
    a card already in all of them is left alone; the others are reconciled. (Reconciling
    everyone read every visit each contact ever attended, on every PUT: a free-mail
    contact seen often made every later PUT slower.) ``created``: contacts just made
    (from this visit's attendees), whose cards are published in the same pass."""
    ids, books = set(contact_ids), sorted(f"{rep}/{SUGGESTED_BOOK}" for rep in set(reps))
    # The loose ones among them, each with the number of those books holding its card.
    present = dict(run(session, _LOOSE_IN_BOOKS, {"ids": sorted(ids), "paths": books}).all()
                   ) if ids else {}
    return sync(session, created,
                reconcile=[c for c, n in present.items() if n < len(books)])


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


_IDS = bindparam("ids", expanding=True)
_CONTACTS = (select(Contact.id, Contact.name, Contact.title, Contact.customer_id,
                    Customer.name.label("company"))
             .outerjoin(Customer, Customer.id == Contact.customer_id).where(Contact.id.in_(_IDS)))
_LOOSE = select(Contact.id).where(Contact.id.in_(_IDS), Contact.customer_id.is_(None))
_NO_ID = null().cast(Integer)
# Where the contacts' cards belong and where they are, in one statement (one round trip on
# PostgreSQL, not three): "contacts" rows name the users who see an attached contact's
# customer (its owner and collaborators: their Customer contacts books), "suggested" rows
# the reps who met a loose contact (their Suggested books), "placed" rows the books that
# hold a card now. A visit with a placement is live (the last placement gone, it goes to the
# trash), so no join to crm_visits: with it, PostgreSQL on stale statistics scanned every
# visit.
_BOOKS_OF = union_all(
    select(Customer.id, literal_column("'contacts'").label("kind"), Customer.owner.label("name"),
           _NO_ID.label("collection_id")).where(Customer.id.in_(bindparam("customers",
                                                                           expanding=True))),
    select(CustomerCollaborator.customer_id, literal_column("'contacts'"),
           CustomerCollaborator.username, _NO_ID)
    .where(CustomerCollaborator.customer_id.in_(bindparam("customers", expanding=True))),
    select(VisitAttendance.contact_id, literal_column("'suggested'"), VisitPlacement.rep,
           _NO_ID).distinct()
    .join(VisitPlacement, VisitPlacement.visit_id == VisitAttendance.visit_id)
    .where(VisitAttendance.contact_id.in_(bindparam("loose", expanding=True))),
    select(ContactCard.contact_id, literal_column("'placed'"), DavCollection.path,
           ContactCard.collection_id)
    .join(DavCollection, DavCollection.id == ContactCard.collection_id)
    .where(ContactCard.contact_id.in_(_IDS)))
_INSERT_CARD_LINKS = insert(ContactCard.__table__)
_LOOSE_IN_BOOKS = (select(Contact.id, func.count(DavCollection.id))
                   .outerjoin(ContactCard, ContactCard.contact_id == Contact.id)
                   .outerjoin(DavCollection, and_(
                       DavCollection.id == ContactCard.collection_id,
                       DavCollection.path.in_(bindparam("paths", expanding=True))))
                   .where(Contact.id.in_(_IDS), Contact.customer_id.is_(None))
                   .group_by(Contact.id))
# The cards' e-mail addresses and phone numbers, each in the order they were added, in one
# statement (one round trip on PostgreSQL, not two).
_EMAILS_AND_PHONES = union_all(
    select(ContactEmail.contact_id, literal_column("'email'").label("kind"),
           ContactEmail.email.label("value"), ContactEmail.id)
    .where(ContactEmail.contact_id.in_(_IDS)),
    select(ContactPhone.contact_id, literal_column("'phone'"), ContactPhone.phone,
           ContactPhone.id).where(ContactPhone.contact_id.in_(_IDS))).order_by("kind", "id")


def _contacts(session: Session, ids: list[int]) -> dict[int, Row]:
    """What a card is made of, and where it goes, for the contacts that exist."""
    return {row.id: row for row in run(session, _CONTACTS, {"ids": ids})}


def _books_of(session: Session, ids: list[int], rows: dict[int, Row]
              ) -> tuple[dict[int, set[str]], dict[int, dict[str, int]]]:
    """Contact → the paths of the books its card belongs in, and contact → the books it
    is published in now (path → collection id)."""
    wanted: dict[int, set[str]] = {i: set() for i in ids}
    placed: dict[int, dict[str, int]] = {i: {} for i in ids}
    audience: dict[int, set[str]] = defaultdict(set)
    for key, kind, name, collection_id in run(session, _BOOKS_OF, {
            "ids": ids, "customers": sorted({r.customer_id for r in rows.values()
                                             if r.customer_id}),
            "loose": [r.id for r in rows.values() if not r.customer_id]}):
        if kind == "contacts":
            if name:
                audience[key].add(f"{name}/{CONTACTS_BOOK}")
        elif kind == "suggested":
            wanted[key].add(f"{name}/{SUGGESTED_BOOK}")
        else:
            placed[key][name] = collection_id
    for row in rows.values():
        if row.customer_id:
            wanted[row.id] |= audience[row.customer_id]
    return wanted, placed


def _books(session: Session, wanted: dict[str, list[str]]
           ) -> tuple[dict[str, dav.CollectionState], dict[str, dict[str, dav.StoredItem]]]:
    """The CRM books at the paths of ``wanted`` (path → card hrefs), created (with their
    owner's other one) where missing, and the cards found at those hrefs in each."""
    found, cards = dav.get_collections_and_items(session, wanted)
    for user in sorted({p.split("/", 1)[0] for p in set(wanted) - set(found)}):
        found.update({f"{user}/{book}": state
                      for book, state in ensure_books(session, user).items()})
    return found, {path: cards.get(path, {}) for path in wanted}


def _cards(session: Session, rows: list[Row]) -> dict[int, str]:
    ids = [row.id for row in rows]
    emails, phones = defaultdict(list), defaultdict(list)
    if ids:
        for contact_id, kind, value, _ in run(session, _EMAILS_AND_PHONES, {"ids": ids}):
            (emails if kind == "email" else phones)[contact_id].append(value)
    return {row.id: vcard(row.id, row.name, row.title, row.company, emails[row.id],
                          phones[row.id]) for row in rows}


def vcard(contact_id: int, name: str, title: Optional[str], company: Optional[str],
          emails: list[str], phones: list[str]) -> str:
    """The contact's vCard 3.0, byte for byte what ``vobject`` serialises for it (the
    published cards' ETags stay as they were), written directly: vobject took half a
    millisecond per card, and ingestion publishes several cards per PUT."""
    family, given = _split_name(name)
    lines = [("UID", f"crm-contact-{contact_id}")]      # vobject: VERSION and UID first,
    lines += [("EMAIL;TYPE=INTERNET", escape_text(a)) for a in emails]    # then by name
    lines += [("FN", escape_text(name)), ("N", f"{escape_text(family)};{escape_text(given)};;;")]
    if company:
        lines.append(("ORG", escape_text(company)))
    lines += [("TEL", escape_text(n)) for n in phones]
    if title:
        lines.append(("TITLE", escape_text(title)))
    out = ["BEGIN:VCARD\r\n", "VERSION:3.0\r\n"]
    out += [_fold(f"{key}:{value}") for key, value in lines]
    out.append("END:VCARD\r\n")
    return "".join(out)


def _fold(line: str) -> str:
    """vobject's folding (``base.foldOneLine``): lines shorter than 75 characters as they
    are, longer ones cut before the byte that would pass 75, never inside a character."""
    if len(line) < 75:
        return line + "\r\n"
    out, used = [], 0
    for ch in line:
        size = len(ch.encode("utf-8"))
        if used + size > 75:
            out.append("\r\n ")
            used = 1
        out.append(ch)
        used += size
    out.append("\r\n")
    return "".join(out)


def _split_name(name: str) -> tuple[str, str]:
    if _CJK_NAME.match(name):           # 王小明: family name first
        return name[0], name[1:]
    words = name.split()
    if len(words) < 2:
        return name, ""
    return words[-1], " ".join(words[:-1])
