"""``crm-admin trash``: what DELETE removed, and putting it back."""

from __future__ import annotations

from admin_cli.context import operator, record, settings, unit_of_work
from admin_cli.output import emit
from server.crm import operations, trash
from server.crm.ingest import Ingestion


def register(nouns) -> None:
    parser = nouns.add_parser("trash", help="deleted items and collections")
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    listing = verbs.add_parser("list", help="trash entries, newest first")
    listing.add_argument("--owner", help="only this user's")
    listing.add_argument("--limit", type=int, default=200)
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(handler=cmd_list)
    restore = verbs.add_parser("restore", help="put an entry back (a collection with its items)")
    restore.add_argument("id", type=int)
    restore.set_defaults(handler=cmd_restore)


def cmd_list(args, engine) -> int:
    with unit_of_work(engine) as session:
        rows = [e.__dict__ for e in trash.entries(session, args.owner, args.limit)]
    emit(rows, ["id", "kind", "object", "uid", "deleted_at", "deleted_by"], args.json)
    return 0


def cmd_restore(args, engine) -> int:
    with unit_of_work(engine) as session:
        restored = trash.restore(session, args.id, operator())
        # A restored event is a visit again, with its contacts, as if it had been PUT back.
        operations.reingest(session, Ingestion(settings(args.config)), restored, operator())
        record(session, "trash.restore", f"trash:{args.id}", "restored " + ", ".join(restored))
    for obj in restored:
        print(f"restored {obj}")
    return 0
