"""CRM data back in the client by standard means: read-only CardDAV address books of customer
contacts and of suggested contacts, kept current as visits come in and as operators act."""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.orm import Session

from conftest import statements_run
from crmkit import apple, me, thunderbird
from ical import sync_collection, vcard
from xmlparse import responses, sync_token
from server.crm import db

ADDRESSBOOK_QUERY = """<?xml version="1.0" encoding="utf-8"?>
<CR:addressbook-query xmlns:D="DAV:" xmlns:CR="urn:ietf:params:xml:ns:carddav">
<D:prop><D:getetag/><CR:address-data/></D:prop>
<CR:filter><CR:prop-filter name="EMAIL"><CR:text-match collation="i;unicode-casemap"
 match-type="contains">{}</CR:text-match></CR:prop-filter></CR:filter>
</CR:addressbook-query>"""


def book(rep, name):
    return f"/{rep.user}/{name}/"


def cards_in(rep, name) -> dict[str, str]:
    """href → vCard text of every card in one of ``rep``'s books."""
    base = book(rep, name)
    hrefs = [h for h in responses(rep.propfind(base, depth="1").body) if h != base]
    return {h: rep.get(h).text for h in hrefs}


def test_customer_contacts_reach_the_owners_book_and_suggestions_the_reps(crm):
    crm.customer("Tatra banka, a.s.", "--domain", "tatrabanka.sk", "--owner", crm.alice.user)
    token = sync_token(crm.alice.report(book(crm.alice, "crm-contacts"), sync_collection()).body)
    # Bob meets someone from the customer, and someone with a free-mail address.
    crm.put(crm.bob, "v.ics", apple("ab-1", "Stretnutie", [
        ("Ján Novák", "jan.novak@tatrabanka.sk"), ("Eva Malá", "eva.mala@gmail.com")],
        me(crm.bob)))
    [card] = cards_in(crm.alice, "crm-contacts").values()
    assert "FN:Ján Novák" in card and "ORG:Tatra banka\\, a.s." in card
    assert "EMAIL;TYPE=INTERNET:jan.novak@tatrabanka.sk" in card
    changed = responses(crm.alice.report(book(crm.alice, "crm-contacts"),
                                         sync_collection(token)).body)
    assert len(changed) == 1                      # a syncing client sees the new card
    [suggested] = cards_in(crm.bob, "crm-suggested").values()
    assert "FN:Eva Malá" in suggested and "ORG" not in suggested
    assert cards_in(crm.bob, "crm-contacts") == {}
    assert cards_in(crm.alice, "crm-suggested") == {}
    # Standard CardDAV queries work on them.
    found = responses(crm.alice.report(book(crm.alice, "crm-contacts"),
                                       ADDRESSBOOK_QUERY.format("tatrabanka")).body)
    assert len(found) == 1
    # Accepting the suggestion moves the card: out of bob's suggestions, into alice's book.
    token = sync_token(crm.bob.report(book(crm.bob, "crm-suggested"), sync_collection()).body)
    crm.cli("contact", "accept", "eva.mala@gmail.com", "--customer", "Tatra banka")
    assert cards_in(crm.bob, "crm-suggested") == {}
    gone = crm.bob.report(book(crm.bob, "crm-suggested"), sync_collection(token))
    assert b"404" in gone.body                    # reported as deleted to syncing clients
    assert len(cards_in(crm.alice, "crm-contacts")) == 2


def test_sharing_and_transfer_follow_the_customer(crm):
    crm.customer("Globex GmbH", "--domain", "globex.de", "--owner", crm.alice.user)
    crm.put(crm.alice, "g.ics", thunderbird("g-1", "Kickoff", [("Hans Gruber", "hans@globex.de")],
                                            me(crm.alice)))
    assert len(cards_in(crm.alice, "crm-contacts")) == 1
    assert cards_in(crm.bob, "crm-contacts") == {}
    crm.cli("customer", "share", "Globex", "--with", crm.bob.user)
    assert len(cards_in(crm.bob, "crm-contacts")) == 1
    shown = crm.cli("customer", "show", "Globex", "--json")[0]
    assert shown["owner"] == crm.alice.user and shown["collaborators"] == [
        {"user": crm.bob.user, "access": "view"}]
    shown = dict(line.split(":", 1) for line in crm.cli("customer", "show", "Globex").splitlines())
    assert shown["collaborators"].strip() == f"{crm.bob.user} (view)"
    crm.cli("customer", "transfer", "Globex", "--to", crm.bob.user)
    shown = crm.cli("customer", "show", "Globex", "--json")[0]
    assert shown["owner"] == crm.bob.user and shown["collaborators"] == []
    assert cards_in(crm.alice, "crm-contacts") == {}
    assert len(cards_in(crm.bob, "crm-contacts")) == 1


