"""``crm-admin db check``: passes on a store written through the server, and names each kind of
damage a crash or a hand edit could leave (one corruption per case, on a fresh copy)."""

from __future__ import annotations

import shutil

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

import crmkit
from conftest import create_user, own_pg_database
from crmkit import Crm, apple, outlook
from davclient import Dav, make_configuration
from ical import vcard
from server.app import CrmApplication
from server.crm import db

CUSTOMER = "client.example"


def _seed(url: str) -> dict:
    """Two reps' calendars as the server writes them: customer visits (one recurring, one
    shared by both reps, one deleted, one moved), a contact, published CRM cards."""
    app = CrmApplication(make_configuration(url, storage={
        "crm_internal_domains": crmkit.INTERNAL}))
    reps = []
    for _ in range(2):
        name, password = create_user(url)
        rep = Dav(app, name, password)
        assert rep.propfind(f"/{name}/").status == 207
        reps.append(rep)
    crm = Crm(url, *reps)
    crm.customer("Client Ltd", "--domain", CUSTOMER, "--owner", reps[0].user)
    alice, bob = reps
    guests = [("Jana Nova", f"jana@{CUSTOMER}"), ("Peter Kral", f"peter@{CUSTOMER}")]
    for n in range(4):
        crm.put(alice, f"v{n}.ics", apple(f"visit-{n}", f"Review {n}", guests[: 1 + n % 2],
                                          f"{alice.user}@{crmkit.INTERNAL}"))
    crm.put(alice, "weekly.ics", outlook("weekly", "Weekly call", guests,
                                         f"{alice.user}@{crmkit.INTERNAL}",
                                         extra="RRULE:FREQ=WEEKLY;COUNT=10\n"))
    shared = apple("shared", "Joint visit", guests, f"{alice.user}@{crmkit.INTERNAL}")
    crm.put(alice, "shared.ics", shared)
    crm.put(bob, "shared.ics", shared)
    assert alice.delete(f"/{alice.user}/calendar/v3.ics").status == 200
    moved = alice.request("MOVE", f"/{alice.user}/calendar/v2.ics", b"", {
        "Destination": f"http://127.0.0.1:5232/{alice.user}/calendar/v2-moved.ics"})
    assert moved.status in (201, 204), moved.text
    assert alice.put(f"/{alice.user}/contacts/c.vcf", vcard("c"), "text/vcard").status == 201
    assert alice.put(f"/{alice.user}/calendar/v0.ics", apple(
        "visit-0", "Review 0, moved to Friday", guests, f"{alice.user}@{crmkit.INTERNAL}"),
        "text/calendar").status == 204
    db.shared_engine(url).dispose()   # no connection left open on the seed
    return {"alice": alice.user, "bob": bob.user}


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgresql",
                                                               marks=pytest.mark.postgresql)])
def seed(request, tmp_path_factory, sqlite_template):
    if request.param == "sqlite":
        path = tmp_path_factory.mktemp("check") / "seed.db"
        shutil.copy(sqlite_template, path)
        url = f"sqlite:///{path}"
        yield url, _seed(url)
        return
    # PostgreSQL: the session's database is shared by every test and the check reads the whole
    # store, so the seed gets a database of its own (each case copies it as a template).
    with own_pg_database("crm_check_") as url:
        yield url, _seed(url)


@pytest.fixture
def store(seed, tmp_path):
    """A fresh copy of the seeded store, to damage."""
    url, users = seed
    if db.is_sqlite(url):
        path = tmp_path / "copy.db"
        shutil.copy(make_url(url).database, path)
        yield f"sqlite:///{path}", users
        return
    with own_pg_database("crm_case_", template=url) as copy:
        yield copy, users


def run_check(url: str, *args: str, expect: int) -> str:
    return Crm(url, None, None).cli("db", "check", *args, expect=expect)


def test_a_store_written_through_the_server_passes(seed):
    url, _ = seed
    out = run_check(url, expect=0)
    [summary] = out.splitlines()
    assert summary.startswith("ok: ")
    # every part was looked at: the seed's items, visits, cards and audit records
    for part in ("items", "collections", "visits", "cards", "audit records"):
        assert f" {part}" in summary, summary
    assert not any(f" 0 {part}" in summary for part in ("items", "visits", "cards"))


def item(alice: str, href: str) -> str:
    return (f"SELECT i.id FROM dav_items i JOIN dav_collections c ON c.id = i.collection_id "
            f"WHERE c.path = '{alice}/calendar' AND i.href = '{href}'")


