"""The audit trail: every DAV change and admin command is recorded in its own transaction,
chained by hash, and `crm-admin audit verify` names any record edited or deleted."""

from __future__ import annotations

import json

from sqlalchemy import text
from sqlalchemy.orm import Session

from admin_cli.main import main
from conftest import statements_run, unique_name
from crmkit import apple
from ical import event
from server.crm import audit, db


def records(db_url, owner):
    with Session(db.shared_engine(db_url)) as s:
        rows = s.execute(text("SELECT actor, action, object, client, summary, before_digest, "
                              "after_digest FROM audit_log WHERE stream = :s ORDER BY seq"),
                         {"s": audit.dav_stream(owner)}).all()
    return [tuple(r) for r in rows]


def test_every_dav_change_is_recorded(dav, db_url):
    base = f"/{dav.user}/calendar/"
    other = f"/{dav.user}/other/"
    dav.mkcalendar(other)
    etag1 = dav.put(base + "a.ics", event("a")).headers["etag"].strip('"')
    etag2 = dav.put(base + "a.ics", event("a", start="20250111T100000Z",
                                          summary="Moved")).headers["etag"].strip('"')
    dav.request("MOVE", base + "a.ics", b"", {"Destination": f"http://127.0.0.1:5232{other}b.ics"})
    dav.delete(other + "b.ics")
    dav.delete(other)
    log = records(db_url, dav.user)
    actions = [r[1] for r in log]
    assert actions == ["collection.create", "collection.create", "collection.create",
                       "collection.create", "item.create", "item.update", "item.move",
                       "item.delete", "collection.delete"]
    created, updated, moved, deleted = log[4], log[5], log[6], log[7]
    assert created[:4] == (dav.user, "item.create", base + "a.ics", "127.0.0.1")
    assert created[4] == "created VEVENT a" and created[6] == etag1
    assert updated[4] == "changed DTSTART, SUMMARY"  # DTSTAMP etc. are noise
    assert (updated[5], updated[6]) == (etag1, etag2)
    assert moved[2] == base + "a.ics" and moved[4] == f"moved to {other}b.ics"
    assert deleted[2] == other + "b.ics" and deleted[5] == etag2 and deleted[6] is None
    assert log[8][2] == other
    with Session(db.shared_engine(db_url)) as s:
        assert audit.verify(s)[1] == []


def test_refused_write_leaves_no_record(dav, snapshot):
    dav.put(f"/{dav.user}/calendar/a.ics", event("a"))
    before = snapshot()
    assert dav.put(f"/{dav.user}/calendar/b.ics", event("a")).status == 409
    assert dav.put(f"/{dav.user}/calendar/c.ics", "garbage").status == 400
    assert snapshot() == before  # includes the audit_log count


def run(capsys, url, *argv):
    code = main(["--db-url", url, *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_admin_commands_are_audited_with_the_os_user(capsys, db_url):
    run(capsys, db_url, "user", "add", "audited-user")
    run(capsys, db_url, "user", "disable", "audited-user")
    run(capsys, db_url, "user", "add", "audited-user")  # refused: not recorded
    code, out, _ = run(capsys, db_url, "audit", "list", "--object", "user:audited-user",
                       "--json")
    entries = json.loads(out)
    assert [e["action"] for e in entries] == ["user.disable", "user.add"]  # newest first
    assert entries[0]["actor"].startswith("os:") and entries[0]["client"].startswith("cli@")
    assert entries[1]["summary"] == "created user audited-user (role rep)"
    code, out, err = run(capsys, db_url, "audit", "list", "--since", "not-a-date")
    assert code == 1 and "invalid --since 'not-a-date'" in err


def test_verify_names_edited_and_deleted_records(capsys, dav, db_url):
    for uid in "abcd":
        dav.put(f"/{dav.user}/calendar/{uid}.ics", event(uid))
    code, out, _ = run(capsys, db_url, "audit", "verify")
    assert code == 0 and out.startswith("audit trail intact: ")
    stream = audit.dav_stream(dav.user)
    engine = db.shared_engine(db_url)
    with engine.begin() as conn:
        ids = [r[0] for r in conn.execute(text(
            "SELECT id FROM audit_log WHERE stream = :s ORDER BY seq"), {"s": stream})]
        conn.execute(text("UPDATE audit_log SET summary = 'nothing to see' WHERE id = :i"),
                     {"i": ids[-3]})
    code, out, _ = run(capsys, db_url, "audit", "verify")
    assert code == 1
    assert f"TAMPERED: record {ids[-3]} ({stream} #" in out and "was edited" in out
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM audit_log WHERE id = :i"), {"i": ids[-2]})
    code, out, _ = run(capsys, db_url, "audit", "verify")
    assert code == 1 and f"TAMPERED: record {ids[-1]} " in out and "missing (deleted)" in out
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM audit_log WHERE id = :i"), {"i": ids[-1]})
    code, out, _ = run(capsys, db_url, "audit", "verify")
    assert code == 1 and f"TAMPERED: stream {stream}: the chain ends at" in out


def test_deferred_records_are_appended_per_stream_and_dropped_with_a_failed_block(engine):
    stream_a, stream_b = audit.dav_stream(unique_name("a")), audit.dav_stream(unique_name("b"))

    def note(name):
        return audit.Note("test.note", name, actor="tester", summary=name)

    def logged(session, stream):
        return session.execute(text("SELECT object, seq FROM audit_log WHERE stream = :s "
                                    "ORDER BY seq"), {"s": stream}).all()

    with Session(engine) as session, session.begin():
        with audit.deferring(session):
            audit.record(session, stream_a, [note("a1")])
            audit.record(session, stream_b, [note("b1")])
            try:
                with session.begin_nested(), audit.deferring(session):
                    audit.record(session, stream_a, [note("lost")])
                    raise RuntimeError("the change failed")
            except RuntimeError:
                pass
            audit.record(session, stream_a, [note("a2")])
            assert logged(session, stream_a) == []        # not yet: at the end, together
        assert logged(session, stream_a) == [("a1", 1), ("a2", 2)]
        assert logged(session, stream_b) == [("b1", 1)]
        audit.record(session, stream_b, [note("b2")])     # outside a scope: at once
        assert logged(session, stream_b) == [("b1", 1), ("b2", 2)]
    with Session(engine) as session:       # (PostgreSQL's database is shared by the tests)
        assert [p for p in audit.verify(session)[1] if p.stream in (stream_a, stream_b)] == []


def test_an_ingesting_put_appends_its_records_with_one_head_update(crm, db_url):
    with statements_run(db_url) as statements:
        crm.put(crm.alice, "v.ics", apple("audit-v", "Visit at Acme", [
            ("Jane Roe", "jane@acme.example"), ("John Doe", "john@acme.example")],
            f"{crm.alice.user}@ourco.example"))
    log = records(db_url, crm.alice.user)
    stream = audit.dav_stream(crm.alice.user)
    actions = [r[1] for r in log]
    assert actions[-4:] == ["item.create", "contact.create", "contact.create", "visit.create"]
    on_heads = [s.split()[0] for s in statements if "audit_streams" in s]
    assert on_heads == ["SELECT", "UPDATE"]       # the head locked and moved once, not twice
    with Session(db.shared_engine(db_url)) as s:
        assert [p for p in audit.verify(s)[1] if p.stream == stream] == []
