"""Radicale auth plugin: ``[auth] type = server.auth.plugin``.

Users live in the CRM database. A password is verified with passlib once per process; after
that each request costs one indexed look-up, which still sees a disabled account or a
changed password at once (the cache is keyed on the stored hash).

The user's role and teams go to Radicale as groups (``role:rep``, ``team:north``), read
afresh on every request, for the rights plugin to decide from.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import threading

from radicale import auth
from sqlalchemy.orm import Session

from server import request_context
from server.crm import access, db, users

logger = logging.getLogger("radicale-crm")


class Auth(auth.BaseAuth):

    def __init__(self, configuration) -> None:
        super().__init__(configuration)
        self._engine = db.shared_engine(db.url_from_config(configuration))
        self._salt = secrets.token_bytes(16)
        self._verified: dict[str, tuple[str, bytes]] = {}
        self._lock = threading.Lock()

    def _digest(self, password: str) -> bytes:
        return hashlib.sha256(self._salt + password.encode("utf-8")).digest()

    def _login(self, login: str, password: str) -> str:
        return self._login_ext_with_groups(login, password, None)[0]

    def _login_ext_with_groups(self, login: str, password: str, context) -> tuple[str, set]:
        try:
            return self._check(login.strip().lower(), password)
        except Exception as e:
            if db.is_outage(e):
                request_context.mark_db_unavailable()
            raise

    def _check(self, username: str, password: str) -> tuple[str, set]:
        if not username or not password:
            return "", set()
        with Session(self._engine) as session:
            facts = access.login_facts(session, username)
            if facts is None or facts[1]:
                users.passwords.dummy_verify()
                return "", set()
            stored_hash, _disabled, groups, home = facts
            cached = self._verified.get(username)
            if not (cached and cached[0] == stored_hash and
                    hmac.compare_digest(cached[1], self._digest(password))):
                if not users.verify_password(session, username, password):
                    return "", set()
                session.commit()  # keeps a re-hash of a deprecated scheme
                fresh = users.login_state(session, username)
                with self._lock:
                    self._verified[username] = (fresh[0] if fresh else stored_hash,
                                                self._digest(password))
        if home is not None:
            # Radicale looks the principal up next, on every request: no second query.
            request_context.memo()["home"] = home
        return username, groups
