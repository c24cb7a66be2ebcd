"""Radicale auth plugin: ``[auth] type = server.auth.plugin``.

Users live in the CRM database. A password is verified with passlib once per process; after
that each request costs one indexed look-up, which still sees a disabled account or a
changed password at once (the cache is keyed on the stored hash).
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
from server.crm import db, users

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
        try:
            return self._check(login.strip().lower(), password)
        except Exception as e:
            if db.is_outage(e):
                request_context.mark_db_unavailable()
            raise

    def _check(self, username: str, password: str) -> str:
        if not username or not password:
            return ""
        with Session(self._engine) as session:
            state = users.login_state(session, username)
            if state is None or state[1]:
                users.passwords.dummy_verify()
                return ""
            stored_hash = state[0]
            cached = self._verified.get(username)
            if cached and cached[0] == stored_hash and \
                    hmac.compare_digest(cached[1], self._digest(password)):
                return username
            if not users.verify_password(session, username, password):
                return ""
            session.commit()  # keeps a re-hash of a deprecated scheme
            fresh = users.login_state(session, username)
        with self._lock:
            self._verified[username] = (fresh[0] if fresh else stored_hash,
                                        self._digest(password))
        return username
