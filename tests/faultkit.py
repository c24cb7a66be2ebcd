"""Fault-test kit: a private PostgreSQL cluster to stop and crash, a gunicorn to kill workers
of, writer threads that record every answer they get, and the check of what must hold
afterwards (every acknowledged write whole, nothing half there).

Every wait here is bounded: socket timeouts on requests, deadlines on loops, timeouts on
every subprocess.
"""

from __future__ import annotations

import glob
import http.client
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Callable, Optional

from sqlalchemy import create_engine, text

from davclient import ROOT, free_port, http_request
from xmlparse import responses, sync_token

REQUEST_TIMEOUT = 15          # seconds: a request answered later than this is a hang
ACK = {"PUT": (201, 204), "DELETE": (200, 204), "MOVE": (201, 204),
       "GET": (200,), "PROPFIND": (207,), "REPORT": (207,)}
WRITES = ("PUT", "DELETE", "MOVE")
UNAVAILABLE_BODY = b"the database is unavailable, retry later\n"


# --- a private PostgreSQL cluster ------------------------------------------------------------

class PostgresUnavailable(Exception):
    """This machine cannot run a private PostgreSQL cluster (the reason is the message)."""


def _pg_bindir() -> str:
    candidates = ["/usr/lib/postgresql/15/bin",
                  *sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)]
    pg_config = shutil.which("pg_config")
    if pg_config:
        try:
            candidates.append(subprocess.run([pg_config, "--bindir"], capture_output=True,
                                             text=True, timeout=10).stdout.strip())
        except (OSError, subprocess.SubprocessError):
            pass
    for folder in candidates:
        if folder and all(os.access(os.path.join(folder, tool), os.X_OK)
                          for tool in ("initdb", "pg_ctl", "postgres")):
            return folder
    raise PostgresUnavailable("no PostgreSQL server binaries (initdb, pg_ctl) found in "
                              "/usr/lib/postgresql/*/bin or by pg_config")


ORPHAN_PREFIX = "crm-faults-pg-"
OWNER_FILE = "owner.pid"          # the test process that made the cluster


