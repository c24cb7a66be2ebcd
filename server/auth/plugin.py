"""Radicale auth plugin: ``[auth] type = server.auth.plugin``.

Users live in the CRM database. A password is verified with passlib once per process; after
that each request costs one indexed look-up, which still sees a disabled account or a
changed password at once (the cache is keyed on the stored hash).

The user's role and teams go to Radicale as groups (``role:rep``, ``team:north``), read
afresh on every request, for the rights plugin to decide from.

Failed logins are counted per account and per client address (``server.crm.throttle``);
past the limit, logins are answered ``429`` with ``Retry-After`` until the window ends.
Radicale's own delay on a failed login stays on. A device repeating one stale password
(after a password change) counts once per window, not once per poll: guessing takes
distinct passwords. Passwords are never logged.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import ipaddress
import logging
import secrets
import threading
import time

from radicale import auth
from sqlalchemy.orm import Session

from server import request_context
from server.crm import access, db, throttle, users

logger = logging.getLogger("radicale-crm")

PLUGIN_CONFIG_SCHEMA = {"auth": {
    "throttle_window": {
        "value": "900", "type": int,
        "help": "seconds over which failed logins are counted (0: no throttling)"},
    "throttle_account_failures": {
        "value": "10", "type": int,
        "help": "failed logins of one account in a window before its logins get 429 (0: off)"},
    "throttle_address_failures": {
        "value": "50", "type": int,
        "help": "failed logins from one client address in a window before its logins get "
                "429 (0: off)"},
    "trusted_proxies": {
        "value": "", "type": str,
        "help": "comma-separated addresses or networks of reverse proxies whose "
                "X-Forwarded-For names the client (empty: the peer address is the client)"},
}}
_REPEATS_KEPT = 10000   # (account, wrong password) pairs remembered per process


class Auth(auth.BaseAuth):

    def __init__(self, configuration) -> None:
        configuration = configuration.copy(PLUGIN_CONFIG_SCHEMA)
        super().__init__(configuration)
        self._engine = db.shared_engine(db.url_from_config(configuration),
                                       db.pool_size_from_config(configuration))
        self._salt = secrets.token_bytes(16)
        self._verified: dict[str, tuple[str, bytes]] = {}
        self._failed: dict[tuple[str, bytes], float] = {}
        self._lock = threading.Lock()
        window = configuration.get("auth", "throttle_window")
        self._policy = throttle.Policy(
            window=dt.timedelta(seconds=max(window, 0)),
            account_limit=configuration.get("auth", "throttle_account_failures")
            if window > 0 else 0,
            address_limit=configuration.get("auth", "throttle_address_failures")
            if window > 0 else 0)
        self._proxies = _networks(configuration.get("auth", "trusted_proxies"))
    def _digest(self, password: str) -> bytes:
        return hashlib.sha256(self._salt + password.encode("utf-8")).digest()

    def _login(self, login: str, password: str) -> str:
        return self._login_ext_with_groups(login, password, None)[0]

    def _login_ext_with_groups(self, login: str, password: str, context) -> tuple[str, set]:
        try:
            return self._check(login.strip().lower(), password)
        except Exception as e:
            if db.is_outage(e):
                request_context.mark_db_unavailable(e)
            raise

    def _check(self, username: str, password: str) -> tuple[str, set]:
        if not username or not password:
            return "", set()
        address = self._client_address()
        with db.read_once(self._engine) as connection:
            facts = access.login_facts(connection, username, address)
        if facts is not None and self._known(username, password, facts) and not (
                self._policy.enabled and throttle.retry_after(
                    self._policy, facts.account, facts.address) is not None):
            return self._logged_in(username, facts)   # one statement, no transaction
        # Anything else (a first or a wrong password, an unknown, disabled or throttled
        # account) is decided, counted and logged in a transaction of its own.
        with Session(self._engine) as session:
            facts = access.login_facts(session, username, address)
            if facts is None:       # unknown account: only its address is throttled
                if self._refused(username, address, None, self._address_counter(
                        session, address)):
                    return "", set()
                users.passwords.dummy_verify()
                self._count_failure(session, username, password, address, known=False)
                return "", set()
            if self._refused(username, address, facts.account, facts.address):
                return "", set()
            if facts.disabled:
                users.passwords.dummy_verify()
                return "", set()
            if not self._known(username, password, facts):
                if not users.verify_password(session, username, password):
                    session.rollback()
                    self._count_failure(session, username, password, address, known=True)
                    return "", set()
                session.commit()  # keeps a re-hash of a deprecated scheme
                fresh = users.login_state(session, username)
                with self._lock:
                    self._verified[username] = (fresh[0] if fresh else facts.password_hash,
                                                self._digest(password))
        return self._logged_in(username, facts)

    def _known(self, username: str, password: str, facts: access.LoginFacts) -> bool:
        """This password was verified against this hash before (by this process)."""
        if facts.disabled:
            return False
        cached = self._verified.get(username)
        return bool(cached and cached[0] == facts.password_hash and
                    hmac.compare_digest(cached[1], self._digest(password)))

    @staticmethod
    def _logged_in(username: str, facts: access.LoginFacts) -> tuple[str, set]:
        if facts.home is not None:
            # Radicale looks the principal up next, on every request: no second query.
            request_context.memo()["home"] = facts.home
        return username, facts.groups

    # --- throttling ----------------------------------------------------------------------
    def _client_address(self) -> str:
        context = request_context.current()
        if context is None:
            return ""
        address = context.remote_addr
        if self._proxies and context.forwarded_for and _within(address, self._proxies):
            # The right-most entry not added by one of our proxies is the client.
            for hop in reversed([h.strip() for h in context.forwarded_for.split(",")]):
                address = hop
                if not _within(hop, self._proxies):
                    break
        context.client_address = address[:300]
        return context.client_address

    def _address_counter(self, session: Session, address: str):
        if not address or self._policy.address_limit <= 0:
            return None
        key = throttle.address_key(address)
        return throttle.counters(session, [key]).get(key)

    def _refused(self, username: str, address: str, account, by_address) -> bool:
        if not self._policy.enabled:
            return False
        wait = throttle.retry_after(self._policy, account, by_address)
        if wait is None:
            return False
        logger.warning("Login throttled for %r from %s: too many failed logins, %d s left",
                       username, address or "an unknown address", wait)
        context = request_context.current()
        if context is not None:
            context.refusal_headers = [("Retry-After", str(wait))]
        request_context.refuse(429, "too many failed logins for this account or address: "
                                    f"retry in {wait} s")
        return True

    def _count_failure(self, session: Session, username: str, password: str, address: str,
                       known: bool) -> None:
        if not self._policy.enabled:
            return
        now = time.monotonic()
        window = self._policy.window.total_seconds()
        seen = (username, self._digest(password))
        with self._lock:
            if now - self._failed.get(seen, -window) < window:
                return    # the same wrong password again: a stale device, not a guess
            if len(self._failed) >= _REPEATS_KEPT:
                self._failed = {k: t for k, t in self._failed.items() if now - t < window}
                if len(self._failed) >= _REPEATS_KEPT:   # a spray: forget, count repeats again
                    self._failed.clear()
            self._failed[seen] = now
        keys = []
        if known and self._policy.account_limit > 0:
            keys.append(throttle.account_key(username))
        if address and self._policy.address_limit > 0:
            keys.append(throttle.address_key(address))
        if keys:
            throttle.record_failure(session, self._policy, keys)
            session.commit()


def _networks(value: str) -> tuple:
    out = []
    for part in (p.strip() for p in value.split(",")):
        if part:
            try:
                out.append(ipaddress.ip_network(part, strict=False))
            except ValueError as e:
                raise RuntimeError(f"[auth] trusted_proxies: {part!r} is not an address or "
                                   f"network: {e}") from None
    return tuple(out)


def _within(address: str, networks: tuple) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in networks)
