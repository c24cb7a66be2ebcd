"""The storage contract, through Radicale's WSGI app, on SQLite and PostgreSQL.

Each test states one promise of the plugin (RFC 4791/6352/6578 behaviour as Radicale exposes
it, plus what our indexes must never get wrong)."""

from __future__ import annotations

from sqlalchemy import text

from conftest import statements_run, unique_name
from ical import (PROPFIND_CTAG, event, multiget, sync_collection, time_range_query, vcard)
from xmlparse import prop, responses, sync_token
from server.crm import db


def cal(dav, name="calendar"):
    return f"/{dav.user}/{name}/"


def test_put_get_replace_delete(dav):
    path = cal(dav) + "e1.ics"
    created = dav.put(path, event("e1"))
    assert created.status == 201 and created.headers["etag"]
    got = dav.get(path)
    assert got.status == 200 and got.text == event("e1")
    assert got.headers["etag"] == created.headers["etag"]
    replaced = dav.put(path, event("e1", summary="Moved"))
    assert replaced.status == 204 and replaced.headers["etag"] != created.headers["etag"]
    assert "SUMMARY:Moved" in dav.get(path).text
    assert dav.delete(path).status == 200
    assert dav.get(path).status == 404
    assert dav.delete(path).status == 404


def test_a_put_reads_the_item_it_replaces_once(dav, db_url):
    """The item at a PUT's path is read with its collection, under the write lock; the
    write reuses that read (and still tells a replacement from a creation)."""
    path = cal(dav) + "e1.ics"
    assert dav.put(path, event("e1")).status == 201
    with statements_run(db_url) as statements:
        replaced = dav.put(path, event("e1", summary="Moved"))
    assert replaced.status == 204
    reads = [s for s in statements if s.startswith("SELECT") and "dav_items.text" in s]
    assert len(reads) == 1 and "JOIN dav_items" in reads[0], reads
    assert "SUMMARY:Moved" in dav.get(path).text


def test_if_match_and_if_none_match(dav, snapshot):
    path = cal(dav) + "e1.ics"
    etag = dav.put(path, event("e1")).headers["etag"]
    before = snapshot()
    assert dav.put(path, event("e1", summary="x"), **{"If-Match": '"stale"'}).status == 412
    assert dav.put(path, event("e1", summary="x"), **{"If-None-Match": "*"}).status == 412
    assert dav.delete(path, **{"If-Match": '"stale"'}).status == 412
    assert snapshot() == before
    assert dav.put(path, event("e1", summary="y"), **{"If-Match": etag}).status == 204


def test_uid_unique_per_collection(dav, snapshot):
    assert dav.put(cal(dav) + "a.ics", event("same")).status == 201
    before = snapshot()
    clash = dav.put(cal(dav) + "b.ics", event("same"))
    assert clash.status == 409 and b"no-uid-conflict" in clash.body
    # A different UID at an existing href is refused too.
    assert dav.put(cal(dav) + "a.ics", event("other")).status == 409
    assert snapshot() == before


def test_time_range_query_uses_index_and_misses_nothing(dav):
    base = cal(dav)
    dav.put(base + "jan.ics", event("jan", "20250110T100000Z", "20250110T110000Z"))
    dav.put(base + "feb.ics", event("feb", "20250210T100000Z", "20250210T110000Z"))
    weekly = event("weekly", "20240101T090000Z", "20240101T100000Z",
                   extra="RRULE:FREQ=WEEKLY\n")
    dav.put(base + "weekly.ics", weekly)
    allday = event("allday", extra="").replace("DTSTART:20250110T100000Z",
                                               "DTSTART;VALUE=DATE:20250301").replace(
        "DTEND:20250110T110000Z", "DTEND;VALUE=DATE:20250302")
    dav.put(base + "allday.ics", allday)
    found = responses(dav.report(base, time_range_query("20250101T000000Z",
                                                       "20250120T000000Z")).body)
    assert set(found) == {base + "jan.ics", base + "weekly.ics"}
    found = responses(dav.report(base, time_range_query("20250301T000000Z",
                                                       "20250301T120000Z")).body)
    assert set(found) == {base + "allday.ics"}  # 2025-03-01 is a Saturday
    # Monday 2025-03-03 09:00 is an occurrence of the open-ended weekly series.
    found = responses(dav.report(base, time_range_query("20250303T000000Z",
                                                       "20250304T000000Z")).body)
    assert set(found) == {base + "weekly.ics"}
    # A window between occurrences: the candidate query over-returns, exact filtering drops it.
    found = responses(dav.report(base, time_range_query("20250304T000000Z",
                                                       "20250305T000000Z")).body)
    assert found == {}


