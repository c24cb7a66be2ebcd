"""``crm-admin grant`` and ``crm-admin access``: who may see a collection, and why."""

from __future__ import annotations

from admin_cli.context import change, operator, unit_of_work
from admin_cli.output import emit
from server.crm import access
from server.rights import policy

_GRANTEE_HELP = "user:NAME, team:NAME or role:ROLE"


def register(nouns) -> None:
    parser = nouns.add_parser("grant", help="access to a calendar or address book")
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")

    add = verbs.add_parser("add", help="grant (or change) access to a collection")
    add.add_argument("collection", help="OWNER/NAME, e.g. alice/calendar")
    add.add_argument("--to", required=True, metavar="GRANTEE", help=_GRANTEE_HELP)
    add.add_argument("--level", required=True,
                     help="busy: times only; summary: times, location, customer short name; "
                          "read: everything; write: read and change")
    add.set_defaults(handler=cmd_add)

    listing = verbs.add_parser("list", help="grants, of one collection or all")
    listing.add_argument("collection", nargs="?")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(handler=cmd_list)

    revoke = verbs.add_parser("revoke", help="remove a grant")
    revoke.add_argument("collection")
    revoke.add_argument("--to", required=True, metavar="GRANTEE", help=_GRANTEE_HELP)
    revoke.set_defaults(handler=cmd_revoke)

    overview = nouns.add_parser("access", help="who can see a collection, at which level "
                                               "and why")
    overview.add_argument("collection", help="OWNER/NAME, e.g. alice/calendar")
    overview.add_argument("--json", action="store_true")
    overview.set_defaults(handler=cmd_access)


def cmd_add(args, engine) -> int:
    def operation(session) -> str:
        grant, what = access.add_grant(session, args.collection, args.to, args.level,
                                       by=operator())
        path = access.collection_at(session, args.collection).path
        return f"grant on {path} to {grant.subject_kind}:{grant.subject} at {grant.level}: " \
               f"{what}"
    return change(engine, "grant.add", _object(args.collection), operation)


def cmd_revoke(args, engine) -> int:
    def operation(session) -> str:
        grant = access.revoke_grant(session, args.collection, args.to)
        path = access.collection_at(session, args.collection).path
        return f"grant on {path} to {grant.subject_kind}:{grant.subject} " \
               f"({grant.level}) revoked"
    return change(engine, "grant.revoke", _object(args.collection), operation)


def cmd_list(args, engine) -> int:
    with unit_of_work(engine) as session:
        rows = access.grant_listing(session, args.collection)
    emit(rows, ["collection", "grantee", "level", "created_by", "created_at"], args.json)
    return 0


def cmd_access(args, engine) -> int:
    with unit_of_work(engine) as session:
        rows = access.access_report(session, args.collection)
    emit(rows, ["user", "role", "level", "private_items", "why"], args.json)
    if not args.json:
        print()
        print("PRIVATE_ITEMS: the level at which that user sees CLASS:PRIVATE items.")
        print(policy.CLASS_MEANING + ".")
    return 0


def _object(path: str) -> str:
    return "collection:" + path.strip().strip("/")
