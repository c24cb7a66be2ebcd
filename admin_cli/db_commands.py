"""``crm-admin db``: schema migrations."""

from __future__ import annotations

from server.crm import schema


def register(nouns) -> None:
    parser = nouns.add_parser("db", help="database schema")
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    upgrade = verbs.add_parser("upgrade", help="create or migrate the schema to the latest version")
    upgrade.set_defaults(handler=cmd_upgrade)
    status = verbs.add_parser("status", help="show the schema version")
    status.set_defaults(handler=cmd_status)


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
