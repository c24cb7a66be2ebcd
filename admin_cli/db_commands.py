"""``crm-admin db``: schema migrations and the invariant check."""

from __future__ import annotations

import time

from admin_cli import context
from server.crm import schema
from server.crm.errors import CrmError

# at most this many lines per check: a broken database is named, not dumped
SHOWN_PER_CHECK = 20


def register(nouns) -> None:
    parser = nouns.add_parser("db", help="database schema and consistency")
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    upgrade = verbs.add_parser("upgrade", help="create or migrate the schema to the latest version")
    upgrade.set_defaults(handler=cmd_upgrade)
    status = verbs.add_parser("status", help="show the schema version")
    status.set_defaults(handler=cmd_status)
    check = verbs.add_parser(
        "check", help="verify the store's invariants; exit 1 naming each violation",
        description="Verify that every item's text parses and its indexed columns are right, "
                    "sync counters and change logs agree, every visit points at a live item or "
                    "is in the trash, published cards exist and every audit chain verifies. "
                    "Read-only; safe on a live database.")
    check.add_argument("--skip", action="append", default=[], metavar="CHECK",
                       choices=("items", "sync", "visits", "cards", "audit"),
                       help="leave out one check (items re-parses every text: the slow one)")
    check.set_defaults(handler=cmd_check)
    reindex = verbs.add_parser(
        "reindex", help="index the occurrences of items stored before the index existed",
        description="Fill the occurrence index of calendar objects stored before schema "
                    "0007, so that time-range queries stop parsing them. In short "
                    "transactions; safe on a live database; running it again does nothing "
                    "more.")
    reindex.set_defaults(handler=cmd_reindex)


def cmd_upgrade(args, engine) -> int:
    before, after = schema.upgrade(engine)
    where = engine.url.render_as_string(hide_password=True)
    if before == after:
        print(f"{where}: schema already at {after}")
    else:
        print(f"{where}: schema upgraded from {before or 'empty'} to {after}")
    return 0


def cmd_status(args, engine) -> int:
    current, head = schema.current(engine), schema.head()
    print(f"schema {current or 'empty'} (latest {head})")
    return 0 if current == head else 1


def cmd_check(args, engine) -> int:
    from server.storage import check   # imports Radicale: only this command needs it

    started = time.monotonic()
    with context.unit_of_work(engine) as session:
        report = check.check(session, skip=tuple(args.skip))
    shown: dict[str, int] = {}
    for violation in report.violations:
        shown[violation.check] = shown.get(violation.check, 0) + 1
        if shown[violation.check] <= SHOWN_PER_CHECK:
            print(f"violation: {violation}")
    for name, count in shown.items():
        if count > SHOWN_PER_CHECK:
            print(f"violation: {name}: ... and {count - SHOWN_PER_CHECK} more")
    counts = ", ".join(f"{n} {what}" for what, n in report.checked.items())
    took = time.monotonic() - started
    if report.ok:
        print(f"ok: {counts or 'nothing to check'} ({took:.1f} s)")
        return 0
    print(f"FAILED: {len(report.violations)} violation(s) in {counts} ({took:.1f} s)")
    return 1


def cmd_reindex(args, engine) -> int:
    from server.storage import reindex   # imports Radicale: only this command needs it

    with context.unit_of_work(engine):
        pass                              # the schema is there (else: one line, exit 1)
    current, head = schema.current(engine), schema.head()
    if current != head:
        raise CrmError(f"the schema is at {current}, not {head}: run `crm-admin db upgrade` "
                       "first")
    started = time.monotonic()
    result = reindex.reindex(engine)
    with context.unit_of_work(engine) as session:
        context.record(session, "db.reindex", "dav_items",
                       f"{result.indexed} indexed, {result.left} left")
    print(f"ok: occurrences of {result.indexed} item(s) indexed; {result.left} left unindexed "
          f"(endless or over {_limit()} occurrences, or unreadable: parsed when queried) "
          f"({time.monotonic() - started:.1f} s)")
    return 0


def _limit() -> int:
    from server.storage import mapping
    return mapping.MAX_INDEXED_OCCURRENCES