def test_indexed_columns_hold_the_occurrence_span(dav, db_url):
    dav.put(cal(dav) + "r.ics", event("r", "20250106T090000Z", "20250106T100000Z",
                                      extra="RRULE:FREQ=DAILY;COUNT=3\nCLASS:PRIVATE\n"))
    with db.shared_engine(db_url).connect() as conn:
        row = conn.execute(text("SELECT component, range_start, range_end, class, uid "
                                "FROM dav_items WHERE uid = 'r'")).one()
    # 2025-01-06 09:00Z to 2025-01-08 10:00Z
    assert tuple(row) == ("VEVENT", 1736154000, 1736330400, "PRIVATE", "r")


def test_multiget_and_missing_hrefs(dav):
    base = cal(dav)
    for uid in ("a", "b"):
        dav.put(base + f"{uid}.ics", event(uid))
    found = responses(dav.report(base, multiget([base + "a.ics", base + "b.ics",
                                                 base + "nope.ics"])).body)
    assert "200" in found[base + "a.ics"][0] and "200" in found[base + "b.ics"][0]
    assert "404" in found[base + "nope.ics"][0]
    data = found[base + "a.ics"][1].find(".//{urn:ietf:params:xml:ns:caldav}calendar-data")
    assert data.text == event("a").replace("\r\n", "\n")  # XML normalises CRLF


def test_sync_collection_initial_incremental_and_invalid(dav):
    base = cal(dav)
    for uid in ("a", "b", "c"):
        dav.put(base + f"{uid}.ics", event(uid))
    first = dav.report(base, sync_collection())
    assert first.status == 207
    token = sync_token(first.body)
    assert set(responses(first.body)) == {base + "a.ics", base + "b.ics", base + "c.ics"}
    unchanged = dav.report(base, sync_collection(token))
    assert responses(unchanged.body) == {} and sync_token(unchanged.body) == token
    dav.put(base + "a.ics", event("a", summary="changed"))
    dav.put(base + "d.ics", event("d"))
    dav.delete(base + "b.ics")
    delta = dav.report(base, sync_collection(token))
    found = responses(delta.body)
    assert set(found) == {base + "a.ics", base + "d.ics", base + "b.ics"}
    assert "404" in found[base + "b.ics"][0]
    assert sync_token(delta.body) != token
    for bad in ("http://radicale-crm/ns/sync/nonsense-1", "garbage",
                token.rsplit("-", 1)[0] + "-999999"):
        refused = dav.report(base, sync_collection(bad))
        assert refused.status == 403 and b"valid-sync-token" in refused.body


def test_sync_token_of_deleted_and_recreated_collection_is_refused(dav):
    base = cal(dav, "temp")
    assert dav.mkcalendar(base).status == 201
    dav.put(base + "a.ics", event("a"))
    token = sync_token(dav.report(base, sync_collection()).body)
    assert dav.delete(base).status == 200
    assert dav.mkcalendar(base).status == 201
    assert dav.report(base, sync_collection(token)).status == 403


def test_pruned_tombstones_invalidate_old_tokens(app, dav, db_url):
    base = cal(dav)
    dav.put(base + "a.ics", event("a"))
    token = sync_token(dav.report(base, sync_collection()).body)
    dav.delete(base + "a.ics")
    with db.shared_engine(db_url).begin() as conn:  # age the tombstone past max_sync_token_age
        conn.execute(text("UPDATE dav_changes SET changed_at = '2000-01-01 00:00:00+00:00'"))
    dav.put(base + "b.ics", event("b"))
    dav.delete(base + "b.ics")  # a delete prunes what is older than the limit
    assert dav.report(base, sync_collection(token)).status == 403