def test_a_customer_without_owner_publishes_its_contacts_once_it_has_one(crm):
    crm.customer("Initech", "--domain", "initech.example")
    crm.put(crm.alice, "i.ics", thunderbird("in-1", "Demo", [("Peter Gibbons",
                                                              "peter@initech.example")],
                                            me(crm.alice)))
    assert crm.contact("peter@initech.example")["customer_id"] is not None
    assert cards_in(crm.alice, "crm-contacts") == {} == cards_in(crm.alice, "crm-suggested")
    with Session(db.shared_engine(crm.url)) as session:   # no book for a user "None"
        assert session.execute(text("SELECT path FROM dav_collections WHERE owner = 'None'")
                               ).all() == []
    crm.cli("customer", "transfer", "Initech", "--to", crm.bob.user)
    [card] = cards_in(crm.bob, "crm-contacts").values()
    assert "FN:Peter Gibbons" in card


def test_crm_books_are_read_only_to_clients(crm, snapshot):
    crm.customer("Initech", "--domain", "initech.example", "--owner", crm.alice.user)
    crm.put(crm.alice, "i.ics", thunderbird("ro-1", "Visit", [("Bill L", "bill@initech.example")],
                                            me(crm.alice)))
    [href] = cards_in(crm.alice, "crm-contacts")
    before = snapshot()
    base = book(crm.alice, "crm-contacts")
    assert crm.alice.put(base + "mine.vcf", vcard("mine"), "text/vcard").status == 403
    assert crm.alice.put(href, vcard("crm-contact-1"), "text/vcard").status == 403
    assert crm.alice.delete(href).status == 403
    assert crm.alice.delete(base).status == 403
    assert crm.alice.delete(book(crm.alice, "crm-suggested")).status == 403
    proppatch = crm.alice.request("PROPPATCH", base, """<?xml version="1.0"?>
<D:propertyupdate xmlns:D="DAV:"><D:set><D:prop><D:displayname>x</D:displayname></D:prop>
</D:set></D:propertyupdate>""", {"Content-Type": "application/xml"})
    assert proppatch.status == 403
    assert snapshot() == before
    # Other users' books stay invisible.
    assert crm.bob.propfind(base, depth="1").status in (403, 404)


def test_merging_contacts_updates_the_published_card(crm):
    crm.customer("Umbrella", "--domain", "umbrella.example", "--owner", crm.alice.user)
    crm.put(crm.alice, "1.ics", thunderbird("mg-1", "A", [("Ada Wong", "ada@umbrella.example")],
                                            me(crm.alice)))
    crm.cli("contact", "add", "Ada Wong", "--email", "ada.w@umbrella.example",
            "--customer", "Umbrella", "--phone", "+1 555 0100 200")
    assert len(cards_in(crm.alice, "crm-contacts")) == 2
    [dup] = crm.cli("duplicates", "list", "--json")
    crm.cli("contact", "merge", str(dup["contact_id"]), str(dup["other_id"]))
    [card] = cards_in(crm.alice, "crm-contacts").values()
    # Addresses and numbers each in the order they were added (the card's ETag stays put).
    assert [line for line in card.splitlines() if line.startswith(("EMAIL", "TEL"))] == [
        "EMAIL;TYPE=INTERNET:ada@umbrella.example", "EMAIL;TYPE=INTERNET:ada.w@umbrella.example",
        "TEL:+15550100200"]