# (SQL, with {alice} and {item(href)}), the line the check must print
DAMAGE = {
    "text no longer parses": (
        "UPDATE dav_items SET text = 'BEGIN:VCALENDAR' WHERE id = {v1}",
        "items: /{alice}/calendar/v1.ics: its text does not parse"),
    "impossible recurrence stored before it was refused": (
        "UPDATE dav_items SET text = replace(text, 'FREQ=WEEKLY;COUNT=10', "
        "'FREQ=SECONDLY;BYMONTH=2;BYMONTHDAY=30') WHERE href = 'weekly.ics'",
        "items: /{alice}/calendar/weekly.ics: its recurrence rule would make every reader spin"),
    "time range index wrong": (
        "UPDATE dav_items SET range_start = range_start + 3600 WHERE id = {v1}",
        "items: /{alice}/calendar/v1.ics: indexed range_start is"),
    "uid index wrong": (
        "UPDATE dav_items SET uid = 'other' WHERE id = {v1}",
        "items: /{alice}/calendar/v1.ics: indexed uid is 'other' but its text gives 'visit-1'"),
    "etag wrong": (
        "UPDATE dav_items SET etag = '\"x\"' WHERE id = {v1}",
        "items: /{alice}/calendar/v1.ics: indexed etag is"),
    "change log row lost": (
        "DELETE FROM dav_changes WHERE href = 'v1.ics'",
        "sync: /{alice}/calendar/v1.ics: the item has no change-log row"),
    "change log behind the item": (
        "UPDATE dav_items SET revision = revision + 1 WHERE id = {v1}",
        "sync: /{alice}/calendar/v1.ics: the item is at revision"),
    "collection revision behind": (
        "UPDATE dav_collections SET revision = 1 WHERE path = '{alice}/calendar'",
        "sync: /{alice}/calendar/: the collection is at revision 1 but holds changes"),
    "item vanished": (
        "DELETE FROM dav_items WHERE id = {v1}",
        "visits: visit {visit1} (visit-1) at /{alice}/calendar/v1.ics: placed at an item that "
        "does not exist"),
    "visit trashed while placed": (
        "UPDATE crm_visits SET deleted_at = CURRENT_TIMESTAMP WHERE uid = 'visit-1'",
        "visits: visit {visit1} (visit-1) at /{alice}/calendar/v1.ics: the visit is in the "
        "trash but still placed"),
    "visit lost its placement": (
        "DELETE FROM crm_visit_placements WHERE href = 'v1.ics'",
        "visits: visit {visit1} (visit-1): live but placed in no calendar"),
    "card missing": (
        "DELETE FROM dav_items WHERE href LIKE 'crm-contact-%'",
        "cards: /{alice}/crm-contacts/crm-contact-"),
    "audit record edited": (
        "UPDATE audit_log SET summary = 'nothing happened' WHERE id = "
        "(SELECT max(id) FROM audit_log)",
        "): was edited (its content no longer matches its hash)"),
}


@pytest.mark.parametrize("case", sorted(DAMAGE))
def test_each_kind_of_damage_is_named(store, case):
    url, users = store
    engine = db.shared_engine(url)
    with engine.begin() as conn:
        v1 = conn.execute(text(item(users["alice"], "v1.ics"))).scalar_one()
        visit1 = conn.execute(text("SELECT id FROM crm_visits WHERE uid = 'visit-1'")).scalar_one()
        sql, expected = DAMAGE[case]
        conn.execute(text(sql.format(v1=v1, alice=users["alice"])))
    out = run_check(url, expect=1)
    lines = out.splitlines()
    assert lines[-1].startswith("FAILED: "), out
    wanted = expected.format(alice=users["alice"], visit1=visit1)
    assert any(line.startswith("violation: ") and wanted in line for line in lines), out


def test_skip_leaves_a_check_out_and_unknown_checks_are_refused(store):
    url, users = store
    with db.shared_engine(url).begin() as conn:
        conn.execute(text("UPDATE dav_items SET etag = '\"x\"' WHERE href = 'v1.ics'"))
    assert run_check(url, "--skip", "items", expect=0).startswith("ok: ")
    assert "invalid choice" in run_check(url, "--skip", "everything", expect=2)


def test_an_unreachable_database_is_exit_3_with_one_line():
    out = run_check("postgresql://postgres@127.0.0.1:1/nothing", expect=3)
    assert out.startswith("crm-admin: error: database unavailable") and out.count("\n") == 1
