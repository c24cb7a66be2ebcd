"""Typed SQLAlchemy models: one declarative base, one naming convention (Alembic-friendly).

Tables of the DAV store (collections, items, change log, trash), users, the audit trail and
the CRM (customers, contacts, visits, duplicate candidates, published contact cards).
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Optional

from sqlalchemy import (BigInteger, Boolean, DateTime, ForeignKey, Index, Integer, MetaData,
                        String, Text, UniqueConstraint, text)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

intpk = Annotated[int, mapped_column(Integer, primary_key=True)]
bigint = Annotated[int, mapped_column(BigInteger)]
path_str = Annotated[str, mapped_column(String(1024))]
name_str = Annotated[str, mapped_column(String(255))]
timestamp = Annotated[dt.datetime, mapped_column(DateTime(timezone=True))]


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class User(Base):
    __tablename__ = "users"

    id: Mapped[intpk]
    username: Mapped[name_str] = mapped_column(unique=True)
    password_hash: Mapped[Optional[str]] = mapped_column(String(512))
    role: Mapped[str] = mapped_column(String(20), default="rep")
    email: Mapped[Optional[str]] = mapped_column(String(320))
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[timestamp] = mapped_column(default=utcnow)


class LoginThrottle(Base):
    """Failed logins per account (``user:<name>``) or client address (``addr:<ip>``) in the
    current window: shared by every worker and node (see server/crm/throttle.py)."""

    __tablename__ = "auth_throttle"

    key: Mapped[str] = mapped_column(String(400), primary_key=True)
    failures: Mapped[int]
    window_start: Mapped[timestamp] = mapped_column(index=True)


class DavCollection(Base):
    """A principal, folder, calendar or address book. ``path`` has no leading/trailing slash."""

    __tablename__ = "dav_collections"

    id: Mapped[intpk]
    path: Mapped[path_str] = mapped_column(unique=True)
    parent_path: Mapped[path_str] = mapped_column(index=True)
    owner: Mapped[name_str] = mapped_column(index=True)
    tag: Mapped[str] = mapped_column(String(20), default="")
    props_json: Mapped[str] = mapped_column(Text, default="{}")
    # Sync state: `revision` grows by one with every change; tokens older than
    # `pruned_revision` lost their deletions to pruning and are refused (RFC 6578).
    sync_key: Mapped[str] = mapped_column(String(32))
    revision: Mapped[bigint] = mapped_column(default=0)
    pruned_revision: Mapped[bigint] = mapped_column(default=0)
    created_at: Mapped[timestamp] = mapped_column(default=utcnow)
    modified_at: Mapped[timestamp] = mapped_column(default=utcnow)


class DavItem(Base):
    """One calendar object or vCard: the client's text, kept as sent, plus indexed columns."""

    __tablename__ = "dav_items"
    __table_args__ = (
        UniqueConstraint("collection_id", "href"),
        UniqueConstraint("collection_id", "uid"),
        # Partial on PostgreSQL, so that only a query with a time range can use it (a range
        # condition implies the predicate). A plain one also served "collection_id = ?" alone:
        # for a calendar the statistics did not know yet (filled since the last ANALYZE),
        # the planner costed it the same as the (collection, uid) and (collection, href)
        # indexes and took it for the UID check and the item look-up, filtering every item
        # of the calendar: each PUT of an import read all the items before it. SQLite's
        # planner does not prove the predicate (it would lose the index), nor needs it.
        Index("ix_dav_items_time_range", "collection_id", "range_start", "range_end",
              postgresql_where=text("range_start IS NOT NULL")),
    )

    id: Mapped[intpk]
    collection_id: Mapped[int] = mapped_column(ForeignKey("dav_collections.id", ondelete="CASCADE"))
    href: Mapped[path_str]
    uid: Mapped[Optional[str]] = mapped_column(String(1024))
    name: Mapped[str] = mapped_column(String(20))          # VCALENDAR / VCARD
    component: Mapped[str] = mapped_column(String(20))     # VEVENT / VTODO / VJOURNAL / ""
    text: Mapped[str] = mapped_column(Text)
    etag: Mapped[str] = mapped_column(String(80))
    range_start: Mapped[bigint]                            # UTC POSIX seconds, all occurrences
    range_end: Mapped[bigint]
    klass: Mapped[Optional[str]] = mapped_column("class", String(40))
    # Every occurrence of a recurring object as "start end start end ..." (UTC POSIX
    # seconds), "" when the time range is its only occurrence, NULL when not indexed (an
    # endless or very long series, or a row older than the index): see
    # mapping.occurrence_index and dav.ItemData.occurs_in.
    occurrences: Mapped[Optional[str]] = mapped_column(Text)
    revision: Mapped[bigint]
    modified_at: Mapped[timestamp] = mapped_column(default=utcnow)


