"""``crm-server``: Radicale's own server and command line, with radicale-crm's plugins.

Every Radicale flag works (``crm-server --server-hosts 127.0.0.1:5240``, ``--debug``,
``--storage-db-url sqlite:///other.db``, ``--verify-storage``).
"""

from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence


def main(argv: Optional[Sequence[str]] = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    pre = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    pre.add_argument("-C", "--config", nargs="*")
    known, rest = pre.parse_known_args(argv)

    from server import config  # no radicale import before argument handling

    import radicale.__main__
    import radicale.server

    from server.app import CrmApplication

    # Radicale's serve() builds `Application(configuration)`; ours wraps it (body capture,
    # size limit, one-line reasons, 503 on database outages).
    radicale.server.Application = CrmApplication
    sys.argv = ["crm-server", *rest, "--config", config.compound(known.config)]
    radicale.__main__.run()


if __name__ == "__main__":
    main()
