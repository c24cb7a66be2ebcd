"""``crm-admin team``: teams of users (a rep sees teammates' calendars at summary, a
manager writes to them)."""

from __future__ import annotations

from admin_cli.context import change, unit_of_work
from admin_cli.output import emit
from server.crm import access, users


def register(nouns) -> None:
    parser = nouns.add_parser("team", help="teams of users")
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")

    add = verbs.add_parser("add", help="create a team")
    add.add_argument("name")
    add.set_defaults(handler=cmd_add)

    for verb, helptext, handler in (("add-member", "put a user in a team", cmd_add_member),
                                    ("remove-member", "take a user out of a team",
                                     cmd_remove_member)):
        sub = verbs.add_parser(verb, help=helptext)
        sub.add_argument("team")
        sub.add_argument("user")
        sub.set_defaults(handler=handler)

    listing = verbs.add_parser("list", help="teams and their members")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(handler=cmd_list)


def cmd_add(args, engine) -> int:
    def operation(session) -> str:
        return f"team {access.add_team(session, args.name).name} created"
    return change(engine, "team.add", f"team:{args.name.strip().lower()}", operation)


def cmd_add_member(args, engine) -> int:
    def operation(session) -> str:
        team, user = access.find_team(session, args.team), users.get_user(session, args.user)
        added = access.add_member(session, team, user)
        return f"{user.username} {'added to' if added else 'is already in'} team {team.name}"
    return change(engine, "team.add_member", f"team:{args.team.strip().lower()}", operation)


def cmd_remove_member(args, engine) -> int:
    def operation(session) -> str:
        team, user = access.find_team(session, args.team), users.get_user(session, args.user)
        access.remove_member(session, team, user)
        return f"{user.username} removed from team {team.name}"
    return change(engine, "team.remove_member", f"team:{args.team.strip().lower()}", operation)


def cmd_list(args, engine) -> int:
    with unit_of_work(engine) as session:
        rows = access.team_listing(session)
    emit(rows, ["team", "members"], args.json)
    return 0