class DavChange(Base):
    """Compacted change log: the latest revision at which each href changed or vanished."""

    __tablename__ = "dav_changes"
    __table_args__ = (
        UniqueConstraint("collection_id", "href"),
        Index("ix_dav_changes_collection_revision", "collection_id", "revision"),
    )

    id: Mapped[intpk]
    collection_id: Mapped[int] = mapped_column(ForeignKey("dav_collections.id", ondelete="CASCADE"))
    href: Mapped[path_str]
    revision: Mapped[bigint]
    deleted: Mapped[bool] = mapped_column(Boolean, default=False)
    changed_at: Mapped[timestamp] = mapped_column(default=utcnow)


class DavTrash(Base):
    """What a DELETE removed, kept for restore: collections (props) and items (text)."""

    __tablename__ = "dav_trash"

    id: Mapped[intpk]
    batch: Mapped[str] = mapped_column(String(32), index=True)
    kind: Mapped[str] = mapped_column(String(20))          # "collection" / "item"
    path: Mapped[path_str] = mapped_column(index=True)     # the collection's path
    owner: Mapped[name_str] = mapped_column(index=True)
    href: Mapped[Optional[str]] = mapped_column(String(1024))
    uid: Mapped[Optional[str]] = mapped_column(String(1024))
    tag: Mapped[str] = mapped_column(String(20), default="")
    props_json: Mapped[Optional[str]] = mapped_column(Text)
    text: Mapped[Optional[str]] = mapped_column(Text)
    # An item's indexed columns, so a restore needs no parsing.
    name: Mapped[Optional[str]] = mapped_column(String(20))
    component: Mapped[Optional[str]] = mapped_column(String(20))
    etag: Mapped[Optional[str]] = mapped_column(String(80))
    range_start: Mapped[Optional[int]] = mapped_column(BigInteger)
    range_end: Mapped[Optional[int]] = mapped_column(BigInteger)
    klass: Mapped[Optional[str]] = mapped_column("class", String(40))
    deleted_by: Mapped[Optional[str]] = mapped_column(String(255))
    deleted_at: Mapped[timestamp] = mapped_column(default=utcnow)


auto_bigint_pk = Annotated[int, mapped_column(BigInteger().with_variant(Integer, "sqlite"),
                                              primary_key=True, autoincrement=True)]


class AuditRecord(Base):
    """One audited change. Records form hash chains, one per stream (a user's data, admin)."""

    __tablename__ = "audit_log"
    __table_args__ = (UniqueConstraint("stream", "seq"),
                      Index("ix_audit_log_at", "at"))

    id: Mapped[auto_bigint_pk]
    stream: Mapped[path_str]
    seq: Mapped[bigint]
    at: Mapped[timestamp]
    actor: Mapped[Optional[str]] = mapped_column(String(255), index=True)
    action: Mapped[str] = mapped_column(String(40))
    object: Mapped[path_str] = mapped_column(index=True)
    client: Mapped[Optional[str]] = mapped_column(String(255))
    before_digest: Mapped[Optional[str]] = mapped_column(String(64))
    after_digest: Mapped[Optional[str]] = mapped_column(String(64))
    summary: Mapped[str] = mapped_column(Text, default="")
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))


class AuditStream(Base):
    """The head of each chain: what the last record must be (catches deleted tails)."""

    __tablename__ = "audit_streams"

    stream: Mapped[path_str] = mapped_column(primary_key=True)
    seq: Mapped[bigint] = mapped_column(default=0)
    head_hash: Mapped[str] = mapped_column(String(64))


# --- CRM: customers, contacts, visits ------------------------------------------------------
# Users are referred to by username (the DAV paths carry usernames too), so handing a user's
# records to another is an UPDATE of one column.

class Customer(Base):
    __tablename__ = "crm_customers"

    id: Mapped[intpk]
    name: Mapped[name_str]
    normalized_name: Mapped[name_str] = mapped_column(index=True)  # legal form stripped
    short_name: Mapped[Optional[str]] = mapped_column(String(255))
    industry: Mapped[Optional[str]] = mapped_column(String(255))
    source: Mapped[str] = mapped_column(String(20), default="manual")
    region: Mapped[Optional[str]] = mapped_column(String(255))
    level: Mapped[Optional[str]] = mapped_column(String(1))            # A / B / C
    tags_json: Mapped[str] = mapped_column(Text, default="[]")
    owner: Mapped[Optional[str]] = mapped_column(String(255), index=True)
    created_at: Mapped[timestamp] = mapped_column(default=utcnow)
    updated_at: Mapped[timestamp] = mapped_column(default=utcnow)


