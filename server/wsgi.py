"""WSGI entry for gunicorn and other WSGI servers::

    gunicorn --workers 4 --bind 127.0.0.1:5232 server.wsgi:application

The configuration comes from ``$RADICALE_CONFIG`` / ``$CRM_CONFIG`` / ``./config/radicale.conf``
over the built-in defaults, exactly as for ``crm-server``.
"""

from __future__ import annotations

import threading

from radicale import config as radicale_config
from radicale import log

from server import config
from server.app import CrmApplication

_app = None
_lock = threading.Lock()


def _build() -> CrmApplication:
    # As Radicale's own WSGI entry does: without log.setup() Radicale's records (requests,
    # logins, errors) reached no handler under gunicorn, or came out without time or level.
    # Where the WSGI server already configured logging (gunicorn --log-config-json), setup()
    # leaves its handlers alone.
    log.setup()
    configuration = radicale_config.load(radicale_config.parse_compound_paths(config.compound()))
    log.set_level(configuration.get("logging", "level"),
                  configuration.get("logging", "backtrace_on_debug"),
                  configuration.get("logging", "trace_filter"))
    return CrmApplication(configuration)


def application(environ, start_response):
    global _app
    if _app is None:
        with _lock:
            if _app is None:
                _app = _build()
    return _app(environ, start_response)
