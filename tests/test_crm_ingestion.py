"""Every visit becomes CRM data: events as Apple Calendar, Thunderbird and Outlook write them,
PUT over the real WSGI application, and what the CRM made of them read back through
``crm-admin`` (the operators' view) and the database."""

from __future__ import annotations

import datetime as dt
import re

from hypothesis import example, given, settings, strategies as st
from sqlalchemy import select
from sqlalchemy.orm import Session

from crmkit import INTERNAL, apple, me, outlook, thunderbird
from davclient import Dav, make_configuration
from ical import crlf, event
from server.app import CrmApplication
from server.crm import db
from server.crm.models import Visit, VisitOccurrence

# --- customer matching -------------------------------------------------------------------

def test_apple_slovak_attendee_matched_by_domain(crm):
    crm.customer("Tatra banka, a.s.", "--domain", "tatrabanka.sk", "--owner", crm.alice.user)
    crm.put(crm.alice, "a.ics", apple("apple-1", "Stretnutie", [("Ján Novák",
                                                                 "Jan.Novak@TatraBanka.sk")],
                                      me(crm.alice)))
    visit = crm.visit("apple-1")
    assert (visit["customer"], visit["match_method"], visit["match_score"]) == \
        ("Tatra banka, a.s.", "domain", 100)
    assert visit["reps"] == crm.alice.user and visit["occurrences"] == 1
    assert visit["start"] == "2026-12-03T09:00:00+00:00"   # 10:00 in Bratislava, CET
    contact = crm.contact("jan.novak@tatrabanka.sk")
    assert (contact["name"], contact["source"], contact["visits"]) == ("Ján Novák", "attendee", 1)
    [row] = crm.contacts("--customer", "Tatra banka")
    assert row["emails"] == ["jan.novak@tatrabanka.sk"]
    # The organizer is the rep (internal domain): never a contact.
    assert all(me(crm.alice) not in c["emails"] for c in crm.contacts())


def test_subdomain_matches_the_nearest_customer_domain(crm):
    crm.customer("Acme Group", "--domain", "acme.example")
    crm.customer("Acme Europe", "--domain", "eu.acme.example")
    addresses = ("ann@de.acme.example", "ben@fr.eu.acme.example", "cy@acme.example.org")
    for n, address in enumerate(addresses, 1):
        crm.put(crm.alice, f"s{n}.ics", apple(f"sub-{n}", "Review", [("Ann Lee", address)],
                                              me(crm.alice)))
    assert [(crm.visit(uid)["customer"], crm.visit(uid)["match_method"])
            for uid in ("sub-1", "sub-2", "sub-3")] == \
        [("Acme Group", "domain"), ("Acme Europe", "domain"), (None, "none")]
    # The new contacts are attached to their domain's customer, as the visit is tagged.
    assert [crm.contact(a)["customer_id"] is not None for a in addresses] == [True, True, False]
    [row] = crm.contacts("--customer", "Acme Europe")
    assert row["emails"] == ["ben@fr.eu.acme.example"]


def test_thunderbird_chinese_company_by_domain_and_fuzzy_summary(crm):
    crm.customer("华为技术有限公司", "--domain", "huawei.com")
    crm.put(crm.alice, "t1.ics", thunderbird("tb-1", "季度回顾", [("王小明", "wang.xm@huawei.com")],
                                             me(crm.alice)))
    assert crm.visit("tb-1")["match_method"] == "domain"
    assert crm.contact("wang.xm@huawei.com")["name"] == "王小明"
    # A free-mail attendee says nothing about the company; the summary names it.
    crm.put(crm.alice, "t2.ics", thunderbird("tb-2", "拜访华为技术 深圳", [("李娜", "lina@qq.com")],
                                             me(crm.alice)))
    visit = crm.visit("tb-2")
    assert (visit["customer"], visit["match_method"]) == ("华为技术有限公司", "fuzzy")
    assert visit["match_score"] >= 80
    # ... but the qq.com contact is not attached to the customer: it is a suggestion.
    assert crm.contact("lina@qq.com")["customer_id"] is None


