"""Faults with real processes on loopback: the database stopped or crashed under a write
burst, and server processes killed with SIGKILL in the middle of one.

What must hold (checked by ``faultkit.check_invariants`` and ``crm-admin db check``):
during a database outage every request gets 503 with ``Retry-After`` and one line of reason
(never a 500, never a hang); the server recovers by itself once the database is back; every
write that was acknowledged is there whole (the client's text, its visit, its contact, its
audit record, its change-log entry, reported by sync), and every write that was not is either
whole or wholly absent.

PostgreSQL outages run on a private cluster this module starts (the shared test server is
never stopped); ``kill -9`` runs on SQLite and on a fresh database of the shared server. A
database host that accepts connections and never answers must give 503 in bounded time too.
Run with ``-s`` to see the figures of each fault (outage, recovery, answers by kind).
"""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
import threading
import time
import uuid

import psycopg
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

from admin_cli.main import main as crm_admin
from conftest import REQUIRE_PG, create_user, own_pg_database
from crmkit import INTERNAL, thunderbird
from davclient import LiveServer, http_request
from faultkit import (OWNER_FILE, Account, BlackHole, Endpoint, Gunicorn, Op,
                      PostgresUnavailable, PrivatePostgres, Reader, Writer, check_invariants,
                      db_check, kill9, migrate, reap_orphans, send, stop_writers, sync, tally,
                      unavailable_answer_problems)
from server.crm import db

pytestmark = pytest.mark.e2e

OUTAGE_SECONDS = 3.0        # how long PostgreSQL stays down while clients keep writing
RECOVERY_LIMIT = 15.0       # every client must be served again this soon after it is back
WARMUP_ACKS = 3             # acknowledged writes per client before the fault


# --- set-up ---

def gunicorn_config(url: str) -> str:
    return (f"[storage]\ndb_url = {url}\ncrm_internal_domains = {INTERNAL}\n"
            "[auth]\ndelay = 0\n[server]\ndelay_on_error = 0\n[logging]\nlevel = info\n")


def add_customer(url: str, name: str, domain: str) -> None:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        code = crm_admin(["--db-url", url, "customer", "add", name, "--domain", domain])
    assert code == 0, out.getvalue()


def make_accounts(url: str, endpoint: Endpoint, count: int) -> list[Account]:
    accounts = []
    for _ in range(count):
        user, password = create_user(url)
        account = Account(user, password, f"/{user}/calendar/", f"/{user}/other/")
        reply = http_request(endpoint.url, user, password, "PROPFIND", f"/{user}/", b"",
                             {"Depth": "0"}, timeout=15)
        assert reply.status == 207, reply.body
        reply = http_request(endpoint.url, user, password, "MKCALENDAR", account.other,
                             timeout=15)
        assert reply.status == 201, reply.body
        accounts.append(account)
    return accounts


def event_maker(account: Account, guest_domain: str):
    organizer = f"{account.user}@{INTERNAL}"
    return lambda uid: thunderbird(uid, f"Visit {uid}", [(f"Guest {uid}",
                                                          f"guest-{uid}@{guest_domain}")],
                                   organizer)


def sync_tokens(url: str, accounts: list[Account]) -> dict[str, str]:
    tokens = {}
    for account in accounts:
        for collection in (account.calendar, account.other):
            tokens[collection] = sync(url, account, collection)[0]
    return tokens


