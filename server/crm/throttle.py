"""Throttling of failed logins, per account and per client address.

Every failed login counts against its account (``user:<name>``, known accounts only) and its
client address (``addr:<ip>``) in a fixed window. Once a key has ``limit`` failures in its
window, every login for that account or from that address is refused, *before* the password
is looked at, until the window ends: a correct password is refused too, or a guesser could
tell it from the refusals. The counters live in the database, so every worker and node of a
deployment counts together. A success does not reset them (a rep's phone polling with the
right password would otherwise reset an attacker's count every few minutes); the window does,
and so does ``crm-admin user unlock``.

The cost on the success path is nothing extra: the counters of the account and the address
are read by the login query itself (``access.login_facts``).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Iterable, Optional

from sqlalchemy import bindparam, delete, select, text
from sqlalchemy.orm import Session

from server.crm.db import run
from server.crm.models import LoginThrottle, utcnow


@dataclass(frozen=True)
class Policy:
    window: dt.timedelta = dt.timedelta(minutes=15)
    account_limit: int = 10     # one person mistyping does not get here
    address_limit: int = 50     # an office behind one NAT address shares it

    @property
    def enabled(self) -> bool:
        return self.account_limit > 0 or self.address_limit > 0


@dataclass(frozen=True)
class Counter:
    failures: int
    window_start: dt.datetime


def account_key(username: str) -> str:
    return "user:" + username


def address_key(address: str) -> str:
    return "addr:" + address


def retry_after(policy: Policy, account: Optional[Counter], address: Optional[Counter],
                now: Optional[dt.datetime] = None) -> Optional[int]:
    """Seconds until a login may be tried again, or None when it may be now."""
    now = now or utcnow()
    waits = [_wait(policy, counter, limit, now) for counter, limit in
             ((account, policy.account_limit), (address, policy.address_limit))]
    waits = [w for w in waits if w is not None]
    return max(waits) if waits else None


def _wait(policy: Policy, counter: Optional[Counter], limit: int, now: dt.datetime
          ) -> Optional[int]:
    if counter is None or limit <= 0 or counter.failures < limit:
        return None
    ends = _aware(counter.window_start) + policy.window
    return int((ends - now).total_seconds()) + 1 if ends > now else None


_T = LoginThrottle.__table__
_COUNTERS = select(_T.c.key, _T.c.failures, _T.c.window_start).where(
    _T.c.key.in_(bindparam("keys", expanding=True)))
# One statement, race-free across workers: a failure outside the window starts a new one.
_FAILED = text("""
    INSERT INTO auth_throttle (key, failures, window_start) VALUES (:key, 1, :now)
    ON CONFLICT (key) DO UPDATE SET
      failures = CASE WHEN auth_throttle.window_start < :cutoff THEN 1
                      ELSE auth_throttle.failures + 1 END,
      window_start = CASE WHEN auth_throttle.window_start < :cutoff THEN :now
                          ELSE auth_throttle.window_start END""")
_EXPIRED = delete(_T).where(_T.c.window_start < bindparam("cutoff"))


def counters(session: Session, keys: Iterable[str]) -> dict[str, Counter]:
    return {row.key: Counter(row.failures, row.window_start)
            for row in run(session, _COUNTERS, {"keys": list(keys)})}


def record_failure(session: Session, policy: Policy, keys: Iterable[str]) -> None:
    """Count one failed login against each key (the caller commits)."""
    now = utcnow()
    cutoff = now - policy.window
    for key in keys:
        session.execute(_FAILED, {"key": key, "now": now, "cutoff": cutoff})
    run(session, _EXPIRED, {"cutoff": cutoff})   # the table holds current windows only


def clear(session: Session, keys: Iterable[str]) -> int:
    """Forget the failures of ``keys`` (an operator unlocking an account). Returns how many
    counters there were."""
    result = session.execute(delete(LoginThrottle).where(LoginThrottle.key.in_(list(keys))))
    return result.rowcount or 0


def _aware(value: dt.datetime) -> dt.datetime:
    return value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)
