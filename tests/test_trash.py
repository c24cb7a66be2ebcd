"""crm-admin trash: deleted items and collections come back exactly, or not at all."""

from __future__ import annotations

import json


from admin_cli.main import main
from ical import event, sync_collection
from xmlparse import responses, sync_token


def run(capsys, url, *argv):
    code = main(["--db-url", url, *argv])
    out, err = capsys.readouterr()
    return code, out, err


def trash_of(capsys, url, owner):
    code, out, _ = run(capsys, url, "trash", "list", "--owner", owner, "--json")
    assert code == 0
    return json.loads(out)


def test_deleted_item_is_restored_exactly_and_synced(capsys, dav, db_url):
    base = f"/{dav.user}/calendar/"
    text = event("back", extra="X-NOTE:keeps, commas\n")
    etag = dav.put(base + "back.ics", text).headers["etag"]
    token = sync_token(dav.report(base, sync_collection()).body)
    assert dav.delete(base + "back.ics").status == 200
    [entry] = trash_of(capsys, db_url, dav.user)
    assert (entry["kind"], entry["object"], entry["uid"], entry["deleted_by"]) == \
        ("item", base + "back.ics", "back", dav.user)
    code, out, _ = run(capsys, db_url, "trash", "restore", str(entry["id"]))
    assert code == 0 and out == f"restored {base}back.ics\n"
    got = dav.get(base + "back.ics")
    assert got.text == text and got.headers["etag"] == etag
    assert set(responses(dav.report(base, sync_collection(token)).body)) == {base + "back.ics"}
    assert trash_of(capsys, db_url, dav.user) == []
    code, out, _ = run(capsys, db_url, "audit", "list", "--object", base + "back.ics", "--json")
    assert [e["action"] for e in json.loads(out)][:2] == ["item.restore", "item.delete"]


def test_deleted_calendar_comes_back_with_its_items(capsys, dav, db_url):
    base = f"/{dav.user}/visits/"
    assert dav.mkcalendar(base).status == 201
    for uid in ("v1", "v2"):
        dav.put(base + f"{uid}.ics", event(uid))
    assert dav.delete(base).status == 200
    entries = trash_of(capsys, db_url, dav.user)
    collection = next(e for e in entries if e["kind"] == "collection")
    code, out, _ = run(capsys, db_url, "trash", "restore", str(collection["id"]))
    assert code == 0 and out == f"restored {base}\n"
    listing = responses(dav.propfind(base, depth="1").body)
    assert set(listing) == {base, base + "v1.ics", base + "v2.ics"}
    assert dav.get(base + "v2.ics").text == event("v2")
    assert trash_of(capsys, db_url, dav.user) == []


def test_refused_restores_change_nothing(capsys, dav, db_url, snapshot):
    base = f"/{dav.user}/calendar/"
    dav.put(base + "a.ics", event("a"))
    dav.delete(base + "a.ics")
    [entry] = trash_of(capsys, db_url, dav.user)
    dav.put(base + "a.ics", event("other"))  # the href is taken again
    before = snapshot()
    code, _, err = run(capsys, db_url, "trash", "restore", str(entry["id"]))
    assert code == 1 and err == f"crm-admin: error: item '{base}a.ics' already exists\n"
    assert snapshot() == before
    dav.delete(base + "a.ics")
    dav.put(base + "b.ics", event("a"))  # now the UID is taken
    before = snapshot()
    code, _, err = run(capsys, db_url, "trash", "restore", str(entry["id"]))
    assert code == 1 and "UID 'a' is already used" in err
    assert snapshot() == before
    code, _, err = run(capsys, db_url, "trash", "restore", "999999")
    assert code == 1 and err == "crm-admin: error: trash entry '999999' does not exist\n"
    assert snapshot() == before


def test_item_of_a_deleted_collection_needs_the_collection_first(capsys, dav, db_url,
                                                                 snapshot):
    base = f"/{dav.user}/gone/"
    dav.mkcalendar(base)
    dav.put(base + "x.ics", event("x"))
    dav.delete(base + "x.ics")
    dav.delete(base)
    item = next(e for e in trash_of(capsys, db_url, dav.user) if e["kind"] == "item")
    before = snapshot()
    code, _, err = run(capsys, db_url, "trash", "restore", str(item["id"]))
    assert code == 1
    assert err == f"crm-admin: error: collection {base} no longer exists: restore it first\n"
    assert snapshot() == before
