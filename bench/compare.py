"""Stock Radicale 3.9 against radicale-crm over real HTTP on loopback (a benchmark, not a test).

In one run, each on 127.0.0.1 with a fresh store and a fresh server process per size N:
stock Radicale 3.9 with its file storage (``stock``), our server on SQLite (``sqlite``) and
on PostgreSQL (``pg``), both single-process ``crm-server``, and on PostgreSQL under gunicorn
(``pg-gunicorn``, gthread workers, which keep connections alive). Our servers run with CRM
ingestion on (as deployed), starting from an empty CRM. For each: MKCALENDAR, then N
realistic events (bench/workload.py) PUT by C client threads, each with its own keep-alive
``http.client`` connection and Basic auth (at the smallest N also by one client into a second
calendar): PUT/s, p50/p95, medians of the first and last 1,000 PUTs (a tenth below 10,000).
Then, each after one warm-up, repeated R times or more (until half a second has passed, at
most 5R, so server CPU adds up to enough clock ticks; medians reported): PROPFIND depth 1,
calendar-query with a time range hitting ~1 %, calendar-multiget of 100, GET (10 items per
repeat), free-busy over the same range, sync-collection initial, and incremental from that
token after 10 changes and 5 deletions. Server CPU per request comes from /proc/<pid>/stat
(every server process, plus the PostgreSQL backends of the run's database), peak RSS from
VmHWM. Last, on PostgreSQL under gunicorn with 1, 2 and 4 workers, four users each PUT into
their own calendar at once.

Every answer is checked: all PUTs 201, and on ours every event with an external attendee a
CRM visit; PROPFIND and the initial sync list exactly the N hrefs; the time-range query
exactly the events with an occurrence in the range, recurrences included; multiget 100
calendar-data with the right UIDs; GET the bytes PUT (stock: the UID, it re-serializes);
free-busy exactly the merged busy periods; the incremental sync exactly the 10 changed and
the 5 deleted hrefs. A failed check stops the run with exit status 1 and a one-line reason
naming the check and the configuration.

Stock Radicale reads its whole collection on each PUT, so its PUT phases get a time budget
(``--stock-budget`` seconds each, at the smallest N only): what it stored in time is its PUT
figure; the rest of its calendar, and the whole calendar at larger N, is written directly
into its one-file-per-event folder, after which it is restarted and read once (its item cache
is built on first read) before measuring. The output says which figures come from such a
folder.

    .venv/bin/python bench/compare.py [--quick] [--configs stock,sqlite,pg,pg-gunicorn]
        [--sizes 1000,10000,50000] [--clients 4] [--repeats 9] [--stock-budget 120]
        [--stock-max-size N] [--gunicorn-workers 2] [--parallel-workers 1,2,4]
        [--parallel-puts 250] [--pg-url URL] [--seed N] [--out FILE]

Defaults as shown; a full run takes hours on 2 cores (mostly our servers' 50,000-event
fills). ``--quick``: N = 500, 5 repeats, a 20 s stock budget, parallel writers with 2
workers only and 30 PUTs per writer (under 3 minutes on 2 cores). PostgreSQL: a fresh
database ``crm_cmp_<hex>`` per server on ``--pg-url`` (default
postgresql://postgres@127.0.0.1:5432/postgres), dropped afterwards; if the server does not
answer, the PostgreSQL configurations are skipped (said so). On a server running without
autovacuum (this machine's CI configuration) the benchmark runs ANALYZE where autovacuum
would, and says so: without statistics PostgreSQL keeps plans made for empty tables. Figures are written to
``bench/results/compare-<quick|full>.json`` (or ``--out``).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import datetime as dt
import http.client
import itertools
import json
import os
import platform
import re
import shlex
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import uuid
import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass, field
from typing import Callable, Iterator, Optional

import gunicorn
import psycopg
import radicale
import sqlalchemy
from sqlalchemy.engine import make_url

import workload
from workload import Event

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.dirname(sys.executable)
CONFIGS = ("stock", "sqlite", "pg", "pg-gunicorn")
PASSWORD = "benchpass1"
RANGE_START = dt.datetime(2026, 2, 2, 3, 17, tzinfo=dt.timezone.utc)   # ~1 % of the events:
RANGE_END = dt.datetime(2026, 2, 4, 12, 17, tzinfo=dt.timezone.utc)   # no event edge at :17
CHANGED, DELETED = 10, 5
GETS_PER_REPEAT = 10
MIN_SECONDS, MAX_REPEATS_FACTOR = 0.5, 5   # reads: repeat for CPU ticks to add up
MULTIGET = 100
ANALYZE_NAPTIME = 10.0     # seconds; see Postgres._analyzing
GUNICORN_THREADS = 4
D, C = "{DAV:}", "{urn:ietf:params:xml:ns:caldav}"
TICK = os.sysconf("SC_CLK_TCK")


class CheckFailed(Exception):
    """A server answered something other than what it must; the run's figures are void."""


# --- HTTP ---------------------------------------------------------------------------------------

@dataclass
class Reply:
    status: int
    headers: dict
    body: bytes
    seconds: float


class _Connection(http.client.HTTPConnection):
    def connect(self) -> None:
        super().connect()
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.opened += 1

    opened = 0


class Client:
    """One keep-alive connection with Basic auth. Radicale's built-in server (stock and
    crm-server) closes every connection after one answer; http.client then reconnects, and
    ``connections`` counts how often that happened. A request that finds its idle
    connection closed by the server is sent once more on a new one (as calendar clients do);
    any other failure closes the connection, so the next request starts clean."""

    def __init__(self, port: int, user: str, timeout: float = 900,
                 password: str = PASSWORD) -> None:
        self._conn = _Connection("127.0.0.1", port, timeout=timeout)
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        self._auth = "Basic " + token
        self.requests = 0

    @property
    def connections(self) -> int:
        return self._conn.opened

    def request(self, method: str, path: str, body: str | bytes = b"",
                headers: Optional[dict] = None) -> Reply:
        data = body.encode() if isinstance(body, str) else body
        all_headers = {"Authorization": self._auth, **(headers or {})}
        reused = self._conn.sock is not None
        try:
            return self._send(method, path, data, all_headers)
        except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
            self._conn.close()
            if not reused:
                raise
            return self._send(method, path, data, all_headers)   # it closed an idle one
        except BaseException:
            self._conn.close()
            raise

    def _send(self, method: str, path: str, data: bytes, headers: dict) -> Reply:
        started = time.perf_counter()
        self._conn.request(method, path, body=data, headers=headers)
        response = self._conn.getresponse()
        body = response.read()
        seconds = time.perf_counter() - started
        self.requests += 1
        return Reply(response.status, {k.lower(): v for k, v in response.getheaders()}, body,
                     seconds)

    def close(self) -> None:
        self._conn.close()


# --- DAV requests and what their answers must contain ----------------------------------------

