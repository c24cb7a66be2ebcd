"""``crm-admin user``: accounts."""

from __future__ import annotations

import sys

from admin_cli.context import record, unit_of_work
from admin_cli.output import emit
from server.crm import users
from server.crm.errors import InvalidInput


def register(nouns) -> None:
    parser = nouns.add_parser("user", help="user accounts")
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")

    add = verbs.add_parser("add", help="create a user (prints a generated password unless "
                                       "--password-stdin is given)")
    add.add_argument("name")
    add.add_argument("--password-stdin", action="store_true",
                     help="read the password from the first line of standard input")
    add.add_argument("--role", default="rep", choices=users.ROLES)
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

    passwd = verbs.add_parser("passwd", help="set a new password")
    passwd.add_argument("name")
    passwd.add_argument("--password-stdin", action="store_true")
    passwd.set_defaults(handler=cmd_passwd)


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
        user = users.add_user(session, args.name, password, role=args.role, email=args.email)
        name = user.username
        record(session, "user.add", f"user:{name}", f"created user {name} (role {args.role})")
    print(f"user {name} created (role {args.role})")
    if generated:
        print(f"password: {password}")
    return 0


def cmd_list(args, engine) -> int:
    with unit_of_work(engine) as session:
        rows = [users.UserInfo.of(u).__dict__ for u in users.list_users(session)]
    emit(rows, ["username", "role", "email", "disabled", "created_at"], args.json)
    return 0


def cmd_set_disabled(args, engine) -> int:
    with unit_of_work(engine) as session:
        user = users.set_disabled(session, args.name, args.disabled)
        name = user.username
        verb = "disabled" if args.disabled else "enabled"
        record(session, f"user.{verb[:-1]}", f"user:{name}", f"{verb} user {name}")
    print(f"user {name} {'disabled' if args.disabled else 'enabled'}")
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