def test_refused_operator_commands_say_why_and_change_nothing(crm, snapshot):
    crm.customer("Hooli", "--domain", "hooli.example", "--owner", crm.alice.user)
    crm.cli("contact", "add", "Gavin Belson", "--email", "gavin@hooli.example")
    before = snapshot()
    cases = [
        (("customer", "add", "Hooli Inc."), "customer 'Hooli Inc.' already exists"),
        (("customer", "add", "Pied Piper", "--owner", "nobody"), "user 'nobody' does not exist"),
        (("customer", "add", "Pied Piper", "--domain", "not a domain"), "is not an e-mail domain"),
        (("customer", "add", "Pied Piper", "--domain", "hooli.example"),
         "e-mail domain 'hooli.example' already exists"),
        (("customer", "show", "Raviga"), "customer 'Raviga' does not exist"),
        (("customer", "transfer", "Hooli", "--to", "nobody"), "user 'nobody' does not exist"),
        (("customer", "share", "Hooli", "--with", crm.alice.user), "owns 'Hooli' already"),
        (("contact", "show", "ghost@nowhere.example"), "does not exist"),
        (("contact", "add", "X", "--email", "gavin@hooli.example"), "already exists"),
        (("contact", "add", "X", "--email", "not-an-address"), "is not an e-mail address"),
        (("contact", "merge", "gavin@hooli.example", "gavin@hooli.example"),
         "cannot be merged into itself"),
        (("contact", "accept", "gavin@hooli.example", "--customer", "Raviga"), "does not exist"),
        (("duplicates", "merge", "999"), "duplicate candidate '999' does not exist"),
        (("visit", "tag", "no-such-uid", "Hooli"), "visit 'no-such-uid' does not exist"),
    ]
    for argv, reason in cases:
        out = crm.cli(*argv, expect=1)
        assert reason in out and out.count("\n") == 1, (argv, out)
    # Malformed arguments are usage errors (exit 2), with argparse's one-line reason.
    assert "invalid choice: 'D'" in crm.cli("customer", "add", "X", "--level", "D", expect=2)
    assert "is not a date" in crm.cli("visit", "list", "--since", "yesterday", expect=2)
    assert snapshot() == before


def test_suggestions_follow_the_visits_that_made_them(crm):
    text = thunderbird("sg-1", "Coffee", [("Tom Free", "tom@gmail.com")], me(crm.bob))
    crm.put(crm.bob, "s.ics", text)
    assert len(cards_in(crm.bob, "crm-suggested")) == 1
    assert crm.bob.delete(f"/{crm.bob.user}/calendar/s.ics").status == 200
    assert cards_in(crm.bob, "crm-suggested") == {}      # met in no live visit any more
    crm.put(crm.bob, "s.ics", text)
    assert len(cards_in(crm.bob, "crm-suggested")) == 1
    # The same invitation in alice's calendar suggests him to her too.
    crm.put(crm.alice, "s.ics", text)
    assert len(cards_in(crm.alice, "crm-suggested")) == 1


def test_attendees_joining_or_leaving_a_shared_visit_reach_every_reps_suggestions(crm):
    tom, ann = ("Tom Free", "tom@gmail.com"), ("Ann Free", "ann@gmail.com")
    crm.put(crm.bob, "j.ics", thunderbird("sg-2", "Lunch", [tom], me(crm.bob)))
    crm.put(crm.alice, "j.ics", thunderbird("sg-2", "Lunch", [tom], me(crm.bob)))
    [tom_href] = cards_in(crm.alice, "crm-suggested")
    token = sync_token(crm.alice.report(book(crm.alice, "crm-suggested"),
                                        sync_collection()).body)
    # Ann joins the visit (edited in bob's calendar): both reps hold it, both meet her; Tom's
    # card, already in both books, is not written again.
    crm.put(crm.bob, "j.ics", thunderbird("sg-2", "Lunch", [tom, ann], me(crm.bob)), 204)
    for rep in (crm.alice, crm.bob):
        names = sorted(t.split("FN:")[1].split("\r\n")[0]
                       for t in cards_in(rep, "crm-suggested").values())
        assert names == ["Ann Free", "Tom Free"], rep.user
    changed = responses(crm.alice.report(book(crm.alice, "crm-suggested"),
                                         sync_collection(token)).body)
    assert len(changed) == 1 and tom_href not in changed
    # Tom leaves: he attends no live visit any more, so he leaves both books.
    crm.put(crm.bob, "j.ics", thunderbird("sg-2", "Lunch", [ann], me(crm.bob)), 204)
    for rep in (crm.alice, crm.bob):
        assert [t for t in cards_in(rep, "crm-suggested").values() if "Tom Free" in t] == []
        assert len(cards_in(rep, "crm-suggested")) == 1


