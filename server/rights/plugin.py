"""Radicale rights plugin: ``[rights] type = server.rights.plugin``.

Adapts Radicale 3.9's ``BaseRights.authorization(user, user_groups, path)`` to
``server.rights.policy``: the requester's role and teams come from the groups the auth
plugin hands over (``role:rep``, ``team:north``), the collection's owner and grants from the
database. Radicale asks several times per request; answers are kept for that request only,
so a revoked grant or a new role counts from the next request on.
"""

from __future__ import annotations

import logging

from radicale import pathutils, rights
from sqlalchemy.orm import Session

from server import request_context
from server.crm import access, db
from server.rights import policy

logger = logging.getLogger("radicale-crm")


class Rights(rights.BaseRights):

    def __init__(self, configuration) -> None:
        super().__init__(configuration)
        self._engine = db.shared_engine(db.url_from_config(configuration),
                                       db.pool_size_from_config(configuration))

    def authorization(self, user: str, user_groups: set, path: str) -> str:
        if not user:
            return ""
        sane = pathutils.strip_path(path)
        memo = request_context.memo()
        key = ("rights", user, sane)
        if key not in memo:
            try:
                memo[key] = self._decide(user, user_groups or set(), sane, memo)
            except Exception as e:
                if db.is_outage(e):
                    request_context.mark_db_unavailable(e)
                raise
        return memo[key]

    def _decide(self, user: str, groups: set, path: str, memo: dict) -> str:
        with Session(self._engine) as session:
            subject = access.subject_of(session, user, groups, memo)
            if subject is None:
                return ""
            return policy.letters(subject, access.resolve(session, path, subject))
