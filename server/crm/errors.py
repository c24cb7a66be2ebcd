"""Typed domain errors. Adapters translate them once (storage plugin, CLI)."""

from __future__ import annotations


class CrmError(Exception):
    """Base of every error the domain raises on purpose."""


class NotFound(CrmError):
    def __init__(self, what: str, name: str) -> None:
        super().__init__(f"{what} {name!r} does not exist")
        self.what, self.name = what, name


class AlreadyExists(CrmError):
    def __init__(self, what: str, name: str) -> None:
        super().__init__(f"{what} {name!r} already exists")
        self.what, self.name = what, name


class DuplicateUid(CrmError):
    def __init__(self, uid: str, href: str) -> None:
        super().__init__(f"UID {uid!r} is already used by {href!r} in this collection")
        self.uid, self.href = uid, href


class InvalidSyncToken(CrmError):
    def __init__(self, token: str, why: str) -> None:
        super().__init__(f"sync token {token!r} is not valid: {why}")
        self.token, self.why = token, why


class InvalidInput(CrmError):
    """Input the domain refuses (bad name, bad value)."""


class DatabaseUnavailable(CrmError):
    """The database cannot be reached: a service failure, not a client error."""