def wait_for(condition, timeout: float, step: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(step)
    return condition()


def acks_since(writer: Writer, since: float) -> int:
    return sum(1 for op in list(writer.ops) if op.acked and op.t0 >= since)


def report(title: str, figures: dict) -> None:
    print(f"\n[faults] {title}: " + ", ".join(f"{k}={v}" for k, v in figures.items()))


def assert_checked(url: str) -> None:
    code, output = db_check(url)
    assert code == 0, f"crm-admin db check exited {code}:\n{output}"


# --- a private PostgreSQL cluster to stop and crash ---

@pytest.fixture(scope="module")
def private_pg():
    try:
        cluster = PrivatePostgres()
    except PostgresUnavailable as e:
        if REQUIRE_PG:
            pytest.fail(f"CRM_REQUIRE_POSTGRESQL=1, but no private PostgreSQL cluster: {e}")
        pytest.skip(f"no private PostgreSQL cluster on this machine: {e}")
    try:
        yield cluster
    finally:
        cluster.destroy()


def test_a_cluster_left_by_a_killed_test_run_is_reaped(private_pg):
    """pytest killed with SIGKILL leaves its private cluster running in /tmp; the next run
    stops and removes it (its owner process is gone), and leaves a live run's alone."""
    orphan = PrivatePostgres()
    try:
        dead = subprocess.Popen([sys.executable, "-c", "pass"])
        dead.wait()
        with open(os.path.join(orphan.dir, OWNER_FILE), "w") as f:
            f.write(str(dead.pid))       # as if the test process that made it had died
        removed = reap_orphans(orphan.prefix)
        assert orphan.dir in removed and not os.path.exists(orphan.dir)
        assert private_pg.dir not in removed and os.path.exists(private_pg.dir)
        with pytest.raises(Exception):
            psycopg.connect(f"host=127.0.0.1 port={orphan.port} user=postgres dbname=postgres",
                            connect_timeout=2).close()
    finally:
        orphan.destroy()        # a no-op once reaped


class PgStack:
    def __init__(self, cluster: PrivatePostgres, url: str, server: LiveServer,
                 gunicorn: Gunicorn) -> None:
        self.cluster, self.url, self.server, self.gunicorn = cluster, url, server, gunicorn


@pytest.fixture(scope="module")
def pg_stack(private_pg, tmp_path_factory):
    """One database on the private cluster, a crm-server and a gunicorn (2 workers) on it,
    kept across the outages: recovering from one must not spoil the next."""
    folder = tmp_path_factory.mktemp("faults-pg")
    url = private_pg.create_database("crm_faults")
    migrate(url)
    server = LiveServer(url, str(folder / "crm-server.log"),
                        f"--storage-crm-internal-domains={INTERNAL}")
    try:
        gunicorn = Gunicorn(gunicorn_config(url), str(folder), workers=2)
    except BaseException:
        server.stop()
        raise
    try:
        yield PgStack(private_pg, url, server, gunicorn)
    finally:
        gunicorn.stop()
        server.stop()


@pytest.mark.postgresql
@pytest.mark.parametrize("mode", ["immediate", "fast"])
def test_postgresql_stopped_and_restarted_while_clients_write(pg_stack, mode):
    """``pg_ctl stop -m immediate`` (a crash) or ``-m fast`` mid-burst, writes go on for
    a few seconds, PostgreSQL comes back: 503s meanwhile, recovery without restarting any
    server process, every acknowledged write whole, nothing half there. Then a restart with
    no traffic at all: idle pooled connections are stale, and the first writes must still
    succeed (the pooled connections are checked before use)."""
    cluster, url = pg_stack.cluster, pg_stack.url
    prefix = f"pg{mode[:3]}{uuid.uuid4().hex[:6]}"
    domain = f"{prefix}.example"
    add_customer(url, f"Outage {mode} Ltd", domain)
    builtin = Endpoint("crm-server", pg_stack.server.url)
    gunicorn = Endpoint("gunicorn", pg_stack.gunicorn.url)
    accounts = {builtin.name: make_accounts(url, builtin, 3),
                gunicorn.name: make_accounts(url, gunicorn, 2)}
    all_accounts = [a for group in accounts.values() for a in group]
    tokens = sync_tokens(builtin.url, all_accounts)
    stop = threading.Event()
    writers = [Writer(endpoint, account, event_maker(account, domain), stop, prefix, mix=True)
               for endpoint in (builtin, gunicorn) for account in accounts[endpoint.name]]
    readers = [Reader(endpoint, accounts[endpoint.name][0], None, stop, prefix)
               for endpoint in (builtin, gunicorn)]
    started = time.monotonic()
    for w in writers + readers:
        w.start()
    try:
        assert wait_for(lambda: all(acks_since(w, 0) >= WARMUP_ACKS for w in writers), 30), \
            "the writers were not served before the fault"
        t_stop = time.monotonic()
        cluster.stop(mode)
        t_down = time.monotonic()
        time.sleep(OUTAGE_SECONDS)
        t_start = time.monotonic()
        cluster.start()
        t_up = time.monotonic()
        recovered = wait_for(lambda: all(acks_since(w, t_up) for w in writers), RECOVERY_LIMIT)
        t_recovered = time.monotonic()
        time.sleep(1.0)
    finally:
        ops = stop_writers(writers, stop)
        reads = stop_writers(readers, stop)
    assert recovered, ("not every client was served again within %.0f s of PostgreSQL's "
                       "restart: %s" % (RECOVERY_LIMIT, [(w.name, acks_since(w, t_up))
                                                         for w in writers]))

    # A quiet restart: the servers' pools hold only idle connections to the old postmaster.
    db.shared_engine(url).dispose()         # this process's own (create_user's)
    idle = idle_connections(cluster)
    assert idle >= 2, "the servers' pools hold no idle connection to test pre-ping with"
    cluster.stop("fast")
    cluster.start()
    quiet = []
    for endpoint in (builtin, gunicorn):
        for account in accounts[endpoint.name]:
            for n in range(2):
                uid = f"{prefix}-{account.user}-quiet{n}"
                op = Op("PUT", endpoint.name, account.user, uid, f"{account.calendar}{uid}.ics",
                        event_maker(account, domain)(uid).encode())
                quiet.append(send(endpoint, account, op))

    outage = [op for op in ops if op.t0 >= t_down and op.t1 <= t_start]
    after = [op for op in ops if op.t0 >= t_up]
    latency = max(op.t1 - op.t0 for op in ops)
    figures = {"mode": mode, "outage_s": round(t_start - t_stop, 2),
               "stop_s": round(t_down - t_stop, 2), "start_s": round(t_up - t_start, 2),
               "recovered_after_up_s": round(t_recovered - t_up, 2),
               "first_503_after_stop_s": round(min((op.t1 - t_stop for op in ops
                                                   if op.status == 503), default=-1), 2),
               "in_flight_at_stop": sum(op.t0 < t_stop < op.t1 for op in ops + reads),
               "max_latency_s": round(latency, 2), "run_s": round(time.monotonic() - started, 1),
               **tally(ops), "reads": tally(reads),
               "503_after_up": sum(op.status == 503 for op in after + reads if op.t0 >= t_up),
               "idle_pooled_at_quiet_restart": idle, "quiet_restart": tally(quiet)}
    stats: dict = {}
    problems = check_invariants(url, ops + quiet, all_accounts, builtin.url, tokens, domain,
                                prefix, stats)
    report(f"PostgreSQL stop -m {mode}", {**figures, **stats})

    unexpected = [str(op) for op in ops + reads if op.outcome not in ("ack", "503")]
    assert not unexpected, f"{len(unexpected)} answers other than success or 503: " \
                           f"{unexpected[:10]}"
    assert not unavailable_answer_problems(ops + reads), \
        unavailable_answer_problems(ops + reads)[:5]
    assert sum(op.status == 503 for op in ops) >= len(writers), \
        f"the outage was not seen by every client: {figures}"
    assert outage and all(op.status == 503 for op in outage), \
        [str(op) for op in outage if op.status != 503][:5]
    late = [str(op) for op in after + reads if op.status == 503 and op.t0 >= t_up]
    assert not late, f"503 after PostgreSQL accepted connections again: {late[:5]}"
    assert all(op.acked for op in quiet), [str(op) for op in quiet if not op.acked]
    assert not problems, f"{len(problems)} problems:\n" + "\n".join(problems[:30])
    assert_checked(url)


@pytest.mark.postgresql
def test_server_started_while_postgresql_is_down(pg_stack, tmp_path):
    """A crm-server started during an outage answers 503 and serves once PostgreSQL is
    back, without a restart."""
    cluster, url = pg_stack.cluster, pg_stack.url
    user, password = create_user(url)
    db.shared_engine(url).dispose()
    cluster.stop("fast")
    try:
        server = LiveServer(url, str(tmp_path / "crm-server.log"),
                            f"--storage-crm-internal-domains={INTERNAL}")
        down = http_request(server.url, user, password, "PROPFIND", f"/{user}/", b"",
                            {"Depth": "0"}, timeout=15)
    finally:
        cluster.start()     # whatever happened: the module's other servers need it
    try:
        up = http_request(server.url, user, password, "PROPFIND", f"/{user}/", b"",
                          {"Depth": "0"}, timeout=15)
    finally:
        server.stop()
    assert (down.status, down.headers.get("retry-after"), down.body) == \
        (503, "5", b"the database is unavailable, retry later\n")
    assert up.status == 207, up.body


def idle_connections(cluster: PrivatePostgres) -> int:
    """Connections idle in the servers' pools (this process holds none at that point)."""
    engine = create_engine(cluster.url(), poolclass=NullPool)
    try:
        with engine.connect() as conn:
            return conn.execute(text(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = 'crm_faults' "
                "AND state = 'idle'")).scalar()
    finally:
        engine.dispose()


# --- a database that does not answer ---

def test_unresponsive_postgresql_gets_503_not_a_hang(tmp_path):
    """A PostgreSQL host that accepts TCP connections and never answers (a frozen server,
    a full accept queue, a proxy whose backend is gone): libpq waits forever by default, so
    every request would hang. Engines bound the attempt (``connect_timeout``, unless the URL
    sets one), and a request to a server on such a database gets 503 in time."""
    hole = BlackHole()
    try:
        engine = db.make_engine(db.resolve_url(hole.url()))
        outcome: list = []

        def connect() -> None:
            began = time.monotonic()
            try:
                db.ping(engine)
                outcome.append((time.monotonic() - began, None))
            except Exception as e:
                outcome.append((time.monotonic() - began, e))

        attempt = threading.Thread(target=connect, daemon=True)
        attempt.start()
        attempt.join(15)
        assert outcome, "connecting to a database that never answers still waits after 15 s"
        elapsed, error = outcome[0]
        assert error is not None and db.is_outage(error), error
        engine.dispose()

        # Through a server, with the bound set in the URL (short, for the test).
        server = LiveServer(hole.url("?connect_timeout=1"), str(tmp_path / "crm-server.log"))
        try:
            began = time.monotonic()
            reply = http_request(server.url, "alice", "secret", "PUT", "/alice/calendar/x.ics",
                                 thunderbird("x", "Visit", [], f"alice@{INTERNAL}"),
                                 {"Content-Type": "text/calendar"}, timeout=15)
            answered = time.monotonic() - began
        finally:
            server.stop()
    finally:
        hole.close()
    report("unresponsive PostgreSQL", {"default_bound_s": round(elapsed, 2),
                                       "answer_s": round(answered, 2)})
    assert (reply.status, reply.headers.get("retry-after"), reply.body) == \
        (503, "5", b"the database is unavailable, retry later\n")
    assert answered < 5


# --- kill -9 of a server process ---

@pytest.fixture
def fresh_pg_url():
    """A database of its own on the shared PostgreSQL server (never stopped), dropped after."""
    with own_pg_database("crm_faults_") as url:
        yield url


@pytest.mark.parametrize("backend", ["sqlite",
                                     pytest.param("postgresql", marks=pytest.mark.postgresql)])
def test_kill_9_in_a_write_burst(backend, request, tmp_path):
    """SIGKILL of crm-server (and, on SQLite, of a gunicorn worker sharing the database)
    while clients PUT, DELETE and MOVE; a new crm-server on the same database. Every
    acknowledged write is whole, nothing is half there, sync from a token taken before the
    burst reports every change, and the new server serves writes at once."""
    url = request.getfixturevalue("sqlite_url" if backend == "sqlite" else "fresh_pg_url")
    prefix = f"k9{backend[:2]}{uuid.uuid4().hex[:6]}"
    domain = f"{prefix}.example"
    add_customer(url, f"Kill {backend} Ltd", domain)
    with contextlib.ExitStack() as cleanup:
        def serve(name: str) -> LiveServer:
            server = LiveServer(url, str(tmp_path / f"{name}.log"),
                                f"--storage-crm-internal-domains={INTERNAL}")
            cleanup.callback(server.stop)
            return server

        first = serve("crm-server-killed")
        gunicorn = None
        if backend == "sqlite":
            gunicorn = Gunicorn(gunicorn_config(url), str(tmp_path))
            cleanup.callback(gunicorn.stop)
        builtin = Endpoint("crm-server", first.url)
        endpoints = [builtin] + ([Endpoint("gunicorn", gunicorn.url)] if gunicorn else [])
        accounts = {builtin.name: make_accounts(url, builtin, 3 if gunicorn else 4)}
        if gunicorn:
            accounts["gunicorn"] = make_accounts(url, endpoints[1], 2)
        all_accounts = [a for group in accounts.values() for a in group]
        tokens = sync_tokens(builtin.url, all_accounts)
        stop = threading.Event()
        writers = [Writer(endpoint, account, event_maker(account, domain), stop, prefix,
                          mix=True)
                   for endpoint in endpoints for account in accounts[endpoint.name]]
        started = time.monotonic()
        for w in writers:
            w.start()
        try:
            assert wait_for(lambda: all(acks_since(w, 0) >= WARMUP_ACKS + 4 for w in writers),
                            30), "the writers were not served before the kill"
            t_kill = time.monotonic()
            kill9(first.process.pid)
            victims = gunicorn.worker_pids()[:1] if gunicorn else []
            for pid in victims:
                kill9(pid)
            t_worker_killed = time.monotonic()
            first.process.wait(10)
            time.sleep(0.5)
            second = serve("crm-server-restarted")
            builtin.url = second.url
            t_restarted = time.monotonic()
            if gunicorn:
                assert wait_for(lambda: len(set(gunicorn.worker_pids()) - set(victims)) >= 2,
                                30), "gunicorn did not replace its killed worker"
            assert wait_for(lambda: all(acks_since(w, t_restarted) >= 3 for w in writers),
                            30), "the restarted server does not serve writes"
            t_served = time.monotonic()
        finally:
            ops = stop_writers(writers, stop)

        figures = {"backend": backend, "restart_s": round(t_restarted - t_kill, 2),
               "in_flight_at_kill": sum(op.t0 < t_kill < op.t1 for op in ops),
                   "all_served_after_restart_s": round(t_served - t_restarted, 2),
                   "run_s": round(time.monotonic() - started, 1), **tally(ops),
                   "gunicorn_workers_killed": len(victims)}
        report(f"kill -9 on {backend}", figures)

        # No answer only for requests under way at the kill or sent to the dead server.
        unexpected = [str(op) for op in ops
                      if not op.acked and not (op.status is None and not op.timed_out
                                               and op.t0 < t_restarted)]
        assert not unexpected, f"{len(unexpected)} unexpected answers: {unexpected[:10]}"
        lost_gunicorn = [str(op) for op in ops if op.endpoint == "gunicorn"
                         and op.status is None and op.t0 > t_worker_killed]
        assert not lost_gunicorn, f"gunicorn lost requests sent after the kill: {lost_gunicorn}"
        assert any(op.status is None for op in ops if op.endpoint == "crm-server"), \
            "no request reached the killed server: the kill was not mid-burst"

        stats: dict = {}
        problems = check_invariants(url, ops, all_accounts, second.url, tokens, domain, prefix,
                                    stats)
        report(f"kill -9 on {backend}, unanswered writes", stats)
        assert not problems, f"{len(problems)} problems:\n" + "\n".join(problems[:30])
    assert_checked(url)


@pytest.mark.postgresql
def test_pooled_connections_are_pinged_when_idle_or_told_to_go(pg_server_url, monkeypatch):
    """No ping (a round trip) for a connection back in the pool a moment ago; one idle past
    ``PING_IDLE_SECONDS``, or one the server ended meanwhile (it sends an error and closes,
    as a restart does), is pinged, and replaced when it is dead, with no failed request."""
    engine = db.make_engine(pg_server_url, pool_size=1)
    pings = []
    real_ping = engine.dialect.do_ping
    monkeypatch.setattr(engine.dialect, "do_ping", lambda c: pings.append(1) or real_ping(c))

    def backend_pid() -> int:
        with engine.connect() as conn:
            return conn.execute(text("SELECT pg_backend_pid()")).scalar_one()

    def terminate(pid: int) -> None:
        with psycopg.connect(pg_server_url.replace("+psycopg", ""), autocommit=True) as admin:
            # Waits (up to 5 s) until the backend has exited: its goodbye is on our socket.
            assert admin.execute("SELECT pg_terminate_backend(%s, 5000)", (pid,)).fetchone()[0]

    try:
        first = backend_pid()
        assert [backend_pid() for _ in range(5)] == [first] * 5 and pings == []
        time.sleep(db.PING_IDLE_SECONDS + 0.1)
        assert backend_pid() == first and pings == [1]          # idle: pinged, alive
        terminate(first)                    # well inside the window: found by its socket
        second = backend_pid()
        assert second != first and len(pings) == 2
        terminate(second)
        time.sleep(db.PING_IDLE_SECONDS + 0.1)
        third = backend_pid()               # idle and ended: pinged, replaced
        assert third not in (first, second) and len(pings) == 3
        assert [backend_pid() for _ in range(3)] == [third] * 3 and len(pings) == 3
    finally:
        engine.dispose()
