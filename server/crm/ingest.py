"""CRM ingestion: what a calendar write means for contacts, customers and visits.

Called by the storage plugin's hooks inside the write's own transaction (so a failure here
rolls the write back), and by ``crm-admin trash restore``. Every CRM record it changes is
audited in the calendar owner's stream, beside the DAV change that caused it.

The rules (see docs/crm.md):
1. People: ATTENDEE and ORGANIZER of every VEVENT of the object. Addresses in the internal
   domains or belonging to a user are colleagues; rooms and resources are skipped; everyone
   else is an external participant and becomes (or is found as) a contact by e-mail.
2. Customer, first that applies: ``X-CRM-CUSTOMER`` or a ``CATEGORIES`` value naming one;
   the external participants' e-mail domains (free-mail excluded); the customer most of the
   known participants belong to; a fuzzy match of SUMMARY and LOCATION with a clear margin.
3. A new contact whose own domain is a customer's is attached to it; others wait in their
   rep's "Suggested contacts" until an operator accepts them.
4. An event with an external participant or a customer is a visit, unless it is
   ``CLASS:PRIVATE``; otherwise any visit it was is taken out of this calendar.
5. An event with more than ``crm_max_attendees`` external participants (a webinar, a mass
   invitation) is stored as sent but is no visit and makes no contacts: matching each of
   10,000 attendees against the contacts took minutes inside the write transaction.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from typing import Any, Optional

from sqlalchemy import Integer, bindparam, func, literal_column, null, select, union_all
from sqlalchemy.orm import Session

from server.crm import audit, cards, contacts, customers, events, normalize, visits
from server.crm.customers import NO_MATCH, Match
from server.crm.db import run
from server.crm.events import EventFacts, Person
from server.crm.models import ContactEmail, CustomerDomain, User, utcnow
from server.crm.settings import CrmSettings

_SKIPPED_CUTYPES = {"ROOM", "RESOURCE"}
_EMAILS = bindparam("emails", expanding=True)
# What an ingesting PUT asks first about its participants, in one statement (on PostgreSQL
# one round trip, not three): which addresses are users' (colleagues, not contacts), which
# are known contacts', and which of their e-mail domains or parent domains are customers'.
_LOOK_UP = union_all(
    select(literal_column("'user'").label("kind"), func.lower(User.email).label("key"),
           null().cast(Integer).label("id")).where(func.lower(User.email).in_(_EMAILS)),
    select(literal_column("'contact'"), ContactEmail.email, ContactEmail.contact_id)
    .where(ContactEmail.email.in_(_EMAILS)),
    select(literal_column("'domain'"), CustomerDomain.domain, CustomerDomain.customer_id)
    .where(CustomerDomain.domain.in_(bindparam("domains", expanding=True))))


class Ingestion:
    def __init__(self, settings: CrmSettings) -> None:
        self.settings = settings

    # --- entry points (one per storage change) -------------------------------------------
    def item_written(self, session: Session, collection_path: str, href: str, text: str,
                     actor: Optional[str], client: Optional[str] = None,
                     parsed: Any = None) -> None:
        if cards.is_crm_book(collection_path):
            return
        notes: list[audit.Note] = []
        calendar = parsed if parsed is not None else _parse(text)
        horizon = utcnow() + dt.timedelta(days=self.settings.recurrence_horizon_days)
        facts = events.facts(calendar, horizon, self.settings.max_occurrences) \
            if calendar is not None and calendar.name == "VCALENDAR" else None
        rep = _owner(collection_path)
        if facts is None or not facts.uid or facts.klass == "PRIVATE":
            why = "private" if facts is not None and facts.klass == "PRIVATE" else "no event"
            self._unplace(session, collection_path, href, f"no longer a visit ({why})", notes)
        else:
            self._ingest(session, facts, collection_path, href, rep, actor, notes)
        self._audit(session, rep, notes, actor, client)

    def item_removed(self, session: Session, collection_path: str, href: str,
                     actor: Optional[str], client: Optional[str] = None) -> None:
        notes: list[audit.Note] = []
        self._unplace(session, collection_path, href, "event deleted", notes)
        self._audit(session, _owner(collection_path), notes, actor, client)

    def item_moved(self, session: Session, old_path: str, old_href: str, new_path: str,
                   new_href: str, actor: Optional[str], client: Optional[str] = None) -> None:
        visit_id = visits.move(session, old_path, old_href, new_path, new_href,
                               _owner(new_path))
        if visit_id is None:
            return
        cards.attendance_changed(session, visits.attendees(session, visit_id))
        note = audit.Note("visit.move", f"crm:visit/{visit_id}", actor, client,
                          summary=f"event moved from /{old_path}/{old_href} to "
                                  f"/{new_path}/{new_href}")
        for owner in dict.fromkeys([_owner(old_path), _owner(new_path)]):
            self._audit(session, owner, [note], actor, client)

    def collection_removed(self, session: Session, path: str, actor: Optional[str],
                           client: Optional[str] = None) -> None:
        notes: list[audit.Note] = []
        for collection_path, href in visits.placements_below(session, path):
            self._unplace(session, collection_path, href, f"calendar /{path}/ deleted", notes)
        self._audit(session, _owner(path), notes, actor, client)

    def principal_created(self, session: Session, user: str) -> None:
        """A new user's home: their CRM address books exist from the first look."""
        if user and "/" not in user:
            cards.ensure_books(session, user)

    # --- the rules -----------------------------------------------------------------------
    def _ingest(self, session: Session, facts: EventFacts, collection_path: str, href: str,
                rep: str, actor: Optional[str], notes: list[audit.Note]) -> None:
        people = self._external_people(facts)
        if people is None:
            self._unplace(session, collection_path, href,
                          f"not a visit: more than {self.settings.max_attendees} external "
                          f"attendees (crm_max_attendees)", notes)
            return
        people, known, domains = _look_up(session, people)
        match = self._match_customer(session, facts, people, known, domains)
        if not people and match.customer_id is None:
            self._unplace(session, collection_path, href,
                          "no longer a visit (no external attendee, no customer)", notes)
            return
        created = self._create_contacts(session, people, known, domains, actor, notes)
        attendance = [visits.Attendance(known[p.email], p.partstat, p.role) for p in people]
        outcome = visits.record(session, facts, collection_path, href, rep, match, attendance)
        # A new placement (or a visit back from the trash) means this rep met everyone;
        # otherwise only who joined or left changes where loose contacts' cards belong.
        # The new contacts' cards are published in the same pass.
        present = {a.contact_id for a in attendance}
        joined = present if outcome.placed else outcome.contacts_changed & present
        newly = joined - set(created)
        # A visit just created has one placement, this one: its reps need no look-up.
        reps = ((rep,) if outcome.action == "create"
                else visits.reps_of(session, outcome.visit_id)) if newly else ()
        cards.met(session, newly, reps, created)
        cards.attendance_changed(session, outcome.contacts_changed - present)
        if outcome.action != "unchanged":
            notes.append(audit.Note(f"visit.{outcome.action}", f"crm:visit/{outcome.visit_id}",
                                    summary=_visit_summary(facts, outcome, match, len(people))))

    def _external_people(self, facts: EventFacts) -> Optional[list[Person]]:
        """The participants outside the internal domains (users among them are taken out by
        ``_look_up``), or None if there are more than ``max_attendees``."""
        people: dict[str, Person] = {}
        candidates = list(facts.attendees)
        if facts.organizer is not None:
            candidates.append(Person(facts.organizer.email, facts.organizer.name,
                                     "ACCEPTED", "CHAIR"))
        for person in candidates:
            if person.cutype in _SKIPPED_CUTYPES or person.email in people:
                continue
            if normalize.domain_matches(normalize.domain_of(person.email),
                                        self.settings.internal_domains):
                continue
            people[person.email] = person
        if len(people) > self.settings.max_attendees:
            return None
        return list(people.values())

    def _match_customer(self, session: Session, facts: EventFacts, people: list[Person],
                        known: dict[str, int], domains: dict[str, int]) -> Match:
        """``domains``: the customers of the people's e-mail domains."""
        named = customers.by_names(session, [facts.customer_hint] if facts.customer_hint
                                   else [])
        if named:
            return Match(next(iter(named.values())), "explicit", 100)
        named = customers.by_names(session, facts.categories)
        if len(set(named.values())) == 1:
            return Match(next(iter(named.values())), "category", 100)
        business = [p.email for p in people if not normalize.domain_matches(
            normalize.domain_of(p.email), self.settings.free_mail_domains)]
        votes = Counter(domains[normalize.domain_of(a)] for a in business
                        if normalize.domain_of(a) in domains)
        winner = _clear_winner(votes)
        if winner is not None:
            return Match(winner, "domain", int(round(100 * votes[winner] / len(business))))
        found = contacts.known_customer(session, [known[p.email] for p in people
                                                  if p.email in known])
        if found is not None:
            return Match(found[0], "attendee", found[1])
        return customers.fuzzy(session, [facts.summary, facts.location], self.settings) \
            if (facts.summary or facts.location) else NO_MATCH

    def _create_contacts(self, session: Session, people: list[Person], known: dict[str, int],
                         domains: dict[str, int], actor: Optional[str],
                         notes: list[audit.Note]) -> list[int]:
        """Contacts for the people not known yet, attached to the customer of their own
        e-mail domain if there is one (a free-mail address matches none)."""
        new = [p for p in people if p.email not in known]
        made = contacts.from_attendees(
            session, new, lambda address: domains.get(normalize.domain_of(address)), actor,
            self.settings.match_threshold)
        for person, (contact, duplicates) in zip(new, made):
            known[person.email] = contact.id
            where = f", customer {contact.customer_id}" if contact.customer_id \
                else ", suggested"
            notes.append(audit.Note("contact.create", f"crm:contact/{contact.id}",
                                    summary=f"created contact {contact.name} "
                                            f"<{person.email}> from an attendee{where}"))
            for dup in duplicates:
                notes.append(audit.Note("duplicate.found", f"crm:contact/{contact.id}",
                                        summary=f"possible duplicate of contact {dup.other_id} "
                                                f"({dup.reason}, score {dup.score})"))
        return [contact.id for contact, _ in made]

    def _unplace(self, session: Session, collection_path: str, href: str, why: str,
                 notes: list[audit.Note]) -> None:
        result = visits.unplace(session, collection_path, href)
        if result is None:
            return
        visit_id, trashed = result
        cards.attendance_changed(session, visits.attendees(session, visit_id))
        if trashed:
            notes.append(audit.Note("visit.delete", f"crm:visit/{visit_id}",
                                    summary=f"visit to trash: {why}"))
        else:
            notes.append(audit.Note("visit.update", f"crm:visit/{visit_id}",
                                    summary=f"removed from /{collection_path}/: {why}"))

    def _audit(self, session: Session, owner: str, notes: list[audit.Note],
               actor: Optional[str], client: Optional[str]) -> None:
        if notes:
            audit.record(session, audit.dav_stream(owner), [
                audit.Note(n.action, n.object, actor, client, n.before, n.after, n.summary)
                for n in notes])