XML = {"Content-Type": "application/xml; charset=utf-8"}
NAMESPACES = 'xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav"'
PROPFIND_BODY = (f'<?xml version="1.0" encoding="utf-8"?><D:propfind {NAMESPACES}><D:prop>'
                 '<D:getetag/><D:getcontenttype/></D:prop></D:propfind>')


def _stamp(moment: dt.datetime) -> str:
    return moment.strftime("%Y%m%dT%H%M%SZ")


TIME_RANGE = f'<C:time-range start="{_stamp(RANGE_START)}" end="{_stamp(RANGE_END)}"/>'
QUERY_BODY = (f'<?xml version="1.0" encoding="utf-8"?><C:calendar-query {NAMESPACES}>'
              '<D:prop><D:getetag/></D:prop><C:filter><C:comp-filter name="VCALENDAR">'
              f'<C:comp-filter name="VEVENT">{TIME_RANGE}</C:comp-filter></C:comp-filter>'
              '</C:filter></C:calendar-query>')
FREEBUSY_BODY = (f'<?xml version="1.0" encoding="utf-8"?><C:free-busy-query {NAMESPACES}>'
                 f'{TIME_RANGE}</C:free-busy-query>')


def multiget_body(paths: list[str]) -> str:
    hrefs = "".join(f"<D:href>{p}</D:href>" for p in paths)
    return (f'<?xml version="1.0" encoding="utf-8"?><C:calendar-multiget {NAMESPACES}>'
            f'<D:prop><D:getetag/><C:calendar-data/></D:prop>{hrefs}</C:calendar-multiget>')


def sync_body(token: str) -> str:
    return (f'<?xml version="1.0" encoding="utf-8"?><D:sync-collection {NAMESPACES}>'
            f'<D:sync-token>{token}</D:sync-token><D:sync-level>1</D:sync-level>'
            '<D:prop><D:getetag/></D:prop></D:sync-collection>')


@dataclass
class Listing:
    """A multistatus answer: per item href (last path segment), its status and properties."""
    ok: dict[str, dict[str, str]]   # href -> {property tag: text} of its 200 propstat
    gone: set[str]                  # hrefs answered with status 404
    token: str


def parse_multistatus(reply: Reply, what: str) -> Listing:
    if reply.status != 207:
        raise CheckFailed(f"{what}: status {reply.status}, not 207: {reply.body[:200]!r}")
    root = ET.fromstring(reply.body)
    ok, gone = {}, set()
    for response in root.iter(f"{D}response"):
        href = urllib.parse.unquote(response.findtext(f"{D}href", ""))
        if href.endswith("/"):
            continue   # the collection itself
        name = href.rsplit("/", 1)[-1]
        if " 404 " in response.findtext(f"{D}status", ""):
            gone.add(name)
            continue
        for propstat in response.iter(f"{D}propstat"):
            if " 200 " in propstat.findtext(f"{D}status", ""):
                prop = propstat.find(f"{D}prop")
                ok[name] = {child.tag: child.text or "" for child in prop}
    return Listing(ok, gone, root.findtext(f"{D}sync-token", ""))


def expect_hrefs(what: str, got: set[str], expected: set[str]) -> None:
    if got != expected:
        missing, extra = sorted(expected - got), sorted(got - expected)
        raise CheckFailed(f"{what}: {len(got)} hrefs, expected {len(expected)} (missing "
                          f"{missing[:3]}{'...' if len(missing) > 3 else ''}, unexpected "
                          f"{extra[:3]}{'...' if len(extra) > 3 else ''})")


def parse_freebusy(reply: Reply) -> list[workload.Period]:
    if reply.status != 200 or "text/calendar" not in reply.headers.get("content-type", ""):
        raise CheckFailed(f"free-busy: status {reply.status}, content type "
                          f"{reply.headers.get('content-type')!r}: not a calendar")
    text = reply.body.decode().replace("\r\n ", "").replace("\n ", "")
    periods = []
    for line in text.splitlines():
        if not line.startswith("FREEBUSY"):
            continue
        if "FBTYPE=BUSY" not in line.split(":", 1)[0]:
            raise CheckFailed(f"free-busy: unexpected period type in {line!r}")
        for period in line.split(":", 1)[1].split(","):
            start_text, end_text = period.split("/")
            start = dt.datetime.strptime(start_text, "%Y%m%dT%H%M%SZ").replace(
                tzinfo=dt.timezone.utc)
            end = start + _duration(end_text) if end_text.startswith("P") else \
                dt.datetime.strptime(end_text, "%Y%m%dT%H%M%SZ").replace(tzinfo=dt.timezone.utc)
            periods.append((start, end))
    return sorted(periods)


def _periods(periods: list[workload.Period]) -> str:
    return ", ".join(f"{_stamp(s)}/{_stamp(e)}" for s, e in periods) or "none"


def _duration(text: str) -> dt.timedelta:
    match = re.fullmatch(r"P(?:(\d+)W)?(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?(?:(\d+)S)?)?", text)
    if not match:
        raise CheckFailed(f"free-busy: unreadable duration {text!r}")
    weeks, days, hours, minutes, seconds = (int(g or 0) for g in match.groups())
    return dt.timedelta(weeks=weeks, days=days, hours=hours, minutes=minutes, seconds=seconds)


# --- processes: CPU and memory from /proc --------------------------------------------------------