def test_outlook_legal_form_variants_fuzzy(crm):
    crm.customer("ACME Corporation")
    crm.customer("Globex GmbH")
    crm.put(crm.bob, "o.ics", outlook("ol-1", "Quarterly review - Acme Corp.",
                                      [("Smith, John", "john.smith@gmail.com")], me(crm.bob)))
    visit = crm.visit("ol-1")
    assert (visit["customer"], visit["match_method"], visit["match_score"]) == \
        ("ACME Corporation", "fuzzy", 100)
    assert crm.contact("john.smith@gmail.com")["name"] == "Smith, John"


def test_explicit_property_and_category_win(crm):
    crm.customer("ŠKODA AUTO a.s.", "--domain", "skoda-auto.cz")
    crm.customer("Slovnaft, a.s.", "--short-name", "SLN")
    # X-CRM-CUSTOMER beats the attendee's domain.
    crm.put(crm.alice, "x.ics", apple("x-1", "Jednanie", [("Petr Dvořák", "petr@skoda-auto.cz")],
                                      me(crm.alice), extra="X-CRM-CUSTOMER:Slovnaft\n"))
    assert (crm.visit("x-1")["customer"], crm.visit("x-1")["match_method"]) == \
        ("Slovnaft, a.s.", "explicit")
    crm.put(crm.alice, "c.ics", thunderbird("c-1", "Follow-up", [("Eva", "eva@gmail.com")],
                                            me(crm.alice), extra="CATEGORIES:Business,SLN\n"))
    assert (crm.visit("c-1")["customer"], crm.visit("c-1")["match_method"]) == \
        ("Slovnaft, a.s.", "category")


def test_known_attendee_customer_and_ambiguous_text_stays_untagged(crm):
    crm.customer("Novak Consulting")
    crm.customer("Novak Engineering")
    crm.put(crm.alice, "1.ics", thunderbird("k-1", "Coffee", [("Mia Lee", "mia@gmail.com")],
                                            me(crm.alice)))
    assert crm.visit("k-1")["match_method"] == "none"
    assert crm.visits("--untagged")[0]["uid"] == "k-1"
    crm.cli("contact", "accept", "mia@gmail.com", "--customer", "Novak Engineering")
    crm.put(crm.alice, "2.ics", thunderbird("k-2", "Lunch", [("Mia Lee", "mia@gmail.com")],
                                            me(crm.alice)))
    visit = crm.visit("k-2")
    assert (visit["customer"], visit["match_method"], visit["match_score"]) == \
        ("Novak Engineering", "attendee", 100)
    crm.put(crm.alice, "3.ics", thunderbird("k-3", "Novak Consulting and Novak Engineering",
                                            [("Al", "al@yahoo.com")], me(crm.alice)))
    assert crm.visit("k-3")["customer"] is None
    # An operator tags it by hand; a later edit of the event keeps the hand-made tag.
    crm.cli("visit", "tag", "k-3", "Novak Consulting")
    crm.put(crm.alice, "3.ics", thunderbird("k-3", "Novak Consulting and Novak Engineering!",
                                            [("Al", "al@yahoo.com")], me(crm.alice)), 204)
    assert (crm.visit("k-3")["customer"], crm.visit("k-3")["match_method"]) == \
        ("Novak Consulting", "manual")


# --- what is not a visit -------------------------------------------------------------------