def test_new_and_known_contacts_met_at_one_visit_reach_the_book_in_one_change(crm):
    """Ann is new; Tom is known (alice met him) but new to bob: one visit puts both cards in
    bob's suggestions in one write, the book's revision moving once (twice before)."""
    tom, ann = ("Tom Free", "tom@gmail.com"), ("Ann Free", "ann@gmail.com")
    crm.put(crm.alice, "t.ics", thunderbird("sg-3", "Coffee", [tom], me(crm.alice)))

    def revision():
        with Session(db.shared_engine(crm.url)) as session:
            return session.execute(text("SELECT revision FROM dav_collections WHERE path = :p"),
                                   {"p": f"{crm.bob.user}/crm-suggested"}).scalar_one()

    before = revision()
    with statements_run(crm.url) as seen:
        crm.put(crm.bob, "b.ics", thunderbird("sg-4", "Lunch", [tom, ann], me(crm.bob)))
    names = sorted(t.split("FN:")[1].split("\r\n")[0]
                   for t in cards_in(crm.bob, "crm-suggested").values())
    assert names == ["Ann Free", "Tom Free"]
    assert revision() == before + 1
    # A new visit's only rep is bob: not looked up. Whether Tom is loose and which of those
    # books hold his card: one look-up.
    assert not [s for s in seen if s.startswith("SELECT DISTINCT crm_visit_placements.rep")]
    [loose] = [s for s in seen if "crm_contacts.customer_id IS NULL" in s]
    assert "crm_contact_cards" in loose


def test_cards_for_several_books_are_written_together(crm):
    """Bob meets a customer's contact (the owner alice's book) and a free-mail person (his
    suggestions): both books get their card and a revision each, and the cards are read,
    inserted and logged in one statement each, not one per book."""
    crm.customer("Kovo Trade s.r.o.", "--domain", "kovotrade.sk", "--owner", crm.alice.user)
    books = [f"{crm.alice.user}/crm-contacts", f"{crm.bob.user}/crm-suggested"]

    def revisions():
        with Session(db.shared_engine(crm.url)) as session:
            return [session.execute(text("SELECT revision FROM dav_collections "
                                         "WHERE path = :p"), {"p": p}).scalar_one()
                    for p in books]

    before = revisions()
    with statements_run(crm.url) as seen:
        crm.put(crm.bob, "k.ics", apple("kv-1", "Stretnutie", [
            ("Peter Kováč", "peter.kovac@kovotrade.sk"), ("Iva Nová", "iva.nova@gmail.com")],
            me(crm.bob)))
    assert revisions() == [before[0] + 1, before[1] + 1]
    [card] = cards_in(crm.alice, "crm-contacts").values()
    assert "FN:Peter Kováč" in card
    [suggested] = cards_in(crm.bob, "crm-suggested").values()
    assert "FN:Iva Nová" in suggested
    # One item INSERT and one change-log upsert for the event, one of each for both cards.
    assert sum(s.startswith("INSERT INTO dav_items ") for s in seen) == 2
    assert sum(s.startswith("INSERT INTO dav_changes ") for s in seen) == 2
    assert sum(s.startswith("UPDATE dav_collections SET revision") for s in seen) == 3
    # The DAV tables are read five times: the login (with the user's home), the event's
    # calendar and href, its UID, where the cards are, and both books with their cards at
    # once (PostgreSQL also locks the calendar).
    dav_reads = [s for s in seen if s.startswith("SELECT") and " dav_" in s]
    assert len(dav_reads) == (5 if db.is_sqlite(crm.url) else 6), dav_reads
