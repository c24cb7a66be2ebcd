"""Customers: the records, their e-mail domains, owner and collaborators, and how an event
is matched to one (``match``)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Iterable, Mapping, Optional, Sequence

from rapidfuzz import fuzz
from sqlalchemy import bindparam, delete, func, insert, or_, select
from sqlalchemy.orm import Session

from server.crm import normalize
from server.crm.db import run
from server.crm.errors import AlreadyExists, InvalidInput, NotFound
from server.crm.models import Customer, CustomerCollaborator, CustomerDomain, CustomerKey, utcnow
from server.crm.settings import CrmSettings

LEVELS = ("A", "B", "C")
_MAX_CANDIDATES = 200


@dataclass(frozen=True)
class Match:
    customer_id: Optional[int]
    method: str          # explicit / category / domain / attendee / fuzzy / none
    score: Optional[int]
    detail: str = ""


NO_MATCH = Match(None, "none", None)


# --- records -----------------------------------------------------------------------------

def add(session: Session, name: str, *, domains: Sequence[str] = (), owner: Optional[str] = None,
        level: Optional[str] = None, tags: Sequence[str] = (), short_name: Optional[str] = None,
        industry: Optional[str] = None, region: Optional[str] = None,
        source: str = "manual") -> Customer:
    name = " ".join((name or "").split())
    if not name or len(name) > 255:
        raise InvalidInput("a customer needs a name of 1 to 255 characters")
    normalized = normalize.company_name(name)
    if session.scalar(select(Customer.id).where(Customer.normalized_name == normalized)):
        raise AlreadyExists("customer", name)
    if level is not None and level.upper() not in LEVELS:
        raise InvalidInput(f"level must be one of {', '.join(LEVELS)}, not {level!r}")
    customer = Customer(name=name, normalized_name=normalized, short_name=short_name,
                        industry=industry, region=region, source=source,
                        level=level.upper() if level else None,
                        tags_json=json.dumps(sorted(set(tags)), ensure_ascii=False), owner=owner)
    session.add(customer)
    session.flush()
    _index_keys(session, customer)
    for domain in domains:
        add_domain(session, customer, domain)
    return customer


def _index_keys(session: Session, customer: Customer) -> None:
    session.execute(delete(CustomerKey).where(CustomerKey.customer_id == customer.id))
    words = normalize.keys(customer.normalized_name)
    if customer.short_name:
        words |= normalize.keys(normalize.company_name(customer.short_name))
    if words:
        session.execute(insert(CustomerKey), [{"key": k, "customer_id": customer.id}
                                              for k in sorted(words)])


def add_domain(session: Session, customer: Customer, domain: str) -> None:
    clean = domain.strip().lower().lstrip("@").rstrip(".")
    if not re.fullmatch(r"[^\s@/]+\.[^\s@/]+", clean):
        raise InvalidInput(f"{domain!r} is not an e-mail domain")
    holder = session.scalar(select(CustomerDomain.customer_id).where(
        CustomerDomain.domain == clean))
    if holder is not None and holder != customer.id:
        raise AlreadyExists("e-mail domain", clean)
    if holder is None:
        session.add(CustomerDomain(customer_id=customer.id, domain=clean))
        session.flush()


def find(session: Session, name_or_id: str) -> Customer:
    """By id, exact name, normalised name or short name."""
    text = str(name_or_id).strip()
    if text.isdigit():
        found = session.get(Customer, int(text))
        if found:
            return found
    normalized = normalize.company_name(text)
    found = session.scalars(select(Customer).where(or_(
        Customer.name == text, Customer.normalized_name == normalized,
        func.lower(Customer.short_name) == text.lower())).order_by(Customer.id)).all()
    if len(found) > 1:
        raise InvalidInput(f"{text!r} names {len(found)} customers: use the id "
                           f"({', '.join(str(c.id) for c in found)})")
    if not found:
        raise NotFound("customer", text)
    return found[0]


def listing(session: Session) -> list[Customer]:
    return list(session.scalars(select(Customer).order_by(Customer.name)))


def domains(session: Session, customer_id: int) -> list[str]:
    return list(session.scalars(select(CustomerDomain.domain).where(
        CustomerDomain.customer_id == customer_id).order_by(CustomerDomain.domain)))


def collaborators(session: Session, customer_id: int) -> list[CustomerCollaborator]:
    return list(session.scalars(select(CustomerCollaborator).where(
        CustomerCollaborator.customer_id == customer_id).order_by(CustomerCollaborator.username)))


def transfer(session: Session, customer: Customer, to_user: str) -> Optional[str]:
    """Replace the owner; returns the previous one."""
    previous = customer.owner
    customer.owner = to_user
    customer.updated_at = utcnow()
    session.execute(delete(CustomerCollaborator).where(
        CustomerCollaborator.customer_id == customer.id,
        CustomerCollaborator.username == to_user))
    session.flush()
    return previous


def share(session: Session, customer: Customer, with_user: str, can_edit: bool) -> str:
    """Add (or update) a collaborator; the owner stays. Returns what changed."""
    if with_user == customer.owner:
        raise InvalidInput(f"{with_user!r} owns {customer.name!r} already")
    row = session.scalar(select(CustomerCollaborator).where(
        CustomerCollaborator.customer_id == customer.id,
        CustomerCollaborator.username == with_user))
    if row is None:
        session.add(CustomerCollaborator(customer_id=customer.id, username=with_user,
                                         can_edit=can_edit))
        change = "added"
    else:
        change = "unchanged" if row.can_edit == can_edit else "updated"
        row.can_edit = can_edit
    session.flush()
    return change


# --- matching an event to a customer -----------------------------------------------------

# Built once with bind parameters and run on the connection (``db.run``): built per call
# with literal IN lists, each of these was compiled afresh on every ingesting PUT.
_BY_NAMES = select(Customer.id, Customer.normalized_name, Customer.short_name).where(or_(
    Customer.normalized_name.in_(bindparam("normalized", expanding=True)),
    func.lower(Customer.short_name).in_(bindparam("lowered", expanding=True))))
# The customers sharing the most words with the text first: common words ("networks",
# "group") match hundreds of customers, and an arbitrary cut would drop the one named.
_SHARING_WORDS = select(Customer.id, Customer.normalized_name, Customer.short_name).where(
    Customer.id.in_(select(CustomerKey.customer_id)
                    .where(CustomerKey.key.in_(bindparam("words", expanding=True)))
                    .group_by(CustomerKey.customer_id)
                    .order_by(func.count().desc(), CustomerKey.customer_id)
                    .limit(_MAX_CANDIDATES)))


def by_names(session: Session, names: Iterable[str]) -> dict[str, int]:
    """Customers named (name, normalised name or short name) by any of ``names``."""
    wanted = {n.strip(): normalize.company_name(n) for n in names if n and n.strip()}
    if not wanted:
        return {}
    rows = run(session, _BY_NAMES, {"normalized": sorted(set(wanted.values())),
                                    "lowered": sorted({n.lower() for n in wanted})}).all()
    out = {}
    for name, normalized in wanted.items():
        for row in rows:
            if row.normalized_name == normalized or \
                    (row.short_name or "").lower() == name.lower():
                out.setdefault(name, row.id)
    return out


def domains_to_look_up(domains: Iterable[str]) -> list[str]:
    """The ``crm_customer_domains`` keys to read for these e-mail domains: each of them and
    its parents (``eu.sales.acme.com`` → ... → ``acme.com``)."""
    return sorted({c for d in domains for c in normalize.domain_candidates(d)})


def owners_by_domain(domains: Iterable[str], found: Mapping[str, int]) -> dict[str, int]:
    """E-mail domain → customer, given ``found`` (domain → customer) for the domains of
    ``domains_to_look_up``: the nearest one wins, so a subdomain matches its parent's
    customer unless it is a customer's domain itself. (The ingestion reads ``found`` in
    the same statement as its other look-ups.)"""
    out = {}
    for domain in set(domains):
        hit = next((found[c] for c in normalize.domain_candidates(domain) if c in found), None)
        if hit is not None:
            out[domain] = hit
    return out


def fuzzy(session: Session, texts: Sequence[str], settings: CrmSettings) -> Match:
    """A customer named in free text (summary, location), with a clear lead."""
    normalized = [normalize.text_for_matching(t) for t in texts if t and t.strip()]
    words = set().union(*(normalize.keys(t) for t in normalized)) if normalized else set()
    if not words:
        return NO_MATCH
    rows = run(session, _SHARING_WORDS, {"words": sorted(words)}).all()
    scored = []
    for row in rows:
        names = [row.normalized_name]
        if row.short_name:
            names.append(normalize.company_name(row.short_name))
        score = max(_name_in_text(name, text) for name in names for text in normalized)
        if score >= settings.match_threshold:
            scored.append((score, len(row.normalized_name), row.id, row.normalized_name))
    if not scored:
        return NO_MATCH
    scored.sort(reverse=True)
    best = scored[0]
    rivals = [s for s in scored[1:] if best[0] - s[0] < settings.match_margin
              and s[2] != best[2]
              # "acme holdings" beats "acme" in a text naming Acme Holdings: it says more.
              and not (s[3] in best[3] and len(s[3]) < len(best[3]))]
    if rivals:
        return Match(None, "none", None, "ambiguous: " + ", ".join(
            str(s[2]) for s in [best, *rivals]))
    return Match(best[2], "fuzzy", int(round(best[0])))


def _name_in_text(name: str, text: str) -> float:
    """100 when the name appears in the text as whole words (or as CJK characters);
    otherwise a discounted partial similarity, so a typo still counts but a fragment of a
    word ("acme" in "acmeville") does not."""
    if len(name) < (3 if name.isascii() else 2):
        return 0.0  # too short to be found in free text
    if name.isascii():
        if _whole_words_in(name, text):
            return 100.0
    elif name in text:
        return 100.0
    return fuzz.partial_ratio(name, text) * 0.9


def _whole_words_in(name: str, text: str) -> bool:
    r"""``re.search(rf"(?<!\w){re.escape(name)}(?!\w)", text)`` without the regex: a pattern
    per customer name overflowed ``re``'s cache of compiled patterns, and compiling them
    was 5 % of a calendar PUT's ingestion at 20,000 customers. ``\w`` is what
    ``str.isalnum()`` accepts, and the underscore."""
    at = text.find(name)
    while at != -1:
        end = at + len(name)
        if (at == 0 or not _word_char(text[at - 1])) and (
                end == len(text) or not _word_char(text[end])):
            return True
        at = text.find(name, at + 1)
    return False


def _word_char(char: str) -> bool:
    return char.isalnum() or char == "_"