class CustomerDomain(Base):
    """An e-mail domain that identifies a customer (one customer per domain)."""

    __tablename__ = "crm_customer_domains"

    id: Mapped[intpk]
    customer_id: Mapped[int] = mapped_column(ForeignKey("crm_customers.id", ondelete="CASCADE"),
                                             index=True)
    domain: Mapped[name_str] = mapped_column(unique=True)


class CustomerCollaborator(Base):
    __tablename__ = "crm_customer_collaborators"
    __table_args__ = (UniqueConstraint("customer_id", "username"),)

    id: Mapped[intpk]
    customer_id: Mapped[int] = mapped_column(ForeignKey("crm_customers.id", ondelete="CASCADE"))
    username: Mapped[name_str] = mapped_column(index=True)
    can_edit: Mapped[bool] = mapped_column(Boolean, default=False)


class CustomerKey(Base):
    """Blocking keys of a customer's normalised name: fuzzy matching scores only the
    customers that share a key with the text, never the whole table."""

    __tablename__ = "crm_customer_keys"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("crm_customers.id", ondelete="CASCADE"),
                                             primary_key=True, index=True)


class Contact(Base):
    __tablename__ = "crm_contacts"

    id: Mapped[intpk]
    name: Mapped[name_str]
    normalized_name: Mapped[name_str] = mapped_column(index=True)
    title: Mapped[Optional[str]] = mapped_column(String(255))
    customer_id: Mapped[Optional[int]] = mapped_column(
        ForeignKey("crm_customers.id", ondelete="SET NULL"), index=True)
    source: Mapped[str] = mapped_column(String(20), default="attendee")  # attendee/import/manual
    created_by: Mapped[Optional[str]] = mapped_column(String(255))
    created_at: Mapped[timestamp] = mapped_column(default=utcnow)
    updated_at: Mapped[timestamp] = mapped_column(default=utcnow)


class ContactEmail(Base):
    """Lower-cased; an address belongs to one contact."""

    __tablename__ = "crm_contact_emails"

    id: Mapped[intpk]
    contact_id: Mapped[int] = mapped_column(ForeignKey("crm_contacts.id", ondelete="CASCADE"),
                                            index=True)
    email: Mapped[str] = mapped_column(String(320), unique=True)


class ContactPhone(Base):
    """Normalised to digits with a leading + where one was given."""

    __tablename__ = "crm_contact_phones"
    __table_args__ = (UniqueConstraint("contact_id", "phone"),)

    id: Mapped[intpk]
    contact_id: Mapped[int] = mapped_column(ForeignKey("crm_contacts.id", ondelete="CASCADE"))
    phone: Mapped[str] = mapped_column(String(40), index=True)


class ContactKey(Base):
    """Blocking keys of a contact's name, for duplicate detection without a table scan."""

    __tablename__ = "crm_contact_keys"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    contact_id: Mapped[int] = mapped_column(ForeignKey("crm_contacts.id", ondelete="CASCADE"),
                                            primary_key=True, index=True)


class DuplicateCandidate(Base):
    """Two contacts that may be one person: recorded for review, never merged silently."""

    __tablename__ = "crm_duplicate_candidates"
    __table_args__ = (UniqueConstraint("contact_id", "other_id"),)

    id: Mapped[intpk]
    contact_id: Mapped[int] = mapped_column(ForeignKey("crm_contacts.id", ondelete="CASCADE"),
                                            index=True)
    other_id: Mapped[int] = mapped_column(ForeignKey("crm_contacts.id", ondelete="CASCADE"),
                                          index=True)
    score: Mapped[int]
    reason: Mapped[str] = mapped_column(String(20))                    # name / phone
    status: Mapped[str] = mapped_column(String(20), default="open")   # open/dismissed/merged
    created_at: Mapped[timestamp] = mapped_column(default=utcnow)
    resolved_by: Mapped[Optional[str]] = mapped_column(String(255))
    resolved_at: Mapped[Optional[dt.datetime]] = mapped_column(DateTime(timezone=True))