def test_internal_private_and_attendee_less_events_are_not_visits(crm, db_url):
    users_email(db_url, crm.bob.user, "bob.private@elsewhere.example")
    crm.put(crm.alice, "i.ics", outlook("int-1", "Team sync", [
        ("Colleague", f"someone@sales.{INTERNAL}"),               # internal subdomain
        ("Bob", "bob.private@elsewhere.example")], me(crm.alice)))  # a user's address
    crm.put(crm.alice, "p.ics", apple("priv-1", "Doctor", [("Dr. House", "house@clinic.example")],
                                      me(crm.alice), extra="CLASS:PRIVATE\n"))
    crm.put(crm.alice, "n.ics", event("plain-1", summary="Gym"))
    crm.put(crm.alice, "r.ics", outlook("room-1", "Booked room", [("Room 1", "room1@rooms.example")],
                                        me(crm.alice), extra="").replace(
        'ATTENDEE;CN="Room 1"', 'ATTENDEE;CUTYPE=ROOM;CN="Room 1"'))
    assert crm.visits() == [] and crm.contacts() == []
    # An event that becomes private stops being a visit (to the trash).
    crm.put(crm.alice, "v.ics", apple("v-1", "Visit", [("Jo", "jo@client.example")], me(crm.alice)))
    assert len(crm.visits()) == 1
    crm.put(crm.alice, "v.ics", apple("v-1", "Visit", [("Jo", "jo@client.example")], me(crm.alice),
                                      extra="CLASS:PRIVATE\n"), 204)
    assert crm.visits() == [] and [v["uid"] for v in crm.visits("--deleted")] == ["v-1"]


def users_email(url: str, username: str, email: str) -> None:
    from server.crm.models import User
    with Session(db.shared_engine(url)) as session, session.begin():
        session.scalar(select(User).where(User.username == username)).email = email


def test_cancelled_and_rescheduled(crm):
    crm.put(crm.alice, "e.ics", thunderbird("r-1", "Demo", [("Zoe", "zoe@client.example")],
                                            me(crm.alice)))
    crm.put(crm.alice, "e.ics", thunderbird("r-1", "Demo", [("Zoe", "zoe@client.example")],
                                            me(crm.alice), start="20261204T030000Z"), 204)
    assert crm.visit("r-1")["start"] == "2026-12-04T03:00:00+00:00"
    crm.put(crm.alice, "e.ics", thunderbird("r-1", "Demo", [("Zoe", "zoe@client.example")],
                                            me(crm.alice), extra="STATUS:CANCELLED\n"), 204)
    assert crm.visit("r-1")["status"] == "cancelled"


# --- recurrence ----------------------------------------------------------------------------

RECURRING = """BEGIN:VCALENDAR
VERSION:2.0
PRODID:-//Apple Inc.//macOS 14.5//EN
BEGIN:VEVENT
UID:series-1
DTSTAMP:20261101T080000Z
DTSTART:20270104T090000Z
DTEND:20270104T100000Z
RRULE:FREQ=WEEKLY;COUNT=10
EXDATE:20270118T090000Z
SUMMARY:Weekly check-in
ATTENDEE;CN=Kim:mailto:kim@client.example
END:VEVENT
BEGIN:VEVENT
UID:series-1
DTSTAMP:20261101T080000Z
RECURRENCE-ID:20270125T090000Z
DTSTART:20270126T150000Z
DTEND:20270126T160000Z
SUMMARY:Weekly check-in (moved)
ATTENDEE;CN=Kim:mailto:kim@client.example
ATTENDEE;CN=Lee:mailto:lee@client.example
END:VEVENT
BEGIN:VEVENT
UID:series-1
DTSTAMP:20261101T080000Z
RECURRENCE-ID:20270201T090000Z
DTSTART:20270201T090000Z
DTEND:20270201T100000Z
STATUS:CANCELLED
SUMMARY:Weekly check-in
END:VEVENT
END:VCALENDAR"""


