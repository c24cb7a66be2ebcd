"""``crm-admin`` entry point: sub-commands per noun; errors are one line and a non-zero exit.

Exit codes: 0 ok, 1 refused (bad name, unknown user, ...), 2 usage, 3 database unavailable.
"""

from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

from admin_cli import (audit_commands, contact_commands, context, customer_commands,
                       db_commands, grant_commands, team_commands, trash_commands,
                       user_commands, visit_commands)
from server.crm import db
from server.crm.errors import CrmError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="crm-admin", description=__doc__.splitlines()[0])
    parser.add_argument("-C", "--config", action="append", metavar="PATH",
                        help="configuration file, repeatable (default: $RADICALE_CONFIG, "
                             "$CRM_CONFIG, ./config/radicale.conf)")
    parser.add_argument("--db-url", help="database URL (overrides the configuration)")
    nouns = parser.add_subparsers(dest="noun", required=True, metavar="NOUN")
    db_commands.register(nouns)
    user_commands.register(nouns)
    team_commands.register(nouns)
    grant_commands.register(nouns)
    audit_commands.register(nouns)
    customer_commands.register(nouns)
    contact_commands.register(nouns)
    visit_commands.register(nouns)
    trash_commands.register(nouns)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        url = context.database_url(args.config, args.db_url)
        engine = context.engine_for(url)
        try:
            return args.handler(args, engine) or 0
        finally:
            engine.dispose()
    except context.SchemaMissing:
        return _fail("the database has no radicale-crm schema: run `crm-admin db upgrade`")
    except CrmError as e:
        return _fail(str(e))
    except Exception as e:
        if db.is_outage(e):
            return _fail("database unavailable: " + _first_line(e), code=3)
        raise


def _first_line(error: BaseException) -> str:
    text = str(getattr(error, "orig", None) or error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _fail(message: str, code: int = 1) -> int:
    print(f"crm-admin: error: {message}", file=sys.stderr)
    return code


def entry() -> None:
    sys.exit(main())


if __name__ == "__main__":
    entry()
