"""bench/soak.py's own checks, at a tiny size: a short soak (3 reps, 15 s, gunicorn with 2
workers; on PostgreSQL when the test database is set, else SQLite) passes, and its
verification catches an event lost or altered behind a rep's back. The soak's timings and
memory figures are printed by it, never asserted here."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from davclient import ROOT

pytestmark = pytest.mark.e2e

SOAK = os.path.join(ROOT, "bench", "soak.py")
# A 15-second run is mostly warm-up (each worker's first login of each rep is an argon2id
# verification): memory is judged loosely here, and properly by the 10-minute run.
SHORT = ["--reps", "3", "--workers", "2", "--threads", "2", "--prefill", "5",
         "--poll-seconds", "1", "--sample-seconds", "1", "--max-rss-growth", "2"]


def database() -> list[str]:
    pg_url = os.environ.get("CRM_TEST_DATABASE_URL")
    return ["--database", "pg", "--pg-url", pg_url] if pg_url else ["--database", "sqlite"]


def soak(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, SOAK, *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)


def test_a_short_soak_passes_with_every_answer_checked(tmp_path):
    out = tmp_path / "soak.json"
    run = soak(*SHORT, "--minutes", "0.25", *database(), "--out", str(out))
    assert run.returncode == 0, (run.stdout[-3000:], run.stderr[-2000:])
    document = json.loads(out.read_text())
    assert document["passed"] and not document["failures"]
    figures = document["figures"]
    assert figures["errors"] == 0 and figures["checks_failed"] == 0
    assert figures["verification"] == []
    requests = figures["requests"]
    assert requests["sync"]["count"] > 0
    assert requests["put_create"]["count"] + requests["put_update"]["count"] > 0
    assert requests["verify_get"]["count"] == figures["items_at_end"] > 0
    assert figures["memory"]["server"]["last_over_second"] is not None


@pytest.mark.parametrize("fault", ["lose-write", "alter-write"])
def test_the_verification_catches_a_write_changed_behind_a_reps_back(fault):
    run = soak(*SHORT, "--minutes", "0.1", *database(), "--inject", fault)
    assert run.returncode == 1, (run.stdout[-3000:], run.stderr[-2000:])
    reason = run.stderr.strip().splitlines()[-1]
    assert reason.startswith("soak.py: FAILED: verification failed")
    assert f"--inject {fault}: /rep01/calendar/" in reason
    assert "written:" not in run.stdout   # a deliberate fault's run keeps no figures


@pytest.mark.parametrize("args, reason", [
    (["--reps", "0"], "--reps must be at least 1"),
    (["--workers", "-1"], "--workers must be at least 1"),
    (["--minutes", "abc"], "argument --minutes: invalid float value: 'abc'"),
    (["--minutes", "0"], "--minutes must be positive"),
    (["--minutes", "0.05"], "--minutes 0.05 is too short for a memory sample every 3 s"),
    (["--database", "mysql"], "argument --database: invalid choice: 'mysql'"),
    (["--max-rss-growth", "0.9"], "--max-rss-growth must be at least 1"),
    (["--prefill", "-1"], "--prefill must not be negative"),
])
def test_bad_options_are_usage_errors(tmp_path, args, reason):
    out = tmp_path / "soak.json"
    run = soak(*args, "--out", str(out), timeout=60)
    assert run.returncode == 2
    assert reason in run.stderr.strip().splitlines()[-1]
    assert not out.exists()


def test_an_absent_postgresql_is_one_line_and_writes_nothing(tmp_path):
    out = tmp_path / "soak.json"
    run = soak("--database", "pg", "--pg-url", "postgresql://nobody@127.0.0.1:1/none",
               "--out", str(out), timeout=60)
    assert run.returncode == 1
    assert "does not answer" in run.stderr.strip().splitlines()[-1]
    assert "no results written" in run.stderr
    assert not out.exists()
