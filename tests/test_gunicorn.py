"""server.wsgi under gunicorn: same application, same limits (Radicale itself checks
max_content_length only in its built-in server)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

from conftest import create_user
from davclient import ROOT, free_port, http_request
from ical import event

pytestmark = pytest.mark.e2e


def call(url, method, path, user, password, body=b"", headers=None):
    reply = http_request(url, user, password, method, path, body, headers, timeout=10)
    return reply.status, reply.body


@pytest.fixture
def gunicorn(db_url, tmp_path):
    config = tmp_path / "radicale.conf"
    config.write_text(f"[storage]\ndb_url = {db_url}\n[auth]\ndelay = 0\n"
                      "[server]\nmax_content_length = 5000\ndelay_on_error = 0\n")
    port = free_port()
    log = open(tmp_path / "gunicorn.log", "wb")
    process = subprocess.Popen(
        [os.path.join(os.path.dirname(sys.executable), "gunicorn"), "--workers", "2",
         "--bind", f"127.0.0.1:{port}", "server.wsgi:application"],
        env={**os.environ, "RADICALE_CONFIG": str(config)}, cwd=ROOT, stdout=log,
        stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while True:
        try:
            urllib.request.urlopen(url + "/.well-known/caldav", timeout=1)
            break
        except urllib.error.HTTPError:
            break
        except OSError:
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError((tmp_path / "gunicorn.log").read_text()[-2000:])
            time.sleep(0.2)
    yield url
    process.terminate()
    process.wait(10)
    log.close()


def test_gunicorn_serves_the_same_application(gunicorn, db_url, tmp_path):
    user, password = create_user(db_url)
    path = f"/{user}/calendar/g.ics"
    status, _ = call(gunicorn, "PUT", path, user, password, event("g").encode(),
                     {"Content-Type": "text/calendar"})
    assert status == 201
    status, body = call(gunicorn, "GET", path, user, password)
    assert status == 200 and body == event("g").encode()
    big = event("big", extra="DESCRIPTION:" + "x" * 6000 + "\n").encode()
    status, body = call(gunicorn, "PUT", f"/{user}/calendar/big.ics", user, password, big,
                        {"Content-Type": "text/calendar"})
    assert status == 413
    assert body == b"request body of %d bytes exceeds the limit of 5000 bytes\n" % len(big)
    assert call(gunicorn, "GET", f"/{user}/calendar/big.ics", user, password)[0] == 404
    # Radicale's log reaches gunicorn's output, with time and level, as under crm-server.
    log = (tmp_path / "gunicorn.log").read_text(errors="replace")
    assert re.search(r"\[INFO\] Successful login: '%s'" % user, log), log[-2000:]
