"""Where the configuration comes from: built-in defaults, then the operator's file(s).

The Radicale configuration file is the single source for the server and ``crm-admin``.
Order (later wins): ``server/defaults.conf``, then ``--config`` paths, else
``$RADICALE_CONFIG``, else ``$CRM_CONFIG``, else ``./config/radicale.conf`` if present.
"""

from __future__ import annotations

import os
from typing import Optional, Sequence

DEFAULTS = os.path.join(os.path.dirname(__file__), "defaults.conf")
LOCAL = os.path.join("config", "radicale.conf")


def operator_paths(explicit: Optional[Sequence[str]] = None) -> list[str]:
    """The operator's config files, most specific source only (as Radicale does)."""
    if explicit:
        return [p for p in explicit if p]
    for env in ("RADICALE_CONFIG", "CRM_CONFIG"):
        value = os.environ.get(env)
        if value:
            return [p for p in value.split(os.pathsep) if p]
    return [os.path.abspath(LOCAL)] if os.path.exists(LOCAL) else []


def compound(explicit: Optional[Sequence[str]] = None) -> str:
    """A Radicale compound config path: our defaults first, then the operator's files."""
    return os.pathsep.join([DEFAULTS, *operator_paths(explicit)])