class Visit(Base):
    """One customer visit per event UID, whichever reps' calendars hold it."""

    __tablename__ = "crm_visits"

    id: Mapped[intpk]
    uid: Mapped[str] = mapped_column(String(1024), unique=True)
    customer_id: Mapped[Optional[int]] = mapped_column(
        ForeignKey("crm_customers.id", ondelete="SET NULL"), index=True)
    # explicit / category / domain / attendee / fuzzy / manual / none
    match_method: Mapped[str] = mapped_column(String(20), default="none")
    match_score: Mapped[Optional[int]]
    summary: Mapped[str] = mapped_column(Text, default="")
    location: Mapped[str] = mapped_column(Text, default="")
    start: Mapped[Optional[dt.datetime]] = mapped_column(DateTime(timezone=True), index=True)
    end: Mapped[Optional[dt.datetime]] = mapped_column(DateTime(timezone=True))
    status: Mapped[str] = mapped_column(String(20), default="confirmed")
    recurring: Mapped[bool] = mapped_column(Boolean, default=False)
    deleted_at: Mapped[Optional[dt.datetime]] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[timestamp] = mapped_column(default=utcnow)
    updated_at: Mapped[timestamp] = mapped_column(default=utcnow)


class VisitPlacement(Base):
    """Where a visit's event lives: one row per rep's calendar holding the UID."""

    __tablename__ = "crm_visit_placements"
    __table_args__ = (UniqueConstraint("collection_path", "href"),)

    id: Mapped[intpk]
    visit_id: Mapped[int] = mapped_column(ForeignKey("crm_visits.id", ondelete="CASCADE"),
                                          index=True)
    collection_path: Mapped[path_str]
    href: Mapped[path_str]
    rep: Mapped[name_str] = mapped_column(index=True)


class VisitOccurrence(Base):
    """Every occurrence of a visit up to the recurrence horizon (one row if not recurring)."""

    __tablename__ = "crm_visit_occurrences"
    __table_args__ = (Index("ix_crm_visit_occurrences_start", "start"),)

    id: Mapped[intpk]
    visit_id: Mapped[int] = mapped_column(ForeignKey("crm_visits.id", ondelete="CASCADE"),
                                          index=True)
    start: Mapped[timestamp]
    end: Mapped[timestamp]
    recurrence_id: Mapped[Optional[str]] = mapped_column(String(40))
    status: Mapped[str] = mapped_column(String(20), default="confirmed")


class VisitAttendance(Base):
    __tablename__ = "crm_visit_attendance"
    __table_args__ = (UniqueConstraint("visit_id", "contact_id"),)

    id: Mapped[intpk]
    visit_id: Mapped[int] = mapped_column(ForeignKey("crm_visits.id", ondelete="CASCADE"))
    contact_id: Mapped[int] = mapped_column(ForeignKey("crm_contacts.id", ondelete="CASCADE"),
                                            index=True)
    partstat: Mapped[str] = mapped_column(String(20), default="NEEDS-ACTION")
    role: Mapped[str] = mapped_column(String(20), default="REQ-PARTICIPANT")


class ContactCard(Base):
    """Where a contact's generated vCard is published (a read-only CRM address book)."""

    __tablename__ = "crm_contact_cards"
    __table_args__ = (UniqueConstraint("contact_id", "collection_id"),)

    id: Mapped[intpk]
    contact_id: Mapped[int] = mapped_column(ForeignKey("crm_contacts.id", ondelete="CASCADE"))
    collection_id: Mapped[int] = mapped_column(
        ForeignKey("dav_collections.id", ondelete="CASCADE"), index=True)


# --- rights: teams and grants ----------------------------------------------------------------

class Team(Base):
    __tablename__ = "teams"

    id: Mapped[intpk]
    name: Mapped[name_str] = mapped_column(unique=True)
    created_at: Mapped[timestamp] = mapped_column(default=utcnow)


class TeamMember(Base):
    __tablename__ = "team_members"
    __table_args__ = (UniqueConstraint("team_id", "user_id"),)

    id: Mapped[intpk]
    team_id: Mapped[int] = mapped_column(ForeignKey("teams.id", ondelete="CASCADE"))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)


class Grant(Base):
    """Access to one collection for a user, a team or a role, at one level.

    Keyed on the collection's id: deleting the collection revokes its grants, and a new
    collection of the same name does not inherit them.
    """

    __tablename__ = "grants"
    __table_args__ = (UniqueConstraint("collection_id", "subject_kind", "subject"),
                      Index("ix_grants_subject", "subject_kind", "subject"))

    id: Mapped[intpk]
    collection_id: Mapped[int] = mapped_column(
        ForeignKey("dav_collections.id", ondelete="CASCADE"))
    subject_kind: Mapped[str] = mapped_column(String(10))     # user / team / role
    subject: Mapped[name_str]
    level: Mapped[str] = mapped_column(String(10))            # busy / summary / read / write
    created_by: Mapped[Optional[str]] = mapped_column(String(255))
    created_at: Mapped[timestamp] = mapped_column(default=utcnow)