def test_ctag_changes_exactly_when_content_changes(dav):
    base = cal(dav)

    def ctag():
        return prop(dav.propfind(base, PROPFIND_CTAG).body,
                    "{http://calendarserver.org/ns/}getctag")

    first = ctag()
    assert ctag() == first
    dav.put(base + "a.ics", event("a"))
    second = ctag()
    assert second != first
    assert dav.put(base + "a.ics", event("a"), **{"If-Match": '"nope"'}).status == 412
    assert ctag() == second
    dav.delete(base + "a.ics")
    assert ctag() not in (first, second)


def test_mkcalendar_props_proppatch_and_collection_delete(dav, snapshot):
    base = cal(dav, "visits")
    body = """<?xml version="1.0" encoding="utf-8"?>
<C:mkcalendar xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav"><D:set><D:prop>
<D:displayname>Návštevy 客户</D:displayname></D:prop></D:set></C:mkcalendar>"""
    assert dav.mkcalendar(base, body).status == 201
    exists = dav.mkcalendar(base, body)  # RFC 4791 5.3.1.1
    assert exists.status == 409 and b"resource-must-be-null" in exists.body
    assert "Návštevy 客户" in dav.propfind(base, PROPFIND_CTAG).text
    patch = """<?xml version="1.0" encoding="utf-8"?>
<D:propertyupdate xmlns:D="DAV:"><D:set><D:prop><D:displayname>Renamed</D:displayname>
</D:prop></D:set></D:propertyupdate>"""
    assert dav.request("PROPPATCH", base, patch, {"Content-Type": "application/xml"}).status == 207
    assert "Renamed" in dav.propfind(base, PROPFIND_CTAG).text
    dav.put(base + "a.ics", event("a"))
    trash_before = snapshot()["trash"]
    assert dav.delete(base).status == 200
    assert dav.propfind(base).status == 404
    assert snapshot()["trash"] == trash_before + 2  # the collection and its item


def test_addressbook_mkcol_and_vcards(dav):
    base = f"/{dav.user}/book/"
    body = """<?xml version="1.0" encoding="utf-8"?>
<D:mkcol xmlns:D="DAV:" xmlns:CR="urn:ietf:params:xml:ns:carddav"><D:set><D:prop>
<D:resourcetype><D:collection/><CR:addressbook/></D:resourcetype>
<D:displayname>Book</D:displayname></D:prop></D:set></D:mkcol>"""
    assert dav.request("MKCOL", base, body, {"Content-Type": "application/xml"}).status == 201
    card = vcard("c1")
    assert dav.put(base + "c1.vcf", card, "text/vcard").status == 201
    assert dav.get(base + "c1.vcf").text == card
    query = """<?xml version="1.0" encoding="utf-8"?>
<CR:addressbook-query xmlns:D="DAV:" xmlns:CR="urn:ietf:params:xml:ns:carddav">
<D:prop><D:getetag/></D:prop><CR:filter><CR:prop-filter name="EMAIL">
<CR:text-match collation="i;unicode-casemap" match-type="contains">JANA@</CR:text-match>
</CR:prop-filter></CR:filter></CR:addressbook-query>"""
    assert set(responses(dav.report(base, query).body)) == {base + "c1.vcf"}


def test_move_within_and_across_collections(dav):
    base, other = cal(dav), cal(dav, "other")
    assert dav.mkcalendar(other).status == 201
    dav.put(base + "a.ics", event("a"))
    token = sync_token(dav.report(base, sync_collection()).body)
    moved = dav.request("MOVE", base + "a.ics", b"",
                        {"Destination": f"http://127.0.0.1:5232{base}renamed.ics"})
    assert moved.status == 201
    assert dav.get(base + "a.ics").status == 404 and dav.get(base + "renamed.ics").status == 200
    delta = responses(dav.report(base, sync_collection(token)).body)
    assert set(delta) == {base + "a.ics", base + "renamed.ics"}
    moved = dav.request("MOVE", base + "renamed.ics", b"",
                        {"Destination": f"http://127.0.0.1:5232{other}a.ics"})
    assert moved.status == 201
    assert dav.get(other + "a.ics").text == event("a")
    # A UID already present in the target collection refuses the move.
    dav.put(base + "x.ics", event("x"))
    dav.put(other + "y.ics", event("x"))
    clash = dav.request("MOVE", base + "x.ics", b"",
                        {"Destination": f"http://127.0.0.1:5232{other}z.ics"})
    assert clash.status == 409
    assert dav.get(base + "x.ics").status == 200 and dav.get(other + "z.ics").status == 404