def test_recurring_visit_counts_every_occurrence(crm, db_url):
    crm.put(crm.alice, "s.ics", crlf(RECURRING))
    visit = crm.visit("series-1")
    assert visit["occurrences"] == 9                # 10 minus one EXDATE
    # Reports over a period count the occurrences in it, the moved one at its new time.
    january = crm.visit("series-1", "--since", "2027-01-01", "--until", "2027-02-01")
    assert january["occurrences"] == 3              # 4, 11, (18 excluded), 25 moved to 26
    assert crm.visits("--since", "2027-03-09") == []
    with Session(db.shared_engine(db_url)) as session:
        visit_id = session.scalar(select(Visit.id).where(Visit.uid == "series-1"))
        rows = session.execute(select(VisitOccurrence.start, VisitOccurrence.status)
                               .where(VisitOccurrence.visit_id == visit_id)
                               .order_by(VisitOccurrence.start)).all()
    moments = [(r.start.strftime("%m-%d %H"), r.status) for r in rows]
    assert ("01-26 15", "confirmed") in moments and ("01-25 09", "confirmed") not in moments
    assert ("02-01 09", "cancelled") in moments
    assert not any(m.startswith("01-18") for m, _ in moments)
    # Attendees of overrides count too.
    assert crm.contact("lee@client.example")["visits"] == 1


def test_endless_series_is_bounded_by_the_horizon(db_url, make_user):
    app = CrmApplication(make_configuration(db_url, storage={
        "crm_recurrence_horizon_days": "30"}))
    name, password = make_user()
    rep = Dav(app, name, password)
    # A daily series that began ten days ago: its occurrences are stored from its start up
    # to 30 days after today, about 40 (relative to the day the test runs: a fixed start
    # date made this test fail a month after it was written).
    first = dt.datetime.now(dt.timezone.utc).date() - dt.timedelta(days=10)
    text = event("daily", start=f"{first:%Y%m%d}T090000Z", end=f"{first:%Y%m%d}T093000Z",
                 extra="RRULE:FREQ=DAILY\nATTENDEE:mailto:x@client.example\n")
    assert rep.put(f"/{name}/calendar/d.ics", text).status == 201
    with Session(db.shared_engine(db_url)) as session:
        count = len(session.scalars(select(VisitOccurrence.id).join(
            Visit, Visit.id == VisitOccurrence.visit_id).where(Visit.uid == "daily")).all())
    assert 39 <= count <= 42   # 10 past days and 30 ahead, never unbounded


# --- the visit follows the event -------------------------------------------------------------

def test_move_delete_restore_and_shared_uid(crm):
    text = apple("m-1", "Visit", [("Ola", "ola@client.example")], me(crm.alice))
    crm.put(crm.alice, "m.ics", text)
    first = crm.visit("m-1")
    # The same invitation in bob's calendar: one visit, two reps.
    crm.put(crm.bob, "m.ics", text)
    assert crm.visit("m-1")["reps"] == ",".join(sorted([crm.alice.user, crm.bob.user]))
    assert crm.visit("m-1")["id"] == first["id"]
    # Bob drops it: alice still has it.
    assert crm.bob.delete(f"/{crm.bob.user}/calendar/m.ics").status == 200
    assert crm.visit("m-1")["reps"] == crm.alice.user
    # Moving to another calendar of alice's keeps the visit.
    assert crm.alice.mkcalendar(f"/{crm.alice.user}/work/").status == 201
    moved = crm.alice.request("MOVE", f"/{crm.alice.user}/calendar/m.ics", headers={
        "Destination": f"http://127.0.0.1:5232/{crm.alice.user}/work/m2.ics"})
    assert moved.status == 201, moved.text
    assert crm.visit("m-1")["id"] == first["id"]
    # Deleting the last copy puts the visit in the trash; the same UID back restores it.
    assert crm.alice.delete(f"/{crm.alice.user}/work/m2.ics").status == 200
    assert crm.visits() == [] and crm.visits("--deleted")[0]["id"] == first["id"]
    crm.put(crm.alice, "again.ics", text)
    assert crm.visit("m-1")["id"] == first["id"]
    # And through crm-admin trash restore.
    assert crm.alice.delete(f"/{crm.alice.user}/calendar/again.ics").status == 200
    [entry] = [e for e in crm.cli("trash", "list", "--owner", crm.alice.user, "--json")
               if e["object"].endswith("again.ics")]
    crm.cli("trash", "restore", str(entry["id"]))
    assert crm.visit("m-1")["id"] == first["id"]


