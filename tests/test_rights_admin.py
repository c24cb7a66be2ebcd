"""Operating rights with crm-admin: users, roles, teams, grants, the access overview,
disabling a user and handing their work over; bad input is one line and changes nothing."""

from __future__ import annotations

import contextlib
import io
import json
from types import SimpleNamespace

import pytest
from sqlalchemy import text

from admin_cli.main import main
from conftest import create_user, db_snapshot, unique_name
from davclient import Dav, make_configuration
from ical import event
from server.app import CrmApplication
from server.crm import db


def run(url: str, *argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(["--db-url", url, *argv])
        except SystemExit as usage:
            code = usage.code
    return code, out.getvalue(), err.getvalue()


def ok(url: str, *argv: str):
    code, out, err = run(url, *argv)
    assert code == 0, (argv, out, err)
    return json.loads(out) if "--json" in argv else out


@pytest.fixture
def firm(db_url):
    app = CrmApplication(make_configuration(db_url, storage={
        "crm_internal_domains": "ourco.example"}))
    people = {}
    for key, role in (("alice", "rep"), ("bob", "rep"), ("far", "rep"), ("vic", "viewer"),
                      ("gone", "rep")):
        name, password = create_user(db_url, unique_name(key), role=role)
        people[key] = Dav(app, name, password)
        assert people[key].propfind(f"/{name}/").status == 207
    ok(db_url, "user", "disable", people["gone"].user)
    team = unique_name("team")
    ok(db_url, "team", "add", team)
    return SimpleNamespace(url=db_url, team=team, **people)


def rights_snapshot(url: str) -> dict:
    with db.shared_engine(url).connect() as conn:
        return {**db_snapshot(url), **{table: conn.execute(text(
            f"SELECT * FROM {table} ORDER BY id")).all()
            for table in ("users", "teams", "team_members", "grants", "crm_customers")}}


def test_a_disabled_user_is_refused_on_the_next_request(firm):
    assert firm.alice.propfind(f"/{firm.alice.user}/").status == 207
    ok(firm.url, "user", "disable", firm.alice.user)
    assert firm.alice.propfind(f"/{firm.alice.user}/").status == 401
    assert firm.alice.get(f"/{firm.alice.user}/calendar/").status == 401
    ok(firm.url, "user", "enable", firm.alice.user)
    assert firm.alice.propfind(f"/{firm.alice.user}/").status == 207


def test_users_roles_and_teams(firm):
    name = unique_name("mgr")
    out = ok(firm.url, "user", "add", name, "--role", "manager", "--team", firm.team,
             "--email", "m@ourco.example")
    assert f"role manager, teams {firm.team}" in out
    ok(firm.url, "team", "add-member", firm.team, firm.alice.user)
    [row] = [u for u in ok(firm.url, "user", "list", "--json") if u["username"] == name]
    assert (row["role"], row["teams"], row["email"]) == ("manager", [firm.team],
                                                         "m@ourco.example")
    assert "role of %s: manager -> viewer" % name in ok(firm.url, "user", "set-role", name,
                                                        "viewer")
    [team] = [t for t in ok(firm.url, "team", "list", "--json") if t["team"] == firm.team]
    assert team["members"] == sorted([name, firm.alice.user])
    ok(firm.url, "team", "remove-member", firm.team, firm.alice.user)
    actions = [r["action"] for r in ok(firm.url, "audit", "list", "--json")]
    assert {"user.add", "team.add", "team.add_member", "team.remove_member",
            "user.set_role"} <= set(actions)


def test_grants_and_the_access_overview(firm):
    cal = f"{firm.alice.user}/calendar"
    ok(firm.url, "team", "add-member", firm.team, firm.vic.user)
    assert firm.vic.get(f"/{cal}/").status == 403
    out = ok(firm.url, "grant", "add", cal, "--to", f"team:{firm.team}", "--level", "write")
    assert out.strip() == f"grant on {cal} to team:{firm.team} at write: added"
    assert firm.vic.get(f"/{cal}/").status == 200                  # a viewer: read-only
    assert firm.vic.put(f"/{cal}/x.ics", event("x")).status == 403
    [grant] = ok(firm.url, "grant", "list", cal, "--json")
    assert (grant["grantee"], grant["level"]) == (f"team:{firm.team}", "write")
    assert grant["created_by"].startswith("os:")
    overview = {row["user"]: row for row in ok(firm.url, "access", cal, "--json")}
    admins = {u for u, row in overview.items() if row["role"] == "admin"}  # PostgreSQL: shared
    assert all(overview[u]["why"] == "role admin" for u in admins)
    assert set(overview) - admins == {firm.alice.user, firm.vic.user}
    assert overview[firm.alice.user]["why"] == "owner"
    assert overview[firm.vic.user]["level"] == "read"
    assert overview[firm.vic.user]["private_items"] == "busy"
    assert overview[firm.vic.user]["why"] == (f"grant to team:{firm.team} at write; "
                                              "capped at read for role viewer")
    table = ok(firm.url, "access", cal)
    assert "CLASS:PRIVATE items are shown as busy" in table
    ok(firm.url, "grant", "revoke", cal, "--to", f"team:{firm.team}")
    assert firm.vic.get(f"/{cal}/").status == 403                  # from the next request
    assert ok(firm.url, "grant", "list", cal, "--json") == []


BAD = [
    (["user", "add", "newbie", "--role", "wizard"], "unknown role 'wizard'"),
    (["user", "add", "newbie", "--team", "nosuch"], "team 'nosuch' does not exist"),
    (["user", "set-role", "nosuch", "rep"], "user 'nosuch' does not exist"),
    (["user", "set-role", "{alice}", "wizard"], "unknown role 'wizard'"),
    (["team", "add", "Bad Name!"], "invalid team name"),
    (["team", "add", "{team}"], "already exists"),
    (["team", "add-member", "nosuch", "{alice}"], "team 'nosuch' does not exist"),
    (["team", "add-member", "{team}", "nosuch"], "user 'nosuch' does not exist"),
    (["team", "remove-member", "{team}", "{alice}"], "is not a member of team"),
    (["grant", "add", "{alice}/calendar", "--to", "user:nosuch", "--level", "read"],
     "user 'nosuch' does not exist"),
    (["grant", "add", "{alice}/calendar", "--to", "team:nosuch", "--level", "read"],
     "team 'nosuch' does not exist"),
    (["grant", "add", "{alice}/calendar", "--to", "role:wizard", "--level", "read"],
     "unknown role 'wizard'"),
    (["grant", "add", "{alice}/calendar", "--to", "user:{bob}", "--level", "root"],
     "unknown level 'root'"),
    (["grant", "add", "{alice}/calendar", "--to", "{bob}", "--level", "read"],
     "invalid grantee"),
    (["grant", "add", "{alice}/nosuch", "--to", "user:{bob}", "--level", "read"],
     "calendar or address book '{alice}/nosuch' does not exist"),
    (["grant", "add", "{alice}/contacts", "--to", "user:{bob}", "--level", "busy"],
     "busy applies to calendars only"),
    (["grant", "add", "{alice}/calendar", "--to", "user:{alice}", "--level", "read"],
     "owners need no grant"),
    (["grant", "add", "{alice}/calendar", "--to", "user:{gone}", "--level", "read"],
     "is disabled"),
    (["grant", "revoke", "{alice}/calendar", "--to", "user:{bob}"], "does not exist"),
    (["access", "nosuch/calendar"], "does not exist"),
    (["user", "handover", "{alice}", "--to", "{gone}"], "is disabled"),
    (["user", "handover", "{alice}", "--to", "nosuch"], "user 'nosuch' does not exist"),
    (["user", "handover", "nosuch", "--to", "{bob}"], "user 'nosuch' does not exist"),
    (["user", "handover", "{alice}", "--to", "{alice}"], "same user"),
    (["user", "handover", "{alice}", "--to", "{vic}"], "role viewer"),
]


def test_bad_input_is_one_line_a_non_zero_exit_and_changes_nothing(firm):
    names = {key: getattr(firm, key).user for key in ("alice", "bob", "vic", "gone")}
    names["team"] = firm.team
    before = rights_snapshot(firm.url)
    for argv, message in BAD:
        argv = [a.format(**names) for a in argv]
        code, out, err = run(firm.url, *argv)
        assert code == 1, (argv, code, out, err)
        assert out == "" and err.count("\n") == 1, (argv, out, err)
        assert err.startswith("crm-admin: error: ") and message.format(**names) in err, \
            (argv, err)
    assert rights_snapshot(firm.url) == before


def test_handover_moves_calendars_future_visits_customers_and_grants(firm):
    alice, bob, far, url = firm.alice, firm.bob, firm.far, firm.url
    customer, domain = unique_name("Handover Holding "), unique_name("handover") + ".example"
    ok(url, "customer", "add", customer, "--domain", domain, "--owner", alice.user)
    guest = f"ATTENDEE;CN=Jo Guest:mailto:jo@{domain}\r\n"
    past = event("past", "20250110T100000Z", "20250110T110000Z", "Old visit", guest)
    future = event("future", "20990110T100000Z", "20990110T110000Z", "Next visit", guest)
    for name, body in (("past", past), ("future", future)):
        assert alice.put(f"/{alice.user}/calendar/{name}.ics", body).status == 201
    ok(url, "grant", "add", f"{far.user}/calendar", "--to", f"user:{alice.user}",
       "--level", "read")
    ok(url, "grant", "add", f"{alice.user}/calendar", "--to", f"user:{far.user}",
       "--level", "summary")
    ok(url, "user", "disable", alice.user)
    before = rights_snapshot(url)

    plan = ok(url, "user", "handover", alice.user, "--to", bob.user, "--dry-run")
    moved = f"{bob.user}/calendar-from-{alice.user}"
    assert f"move collection {alice.user}/calendar -> {moved}" in plan
    assert f"move collection {alice.user}/contacts -> {bob.user}/contacts-from-{alice.user}" \
        in plan
    assert "1 future visit(s)" in plan and customer in plan and "dry run" in plan
    assert rights_snapshot(url) == before

    out = ok(url, "user", "handover", alice.user, "--to", bob.user)
    # one grant was alice's; the one on her calendar moves with the calendar
    assert "2 collection(s), 1 future visit(s), 1 customer(s), 1 grant(s)" in out
    # the calendar, byte for byte, now bob's; far still sees it at summary
    assert bob.get(f"/{moved}/future.ics").text == future
    assert bob.get(f"/{moved}/past.ics").text == past
    seen_by_far = far.get(f"/{moved}/future.ics").text
    assert f"SUMMARY:{customer}" in seen_by_far and "Jo Guest" not in seen_by_far
    assert len(db_snapshot(url)["items"]) == len(before["items"])
    # future visits move to bob, past ones stay alice's history
    reps = {v["uid"]: v["reps"] for v in ok(url, "visit", "list", "--json")}
    assert reps["future"] == bob.user and reps["past"] == alice.user
    assert ok(url, "customer", "show", customer, "--json")[0]["owner"] == bob.user
    assert f"jo@{domain}" in bob.get(f"/{bob.user}/crm-contacts/").text
    grants = {(g["collection"], g["grantee"]): g["level"]
              for g in ok(url, "grant", "list", "--json")
              if {alice.user, bob.user, far.user} & {g["collection"].split("/")[0],
                                                     g["grantee"].split(":")[1]}}
    assert grants == {(f"{far.user}/calendar", f"user:{bob.user}"): "read",
                      (moved, f"user:{far.user}"): "summary"}
    [record] = ok(url, "audit", "list", "--object", f"user:{alice.user}", "--json")[:1]
    assert record["action"] == "user.handover" and record["actor"].startswith("os:")
    ok(url, "audit", "verify", "--admin")