def test_whole_collection_put_imports_and_replaces(dav):
    base = cal(dav, "imported")
    ics = ("BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//x//EN\r\nX-WR-CALNAME:Imported\r\n"
           "BEGIN:VEVENT\r\nUID:i1\r\nDTSTAMP:20250101T000000Z\r\nDTSTART:20250105T100000Z\r\n"
           "SUMMARY:One\r\nX-CRM-GEO:geo:48.14,17.10\r\nEND:VEVENT\r\n"
           "BEGIN:VEVENT\r\nUID:i2\r\nDTSTAMP:20250101T000000Z\r\nDTSTART:20250106T100000Z\r\n"
           "SUMMARY:Two\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n")
    assert dav.put(base, ics).status == 201
    listing = responses(dav.propfind(base, depth="1").body)
    assert set(listing) == {base, base + "i1.ics", base + "i2.ics"}
    assert "X-CRM-GEO:geo:48.14,17.10\r\n" in dav.get(base + "i1.ics").text
    assert "Imported" in dav.propfind(base, PROPFIND_CTAG).text
    token = sync_token(dav.report(base, sync_collection()).body)
    replacement = ics.replace("UID:i2", "UID:i3")
    assert dav.put(base, replacement).status == 201
    delta = responses(dav.report(base, sync_collection(token)).body)
    assert set(delta) == {base + "i1.ics", base + "i2.ics", base + "i3.ics"}
    assert "404" in delta[base + "i2.ics"][0]
    export = dav.get(base)
    assert export.status == 200 and export.text.count("BEGIN:VEVENT") == 2


def test_unicode_and_problematic_names(dav):
    base = cal(dav, "日历 Kalendár")
    assert dav.mkcalendar(base).status == 201
    href = base + "schôdzka 1.ics"
    assert dav.put(href, event("uni")).status == 201
    assert dav.get(href).text == event("uni")
    assert href in responses(dav.propfind(base, depth="1").body)
    # Radicale's default path validation ("minimal") refuses : , ? * " ' in names.
    refused = dav.put(base + "a:b.ics", event("colon"))
    assert refused.status == 400 and refused.text.startswith("invalid path:")


def test_collection_get_exports_even_bare_lf_items(dav):
    base = cal(dav)
    dav.put(base + "lf.ics", event("lf").replace("\r\n", "\n"))
    assert dav.get(base + "lf.ics").text == event("lf").replace("\r\n", "\n")
    export = dav.get(base)
    assert "UID:lf" in export.text


def test_users_are_isolated_by_default(dav, app, make_user):
    from davclient import Dav
    other, password = make_user()
    dav.put(cal(dav) + "a.ics", event("a"))
    intruder = Dav(app, other, password)
    assert intruder.get(cal(dav) + "a.ics").status == 403
    assert intruder.put(cal(dav) + "b.ics", event("b")).status == 403
    assert intruder.delete(cal(dav) + "a.ics").status == 403


def test_collection_snapshot_follows_its_own_writes(app, dav):
    """After upload/delete through a collection object, its ETag (CTag) is what the
    database says, without a re-read."""
    import vobject
    from radicale import item as radicale_item

    storage = app._storage
    path = f"/{dav.user}/calendar/"

    def fresh_etag():
        with storage.acquire_lock("r", dav.user):
            return next(iter(storage.discover(path))).etag

    with storage.acquire_lock("w", dav.user, path=path + "s.ics", request="PUT"):
        collection = next(iter(storage.discover(path)))
        before = collection.etag
        item = radicale_item.Item(collection_path=f"{dav.user}/calendar",
                                  vobject_item=vobject.readOne(event("s")))
        item.prepare()
        collection.upload("s.ics", item)
        after_upload = collection.etag
    assert after_upload != before and after_upload == fresh_etag()
    with storage.acquire_lock("w", dav.user, path=path + "s.ics", request="DELETE"):
        collection.delete("s.ics")
        after_delete = collection.etag
    assert after_delete not in (before, after_upload) and after_delete == fresh_etag()