def _look_up(session: Session, people: list[Person]
             ) -> tuple[list[Person], dict[str, int], dict[str, int]]:
    """The external participants without the users among them, the contacts known by
    their addresses (address → contact) and the customers of their e-mail domains
    (domain → customer)."""
    if not people:
        return [], {}, {}
    emails = sorted({p.email for p in people})
    users: set[str] = set()
    known: dict[str, int] = {}
    found: dict[str, int] = {}
    for kind, key, ident in run(session, _LOOK_UP, {"emails": emails, "domains": (
            customers.domains_to_look_up(normalize.domain_of(e) for e in emails))}):
        if kind == "user":
            users.add(key)
        elif kind == "contact":
            known[key] = ident
        else:
            found[key] = ident
    people = [p for p in people if p.email not in users]
    return (people, {p.email: known[p.email] for p in people if p.email in known},
            customers.owners_by_domain({normalize.domain_of(p.email) for p in people}, found))


def _visit_summary(facts: EventFacts, outcome: visits.Outcome, match: Match,
                   people: int) -> str:
    tag = f"customer {match.customer_id} ({match.method}, {match.score})" \
        if match.customer_id else "untagged"
    text = f"{outcome.action}d visit {facts.summary!r}: {tag}, {people} external " \
           f"participant(s), {len(facts.occurrences)} occurrence(s)"
    if outcome.action == "update":
        text += "; changed " + ", ".join(outcome.changed)
    return text


def _owner(path: str) -> str:
    return path.strip("/").split("/", 1)[0]


def _parse(text: str) -> Any:
    try:
        return events.parse(text)
    except events.ParseError:
        return None   # the store accepted it; a text we cannot read is simply not a visit


def _clear_winner(votes: Counter) -> Optional[int]:
    if not votes:
        return None
    (best, n), *rest = votes.most_common()
    return None if rest and rest[0][1] == n else best