def cpu_seconds(pid: int) -> Optional[float]:
    """utime + stime of a process (all its threads, live and ended), or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / TICK


def peak_rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmHWM for process {pid}")


def children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                with open(f"/proc/{entry}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                        found.append(int(entry))
    return found


CpuSample = dict[int, float]


def cpu_sample(pids: list[int]) -> CpuSample:
    sample = {pid: cpu_seconds(pid) for pid in pids}
    return {pid: s for pid, s in sample.items() if s is not None}


def cpu_used(before: CpuSample, after: CpuSample) -> float:
    """Seconds used in between; a process that started in between counts from zero."""
    return sum(s - before.get(pid, 0.0) for pid, s in after.items())


# --- PostgreSQL ----------------------------------------------------------------------------------

class Postgres:
    """The PostgreSQL server: fresh databases, their backends' process ids, its version."""

    def __init__(self, url: str) -> None:
        self.url = make_url(url)
        self._admin = psycopg.connect(self._libpq(self.url), autocommit=True, connect_timeout=5)
        self.version = self._admin.execute("SHOW server_version").fetchone()[0]
        self.autovacuum = self._admin.execute("SHOW autovacuum").fetchone()[0] == "on"
        self.analyses = 0           # ANALYZE runs of ours, when autovacuum is off
        self._analyze_rule = tuple(float(self._admin.execute(f"SHOW {name}").fetchone()[0])
                                   for name in ("autovacuum_analyze_threshold",
                                                "autovacuum_analyze_scale_factor"))

    @staticmethod
    def _libpq(url) -> str:
        return url.set(drivername="postgresql").render_as_string(hide_password=False)

    @contextlib.contextmanager
    def database(self) -> Iterator[str]:
        name = "crm_cmp_" + uuid.uuid4().hex[:10]
        self._admin.execute(f'CREATE DATABASE "{name}"')
        try:
            with contextlib.ExitStack() as stack:
                if not self.autovacuum:
                    stack.enter_context(self._analyzing(self.url.set(database=name)))
                yield self.url.set(drivername="postgresql+psycopg",
                                   database=name).render_as_string(hide_password=False)
        finally:
            self._admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    @contextlib.contextmanager
    def _analyzing(self, url) -> Iterator[None]:
        """Autovacuum's analyze, for a server that runs without it (this machine's CI
        PostgreSQL turns it off): every ANALYZE_NAPTIME seconds, ANALYZE each table that
        changed by more than autovacuum's rule (threshold + scale factor x rows). Without
        statistics the planner keeps plans made for empty tables as they grow, and a fill
        slows ~2x by 5,000 events; no production server runs like that."""
        threshold, scale = self._analyze_rule
        stop = threading.Event()

        def analyze() -> None:
            with psycopg.connect(self._libpq(url), autocommit=True) as conn:
                while not stop.wait(ANALYZE_NAPTIME):
                    due = conn.execute(
                        "SELECT s.relname FROM pg_stat_user_tables s JOIN pg_class c "
                        "ON c.oid = s.relid WHERE s.n_mod_since_analyze > "
                        "%s + %s * greatest(c.reltuples, 0)", (threshold, scale)).fetchall()
                    for (table,) in due:
                        conn.execute(f'ANALYZE "{table}"')
                        self.analyses += 1

        worker = threading.Thread(target=analyze, name="autoanalyze", daemon=True)
        worker.start()
        try:
            yield
        finally:
            stop.set()
            worker.join(60)

    def backends(self, db_url: str) -> list[int]:
        name = make_url(db_url).database
        return [row[0] for row in self._admin.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = %s", (name,))]

    def close(self) -> None:
        self._admin.close()


# --- servers under test --------------------------------------------------------------------------

def stop_process(process: subprocess.Popen, grace: float = 30) -> None:
    """SIGTERM, then SIGKILL if it is still running after ``grace`` seconds."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(grace)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    """One server under test: how to start it, where it keeps its data, which processes and
    database backends are its."""
    config: str
    workdir: str
    argv: list[str]                       # "{port}" stands for the port
    env: dict
    db_url: Optional[str] = None
    postgres: Optional[Postgres] = None
    folder: Optional[str] = None          # stock: its filesystem storage folder
    port: int = 0
    process: Optional[subprocess.Popen] = None

    def start(self) -> None:
        self.port = free_port()
        log_path = os.path.join(self.workdir, "server.log")
        with open(log_path, "ab") as log:
            argv = [arg.replace("{port}", str(self.port)) for arg in self.argv]
            self.process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                            env=self.env, cwd=ROOT)
        deadline = time.monotonic() + 60
        while True:
            with contextlib.suppress(OSError), socket.create_connection(
                    ("127.0.0.1", self.port), timeout=1) as probe:
                probe.sendall(b"GET /.well-known/caldav HTTP/1.0\r\n\r\n")
                if probe.recv(12).startswith(b"HTTP/"):
                    return
            if self.process.poll() is not None or time.monotonic() > deadline:
                with open(log_path, errors="replace") as f:
                    raise RuntimeError(f"{self.config} did not start: {f.read()[-1500:]}")
            time.sleep(0.1)

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process)
        self.process = None

    def client(self, user: str = workload.REP) -> Client:
        return Client(self.port, user)

    def workers(self) -> list[int]:
        """The processes serving requests: gunicorn's workers, else the server itself."""
        return children(self.process.pid) or [self.process.pid]

    def cpu(self) -> tuple[CpuSample, CpuSample]:
        """(server processes, database backends) CPU seconds."""
        app = cpu_sample([self.process.pid, *children(self.process.pid)])
        db = cpu_sample(self.postgres.backends(self.db_url)) if self.postgres else {}
        return app, db

    def peak_rss(self) -> dict:
        rss = [peak_rss_mb(pid) for pid in self.workers()]
        return dict(sum_mb=sum(rss), max_mb=max(rss), processes=len(rss))


def _admin(db_url: str, *args: str, stdin: str = "") -> None:
    subprocess.run([os.path.join(BIN, "crm-admin"), "--db-url", db_url, *args], input=stdin,
                   text=True, check=True, capture_output=True, cwd=ROOT)


def _our_env(db_url: str, workdir: str, gunicorn: bool) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("RADICALE_CONFIG", "CRM_CONFIG")}
    base = os.path.join(ROOT, "config", "radicale.conf")
    if not gunicorn:
        return {**env, "CRM_CONFIG": base}
    overrides = os.path.join(workdir, "bench.conf")
    with open(overrides, "w") as f:
        f.write(f"[storage]\ndb_url = {db_url}\ncrm_internal_domains = {workload.INTERNAL}\n"
                "[auth]\ndelay = 0\n[server]\ndelay_on_error = 0\n[logging]\nlevel = warning\n")
    return {**env, "RADICALE_CONFIG": os.pathsep.join([base, overrides])}


@contextlib.contextmanager
def deployment(config: str, users: list[str], postgres: Optional[Postgres], workers: int
               ) -> Iterator[Server]:
    """A started server of that configuration with a fresh store and these users; removed
    afterwards."""
    workdir = tempfile.mkdtemp(prefix=f"compare-{config}-")
    try:
        with contextlib.ExitStack() as stack:
            server = _prepare(config, users, postgres, workers, workdir, stack)
            server.start()
            stack.callback(server.stop)
            yield server
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _prepare(config: str, users: list[str], postgres: Optional[Postgres], workers: int,
             workdir: str, stack: contextlib.ExitStack) -> Server:
    if config == "stock":
        folder, htpasswd = os.path.join(workdir, "collections"), os.path.join(workdir, "users")
        with open(htpasswd, "w") as f:
            f.writelines(f"{user}:{PASSWORD}\n" for user in users)
        env = {k: v for k, v in os.environ.items() if k != "RADICALE_CONFIG"}
        return Server(config, workdir, [
            sys.executable, "-m", "radicale", "--config", "", "--server-hosts=127.0.0.1:{port}",
            f"--storage-filesystem-folder={folder}", "--auth-type=htpasswd",
            f"--auth-htpasswd-filename={htpasswd}", "--auth-htpasswd-encryption=plain",
            "--auth-delay=0", "--server-delay-on-error=0", "--rights-type=owner_only",
            "--logging-level=warning"], env, folder=folder)
    if config == "sqlite":
        db_url = f"sqlite:///{workdir}/bench.db"
    else:
        db_url = stack.enter_context(postgres.database())
    _admin(db_url, "db", "upgrade")
    for user in users:
        _admin(db_url, "user", "add", user, "--password-stdin", "--email",
               f"{user}@{workload.INTERNAL}", stdin=PASSWORD + "\n")
    gunicorn = config == "pg-gunicorn"
    env = _our_env(db_url, workdir, gunicorn)
    argv = [os.path.join(BIN, "gunicorn"), "--workers", str(workers), "--worker-class",
            "gthread", "--threads", str(GUNICORN_THREADS), "--timeout", "600", "--log-level",
            "warning", "--bind", "127.0.0.1:{port}", "server.wsgi:application"] if gunicorn else [
        os.path.join(BIN, "crm-server"), "--server-hosts=127.0.0.1:{port}",
        f"--storage-db-url={db_url}", f"--storage-crm-internal-domains={workload.INTERNAL}",
        "--auth-delay=0", "--server-delay-on-error=0", "--logging-level=warning"]
    return Server(config, workdir, argv, env, db_url=db_url,
                  postgres=postgres if config != "sqlite" else None)