def test_record_replaces_another_uid_at_the_href_and_takes_the_placement_back(crm, db_url):
    """The two rarer turns of ``visits.record`` (clients cannot cause them over CalDAV, which
    refuses another UID over an href): the href now holds another event, so the old visit
    leaves it (to the trash); a placement whose rep is not the calendar's owner (an
    operator's hand-over) is given back to the rep writing there."""
    from server.crm import events, visits
    from server.crm.customers import NO_MATCH
    from server.crm.models import VisitPlacement

    def record(session, uid, rep):
        facts = events.facts(events.parse(event(uid)), dt.datetime(2030, 1, 1,
                                                                   tzinfo=dt.timezone.utc), 100)
        return visits.record(session, facts, f"{rep}/calendar", "x.ics", rep, NO_MATCH, [])

    alice, bob = crm.alice.user, crm.bob.user
    with Session(db.shared_engine(db_url)) as session, session.begin():
        first = record(session, "rec-a", alice)
        second = record(session, "rec-b", alice)
        assert (first.action, second.action, second.placed) == ("create", "create", True)
        [placement] = session.scalars(select(VisitPlacement)).all()
        assert (placement.visit_id, placement.href) == (second.visit_id, "x.ics")
        assert session.get(Visit, first.visit_id).deleted_at is not None
        placement.rep = bob
        session.flush()
        again = record(session, "rec-b", alice)
        assert (again.visit_id, again.action, again.changed, again.placed) == \
            (second.visit_id, "update", ("reps",), True)
        assert session.execute(select(VisitPlacement.id, VisitPlacement.rep)).all() == \
            [(placement.id, alice)]
        assert record(session, "rec-b", alice).action == "unchanged"


def test_deleting_a_calendar_trashes_its_visits(crm):
    assert crm.alice.mkcalendar(f"/{crm.alice.user}/old/").status == 201
    reply = crm.alice.put(f"/{crm.alice.user}/old/x.ics",
                          apple("gone-1", "Visit", [("Ola", "ola@client.example")], me(crm.alice)))
    assert reply.status == 201
    assert crm.alice.delete(f"/{crm.alice.user}/old/").status == 200
    assert [v["uid"] for v in crm.visits("--deleted")] == ["gone-1"]


# --- duplicates ------------------------------------------------------------------------------

def test_similar_names_and_phones_are_candidates_never_merged(crm):
    crm.put(crm.alice, "1.ics", apple("d-1", "A", [("Ján Novák", "jan.novak@client.example")],
                                      me(crm.alice)))
    crm.put(crm.alice, "2.ics", apple("d-2", "B", [("Jan Novak", "jnovak@gmail.com")],
                                      me(crm.alice)))
    crm.put(crm.alice, "3.ics", apple("d-3", "C", [("Jana Horvathova", "jh@client.example")],
                                      me(crm.alice)))
    [dup] = crm.cli("duplicates", "list", "--json")
    assert dup["reason"] == "name" and dup["score"] >= 80
    assert len(crm.contacts()) == 3                  # nothing merged silently
    out = crm.cli("contact", "add", "Peter Kováč", "--phone", "+421 905 123 456")
    assert "possible duplicate of" not in out
    crm.cli("contact", "add", "Someone Else", "--phone", "00421905123456")
    phones = [d for d in crm.cli("duplicates", "list", "--json") if d["reason"] == "phone"]
    assert len(phones) == 1
    crm.cli("duplicates", "dismiss", str(phones[0]["id"]))
    crm.cli("duplicates", "merge", str(dup["id"]))
    merged = crm.contact("jnovak@gmail.com")
    assert merged["id"] == dup["contact_id"] or merged["id"] == dup["other_id"]
    assert sorted(merged["emails"]) == ["jan.novak@client.example", "jnovak@gmail.com"]
    assert merged["visits"] == 2
    assert crm.cli("duplicates", "list", "--json") == []
    assert "already dismissed" in crm.cli("duplicates", "dismiss", str(phones[0]["id"]),
                                          expect=1)


