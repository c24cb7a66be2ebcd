"""Test drivers: Radicale's WSGI app in-process (no socket), and a real crm-server process."""

from __future__ import annotations

import base64
import http.client
import io
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from typing import Optional

from radicale import config as radicale_config

from server import config as crm_config
from server.app import CrmApplication

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def make_configuration(db_url: str, **sections: dict):
    """Our defaults, a test database, no login delays and no login throttling (tests share
    one client address, and on PostgreSQL one database); ``sections`` override."""
    configuration = radicale_config.load(radicale_config.parse_compound_paths(crm_config.DEFAULTS))
    updates = {"storage": {"db_url": db_url}, "auth": {"delay": "0", "throttle_window": "0"},
               "server": {"delay_on_error": "0"}, "logging": {"level": "warning"}}
    for section, values in sections.items():
        updates.setdefault(section, {}).update(values)
    configuration.update(updates, "test", privileged=True)
    return configuration


@dataclass
class Response:
    status: int
    headers: dict
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8")


@dataclass
class Dav:
    """Drives the WSGI application like a client would, as one user."""

    app: CrmApplication
    user: Optional[str] = None
    password: Optional[str] = None
    default_headers: dict = field(default_factory=dict)

    def as_user(self, user: Optional[str], password: Optional[str]) -> "Dav":
        return Dav(self.app, user, password, dict(self.default_headers))

    def request(self, method: str, path: str, body: bytes | str = b"",
                headers: Optional[dict] = None) -> Response:
        if isinstance(body, str):
            body = body.encode("utf-8")
        environ = {
            "REQUEST_METHOD": method, "PATH_INFO": path, "SCRIPT_NAME": "", "QUERY_STRING": "",
            "SERVER_NAME": "127.0.0.1", "SERVER_PORT": "5232", "SERVER_PROTOCOL": "HTTP/1.1",
            "REMOTE_ADDR": "127.0.0.1", "wsgi.url_scheme": "http", "wsgi.input": io.BytesIO(body),
            "wsgi.errors": sys.stderr, "CONTENT_LENGTH": str(len(body)),
        }
        if "?" in path:
            environ["PATH_INFO"], environ["QUERY_STRING"] = path.split("?", 1)
        if self.user is not None:
            token = base64.b64encode(f"{self.user}:{self.password}".encode()).decode()
            environ["HTTP_AUTHORIZATION"] = "Basic " + token
        for key, value in {**self.default_headers, **(headers or {})}.items():
            name = key.upper().replace("-", "_")
            if name in ("CONTENT_TYPE", "CONTENT_LENGTH"):
                environ[name] = value
            else:
                environ["HTTP_" + name] = value
        captured = {}

        def start_response(status, response_headers, exc_info=None):
            captured["status"] = int(status.split(" ", 1)[0])
            captured["headers"] = {k.lower(): v for k, v in response_headers}

        chunks = self.app(environ, start_response)
        return Response(captured["status"], captured["headers"], b"".join(chunks))

    # conveniences
    def put(self, path, body, content_type="text/calendar", **headers):
        return self.request("PUT", path, body, {"Content-Type": content_type, **headers})

    def get(self, path, **headers):
        return self.request("GET", path, b"", headers)

    def delete(self, path, **headers):
        return self.request("DELETE", path, b"", headers)

    def propfind(self, path, body="", depth="0"):
        return self.request("PROPFIND", path, body, {"Depth": depth,
                                                     "Content-Type": "application/xml"})

    def report(self, path, body, depth="1"):
        return self.request("REPORT", path, body, {"Depth": depth,
                                                   "Content-Type": "application/xml"})

    def mkcalendar(self, path, body=""):
        return self.request("MKCALENDAR", path, body, {"Content-Type": "application/xml"})


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LiveServer:
    """A real ``crm-server`` process on 127.0.0.1 (stopped by ``stop()``)."""

    def __init__(self, db_url: str, log_path: str, *extra: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        env = {**os.environ, "CRM_CONFIG": os.path.join(ROOT, "config", "radicale.conf")}
        env.pop("RADICALE_CONFIG", None)
        args = [os.path.join(os.path.dirname(sys.executable), "crm-server"),
                f"--server-hosts=127.0.0.1:{self.port}", f"--storage-db-url={db_url}",
                "--auth-delay=0", "--auth-throttle-window=0", "--server-delay-on-error=0",
                "--logging-level=info", *extra]
        self._log = open(log_path, "ab")
        self.process = subprocess.Popen(args, stdout=self._log, stderr=subprocess.STDOUT,
                                        env=env, cwd=ROOT)
        self._wait_ready()

    def _wait_ready(self, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError("crm-server exited: " + open(self.log_path).read()[-2000:])
            try:
                urllib.request.urlopen(self.url + "/.well-known/caldav", timeout=1)
                return
            except urllib.error.HTTPError:
                return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("crm-server did not start: " + open(self.log_path).read()[-2000:])

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()


def http_request(base_url: str, user: Optional[str], password: Optional[str], method: str,
                 path: str, body: bytes | str = b"", headers: Optional[dict] = None,
                 timeout: float = 60) -> Response:
    """One request over a real socket (a connection per request: safe from any thread)."""
    if isinstance(body, str):
        body = body.encode("utf-8")
    parts = urllib.parse.urlsplit(base_url)
    all_headers = dict(headers or {})
    if user is not None:
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        all_headers["Authorization"] = "Basic " + token
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=all_headers)
        response = conn.getresponse()
        return Response(response.status, {k.lower(): v for k, v in response.getheaders()},
                        response.read())
    finally:
        conn.close()


def bounded(seconds: float, fn, *args):
    """``fn(*args)`` in a thread; fails if it is still running after ``seconds``.
    Returns (result, elapsed seconds)."""
    box: dict = {}

    def run():
        started = time.monotonic()
        try:
            box["value"] = fn(*args)
        except BaseException as e:  # re-raised in the test's thread
            box["error"] = e
        box["elapsed"] = time.monotonic() - started

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"{fn} still running after {seconds} s"
    if "error" in box:
        raise box["error"]
    return box["value"], box["elapsed"]
