"""``crm-admin contact`` and ``crm-admin duplicates``: people, and possible duplicates."""

from __future__ import annotations

from sqlalchemy import func, select

from admin_cli.context import change, operator, record, settings, unit_of_work
from admin_cli.output import emit, emit_record
from server.crm import contacts, customers, operations
from server.crm.models import VisitAttendance


def register(nouns) -> None:
    parser = nouns.add_parser("contact", help="contacts")
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    listing = verbs.add_parser("list", help="contacts, by name")
    listing.add_argument("--customer", help="only this customer's")
    listing.add_argument("--suggested", action="store_true",
                         help="only those not attached to a customer")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(handler=cmd_list)
    show = verbs.add_parser("show", help="one contact, by id or e-mail address")
    show.add_argument("contact")
    show.add_argument("--json", action="store_true")
    show.set_defaults(handler=cmd_show)
    add = verbs.add_parser("add", help="add a contact by hand")
    add.add_argument("name")
    add.add_argument("--email", action="append", default=[], help="repeatable")
    add.add_argument("--phone", action="append", default=[], help="repeatable")
    add.add_argument("--title")
    add.add_argument("--customer")
    add.set_defaults(handler=cmd_add)
    accept = verbs.add_parser("accept", help="accept a suggested contact: attach it to a "
                                             "customer")
    accept.add_argument("contact")
    accept.add_argument("--customer", required=True)
    accept.set_defaults(handler=cmd_accept)
    merge = verbs.add_parser("merge", help="merge contact B into contact A (B is deleted)")
    merge.add_argument("a", metavar="A")
    merge.add_argument("b", metavar="B")
    merge.set_defaults(handler=cmd_merge)

    dup = nouns.add_parser("duplicates", help="possible duplicate contacts, for review")
    dverbs = dup.add_subparsers(dest="verb", required=True, metavar="VERB")
    dlist = dverbs.add_parser("list", help="open candidates, most similar first")
    dlist.add_argument("--json", action="store_true")
    dlist.set_defaults(handler=cmd_duplicates)
    dismiss = dverbs.add_parser("dismiss", help="they are different people")
    dismiss.add_argument("id", type=int)
    dismiss.set_defaults(handler=cmd_dismiss)
    dmerge = dverbs.add_parser("merge", help="they are one person: merge into the older")
    dmerge.add_argument("id", type=int)
    dmerge.set_defaults(handler=cmd_merge_duplicate)


def cmd_list(args, engine) -> int:
    with unit_of_work(engine) as session:
        customer_id = customers.find(session, args.customer).id \
            if args.customer else None
        rows = [dict(id=c.id, name=c.name, emails=",".join(contacts.emails_of(session, c.id)),
                     customer=name, source=c.source)
                for c, name in contacts.listing(session, customer_id, args.suggested)]
    if args.json:
        for row in rows:
            row["emails"] = row["emails"].split(",") if row["emails"] else []
    emit(rows, ["id", "name", "emails", "customer", "source"], args.json)
    return 0


def cmd_show(args, engine) -> int:
    with unit_of_work(engine) as session:
        c = contacts.find(session, args.contact)
        row = dict(id=c.id, name=c.name, title=c.title, emails=contacts.emails_of(session, c.id),
                   phones=contacts.phones_of(session, c.id), customer_id=c.customer_id,
                   source=c.source, created_by=c.created_by,
                   visits=session.scalar(select(func.count()).select_from(VisitAttendance)
                                         .where(VisitAttendance.contact_id == c.id)),
                   published_cards=contacts.count_cards(session, c.id))
    emit_record(row, args.json)
    return 0


def cmd_add(args, engine) -> int:
    threshold = settings(args.config).match_threshold
    with unit_of_work(engine) as session:
        contact, _dups, summary = operations.add_contact(
            session, args.name, emails=args.email, phones=args.phone, title=args.title,
            customer_ref=args.customer, actor=operator(), threshold=threshold)
        record(session, "contact.add", f"crm:contact/{contact.id}", summary)
    print(summary)
    return 0


def cmd_accept(args, engine) -> int:
    return change(engine, "contact.accept", f"crm:contact/{args.contact}",
                  lambda session: operations.accept_contact(session, args.contact, args.customer))


def cmd_merge(args, engine) -> int:
    return change(engine, "contact.merge", f"crm:contact/{args.a}",
                  lambda session: operations.merge_contacts(session, args.a, args.b, operator()))


def cmd_duplicates(args, engine) -> int:
    with unit_of_work(engine) as session:
        rows = [dict(id=d.id, contact=f"{d.contact_id} {a}", other=f"{d.other_id} {b}",
                     contact_id=d.contact_id, other_id=d.other_id, score=d.score,
                     reason=d.reason) for d, a, b in contacts.duplicates(session)]
    emit(rows, ["id", "contact", "other", "score", "reason"], args.json)
    return 0


def cmd_dismiss(args, engine) -> int:
    return change(engine, "duplicate.dismiss", f"crm:duplicate/{args.id}",
                  lambda session: operations.dismiss_duplicate(session, args.id, operator()))


def cmd_merge_duplicate(args, engine) -> int:
    return change(engine, "duplicate.merge", f"crm:duplicate/{args.id}",
                  lambda session: operations.merge_duplicate(session, args.id, operator()))
