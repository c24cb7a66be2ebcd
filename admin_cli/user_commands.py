"""``crm-admin user``: accounts."""

from __future__ import annotations

import sys

from admin_cli.context import change, record, unit_of_work
from admin_cli.output import emit
from server.crm import access, handover, throttle, users
from server.crm.errors import InvalidInput


def register(nouns) -> None:
    parser = nouns.add_parser("user", help="user accounts")
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")

    add = verbs.add_parser("add", help="create a user (prints a generated password unless "
                                       "--password-stdin is given)")
    add.add_argument("name")
    add.add_argument("--password-stdin", action="store_true",
                     help="read the password from the first line of standard input")
    add.add_argument("--role", default="rep", help=f"one of {', '.join(users.ROLES)} "
                                                   "(default: rep)")
    add.add_argument("--team", action="append", default=[], metavar="TEAM",
                     help="put the user in this (existing) team; repeatable")
    add.add_argument("--email")
    add.add_argument("--if-missing", action="store_true",
                     help="do nothing (exit 0) when the user already exists")
    add.set_defaults(handler=cmd_add)

    listing = verbs.add_parser("list", help="list users")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(handler=cmd_list)

    for verb, helptext, flag in (("disable", "refuse every login of a user at once", True),
                                 ("enable", "allow a disabled user to log in again", False)):
        sub = verbs.add_parser(verb, help=helptext)
        sub.add_argument("name")
        sub.set_defaults(handler=cmd_set_disabled, disabled=flag)

    set_role = verbs.add_parser("set-role", help="change a user's role")
    set_role.add_argument("name")
    set_role.add_argument("role", help=", ".join(users.ROLES))
    set_role.set_defaults(handler=cmd_set_role)

    handover = verbs.add_parser(
        "handover", help="move a user's calendars, future visits, customers and grants to "
                         "another user (prints the plan first)")
    handover.add_argument("name")
    handover.add_argument("--to", required=True, metavar="OTHER")
    handover.add_argument("--dry-run", action="store_true",
                          help="print what would be done, change nothing")
    handover.set_defaults(handler=cmd_handover)

    passwd = verbs.add_parser("passwd", help="set a new password")
    passwd.add_argument("name")
    passwd.add_argument("--password-stdin", action="store_true")
    passwd.set_defaults(handler=cmd_passwd)

    unlock = verbs.add_parser(
        "unlock", help="forget the failed logins of a user (and of client addresses), ending "
                       "a login throttle before its window does")
    unlock.add_argument("name")
    unlock.add_argument("--address", action="append", default=[], metavar="IP",
                        help="also forget the failed logins from this client address; "
                             "repeatable")
    unlock.set_defaults(handler=cmd_unlock)


def _password(from_stdin: bool) -> tuple[str, bool]:
    """(password, generated?)"""
    if not from_stdin:
        return users.generate_password(), True
    line = sys.stdin.readline().rstrip("\r\n")
    if not line:
        raise InvalidInput("no password on standard input")
    return line, False


def cmd_add(args, engine) -> int:
    if args.if_missing:
        with unit_of_work(engine) as session:
            if users.find_user(session, args.name) is not None:
                print(f"user {users.normalize_username(args.name)} already exists")
                return 0
    password, generated = _password(args.password_stdin)
    with unit_of_work(engine) as session:
        teams = [access.find_team(session, t) for t in args.team]
        user = users.add_user(session, args.name, password, role=args.role, email=args.email)
        name = user.username
        for team in teams:
            access.add_member(session, team, user)
        in_teams = f", teams {', '.join(t.name for t in teams)}" if teams else ""
        record(session, "user.add", f"user:{name}",
               f"created user {name} (role {args.role}{in_teams})")
    print(f"user {name} created (role {args.role}{in_teams})")
    if generated:
        print(f"password: {password}")
    return 0


def cmd_list(args, engine) -> int:
    with unit_of_work(engine) as session:
        listed = users.list_users(session)
        teams = access.teams_of(session, [u.id for u in listed])
        rows = [{**users.UserInfo.of(u).__dict__, "teams": sorted(teams[u.id])}
                for u in listed]
    emit(rows, ["username", "role", "teams", "email", "disabled", "created_at"], args.json)
    return 0


def cmd_set_disabled(args, engine) -> int:
    with unit_of_work(engine) as session:
        user = users.set_disabled(session, args.name, args.disabled)
        name = user.username
        verb = "disabled" if args.disabled else "enabled"
        record(session, f"user.{verb[:-1]}", f"user:{name}", f"{verb} user {name}")
    print(f"user {name} {'disabled' if args.disabled else 'enabled'}")
    return 0


def cmd_set_role(args, engine) -> int:
    def operation(session) -> str:
        user = users.get_user(session, args.name)
        before = user.role
        users.set_role(session, user, args.role)
        return f"role of {user.username}: {before} -> {user.role}"
    return change(engine, "user.set_role", f"user:{args.name.strip().lower()}", operation)


def cmd_handover(args, engine) -> int:
    with unit_of_work(engine) as session:
        plan = handover.plan(session, args.name, args.to)
        print("\n".join(plan.lines()))
        if args.dry_run:
            print("dry run: nothing changed")
            return 0
        handover.apply(session, plan)
        record(session, "user.handover", f"user:{plan.user}",
               plan.summary() + "\n" + "\n".join(plan.lines()[1:]))
    print(plan.summary())
    return 0


def cmd_passwd(args, engine) -> int:
    password, generated = _password(args.password_stdin)
    with unit_of_work(engine) as session:
        name = users.set_password(session, args.name, password).username
        record(session, "user.passwd", f"user:{name}", f"set a new password for {name}")
    print(f"password of {name} changed")
    if generated:
        print(f"password: {password}")
    return 0


def cmd_unlock(args, engine) -> int:
    with unit_of_work(engine) as session:
        name = users.get_user(session, args.name).username
        keys = [throttle.account_key(name)] + [throttle.address_key(a) for a in args.address]
        cleared = throttle.clear(session, keys)
        record(session, "user.unlock", f"user:{name}",
               f"forgot failed logins of {name}" + "".join(f", {a}" for a in args.address))
    print(f"user {name} unlocked ({cleared} throttle counter(s) cleared)")
    return 0