def write_stock_items(server: Server, calendar: str, events: list[Event]) -> None:
    """Stock Radicale's calendar filled behind its back, one .ics file per event (as its
    storage keeps them), while it is stopped. The first read after the restart builds its
    item cache: every read figure is measured after a warm-up read."""
    folder = os.path.join(server.folder, "collection-root", calendar.strip("/"))
    if not os.path.exists(os.path.join(folder, ".Radicale.props")):
        raise RuntimeError(f"{folder} is not a calendar Radicale made")
    server.stop()
    for event in events:
        with open(os.path.join(folder, event.href), "w", newline="") as f:
            f.write(event.text)
    server.start()


# --- measurements --------------------------------------------------------------------------------

def _ms(seconds: float) -> float:
    return seconds * 1000


def p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20)[18] if len(values) >= 2 else values[0]


@dataclass
class PutResult:
    clients: int
    requested: int
    stored: int
    seconds: float
    per_second: float
    p50_ms: float
    p95_ms: float
    edge: int                 # the first and the last this many PUTs: 1,000 or a tenth
    first_p50_ms: float
    last_p50_ms: float
    cpu_ms: float          # server processes + database backends, per PUT
    db_cpu_ms: float       # of which database backends
    budget_hit: bool
    requests_per_connection: float


@dataclass
class ReadResult:
    name: str
    median_ms: float
    min_ms: float
    max_ms: float
    samples_ms: list[float]
    cpu_ms: float
    db_cpu_ms: float


def _cpu_per_request(server: Server, before, requests: int) -> tuple[float, float]:
    app_after, db_after = server.cpu()
    app = cpu_used(before[0], app_after)
    db = cpu_used(before[1], db_after)
    return _ms(app + db) / max(1, requests), _ms(db) / max(1, requests)


@dataclass
class Lane:
    """Events to PUT into one calendar, as one user, from ``clients`` connections."""
    user: str
    calendar: str
    events: list[Event]
    clients: int = 1