def reap_orphans(prefix: list[str]) -> list[str]:
    """Stop and remove clusters whose test process is gone: a pytest killed with SIGKILL
    never ran ``destroy()`` and left its postmaster running. Returns the folders removed."""
    removed = []
    for folder in glob.glob(os.path.join(tempfile.gettempdir(), ORPHAN_PREFIX + "*")):
        try:
            with open(os.path.join(folder, OWNER_FILE)) as f:
                owner = int(f.read().strip() or 0)
        except (OSError, ValueError):
            continue                       # not ours, or still being made
        if owner and _alive(owner):
            continue
        data = os.path.join(folder, "data")
        if os.path.exists(os.path.join(data, "postmaster.pid")):
            subprocess.run([*prefix, os.path.join(_pg_bindir(), "pg_ctl"), "-D", data, "-m",
                            "immediate", "-w", "-t", "30", "stop"],
                           capture_output=True, timeout=40, cwd=folder)
        shutil.rmtree(folder, ignore_errors=True)
        removed.append(folder)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class PrivatePostgres:
    """A throw-away cluster on 127.0.0.1 and a free port, owned by this test run alone, so
    it can be stopped and crashed. initdb refuses to run as root: as root, the binaries run
    as the ``postgres`` OS user. ``fsync`` is off: the tests crash PostgreSQL, never the
    kernel, so what PostgreSQL wrote survives in the page cache as it would on disk."""

    def __init__(self) -> None:
        self.bindir = _pg_bindir()
        self.prefix: list[str] = []
        owner = None
        if os.geteuid() == 0:
            runuser = shutil.which("runuser")
            try:
                owner = pwd.getpwnam("postgres")
            except KeyError:
                owner = None
            if owner is None or runuser is None:
                raise PostgresUnavailable("running as root, and initdb refuses root: needs "
                                          "the `postgres` OS user and runuser")
            self.prefix = [runuser, "-u", "postgres", "--"]
        reap_orphans(self.prefix)
        self.dir = tempfile.mkdtemp(prefix=ORPHAN_PREFIX)
        self.running = False
        try:
            with open(os.path.join(self.dir, OWNER_FILE), "w") as f:
                f.write(str(os.getpid()))
            os.chmod(self.dir, 0o700)
            if owner is not None:
                os.chown(self.dir, owner.pw_uid, owner.pw_gid)
            self.data = os.path.join(self.dir, "data")
            self.log = os.path.join(self.dir, "postgres.log")
            self.port = free_port()
            self._run("initdb", "-D", self.data, "-A", "trust", "-U", "postgres", "-E", "UTF8",
                      "--no-sync", timeout=120)
            self.start()
        except BaseException:
            self.destroy()
            raise

    def _run(self, tool: str, *args: str, timeout: float) -> None:
        command = [*self.prefix, os.path.join(self.bindir, tool), *args]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                                  cwd=self.dir)
        except (OSError, subprocess.TimeoutExpired) as e:
            raise PostgresUnavailable(f"{tool} failed: {e}") from e
        if done.returncode != 0:
            raise PostgresUnavailable(f"{tool} {' '.join(args[:3])} exited {done.returncode}: "
                                      + (done.stderr or done.stdout).strip()[-800:]
                                      + self.log_tail())

    def log_tail(self, size: int = 1500) -> str:
        try:
            with open(self.log, errors="replace") as f:
                return "\n--- postgres.log ---\n" + f.read()[-size:]
        except OSError:
            return ""

    def start(self, timeout: int = 60) -> float:
        """Start and wait until it accepts connections; returns the seconds it took."""
        began = time.monotonic()
        options = (f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 "
                   "-c fsync=off -c max_connections=200")
        self._run("pg_ctl", "-D", self.data, "-l", self.log, "-w", "-t", str(timeout),
                  "-o", options, "start", timeout=timeout + 10)
        self.running = True
        return time.monotonic() - began

    def stop(self, mode: str, timeout: int = 60) -> float:
        """``immediate`` is a crash (no checkpoint, recovery at the next start); ``fast``
        disconnects every session and shuts down cleanly. Returns the seconds it took."""
        began = time.monotonic()
        self._run("pg_ctl", "-D", self.data, "-m", mode, "-w", "-t", str(timeout), "stop",
                  timeout=timeout + 10)
        self.running = False
        return time.monotonic() - began

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        engine = create_engine(self.url(), isolation_level="AUTOCOMMIT")
        try:
            with engine.connect() as conn:
                conn.execute(text(f'CREATE DATABASE "{name}"'))
        finally:
            engine.dispose()
        return self.url(name)

    def destroy(self) -> None:
        if self.running:
            try:
                self.stop("immediate", timeout=30)
            except PostgresUnavailable:
                pass
        shutil.rmtree(self.dir, ignore_errors=True)


