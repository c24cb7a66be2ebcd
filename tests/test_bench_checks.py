"""The comparative benchmark's correctness checks, at a tiny size: every answer of stock
Radicale and of ours (SQLite; PostgreSQL under crm-server and gunicorn when the test
database is set) is what the workload says it must be. Timings are printed by the
benchmark, never asserted here."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from davclient import ROOT

pytestmark = pytest.mark.e2e


def test_every_benchmark_answer_is_checked_and_right(tmp_path):
    configs = ["stock", "sqlite"]
    pg_url = os.environ.get("CRM_TEST_DATABASE_URL")
    args = []
    if pg_url:
        configs += ["pg", "pg-gunicorn"]
        args = ["--pg-url", pg_url, "--parallel-workers", "2", "--parallel-puts", "10"]
    else:
        args = ["--parallel-workers", ""]
    out = tmp_path / "compare.json"
    run = subprocess.run(
        [sys.executable, os.path.join(ROOT, "bench", "compare.py"), "--configs",
         ",".join(configs), "--sizes", "120", "--repeats", "1", "--stock-budget", "30",
         "--out", str(out), *args],
        cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, (run.stdout[-2000:], run.stderr[-2000:])
    document = json.loads(out.read_text())
    assert sorted(document["results"]) == sorted(configs)   # none was skipped
    for config in configs:
        figures = document["results"][config]["120"]
        assert figures, config
    if pg_url:
        assert [p["workers"] for p in document["parallel"]] == [2]


@pytest.mark.parametrize("args, reason", [
    (["--sizes", "abc"], "--sizes: 'abc' is not a comma-separated list of numbers"),
    (["--sizes", "0,100"], "--sizes: every number must be positive"),
    (["--sizes", "20"], "sizes must be at least 50"),
    (["--configs", "stok"], "unknown configuration(s): stok"),
    (["--configs", "pg", "--pg-url", "postgresql://nobody@127.0.0.1:1/none"],
     "nothing to run without PostgreSQL; no results written"),
])
def test_bad_options_say_why_and_write_nothing(tmp_path, args, reason):
    out = tmp_path / "compare.json"
    run = subprocess.run([sys.executable, os.path.join(ROOT, "bench", "compare.py"), *args,
                          "--out", str(out)], cwd=ROOT, capture_output=True, text=True,
                         timeout=60)
    assert run.returncode != 0
    assert reason in run.stderr.strip().splitlines()[-1]
    assert not out.exists()


@pytest.mark.postgresql
def test_without_autovacuum_the_benchmark_analyzes_as_autovacuum_would(monkeypatch):
    """This machine's CI PostgreSQL runs without autovacuum; the benchmark's databases get
    statistics anyway (the planner otherwise keeps plans made for empty tables)."""
    pg_url = os.environ.get("CRM_TEST_DATABASE_URL")
    if not pg_url:
        pytest.skip("PostgreSQL tests skipped: CRM_TEST_DATABASE_URL is not set")
    sys.path.insert(0, os.path.join(ROOT, "bench"))
    try:
        import compare
    finally:
        sys.path.remove(os.path.join(ROOT, "bench"))
    import psycopg
    from sqlalchemy.engine import make_url

    postgres = compare.Postgres(pg_url)
    try:
        if postgres.autovacuum:
            pytest.skip("this PostgreSQL runs autovacuum: the benchmark leaves it alone")
        monkeypatch.setattr(compare, "ANALYZE_NAPTIME", 0.1)
        with postgres.database() as url:
            libpq = make_url(url).set(drivername="postgresql").render_as_string(False)
            with psycopg.connect(libpq, autocommit=True) as conn:
                conn.execute("CREATE TABLE few (n int)")
                conn.execute("CREATE TABLE many (n int)")
                conn.execute("INSERT INTO few SELECT generate_series(1, 10)")
                conn.execute("INSERT INTO many SELECT generate_series(1, 500)")
                query = ("SELECT relname FROM pg_stat_user_tables WHERE "
                         "coalesce(last_analyze, last_autoanalyze) IS NOT NULL")
                deadline = time.monotonic() + 30
                while not conn.execute(query).fetchall() and time.monotonic() < deadline:
                    time.sleep(0.1)
                time.sleep(0.3)      # a few more rounds: "few" stays under the threshold
                assert conn.execute(query).fetchall() == [("many",)]
        assert postgres.analyses == 1
    finally:
        postgres.close()