def put_events(server: Server, lanes: list[Lane], budget: Optional[float] = None) -> PutResult:
    """Every lane's events PUT in order by its clients, all lanes at once; with a budget,
    until it runs out (the events stored are then the first ones of each lane)."""
    latencies: list[list[Optional[float]]] = [[None] * len(lane.events) for lane in lanes]
    failures: list[str] = []
    deadline = [float("inf")]
    threads = sum(lane.clients for lane in lanes)
    barrier = threading.Barrier(threads + 1)
    connections: list[tuple[int, int]] = []   # (requests, connections) per client

    def writer(k: int, next_index: Iterator[int]) -> None:
        lane, client = lanes[k], server.client(lanes[k].user)
        try:
            client.request("PROPFIND", lane.calendar, PROPFIND_BODY, {**XML, "Depth": "0"})
            barrier.wait()   # logged in and connected: now measure
            while time.perf_counter() < deadline[0] and not failures:
                i = next(next_index)
                if i >= len(lane.events):
                    break
                event = lane.events[i]
                reply = client.request("PUT", lane.calendar + event.href, event.text, {
                    "Content-Type": "text/calendar; charset=utf-8", "If-None-Match": "*"})
                if reply.status != 201:
                    failures.append(f"PUT {lane.calendar}{event.href}: status {reply.status},"
                                    f" not 201: {reply.body[:200]!r}")
                latencies[k][i] = reply.seconds
            connections.append((client.requests, client.connections))
        except Exception as e:   # reported by the main thread
            failures.append(f"PUT into {lane.calendar}: {type(e).__name__}: {e}")
            barrier.abort()
        finally:
            client.close()

    workers = []
    for k, lane in enumerate(lanes):
        next_index = itertools.count()
        workers += [threading.Thread(target=writer, args=(k, next_index))
                    for _ in range(lane.clients)]
    for thread in workers:
        thread.start()
    with contextlib.suppress(threading.BrokenBarrierError):   # a client failed: see below
        barrier.wait()
    before = server.cpu()
    started = time.perf_counter()
    if budget is not None:
        deadline[0] = started + budget
    for thread in workers:
        thread.join()
    seconds = time.perf_counter() - started
    if failures:
        raise CheckFailed(failures[0])
    # In the order of the events, lanes interleaved.
    done = [column[i] for i in range(max(map(len, latencies))) for column in latencies
            if i < len(column) and column[i] is not None]
    cpu_ms, db_cpu_ms = _cpu_per_request(server, before, len(done))
    requested = sum(map(len, latencies))
    for lane, column in zip(lanes, latencies):
        stored = len(column) - column.count(None)
        if None in column[:stored] or (budget is None and stored < len(column)):
            raise CheckFailed(f"PUT: {stored} of {len(column)} events stored in "
                              f"{lane.calendar}, not the first ones in order")
    ms = [_ms(x) for x in done]
    edge = min(1000, max(1, len(ms) // 10))
    return PutResult(threads, requested, len(done), seconds, len(done) / seconds,
                     statistics.median(ms), p95(ms), edge, statistics.median(ms[:edge]),
                     statistics.median(ms[-edge:]), cpu_ms, db_cpu_ms, len(done) < requested,
                     sum(r for r, _ in connections) / max(1, sum(c for _, c in connections)))


def measure(server: Server, name: str, repeats: int,
            once: Callable[[Client, int], list[Reply]]) -> ReadResult:
    """One checked warm-up, then checked repeats of ``once`` (which returns its replies,
    checked): ``repeats`` of them, more until MIN_SECONDS have passed (at most
    MAX_REPEATS_FACTOR times as many), so server CPU adds up to enough clock ticks. A
    repeat's figure is the mean time of its replies."""
    client = server.client()
    try:
        once(client, -1)
        before = server.cpu()
        samples, requests = [], 0
        started = time.perf_counter()
        while len(samples) < repeats or (time.perf_counter() - started < MIN_SECONDS and
                                         len(samples) < MAX_REPEATS_FACTOR * repeats):
            replies = once(client, len(samples))
            samples.append(_ms(statistics.fmean(r.seconds for r in replies)))
            requests += len(replies)
        cpu_ms, db_cpu_ms = _cpu_per_request(server, before, requests)
    finally:
        client.close()
    return ReadResult(name, statistics.median(samples), min(samples), max(samples), samples,
                      cpu_ms, db_cpu_ms)


@dataclass
class SizeResult:
    size: int
    puts: dict[int, PutResult] = field(default_factory=dict)     # by client count
    stored_by_put: int = 0
    written_directly: int = 0
    expected_range_hits: int = 0
    expected_busy_periods: int = 0
    visits: int = 0               # ours: what CRM ingestion made of the events PUT
    reads: dict[str, ReadResult] = field(default_factory=dict)
    peak_rss: dict = field(default_factory=dict)


def reads(server: Server, calendar: str, events: list[Event], repeats: int,
          result: SizeResult) -> None:
    """The read figures over a calendar holding ``events``, each answer checked."""
    by_href = {e.href: e for e in events}
    all_hrefs = set(by_href)
    n = len(events)

    def propfind(client: Client, _repeat: int) -> list[Reply]:
        reply = client.request("PROPFIND", calendar, PROPFIND_BODY, {**XML, "Depth": "1"})
        listing = parse_multistatus(reply, "PROPFIND depth 1")
        expect_hrefs("PROPFIND depth 1", set(listing.ok), all_hrefs)
        if any(not props.get(f"{D}getetag") for props in listing.ok.values()):
            raise CheckFailed("PROPFIND depth 1: an item without getetag")
        return [reply]

    in_range = {e.href for e in events if e.overlaps(RANGE_START, RANGE_END)}
    result.expected_range_hits = len(in_range)

    def time_range(client: Client, _repeat: int) -> list[Reply]:
        reply = client.request("REPORT", calendar, QUERY_BODY, {**XML, "Depth": "1"})
        expect_hrefs("calendar-query time-range", set(parse_multistatus(
            reply, "calendar-query time-range").ok), in_range)
        return [reply]

    step = max(1, n // MULTIGET)
    wanted = [events[i].href for i in range(0, n, step)][:MULTIGET]

    def multiget(client: Client, _repeat: int) -> list[Reply]:
        reply = client.request("REPORT", calendar, multiget_body(
            [calendar + href for href in wanted]), {**XML, "Depth": "1"})
        listing = parse_multistatus(reply, "calendar-multiget")
        expect_hrefs("calendar-multiget", set(listing.ok), set(wanted))
        for href, props in listing.ok.items():
            if f"UID:{by_href[href].uid}" not in props.get(f"{C}calendar-data", ""):
                raise CheckFailed(f"calendar-multiget: {href} without its calendar-data")
        return [reply]

    def get(client: Client, repeat: int) -> list[Reply]:
        replies = []
        for k in range(GETS_PER_REPEAT):
            event = events[((repeat + 1) * GETS_PER_REPEAT + k) % n]
            reply = client.request("GET", calendar + event.href)
            body = reply.body.decode()
            # Stock Radicale serves what vobject re-serializes; ours the bytes as PUT.
            same = f"UID:{event.uid}\r\n" in body if server.config == "stock" else \
                body == event.text
            if reply.status != 200 or not same:
                raise CheckFailed(f"GET {event.href}: status {reply.status}, "
                                  f"{'UID' if server.config == 'stock' else 'body'} differs")
            replies.append(reply)
        return replies

    busy = workload.busy_periods(events, RANGE_START, RANGE_END)
    result.expected_busy_periods = len(busy)

    def freebusy(client: Client, _repeat: int) -> list[Reply]:
        reply = client.request("REPORT", calendar, FREEBUSY_BODY, {**XML, "Depth": "1"})
        got = parse_freebusy(reply)
        if got != busy:
            first = next(i for i in range(len(got) + 1) if got[i:i + 1] != busy[i:i + 1])
            raise CheckFailed(f"free-busy: {len(got)} busy periods, expected {len(busy)}; "
                              f"period {first + 1} is {_periods(got[first:first + 1])}, "
                              f"expected {_periods(busy[first:first + 1])}")
        return [reply]

    tokens = []

    def sync_initial(client: Client, _repeat: int) -> list[Reply]:
        reply = client.request("REPORT", calendar, sync_body(""), {**XML, "Depth": "1"})
        listing = parse_multistatus(reply, "sync-collection initial")
        expect_hrefs("sync-collection initial", set(listing.ok), all_hrefs)
        if not listing.token:
            raise CheckFailed("sync-collection initial: no sync-token")
        tokens.append(listing.token)
        return [reply]

    for name, once in (("propfind", propfind), ("time_range", time_range),
                       ("multiget", multiget), ("get", get), ("freebusy", freebusy),
                       ("sync_initial", sync_initial)):
        result.reads[name] = measure(server, name, repeats, once)

    changed, deleted = change_some(server, calendar, events)

    def sync_incremental(client: Client, _repeat: int) -> list[Reply]:
        reply = client.request("REPORT", calendar, sync_body(tokens[-1]), {**XML, "Depth": "1"})
        listing = parse_multistatus(reply, "sync-collection incremental")
        expect_hrefs("sync-collection incremental (changed)", set(listing.ok), changed)
        expect_hrefs("sync-collection incremental (deleted, 404)", listing.gone, deleted)
        return [reply]

    result.reads["sync_incremental"] = measure(server, "sync_incremental", repeats,
                                               sync_incremental)


def change_some(server: Server, calendar: str, events: list[Event]
                ) -> tuple[set[str], set[str]]:
    """10 events rewritten (SEQUENCE 1) and 5 deleted, spread over the calendar."""
    picked = [events[(k + 1) * len(events) // (CHANGED + DELETED + 1)]
              for k in range(CHANGED + DELETED)]
    client = server.client()
    try:
        for event in picked[:CHANGED]:
            reply = client.request("PUT", calendar + event.href,
                                   event.text.replace("SEQUENCE:0", "SEQUENCE:1"),
                                   {"Content-Type": "text/calendar; charset=utf-8"})
            if reply.status not in (200, 204):
                raise CheckFailed(f"PUT (change) {event.href}: status {reply.status}")
        for event in picked[CHANGED:]:
            reply = client.request("DELETE", calendar + event.href)
            if reply.status not in (200, 204):
                raise CheckFailed(f"DELETE {event.href}: status {reply.status}")
    finally:
        client.close()
    return {e.href for e in picked[:CHANGED]}, {e.href for e in picked[CHANGED:]}


def check_ingested(server: Server, events: list[Event]) -> int:
    """CRM ingestion ran: every event with an external attendee is a visit."""
    expected = sum(1 for e in events if e.external)
    engine = sqlalchemy.create_engine(server.db_url)
    try:
        with engine.connect() as conn:
            visits = conn.execute(sqlalchemy.text("SELECT count(*) FROM crm_visits")).scalar_one()
    finally:
        engine.dispose()
    if visits != expected:
        raise CheckFailed(f"CRM ingestion: {visits} visits for {expected} events with an "
                          "external attendee")
    return visits


def make_calendar(server: Server, calendar: str, user: str = workload.REP) -> None:
    client = server.client(user)
    try:
        home = client.request("PROPFIND", f"/{user}/", PROPFIND_BODY, {**XML, "Depth": "0"})
        if home.status != 207:
            raise CheckFailed(f"PROPFIND /{user}/: status {home.status}")
        reply = client.request("MKCALENDAR", calendar)
        if reply.status != 201:
            raise CheckFailed(f"MKCALENDAR {calendar}: status {reply.status}")
    finally:
        client.close()


# --- one configuration at one size, and the parallel writers -----------------------------------

@dataclass
class Options:
    configs: list[str]
    sizes: list[int]
    clients: int
    repeats: int
    stock_budget: float
    stock_max_size: Optional[int]
    gunicorn_workers: int
    parallel_workers: list[int]
    parallel_puts: int
    seed: int
    quick: bool


def run_size(config: str, size: int, opts: Options, postgres: Optional[Postgres],
             events: list[Event], single: list[Event]) -> SizeResult:
    """One fresh server: at the smallest size, fill a calendar from C clients and a second
    one from one client; then the reads on the first, then its peak RSS."""
    result = SizeResult(size)
    stock = config == "stock"
    rep = workload.REP
    calendar = f"/{rep}/cal-{size}/"
    with deployment(config, [rep], postgres, opts.gunicorn_workers) as server:
        make_calendar(server, calendar)
        budget = opts.stock_budget if stock else None
        if not (stock and size > opts.sizes[0]):   # stock: PUT figures at the smallest N
            put = put_events(server, [Lane(rep, calendar, events, opts.clients)], budget)
            result.puts[opts.clients] = put
            result.stored_by_put = put.stored
        if size == opts.sizes[0]:
            one = f"/{rep}/cal-{size}-one-client/"
            make_calendar(server, one)
            result.puts[1] = put_events(server, [Lane(rep, one, single)], budget)
        if stock and result.stored_by_put < size:
            write_stock_items(server, calendar, events[result.stored_by_put:])
            result.written_directly = size - result.stored_by_put
        if not stock:
            result.visits = check_ingested(
                server, events + (single if size == opts.sizes[0] else []))
        reads(server, calendar, events, opts.repeats, result)
        result.peak_rss = server.peak_rss()
    return result


@dataclass
class ParallelResult:
    workers: int
    put: PutResult


def run_parallel(workers: int, opts: Options, postgres: Postgres) -> ParallelResult:
    """Four users PUT into their own calendars at once, on gunicorn with that many workers;
    afterwards each calendar must list exactly its events."""
    users = [f"{workload.REP}{k}" for k in range(1, 5)]
    with deployment("pg-gunicorn", users, postgres, workers) as server:
        lanes = [Lane(user, f"/{user}/parallel/",
                      workload.make_events(opts.parallel_puts, opts.seed + 10 + k, user))
                 for k, user in enumerate(users)]
        for lane in lanes:
            make_calendar(server, lane.calendar, lane.user)
        put = put_events(server, lanes)
        check_ingested(server, [e for lane in lanes for e in lane.events])
        for lane in lanes:
            client = server.client(lane.user)
            try:
                listing = parse_multistatus(client.request(
                    "PROPFIND", lane.calendar, PROPFIND_BODY, {**XML, "Depth": "1"}),
                    "parallel writers PROPFIND")
            finally:
                client.close()
            expect_hrefs(f"parallel writers PROPFIND {lane.calendar}", set(listing.ok),
                         {e.href for e in lane.events})
    return ParallelResult(workers, put)


# --- the report ----------------------------------------------------------------------------------

@dataclass
class Row:
    label: str
    value: Callable[[SizeResult], Optional[float]]
    higher_is_better: bool = False

    def speedup(self, ours: Optional[SizeResult], stock: Optional[SizeResult]
                ) -> Optional[float]:
        """How many times better than stock: stock/ours for times, ours/stock for rates."""
        a = self.value(ours) if ours else None
        b = self.value(stock) if stock else None
        if not a or not b:
            return None
        return a / b if self.higher_is_better else b / a


def _put(clients: int, attribute: str) -> Callable[[SizeResult], Optional[float]]:
    return lambda r: getattr(r.puts[clients], attribute) if clients in r.puts else None


def _read(name: str, attribute: str = "median_ms") -> Callable[[SizeResult], Optional[float]]:
    return lambda r: getattr(r.reads[name], attribute) if name in r.reads else None


def _rss(attribute: str) -> Callable[[SizeResult], Optional[float]]:
    return lambda r: r.peak_rss.get(attribute)


READS = {"propfind": "PROPFIND depth 1", "time_range": "calendar-query ~1 %",
         "multiget": f"calendar-multiget {MULTIGET}", "get": "GET",
         "freebusy": "free-busy ~1 %", "sync_initial": "sync-collection initial",
         "sync_incremental": f"sync incremental {CHANGED}+{DELETED}"}


def sections(clients: int) -> list[tuple[str, list[Row]]]:
    puts = []
    for c in dict.fromkeys((clients, 1)):
        puts += [Row(f"PUT/s, {c} client{'s' * (c > 1)}", _put(c, "per_second"), True),
                 Row("  p50 ms", _put(c, "p50_ms")), Row("  p95 ms", _put(c, "p95_ms"))]
    puts += [Row(f"p50 ms, first 1,000 (or 10 %), {clients}c", _put(clients, "first_p50_ms")),
             Row(f"p50 ms, last 1,000 (or 10 %), {clients}c", _put(clients, "last_p50_ms"))]
    return [("PUT", puts),
            ("reads, median ms", [Row(label, _read(name)) for name, label in READS.items()]),
            ("server CPU ms per request", [Row(f"PUT, {clients} clients", _put(clients, "cpu_ms"))]
             + [Row(label, _read(name, "cpu_ms")) for name, label in READS.items()]),
            ("memory", [Row("peak RSS MB, sum of workers", _rss("sum_mb")),
                        Row("peak RSS MB, largest process", _rss("max_mb"))])]


def _number(value: float) -> str:
    return f"{value:.0f}" if value >= 100 else f"{value:.1f}" if value >= 10 else f"{value:.2f}"


def _times(ratio: float) -> str:
    return f"×{ratio:.0f}" if ratio >= 10 else f"×{ratio:.1f}"


def table(results: dict[str, dict[int, SizeResult]], labels: dict[str, str], clients: int
          ) -> str:
    configs, label_width, width = list(results), 38, 21
    rule = "-" * (label_width + width * len(configs))
    lines = [f"{'':{label_width}}" + "".join(f"{labels[c]:>{width}}" for c in configs)]
    for size in sorted({size for by_size in results.values() for size in by_size}):
        first = next(r[size] for r in results.values() if size in r)
        lines += [rule, f"N = {size:,}: {first.expected_range_hits} events in the time range "
                  f"(recurrences included), {first.expected_busy_periods} busy periods"]
        stock = results.get("stock", {}).get(size)
        for section, rows in sections(clients):
            body = []
            for row in rows:
                cells = []
                for config in configs:
                    mine = results[config].get(size)
                    value = row.value(mine) if mine else None
                    speedup = None if config == "stock" else row.speedup(mine, stock)
                    cells.append("-" if value is None else _number(value) +
                                 (f" {_times(speedup)}" if speedup else ""))
                if any(cell != "-" for cell in cells):
                    body.append(f"  {row.label:{label_width - 2}}" +
                                "".join(f"{cell:>{width}}" for cell in cells))
            lines += [f" {section}", *body] if body else []
    return "\n".join(lines)


def stock_note(result: dict[int, SizeResult], opts: Options) -> list[str]:
    notes = []
    for size, r in sorted(result.items()):
        put, one = r.puts.get(opts.clients), r.puts.get(1)
        stored = (f"{put.stored:,} of {size:,} events stored by PUT within its "
                  f"{opts.stock_budget:.0f} s budget ({opts.clients} clients, {put.seconds:.0f} s"
                  f"{'' if put.budget_hit else ', all in time'}); 1 client: "
                  f"{one.stored:,} of {size:,}") if put and one else "no PUT phase"
        written = (f"{r.written_directly:,} events written directly into its folder before the "
                   "reads (then restarted and read once)") if r.written_directly else \
            "read figures over PUT events only"
        notes.append(f"stock at N={size:,}: {stored}; {written}")
    return notes


def targets(results: dict[str, dict[int, SizeResult]], parallel: list[ParallelResult],
            opts: Options) -> list[str]:
    """The issue's targets against this run's figures (informational: no exit status)."""
    lines = []
    stock = results.get("stock", {})
    small, large = opts.sizes[0], opts.sizes[-1]
    at = 10_000 if 10_000 in opts.sizes else large

    def check(text: str, value: Optional[float], goal: float, at_most: bool = False) -> None:
        if value is not None:
            met = value <= goal if at_most else value >= goal
            lines.append(f" {config}: {text}: {value:.2f} ({'met' if met else 'NOT met'}: "
                         f"{'<=' if at_most else '>='} {goal:g})")

    for config in (c for c in results if c != "stock"):
        mine = results[config]
        for c in dict.fromkeys((1, opts.clients)):
            row = Row("", _put(c, "per_second"), True)
            check(f"PUT/s at N={small:,}, {c} client(s), × stock",
                  row.speedup(mine.get(small), stock.get(small)), 10)
        for name, goal in (("time_range", 50), ("sync_incremental", 50), ("propfind", 5),
                           ("multiget", 2), ("get", 1)):
            check(f"{READS[name]} at N={at:,}, × stock",
                  Row("", _read(name)).speedup(mine.get(at), stock.get(at)), goal)
        if large != small:
            for text, value in (("PUT p50", _put(opts.clients, "p50_ms")),
                                ("peak RSS", _rss("sum_mb")),
                                ("sync incremental", _read("sync_incremental"))):
                a, b = value(mine[large]), value(mine[small])
                check(f"{text} at N={large:,} / at N={small:,}", a / b if a and b else None,
                      1.5, at_most=True)
    if len(parallel) > 1:
        lines.append(" parallel writers: " + ", ".join(
            f"{p.workers} workers {_times(p.put.per_second / parallel[0].put.per_second)}"
            for p in parallel[1:]) + f" the PUT/s of {parallel[0].workers}")
    return lines


def machine(postgres: Optional[Postgres]) -> dict:
    model = ""
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return dict(cores=os.cpu_count(), cpu=model, python=platform.python_version(),
                platform=platform.platform(), radicale=radicale.VERSION,
                gunicorn=gunicorn.__version__,
                postgresql=postgres.version if postgres else None,
                postgresql_autovacuum=(postgres.autovacuum if postgres else None),
                date=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                load_average=os.getloadavg())


def parse_options(argv: Optional[list[str]]) -> tuple[Options, str, str]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="N=500, 5 repeats, 20 s stock budget, parallel writers on 2 "
                             "workers with 30 PUTs each")
    parser.add_argument("--configs", default=",".join(CONFIGS),
                        help="comma-separated, of: " + ", ".join(CONFIGS))
    parser.add_argument("--sizes", help="calendar sizes N (default 1000,10000,50000)")
    parser.add_argument("--clients", type=int, default=4, help="PUT clients filling (C)")
    parser.add_argument("--repeats", type=int, help="of each read (default 9)")
    parser.add_argument("--stock-budget", type=float, metavar="SECONDS",
                        help="per stock PUT phase (default 120)")
    parser.add_argument("--stock-max-size", type=int, metavar="N",
                        help="run stock Radicale at N up to this only (default: all)")
    parser.add_argument("--gunicorn-workers", type=int, default=2,
                        help="for the pg-gunicorn column")
    parser.add_argument("--parallel-workers", help="gunicorn workers for the parallel writers "
                        "(default 1,2,4; empty: none)")
    parser.add_argument("--parallel-puts", type=int, help="PUTs per writer (default 250)")
    parser.add_argument("--pg-url", default="postgresql://postgres@127.0.0.1:5432/postgres",
                        help="a PostgreSQL server (a fresh database is made per server)")
    parser.add_argument("--seed", type=int, default=20250901)
    parser.add_argument("--out", default="", metavar="FILE",
                        help="default: bench/results/compare-<quick|full>.json")
    args = parser.parse_args(argv)
    quick = args.quick

    def pick(value, full, fast):
        return value if value is not None else (fast if quick else full)

    configs = [c for c in args.configs.split(",") if c]
    unknown = set(configs) - set(CONFIGS)
    if unknown:
        parser.error(f"unknown configuration(s): {', '.join(sorted(unknown))}")
    sizes = sorted(_numbers(parser, "--sizes", pick(args.sizes, "1000,10000,50000", "500")))
    workers = pick(args.parallel_workers, "1,2,4", "2")
    opts = Options(configs=configs, sizes=sizes, clients=args.clients,
                   repeats=pick(args.repeats, 9, 5),
                   stock_budget=pick(args.stock_budget, 120.0, 20.0),
                   stock_max_size=args.stock_max_size, gunicorn_workers=args.gunicorn_workers,
                   parallel_workers=_numbers(parser, "--parallel-workers", workers),
                   parallel_puts=pick(args.parallel_puts, 250, 30), seed=args.seed, quick=quick)
    if min(sizes) < 2 * (CHANGED + DELETED + GETS_PER_REPEAT):
        parser.error("sizes must be at least 50")
    out = args.out or os.path.join(ROOT, "bench", "results",
                                   f"compare-{'quick' if quick else 'full'}.json")
    return opts, out, args.pg_url


def _numbers(parser: argparse.ArgumentParser, option: str, text: str) -> list[int]:
    """A comma-separated list of positive integers, or a usage error naming the option."""
    try:
        numbers = [int(n) for n in text.split(",") if n.strip()]
    except ValueError:
        parser.error(f"{option}: {text!r} is not a comma-separated list of numbers")
    if any(n <= 0 for n in numbers):
        parser.error(f"{option}: every number must be positive")
    return numbers


def connect_postgres(url: str) -> Optional[Postgres]:
    try:
        return Postgres(url)
    except psycopg.OperationalError as e:
        reason = str(e).strip().splitlines()[0]
        print(f"PostgreSQL at {url} does not answer ({reason}): skipping the PostgreSQL "
              "configurations and the parallel writers.")
        return None


def run(opts: Options, postgres: Optional[Postgres]) -> tuple[dict, list[ParallelResult]]:
    events = workload.make_events(opts.sizes[-1], opts.seed, "main")
    single = workload.make_events(opts.sizes[0], opts.seed + 1, "one")
    results: dict[str, dict[int, SizeResult]] = {c: {} for c in opts.configs}
    for size in opts.sizes:
        for config in opts.configs:
            if config == "stock" and opts.stock_max_size and size > opts.stock_max_size:
                print(f"stock N={size:,}: skipped (--stock-max-size {opts.stock_max_size:,})")
                continue
            started = time.perf_counter()
            try:
                r = run_size(config, size, opts, postgres, events[:size], single)
            except CheckFailed as e:
                raise CheckFailed(f"{config} N={size:,}: {e}") from None
            results[config][size] = r
            put = r.puts.get(opts.clients)
            print(f"{config} N={size:,}: " + (f"{put.stored:,} PUT at {put.per_second:.1f}/s, "
                                              if put else "") +
                  (f"{r.written_directly:,} written directly, " if r.written_directly else "") +
                  f"checked, {time.perf_counter() - started:.0f} s", flush=True)
    parallel = []
    if postgres and "pg-gunicorn" in opts.configs:
        for workers in opts.parallel_workers:
            try:
                p = run_parallel(workers, opts, postgres)
            except CheckFailed as e:
                raise CheckFailed(f"parallel writers, {workers} workers: {e}") from None
            parallel.append(p)
            print(f"parallel writers, {workers} gunicorn workers: {p.put.stored} PUTs at "
                  f"{p.put.per_second:.1f}/s, checked", flush=True)
    return results, parallel


def report(results: dict[str, dict[int, SizeResult]], parallel: list[ParallelResult],
           opts: Options, info: dict, command: str) -> str:
    labels = {"stock": "stock Radicale", "sqlite": "ours SQLite", "pg": "ours PG",
              "pg-gunicorn": f"ours PG gunicorn {opts.gunicorn_workers}w"}
    results = {c: r for c, r in results.items() if r}
    fills = {c: r[opts.sizes[0]].puts.get(opts.clients) for c, r in results.items()
             if opts.sizes[0] in r}
    reuse = ", ".join(f"{c} {put.requests_per_connection:.1f}" for c, put in fills.items() if put)
    lines = [
        f"stock Radicale {info['radicale']} vs radicale-crm, {info['date']}",
        f"command: {command}",
        f"machine: {info['cores']} cores, {info['cpu']}, Python {info['python']}, PostgreSQL "
        f"{info['postgresql'] or '(not used)'}, gunicorn {info['gunicorn']}",
        "ours: CRM ingestion on (empty CRM at start); 'ours SQLite' and 'ours PG' run "
        "crm-server (Radicale's built-in threaded server),",
        f"  'ours PG gunicorn' {opts.gunicorn_workers} gthread workers x {GUNICORN_THREADS} "
        "threads (keep-alive); the PostgreSQL columns count the database backends' CPU too",
        *([f"PostgreSQL runs with autovacuum off: the benchmark runs ANALYZE where autovacuum "
           f"would (its threshold rule, checked every {ANALYZE_NAPTIME:.0f} s): "
           f"{info.get('postgresql_analyses', 0)} table analyses in this run"]
          if info.get("postgresql_autovacuum") is False else []),
        f"reads: median of >= {opts.repeats} repeats after a warm-up; '×R': R times better "
        "than stock at the same N (times: stock/ours; PUT/s: ours/stock)",
        f"requests per connection while PUTting (keep-alive asked for): {reuse}", "",
        table(results, labels, opts.clients)]
    if "stock" in results:
        lines += [""] + stock_note(results["stock"], opts)
    if parallel:
        lines += ["", f"parallel writers: 4 users each PUT {opts.parallel_puts} events into "
                  "their own calendar at once (PostgreSQL, gunicorn gthread)",
                  f"  {'workers':>8}{'PUT/s':>10}{'p50 ms':>10}{'p95 ms':>10}{'CPU ms/PUT':>12}"]
        lines += [f"  {p.workers:>8}{p.put.per_second:>10.1f}{p.put.p50_ms:>10.1f}"
                  f"{p.put.p95_ms:>10.1f}{p.put.cpu_ms:>12.1f}" for p in parallel]
    goals = targets(results, parallel, opts)
    if goals:
        lines += ["", "targets (informational, at the sizes run):", *goals]
    return "\n".join(lines)


def main(argv: Optional[list[str]] = None) -> None:
    opts, out, pg_url = parse_options(argv)
    command = " ".join(shlex.quote(a) for a in [os.path.relpath(sys.executable, ROOT),
                                                 os.path.relpath(sys.argv[0], ROOT),
                                                 *(sys.argv[1:] if argv is None else argv)])
    postgres = None
    if {"pg", "pg-gunicorn"} & set(opts.configs):
        postgres = connect_postgres(pg_url)
        if postgres is None:
            opts.configs = [c for c in opts.configs if not c.startswith("pg")]
            if not opts.configs:   # nothing left to measure: keep the last results file
                sys.exit("compare.py: nothing to run without PostgreSQL; no results written")
    info = machine(postgres)
    started = time.perf_counter()
    try:
        results, parallel = run(opts, postgres)
    except CheckFailed as e:
        sys.exit(f"compare.py: check failed: {e}")
    except (RuntimeError, subprocess.CalledProcessError, OSError) as e:
        lines = (str(e) + "\n" + (getattr(e, "stderr", None) or "")).strip().splitlines()
        sys.exit(f"compare.py: {type(e).__name__}: {lines[0]}"
                 + (f" ... {lines[-1]}" if len(lines) > 1 else ""))
    finally:
        if postgres:
            info["postgresql_analyses"] = postgres.analyses
            postgres.close()
    wall = time.perf_counter() - started
    text = report(results, parallel, opts, info, command)
    print("\n" + text + f"\n\nwall time {wall:.0f} s")
    document = dict(benchmark="compare", mode="quick" if opts.quick else "full",
                    command=command, machine=info, options=asdict(opts), wall_seconds=wall,
                    range=dict(start=RANGE_START.isoformat(), end=RANGE_END.isoformat()),
                    results={c: {str(n): asdict(r) for n, r in by_size.items()}
                             for c, by_size in results.items()},
                    parallel=[asdict(p) for p in parallel], report=text)
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out + ".tmp", "w") as f:
        json.dump(document, f, indent=2, ensure_ascii=False)
    os.replace(out + ".tmp", out)
    print(f"written: {out}")


if __name__ == "__main__":
    main()