def test_collections_and_their_items_are_read_together(engine, db_url, monkeypatch):
    """``dav.get_collections_and_items``: each collection gets only the hrefs asked of it
    (an href wanted elsewhere is not taken from it), a missing collection is left out, and
    more hrefs than one statement's share are read in chunks, the collections once."""
    from sqlalchemy.orm import Session

    from server.crm import dav

    def item(href):
        return dav.ItemData(href=href, uid=href, name="VCARD", component="", text=href,
                            etag=f'"{href}"', range_start=0, range_end=1)

    monkeypatch.setattr(dav, "_CHUNK", 2)
    user = unique_name()
    pa, pb, pc = f"{user}/a", f"{user}/b", f"{user}/c"
    with Session(engine) as session, session.begin():
        a, _ = dav.create_collection(session, pa, {"tag": "VADDRESSBOOK"})
        b, _ = dav.create_collection(session, pb, {"tag": "VADDRESSBOOK"})
        dav.put_items_in(session, {a.id: [item(h) for h in ("x", "y", "z")],
                                   b.id: [item(h) for h in ("x", "w")]})
        found, items = dav.get_collections_and_items(
            session, {pa: ["x", "z", "v"], pb: ["w", "v"], pc: ["x"]})
        assert {p: s.id for p, s in found.items()} == {pa: a.id, pb: b.id}
        assert {p: {h: i.text for h, i in hs.items()} for p, hs in items.items()} == \
            {pa: {"x": "x", "z": "z"}, pb: {"w": "w"}}
        assert dav.get_collections_and_items(session, {pb: []}) == ({pb: found[pb]}, {pb: {}})
        with statements_run(db_url) as seen:
            assert dav.get_collections_and_items(session, {}) == ({}, {})
        assert seen == []                   # nothing asked, nothing read


def test_item_look_ups_use_their_own_indexes_in_a_calendar_new_to_the_statistics(engine):
    """A calendar filled since the last ANALYZE (an import) looks empty to the planner. Its
    UID check and item look-up must still go through the unique (collection, uid) and
    (collection, href) indexes: through the time-range index they filtered every item of
    the calendar, on every PUT. The time-range index still serves time ranges."""
    from sqlalchemy.orm import Session

    from server.crm import dav

    def items(prefix, n):
        return [dav.ItemData(href=f"{prefix}{i}.ics", uid=f"{prefix}-{i}-0123456789abcdef",
                             name="VCALENDAR", component="VEVENT", text="x", etag=f'"{i}"',
                             range_start=1_000_000 + 3600 * i,
                             range_end=1_000_000 + 3600 * i + 1800) for i in range(n)]

    def plan(conn, sql):
        if engine.dialect.name == "sqlite":
            return " ".join(row[3] for row in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + sql))
        return " ".join(row[0] for row in conn.exec_driver_sql("EXPLAIN " + sql))

    def literal(stmt, **params):
        return str(stmt.params(**params).compile(engine, compile_kwargs={"literal_binds": True}))

    with Session(engine) as session, session.begin():
        known, _ = dav.create_collection(session, f"{unique_name()}/known", {"tag": "VCALENDAR"})
        dav.put_items(session, known.id, items("k", 3000))
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql("ANALYZE dav_items" if engine.dialect.name != "sqlite"
                             else "ANALYZE")
    with Session(engine) as session, session.begin():
        new, _ = dav.create_collection(session, f"{unique_name()}/new", {"tag": "VCALENDAR"})
        dav.put_items(session, new.id, items("n", 500))
    with engine.connect() as conn:
        by_uid = plan(conn, literal(dav._HAS_UID, cid=new.id, uid="n-250-0123456789abcdef"))
        by_href = plan(conn, literal(dav._ITEM_AT, cid=new.id, href="n250.ics"))
        ranged = plan(conn, f"SELECT href FROM dav_items WHERE collection_id = {known.id} "
                            f"AND range_start < 1036000 AND range_end > 1000000 ORDER BY href")
    assert "time_range" not in by_uid and "uid" in by_uid, by_uid
    assert "time_range" not in by_href, by_href
    assert "ix_dav_items_time_range" in ranged, ranged
