"""``crm-admin visit``: visits as the CRM sees them, and tagging them by hand."""

from __future__ import annotations

import argparse
import datetime as dt

from admin_cli.context import change, unit_of_work
from admin_cli.output import emit
from server.crm import customers, operations, visits


def register(nouns) -> None:
    parser = nouns.add_parser("visit", help="customer visits")
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    listing = verbs.add_parser("list", help="visits by start; OCCURRENCES counts those in "
                                            "--since/--until")
    listing.add_argument("--rep")
    listing.add_argument("--customer")
    listing.add_argument("--since", type=_date, help="YYYY-MM-DD or ISO date-time (UTC)")
    listing.add_argument("--until", type=_date, help="exclusive")
    listing.add_argument("--untagged", action="store_true", help="only visits with no customer")
    listing.add_argument("--deleted", action="store_true", help="visits in the trash instead")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(handler=cmd_list)
    tag = verbs.add_parser("tag", help="set a visit's customer by hand (kept over automatic "
                                       "matching)")
    tag.add_argument("visit", help="id or event UID")
    tag.add_argument("customer")
    tag.set_defaults(handler=cmd_tag)


def _date(text: str) -> dt.datetime:
    try:
        value = dt.datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date (YYYY-MM-DD)") from None
    return value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)


def cmd_list(args, engine) -> int:
    with unit_of_work(engine) as session:
        customer_id = customers.find(session, args.customer).id if args.customer else None
        rows = [r.__dict__ for r in visits.listing(
            session, rep=args.rep, customer_id=customer_id, since=args.since,
            until=args.until, untagged=args.untagged, deleted=args.deleted)]
    emit(rows, ["id", "start", "summary", "customer", "match_method", "match_score", "reps",
                "occurrences", "status"], args.json)
    return 0


def cmd_tag(args, engine) -> int:
    return change(engine, "visit.tag", f"crm:visit/{args.visit}",
                  lambda session: operations.tag_visit(session, args.visit, args.customer))
