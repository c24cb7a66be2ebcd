"""Radicale rights plugin: ``[rights] type = server.rights.plugin``.

Adapts Radicale 3.9's ``BaseRights.authorization`` to ``server.rights.policy``.
"""

from __future__ import annotations

from radicale import pathutils, rights

from server.rights import policy


class Rights(rights.BaseRights):
    def authorization(self, user: str, user_groups: set, path: str) -> str:
        return policy.permissions(user or "", pathutils.strip_path(path))
