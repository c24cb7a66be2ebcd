"""The access policy as a pure function of (user, path): Radicale's permission letters.

Today: each user reads and writes their own home, as Radicale's ``owner_only`` does, except
the CRM's generated address books (``crm-contacts``, ``crm-suggested``), which are
read-only to everyone: the server writes them, a client must not. Role tiers, teams and
grants extend this function (issue 4).

Letters (Radicale 3.9): ``R``/``W`` read/write a principal collection, ``r``/``w`` read/write
a calendar or address book and its items; ``""`` is no access.
"""

from __future__ import annotations

READ_ONLY_BOOKS = frozenset({"crm-contacts", "crm-suggested"})


def permissions(user: str, path: str) -> str:
    """``path`` is sanitized, without leading or trailing slash ("" is the root)."""
    if not user:
        return ""
    if not path:
        return "R"
    parts = path.split("/")
    if parts[0] != user:
        return ""
    if len(parts) == 1:
        return "RW"
    if len(parts) == 2:
        return "r" if parts[1] in READ_ONLY_BOOKS else "rw"
    return ""
