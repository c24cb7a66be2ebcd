"""``crm-admin audit``: read and verify the audit trail."""

from __future__ import annotations

import datetime as dt

from admin_cli.context import unit_of_work
from admin_cli.output import emit
from server.crm import audit
from server.crm.errors import InvalidInput


def register(nouns) -> None:
    parser = nouns.add_parser("audit", help="the audit trail")
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    listing = verbs.add_parser("list", help="audit records, newest first")
    listing.add_argument("--actor", help="only this actor")
    listing.add_argument("--object", help="only objects whose path contains this")
    listing.add_argument("--since", help="only records at or after this ISO date/time (UTC)")
    listing.add_argument("--limit", type=int, default=100)
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(handler=cmd_list)
    check = verbs.add_parser("verify", help="recompute every hash chain; exit 1 on tampering")
    check.add_argument("--user", action="append", default=[],
                       help="only this user's chain (repeatable; default: every chain)")
    check.add_argument("--admin", action="store_true",
                       help="only the chain of crm-admin commands (with --user: that too)")
    check.set_defaults(handler=cmd_verify)


def _since(value):
    if not value:
        return None
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        raise InvalidInput(f"invalid --since {value!r}: use an ISO date such as 2026-01-31")
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.timezone.utc)


def cmd_list(args, engine) -> int:
    since = _since(args.since)
    with unit_of_work(engine) as session:
        rows = [e.__dict__ for e in audit.entries(session, args.actor, args.object, since,
                                                  args.limit)]
    emit(rows, ["id", "at", "actor", "action", "object", "client", "summary"], args.json)
    return 0


def cmd_verify(args, engine) -> int:
    streams = [audit.dav_stream(u.strip().lower()) for u in args.user] + \
        ([audit.ADMIN_STREAM] if args.admin else [])
    with unit_of_work(engine) as session:
        checked, problems = audit.verify(session, streams or None)
    if not problems:
        print(f"audit trail intact: {checked} records verified")
        return 0
    for problem in problems:
        print(f"TAMPERED: {problem}")
    print(f"{len(problems)} problem(s) in {checked} records")
    return 1
