"""Baseline profile (not the comparative benchmark): SQL statements and latency per PUT and
per time-range REPORT, our app in-process on a fresh SQLite database.

    .venv/bin/python bench/put_cost.py [N]
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, "tests")]

from sqlalchemy import event  # noqa: E402
from sqlalchemy.orm import Session  # noqa: E402

from davclient import Dav, make_configuration  # noqa: E402
from ical import event as ical_event, time_range_query  # noqa: E402
from server.app import CrmApplication  # noqa: E402
from server.crm import db, schema, users  # noqa: E402


def main(n: int) -> None:
    url = f"sqlite:///{tempfile.mkdtemp()}/bench.db"
    engine = db.shared_engine(url)
    schema.upgrade(engine)
    with Session(engine) as session, session.begin():
        users.add_user(session, "bench", "benchpass1")
    dav = Dav(CrmApplication(make_configuration(url)), "bench", "benchpass1")
    dav.propfind("/bench/")
    statements = [0]
    event.listen(engine, "before_cursor_execute",
                 lambda *_: statements.__setitem__(0, statements[0] + 1))
    latencies = []
    for i in range(n):
        day = f"2025{1 + i % 12:02d}{1 + i % 28:02d}"
        statements[0] = 0
        started = time.perf_counter()
        reply = dav.put(f"/bench/calendar/e{i}.ics",
                        ical_event(f"e{i}", f"{day}T100000Z", f"{day}T110000Z"))
        latencies.append(time.perf_counter() - started)
        assert reply.status == 201, reply
    print(f"statements per PUT: {statements[0]}")
    tenth = max(1, n // 10)
    print("PUT median %.1f ms (first tenth %.1f ms, last tenth %.1f ms)" % (
        statistics.median(latencies) * 1000, statistics.median(latencies[:tenth]) * 1000,
        statistics.median(latencies[-tenth:]) * 1000))
    statements[0] = 0
    started = time.perf_counter()
    reply = dav.report("/bench/calendar/", time_range_query("20250101T000000Z",
                                                            "20250102T000000Z"))
    expected = len([i for i in range(n) if i % 12 == 0 and i % 28 == 0])
    hits = reply.text.count("<response>")
    assert hits == expected, (hits, expected)
    print("time-range REPORT over %d items: %.1f ms, %d statements, %d hits" % (
        n, (time.perf_counter() - started) * 1000, statements[0], hits))


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 1000)
