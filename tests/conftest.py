"""Fixtures: every test that touches a database runs on SQLite and, when
``CRM_TEST_DATABASE_URL`` is set, on PostgreSQL too (``CRM_REQUIRE_POSTGRESQL=1`` in CI
turns a missing or unreachable PostgreSQL into a failure instead of a skip)."""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import uuid
from typing import Iterator, Optional

import pytest
from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

import crmkit
from davclient import Dav, LiveServer, make_configuration
from server.app import CrmApplication
from server.crm import db, schema, users

PG_URL = os.environ.get("CRM_TEST_DATABASE_URL", "").strip()
REQUIRE_PG = os.environ.get("CRM_REQUIRE_POSTGRESQL") == "1"
PG_SKIP = ("PostgreSQL tests skipped: CRM_TEST_DATABASE_URL is not set "
           "(e.g. postgresql://postgres@127.0.0.1:5432/test; CI sets it)")
PASSWORD = "correct horse battery"
_counter = itertools.count()


def pytest_configure(config):
    if REQUIRE_PG and not PG_URL:
        raise pytest.UsageError("CRM_REQUIRE_POSTGRESQL=1 but CRM_TEST_DATABASE_URL is not set")


def pytest_report_header(config):
    return "databases: sqlite" + (f", postgresql ({PG_URL})" if PG_URL else f" ({PG_SKIP})")


# --- databases ---------------------------------------------------------------------------

@contextlib.contextmanager
def own_pg_database(prefix: str, template: Optional[str] = None,
                    migrate: bool = True) -> Iterator[str]:
    """A PostgreSQL database of one's own on the test server (``CRM_TEST_DATABASE_URL``),
    migrated (or copied from ``template``, a database nobody is connected to), dropped
    afterwards. Skips, or fails under ``CRM_REQUIRE_POSTGRESQL=1``, when there is none."""
    if not PG_URL:
        pytest.skip(PG_SKIP)
    admin_url = db.resolve_url(PG_URL)
    name = prefix + uuid.uuid4().hex[:10]
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    copy = f' TEMPLATE "{make_url(template).database}"' if template else ""
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"{copy}'))
    except Exception as e:
        admin.dispose()
        if REQUIRE_PG or template:
            raise
        pytest.skip(f"PostgreSQL tests skipped: cannot reach {PG_URL}: {e}")
    url = make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    try:
        if migrate and not template:
            engine = db.make_engine(url)
            schema.upgrade(engine)
            engine.dispose()
        yield url
    finally:
        db.shared_engine(url).dispose()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(scope="session")
def pg_server_url():
    """A fresh PostgreSQL database for this test session, migrated, dropped afterwards."""
    with own_pg_database("crm_test_") as url:
        yield url


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory):
    path = tmp_path_factory.mktemp("template") / "template.db"
    engine = db.make_engine(f"sqlite:///{path}")
    schema.upgrade(engine)
    engine.dispose()
    return path


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgresql)])
def db_url(request, tmp_path, sqlite_template):
    if request.param == "sqlite":
        path = tmp_path / "crm.db"
        shutil.copy(sqlite_template, path)
        return f"sqlite:///{path}"
    return request.getfixturevalue("pg_server_url")


@pytest.fixture
def sqlite_url(tmp_path, sqlite_template):
    path = tmp_path / "crm.db"
    shutil.copy(sqlite_template, path)
    return f"sqlite:///{path}"


@pytest.fixture
def engine(db_url):
    return db.shared_engine(db_url)


# --- users ---------------------------------------------------------------------------------

@contextlib.contextmanager
def statements_run(url: str) -> Iterator[list[str]]:
    """The SQL statements the block sends to that database, whitespace collapsed."""
    seen: list[str] = []
    engine = db.shared_engine(url)

    def record(conn, cursor, statement, *args):
        seen.append(" ".join(statement.split()))

    event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", record)


def unique_name(prefix: str = "user") -> str:
    return f"{prefix}{os.getpid()}x{next(_counter)}{uuid.uuid4().hex[:4]}"


def create_user(url: str, name: str | None = None, password: str = PASSWORD,
                role: str = "rep") -> tuple[str, str]:
    name = name or unique_name()
    with Session(db.shared_engine(url)) as session, session.begin():
        users.add_user(session, name, password, role=role)
    return name, password


@pytest.fixture
def make_user(db_url):
    return lambda name=None, password=PASSWORD, role="rep": create_user(db_url, name, password,
                                                                        role)


# --- the server ------------------------------------------------------------------------------

@pytest.fixture
def app(db_url):
    return CrmApplication(make_configuration(db_url))


@pytest.fixture
def dav(app, make_user):
    """A logged-in client (its user is ``dav.user``) with the default calendar present."""
    name, password = make_user()
    client = Dav(app, name, password)
    assert client.propfind(f"/{name}/").status == 207
    return client


@pytest.fixture
def live_server(tmp_path):
    servers = []

    def start(url: str, *extra: str) -> LiveServer:
        server = LiveServer(url, str(tmp_path / f"server{len(servers)}.log"), *extra)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


CRM_TABLES = ("crm_customers", "crm_contacts", "crm_contact_emails", "crm_duplicate_candidates",
              "crm_visits", "crm_visit_placements", "crm_visit_occurrences",
              "crm_visit_attendance", "crm_contact_cards")


def db_snapshot(url: str) -> dict:
    """Everything the DAV store holds, for "nothing changed" assertions."""
    engine = db.shared_engine(url)
    with engine.connect() as conn:
        return {
            "collections": conn.execute(text(
                "SELECT path, tag, props_json, revision FROM dav_collections ORDER BY path")).all(),
            "items": conn.execute(text(
                "SELECT collection_id, href, uid, etag, text FROM dav_items "
                "ORDER BY collection_id, href")).all(),
            "changes": conn.execute(text(
                "SELECT collection_id, href, revision, deleted FROM dav_changes "
                "ORDER BY collection_id, href")).all(),
            "trash": conn.execute(text("SELECT count(*) FROM dav_trash")).scalar(),
            "audit": conn.execute(text("SELECT count(*) FROM audit_log")).scalar(),
            "users": conn.execute(text(
                "SELECT username, password_hash, disabled FROM users ORDER BY username")).all(),
            "crm": {table: conn.execute(text(f"SELECT count(*) FROM {table}")).scalar()
                    for table in CRM_TABLES},
        }


@pytest.fixture
def snapshot(db_url):
    return lambda: db_snapshot(db_url)


@pytest.fixture
def crm(db_url, make_user):
    """Two reps (``crm.alice``, ``crm.bob``) of the internal domain on one server, and the
    CLI on its database (see tests/crmkit.py).

    SQLite gives every test a fresh database; PostgreSQL's is shared by the session, so the
    CRM tables are emptied first (the tests using this fixture own them)."""
    if not db.is_sqlite(db_url):
        with db.shared_engine(db_url).begin() as conn:
            conn.execute(text("TRUNCATE " + ", ".join(CRM_TABLES) + " CASCADE"))
    app = CrmApplication(make_configuration(db_url, storage={
        "crm_internal_domains": crmkit.INTERNAL}))
    reps = []
    for _ in range(2):
        name, password = make_user()
        client = Dav(app, name, password)
        assert client.propfind(f"/{name}/").status == 207
        reps.append(client)
    return crmkit.Crm(db_url, *reps)