def migrate(url: str) -> None:
    """The schema, by the operators' command."""
    done = subprocess.run([tool("crm-admin"), "--db-url", url, "db", "upgrade"],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 0, done.stdout + done.stderr


def tool(name: str) -> str:
    return os.path.join(os.path.dirname(sys.executable), name)


def db_check(url: str) -> tuple[int, str]:
    """``crm-admin db check``: exit status and output."""
    done = subprocess.run([tool("crm-admin"), "--db-url", url, "db", "check"],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    return done.returncode, (done.stdout + done.stderr).strip()


class BlackHole:
    """A "database" on 127.0.0.1 that accepts TCP connections and never answers: a frozen
    server, a full accept queue, a proxy whose backend is gone."""

    def __init__(self) -> None:
        self._socket = socket.socket()
        self._socket.bind(("127.0.0.1", 0))
        self._socket.listen(64)
        self._socket.settimeout(0.2)
        self.port = self._socket.getsockname()[1]
        self._held: list[socket.socket] = []
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._closing.is_set():
            try:
                self._held.append(self._socket.accept()[0])
            except OSError:
                continue

    def url(self, query: str = "") -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/crm{query}"

    def close(self) -> None:
        self._closing.set()
        self._thread.join(5)
        for s in self._held:
            s.close()
        self._socket.close()


# --- gunicorn --------------------------------------------------------------------------------

class Gunicorn:
    """``server.wsgi`` under gunicorn (sync workers) on 127.0.0.1."""

    def __init__(self, config_text: str, folder: str, workers: int = 2) -> None:
        self.config = os.path.join(folder, "gunicorn-radicale.conf")
        with open(self.config, "w") as f:
            f.write(config_text)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = os.path.join(folder, "gunicorn.log")
        self._log = open(self.log_path, "ab")
        env = {**os.environ, "RADICALE_CONFIG": self.config}
        env.pop("CRM_CONFIG", None)
        self.process = subprocess.Popen(
            [tool("gunicorn"), "--workers", str(workers), "--bind", f"127.0.0.1:{self.port}",
             "--graceful-timeout", "5", "server.wsgi:application"],
            env=env, cwd=ROOT, stdout=self._log, stderr=subprocess.STDOUT)
        self.wait_ready(workers)

    def wait_ready(self, workers: int, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError("gunicorn exited: " + self.log_tail())
            if len(self.worker_pids()) >= workers:
                try:
                    urllib.request.urlopen(self.url + "/.well-known/caldav", timeout=2)
                    return
                except urllib.error.HTTPError:
                    return
                except OSError:
                    pass
            time.sleep(0.1)
        raise RuntimeError("gunicorn did not start: " + self.log_tail())

    def worker_pids(self) -> list[int]:
        try:
            with open(f"/proc/{self.process.pid}/task/{self.process.pid}/children") as f:
                return [int(pid) for pid in f.read().split()]
        except OSError:
            return []

    def log_tail(self, size: int = 2000) -> str:
        with open(self.log_path, errors="replace") as f:
            return f.read()[-size:]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self._log.close()


def kill9(pid: int) -> None:
    os.kill(pid, signal.SIGKILL)


# --- writers ---------------------------------------------------------------------------------

@dataclass
class Endpoint:
    """Where a writer sends its requests; ``url`` changes when a server is replaced."""
    name: str
    url: str


@dataclass
class Op:
    kind: str                 # PUT, DELETE, MOVE (writes); GET, PROPFIND, REPORT (reads)
    endpoint: str
    user: str
    uid: str
    path: str                 # the item's path (MOVE: its source)
    body: bytes = b""
    dest: Optional[str] = None
    status: Optional[int] = None     # None: no answer (connection refused, reset, timeout)
    reply: bytes = b""
    retry_after: Optional[str] = None
    error: str = ""
    timed_out: bool = False
    t0: float = 0.0
    t1: float = 0.0

    @property
    def acked(self) -> bool:
        return self.status in ACK[self.kind]

    @property
    def outcome(self) -> str:
        if self.acked:
            return "ack"
        if self.status == 503:
            return "503"
        if self.status is None:
            return "timeout" if self.timed_out else "lost"
        return str(self.status)

    def after(self) -> Optional[str]:
        """Where the item is once this operation took effect (None: gone)."""
        return {"PUT": self.path, "DELETE": None, "MOVE": self.dest}[self.kind]

    def __str__(self) -> str:
        return (f"{self.kind} {self.path}{' -> ' + self.dest if self.dest else ''} via "
                f"{self.endpoint}: {self.outcome} {self.error or self.reply[:120]!r}")


@dataclass
class Account:
    user: str
    password: str
    calendar: str             # /user/calendar/
    other: str                # /user/other/ (MOVE target)


class Writer(threading.Thread):
    """One client writing distinct events as fast as it is answered, until ``stop`` is set.

    With ``mix`` it also DELETEs and MOVEs (to its second calendar) items whose state it
    knows for certain (acknowledged, never touched by an unanswered request)."""

    def __init__(self, endpoint: Endpoint, account: Account, make_event: Callable[[str], str],
                 stop: threading.Event, prefix: str, mix: bool = False) -> None:
        super().__init__(daemon=True, name=f"writer-{account.user}")
        self.endpoint, self.account, self.make_event = endpoint, account, make_event
        self.stop_event, self.prefix, self.mix = stop, prefix, mix
        self.ops: list[Op] = []
        self._certain: list[tuple[str, str]] = []     # (path, uid) known to exist
        self.crashed: Optional[BaseException] = None

    def run(self) -> None:
        try:
            n = 0
            while not self.stop_event.is_set():
                n += 1
                op = self._next(n)
                self._send(op)
                self.ops.append(op)
                if op.acked:
                    if op.kind in ("PUT", "MOVE"):
                        self._certain.append((op.after(), op.uid))
                elif not self.stop_event.is_set():
                    self.stop_event.wait(0.05)
        except BaseException as e:  # reported by the test, never swallowed
            self.crashed = e

    def _next(self, n: int) -> Op:
        a = self.account
        if self.mix and self._certain and n % 5 == 0:
            path, uid = self._certain.pop(0)
            return Op("DELETE", self.endpoint.name, a.user, uid, path)
        if self.mix and self._certain and n % 7 == 3:
            path, uid = self._certain.pop(0)
            if path.startswith(a.calendar):
                return Op("MOVE", self.endpoint.name, a.user, uid, path,
                          dest=a.other + path[len(a.calendar):])
            self._certain.insert(0, (path, uid))
        uid = f"{self.prefix}-{a.user}-{n}"
        return Op("PUT", self.endpoint.name, a.user, uid, f"{a.calendar}{uid}.ics",
                  self.make_event(uid).encode("utf-8"))

    def _send(self, op: Op) -> None:
        send(self.endpoint, self.account, op)


def send(endpoint: Endpoint, account: Account, op: Op) -> Op:
    """Send one operation, recording its answer (or why none came) and its timing."""
    headers = {}
    if op.kind == "PUT":
        headers = {"Content-Type": "text/calendar; charset=utf-8", "If-None-Match": "*"}
    elif op.kind == "MOVE":
        headers = {"Destination": endpoint.url + op.dest, "Overwrite": "F"}
    elif op.kind in ("PROPFIND", "REPORT"):
        headers = {"Content-Type": "application/xml", "Depth": "1"}
    op.t0 = time.monotonic()
    try:
        reply = http_request(endpoint.url, account.user, account.password, op.kind, op.path,
                             op.body, headers, timeout=REQUEST_TIMEOUT)
        op.status, op.reply = reply.status, reply.body
        op.retry_after = reply.headers.get("retry-after")
    except (OSError, http.client.HTTPException) as e:
        op.error = f"{type(e).__name__}: {e}"
        op.timed_out = isinstance(e, TimeoutError)
    op.t1 = time.monotonic()
    return op


class Reader(Writer):
    """One client reading its calendar in turn by PROPFIND (depth 1), sync-collection
    REPORT and GET of the whole collection, until ``stop`` is set."""

    def _next(self, n: int) -> Op:
        a = self.account
        kind = ("PROPFIND", "REPORT", "GET")[n % 3]
        body = {"PROPFIND": '<?xml version="1.0"?><D:propfind xmlns:D="DAV:"><D:prop>'
                            "<D:getetag/><D:displayname/></D:prop></D:propfind>",
                "REPORT": _sync_body(""), "GET": ""}[kind]
        return Op(kind, self.endpoint.name, a.user, "", a.calendar, body.encode())


def stop_writers(writers: list[Writer], stop: threading.Event) -> list[Op]:
    stop.set()
    for w in writers:
        w.join(REQUEST_TIMEOUT + 5)
    stuck = [w.name for w in writers if w.is_alive()]
    assert not stuck, f"writers still waiting past the request timeout: {stuck}"
    crashed = [(w.name, w.crashed) for w in writers if w.crashed]
    assert not crashed, crashed
    return [op for w in writers for op in w.ops]


def tally(ops: list[Op]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for op in ops:
        key = f"{op.kind} {op.outcome}"
        counts[key] = counts.get(key, 0) + 1
    return dict(sorted(counts.items()))


def unavailable_answer_problems(ops: list[Op]) -> list[str]:
    """A 503 carries Retry-After and one line of reason."""
    problems = []
    for op in ops:
        if op.status == 503 and (not (op.retry_after or "").isdigit()
                                 or op.reply != UNAVAILABLE_BODY):
            problems.append(f"503 without Retry-After or one-line reason: {op} "
                            f"(Retry-After {op.retry_after!r})")
    return problems


# --- sync ------------------------------------------------------------------------------------

def _sync_body(token: str) -> str:
    token_element = f"<D:sync-token>{token}</D:sync-token>" if token else "<D:sync-token/>"
    return ('<?xml version="1.0" encoding="utf-8"?><D:sync-collection xmlns:D="DAV:">'
            f"{token_element}<D:sync-level>1</D:sync-level><D:prop><D:getetag/></D:prop>"
            "</D:sync-collection>")


def sync(url: str, account: Account, collection: str, token: str = "") -> tuple[str, dict]:
    """(new token, href -> status line) of a sync-collection REPORT."""
    reply = http_request(url, account.user, account.password, "REPORT", collection,
                         _sync_body(token), {"Content-Type": "application/xml", "Depth": "1"},
                         timeout=REQUEST_TIMEOUT)
    assert reply.status == 207, (reply.status, reply.body[:300])
    return sync_token(reply.body), {href: status for href, (status, _) in
                                    responses(reply.body).items()}


# --- what must hold afterwards ------------------------------------------------------------------

@dataclass
class Expectation:
    uid: str
    ops: list[Op]
    possible: list[Optional[str]] = field(default_factory=list)   # acceptable final paths


def expectations(ops: list[Op]) -> dict[str, Expectation]:
    """For each UID, the final locations its operations allow: the last acknowledged state,
    or, after an unanswered request (never followed by another on that item), the state
    before or after it."""
    by_uid: dict[str, Expectation] = {}
    for op in ops:
        if op.kind not in WRITES:
            continue
        by_uid.setdefault(op.uid, Expectation(op.uid, [])).ops.append(op)
    for exp in by_uid.values():
        state: Optional[str] = None
        exp.possible = [None]
        for op in exp.ops:
            if op.acked:
                state = op.after()
                exp.possible = [state]
            else:
                exp.possible = [state, op.after()]
    return exp_sorted(by_uid)


def exp_sorted(by_uid: dict[str, Expectation]) -> dict[str, Expectation]:
    return dict(sorted(by_uid.items()))


def _split(path: str) -> tuple[str, str]:
    collection, _, href = path.strip("/").rpartition("/")
    return collection, href


def check_invariants(db_url: str, ops: list[Op], accounts: list[Account], base_url: str,
                     tokens: dict[str, str], guest_domain: str, prefix: str,
                     stats: Optional[dict] = None) -> list[str]:
    """Every problem found, one line each: an empty list means everything holds.

    * each item is where its acknowledged operations put it (or, after an unanswered one,
      before or after it), with the text the client sent (GET through the server, and the
      stored text);
    * a present event has its visit (placed at that path, tagged by the guest's domain) and
      its guest's contact; a deleted one has its visit in the trash; one whose PUT never
      took effect left no visit, no contact, no change-log entry;
    * every operation that took effect has exactly one audit record, and none other has;
    * a sync from the token taken before the burst reports every path that changed, with
      its present state, and no path that never changed.

    ``stats`` (if given) receives how many unanswered writes took effect and how many did not.
    """
    problems: list[str] = []
    stats = {} if stats is None else stats
    stats.update(unanswered_applied=0, unanswered_not_applied=0)
    exps = expectations(ops)
    users = sorted({a.user for a in accounts})
    engine = create_engine(db_url)
    try:
        with engine.connect() as conn:
            user_list = ", ".join(f"'{u}'" for u in users)
            items = conn.execute(text(
                "SELECT c.path, i.href, i.uid, i.text FROM dav_items i "
                "JOIN dav_collections c ON c.id = i.collection_id "
                f"WHERE c.owner IN ({user_list})")).all()
            visits = conn.execute(text(
                "SELECT v.uid, v.deleted_at, v.match_method, p.collection_path, p.href "
                "FROM crm_visits v LEFT JOIN crm_visit_placements p ON p.visit_id = v.id "
                "WHERE v.uid LIKE :prefix"), {"prefix": prefix + "-%"}).all()
            emails = {row[0] for row in conn.execute(text(
                "SELECT email FROM crm_contact_emails WHERE email LIKE :d"),
                {"d": f"%@{guest_domain}"})}
            audits: dict[tuple[str, str], int] = {}
            for action, obj in conn.execute(text(
                    "SELECT action, object FROM audit_log WHERE stream IN ("
                    + ", ".join(f"'dav:{u}'" for u in users) + ")")):
                audits[(action, obj)] = audits.get((action, obj), 0) + 1
            changes = {(f"/{path}/{href}") for path, href in conn.execute(text(
                "SELECT c.path, ch.href FROM dav_changes ch "
                "JOIN dav_collections c ON c.id = ch.collection_id "
                f"WHERE c.owner IN ({user_list})"))}
            trash = {f"/{path}/{href}" for path, href in conn.execute(text(
                "SELECT path, href FROM dav_trash WHERE kind = 'item' "
                f"AND owner IN ({user_list})"))}
    finally:
        engine.dispose()

    where: dict[str, list[tuple[str, str]]] = {}
    for path, href, uid, body in items:
        where.setdefault(uid, []).append((f"/{path}/{href}", body))
    visit_rows: dict[str, list] = {}
    for uid, deleted_at, method, placed_in, href in visits:
        visit_rows.setdefault(uid, []).append((deleted_at, method, placed_in, href))

    final: dict[str, Optional[str]] = {}
    for uid, exp in exps.items():
        found = where.get(uid, [])
        if len(found) > 1:
            problems.append(f"{uid}: stored {len(found)} times: {[p for p, _ in found]}")
            continue
        path = found[0][0] if found else None
        final[uid] = path
        if path not in exp.possible:
            problems.append(f"{uid}: at {path}, expected {exp.possible}; operations: "
                            + "; ".join(map(str, exp.ops)))
            continue
        put = exp.ops[0]
        # Which operations took effect: all acknowledged ones, and the unanswered last one
        # if the item is where it would have put it.
        happened = [op for op in exp.ops if op.acked]
        last = exp.ops[-1]
        if not last.acked and path == last.after() and path != (
                happened[-1].after() if happened else None):
            happened.append(last)
        created = bool(happened)
        if not last.acked:
            stats["unanswered_applied" if last in happened else "unanswered_not_applied"] += 1
        if path is not None and found[0][1] != put.body.decode("utf-8"):
            problems.append(f"{uid}: stored text differs from what the client sent")
        # the visit
        rows = visit_rows.get(uid, [])
        if path is not None:
            collection, href = _split(path)
            if not any(d is None and m == "domain" and p == collection and h == href
                       for d, m, p, h in rows):
                problems.append(f"{uid}: present at {path} but no live visit placed there "
                                f"tagged by domain: {rows}")
        elif created:
            if not rows or any(d is None or p is not None for d, _m, p, _h in rows):
                problems.append(f"{uid}: deleted but its visit is not (only) in the trash: "
                                f"{rows}")
        elif rows:
            problems.append(f"{uid}: never stored, yet it has a visit: {rows}")
        # the guest contact
        guest = f"guest-{uid}@{guest_domain}".lower()
        if created and guest not in emails:
            problems.append(f"{uid}: stored, but its guest {guest} is no contact")
        if not created and guest in emails:
            problems.append(f"{uid}: never stored, yet its guest {guest} became a contact")
        # the audit trail: exactly one record per operation that took effect
        for op in exp.ops:
            key = ({"PUT": "item.create", "DELETE": "item.delete", "MOVE": "item.move"}[op.kind],
                   op.path)
            want = 1 if op in happened else 0
            if audits.get(key, 0) != want:
                problems.append(f"{uid}: {audits.get(key, 0)} audit records {key}, expected "
                                f"{want} ({op})")
            if op.kind == "DELETE" and op in happened and op.path not in trash:
                problems.append(f"{uid}: deleted {op.path} is not in the trash")
        # the change log
        touched = {p for op in happened for p in (op.path, op.dest) if p}
        if not created and put.path in changes:
            problems.append(f"{uid}: never stored, yet {put.path} is in the change log")
        for p in touched - changes:
            problems.append(f"{uid}: {p} changed but is not in the change log")

    # GET through the server: the same bytes back.
    for uid, exp in exps.items():
        path = final.get(uid)
        if path is None or path not in exp.possible:
            continue
        account = next(a for a in accounts if a.user == exp.ops[0].user)
        reply = http_request(base_url, account.user, account.password, "GET", path,
                             timeout=REQUEST_TIMEOUT)
        if reply.status != 200 or reply.body != exp.ops[0].body:
            problems.append(f"{uid}: GET {path} answered {reply.status}, "
                            f"{'other bytes' if reply.status == 200 else reply.body[:100]!r}")

    # sync-collection from the token taken before the burst
    reported: dict[str, str] = {}
    for account in accounts:
        for collection in (account.calendar, account.other):
            if collection in tokens:
                _, found = sync(base_url, account, collection, tokens[collection])
                reported.update(found)
    touched_paths: dict[str, bool] = {}   # path -> present now
    for uid, exp in exps.items():
        path = final.get(uid)
        for op in exp.ops:
            for p in (op.path, op.dest):
                if p:
                    touched_paths.setdefault(p, False)
        if path is not None:
            touched_paths[path] = True
    for p, present in touched_paths.items():
        status = reported.get(p)
        if p in changes:
            if status is None:
                problems.append(f"sync from the old token does not report {p}")
            elif ("200" in status) != present:
                problems.append(f"sync reports {p} as {status!r}, but it is "
                                f"{'present' if present else 'gone'}")
        elif status is not None:
            problems.append(f"sync reports {p} ({status!r}) that never changed")
    return problems