# --- atomicity -------------------------------------------------------------------------------

def test_failure_half_way_through_ingestion_leaves_nothing(crm, snapshot, monkeypatch):
    from server.crm import visits
    before = snapshot()

    def crash(*args, **kwargs):
        raise RuntimeError("injected failure after contacts were created")

    monkeypatch.setattr(visits, "record", crash)
    reply = crm.alice.put(f"/{crm.alice.user}/calendar/f.ics",
                          apple("fail-1", "Visit", [("New Person", "new@client.example")],
                                me(crm.alice)))
    assert reply.status == 500
    assert snapshot() == before          # no item, contact, visit, card or audit record
    monkeypatch.undo()
    crm.put(crm.alice, "f.ics", apple("fail-1", "Visit", [("New Person", "new@client.example")],
                                      me(crm.alice)))
    assert crm.visit("fail-1")["summary"] == "Visit"


# --- the audit trail -------------------------------------------------------------------------

def test_crm_changes_are_audited_in_the_owners_chain(crm):
    crm.customer("Tatra banka, a.s.", "--domain", "tatrabanka.sk")
    crm.put(crm.alice, "a.ics", apple("au-1", "Visit", [("Ján Novák", "jan@tatrabanka.sk")],
                                      me(crm.alice)))
    records = crm.cli("audit", "list", "--actor", crm.alice.user, "--json")
    actions = [r["action"] for r in reversed(records)]
    assert actions[-3:] == ["item.create", "contact.create", "visit.create"]
    visit = next(r for r in records if r["action"] == "visit.create")
    assert visit["object"].startswith("crm:visit/") and "domain" in visit["summary"]
    assert visit["client"] == "127.0.0.1"
    admin = crm.cli("audit", "list", "--object", "crm:customer/", "--json")
    assert admin[0]["action"] == "customer.add" and admin[0]["actor"].startswith("os:")
    # (Only these chains: on PostgreSQL the database is shared with the tamper tests.)
    assert crm.cli("audit", "verify", "--user", crm.alice.user, "--admin").startswith(
        "audit trail intact")


def test_fuzzy_match_finds_the_named_customer_among_hundreds_sharing_a_word(crm, db_url):
    """Common words match many customers; the one the text names must still be scored."""
    from server.crm import customers
    with Session(db.shared_engine(db_url)) as session, session.begin():
        for i in range(260):
            customers.add(session, f"Decoy{i} Networks Holdings s.r.o.")
        customers.add(session, "Mapleridge Networks Holdings s.r.o.")
    crm.put(crm.alice, "f.ics", thunderbird("many-1", "Visit Mapleridge Networks Holdings",
                                            [("Pat", "pat@gmail.com")], me(crm.alice)))
    visit = crm.visit("many-1")
    assert (visit["customer"], visit["match_method"]) == \
        ("Mapleridge Networks Holdings s.r.o.", "fuzzy")


@settings(max_examples=3000, deadline=None)
@example(name="a.a", text="ba.a.a")       # the first occurrence fails, an overlapping one fits
@example(name="acme", text="acmeville acme_1 acme")
@given(name=st.text(alphabet="ab_ 1.é中\u0301-", min_size=1, max_size=6),
       text=st.text(alphabet="ab_ 1.é中\u0301-", max_size=24))
def test_whole_word_search_finds_what_the_regex_found(name, text):
    """The name-in-text check (a customer named in a SUMMARY) stopped compiling a regex per
    customer name; it must answer as that regex did, at every word boundary."""
    from server.crm.customers import _whole_words_in
    expected = re.search(rf"(?<!\w){re.escape(name)}(?!\w)", text) is not None
    assert _whole_words_in(name, text) == expected
