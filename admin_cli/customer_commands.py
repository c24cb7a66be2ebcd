"""``crm-admin customer``: customers, their domains, owner and collaborators."""

from __future__ import annotations

import json

from sqlalchemy import func, select

from admin_cli.context import change, record, unit_of_work
from admin_cli.output import emit, emit_record
from server.crm import customers, operations
from server.crm.models import Contact, Customer, Visit


def register(nouns) -> None:
    parser = nouns.add_parser("customer", help="customers")
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    add = verbs.add_parser("add", help="add a customer")
    add.add_argument("name")
    add.add_argument("--domain", action="append", default=[],
                     help="e-mail domain of the customer's people, repeatable")
    add.add_argument("--owner", help="the user who owns the account")
    add.add_argument("--level", choices=customers.LEVELS, type=str.upper)
    add.add_argument("--tag", action="append", default=[], help="repeatable")
    add.add_argument("--short-name", help="the name reps use (shown to summary readers)")
    add.add_argument("--industry")
    add.add_argument("--region")
    add.set_defaults(handler=cmd_add)
    listing = verbs.add_parser("list", help="all customers")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(handler=cmd_list)
    show = verbs.add_parser("show", help="one customer, by name, short name or id")
    show.add_argument("name")
    show.add_argument("--json", action="store_true")
    show.set_defaults(handler=cmd_show)
    transfer = verbs.add_parser("transfer", help="give the customer to another owner")
    transfer.add_argument("name")
    transfer.add_argument("--to", required=True, metavar="USER")
    transfer.set_defaults(handler=cmd_transfer)
    share = verbs.add_parser("share", help="add a collaborator (the owner stays)")
    share.add_argument("name")
    share.add_argument("--with", dest="with_user", required=True, metavar="USER")
    share.add_argument("--edit", action="store_true", help="may edit, not only view")
    share.set_defaults(handler=cmd_share)


def _row(session, customer: Customer) -> dict:
    return dict(id=customer.id, name=customer.name, short_name=customer.short_name,
                level=customer.level, owner=customer.owner,
                domains=customers.domains(session, customer.id),
                tags=json.loads(customer.tags_json or "[]"), industry=customer.industry,
                region=customer.region, source=customer.source)


def cmd_add(args, engine) -> int:
    with unit_of_work(engine) as session:
        customer, summary = operations.add_customer(
            session, args.name, domains=args.domain, owner=args.owner, level=args.level,
            tags=args.tag, short_name=args.short_name, industry=args.industry,
            region=args.region)
        record(session, "customer.add", f"crm:customer/{customer.id}", summary)
    print(summary)
    return 0


def cmd_list(args, engine) -> int:
    with unit_of_work(engine) as session:
        rows = [_row(session, c) for c in customers.listing(session)]
    for row in rows if not args.json else ():
        row["domains"] = ",".join(row["domains"])
        row["tags"] = ",".join(row["tags"])
    emit(rows, ["id", "name", "level", "owner", "domains", "tags"], args.json)
    return 0


def cmd_show(args, engine) -> int:
    with unit_of_work(engine) as session:
        customer = customers.find(session, args.name)
        row = _row(session, customer)
        row["collaborators"] = [dict(user=c.username, access="edit" if c.can_edit else "view")
                                for c in customers.collaborators(session, customer.id)]
        row["contacts"] = session.scalar(select(func.count()).select_from(Contact).where(
            Contact.customer_id == customer.id))
        row["visits"] = session.scalar(select(func.count()).select_from(Visit).where(
            Visit.customer_id == customer.id, Visit.deleted_at.is_(None)))
    if not args.json:
        row["collaborators"] = [f"{c['user']} ({c['access']})" for c in row["collaborators"]]
    emit_record(row, args.json)
    return 0


def cmd_transfer(args, engine) -> int:
    return change(engine, "customer.transfer", f"crm:customer/{args.name}",
                  lambda session: operations.transfer_customer(session, args.name, args.to))


def cmd_share(args, engine) -> int:
    return change(engine, "customer.share", f"crm:customer/{args.name}",
                  lambda session: operations.share_customer(
                      session, args.name, args.with_user, args.edit))
