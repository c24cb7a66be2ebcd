"""Typed SQLAlchemy models: one declarative base, one naming convention (Alembic-friendly).

Tables of the DAV store (collections, items, change log, trash) and of users. CRM tables
(contacts, customers, visits, audit) join this module's metadata as they are added.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Optional

from sqlalchemy import (BigInteger, Boolean, DateTime, ForeignKey, Index, Integer, MetaData,
                        String, Text, UniqueConstraint)
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
        Index("ix_dav_items_time_range", "collection_id", "range_start", "range_end"),
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
