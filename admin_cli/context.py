"""The database a command works on: same configuration files as the server."""

from __future__ import annotations

import configparser
import getpass
import os
import socket
from contextlib import contextmanager
from typing import Callable, Iterator, Optional, Sequence

from sqlalchemy import Engine, inspect
from sqlalchemy.orm import Session

from server import config
from server.crm import audit, db
from server.crm.settings import CrmSettings


class SchemaMissing(Exception):
    pass


def _parser(config_paths: Optional[Sequence[str]]) -> configparser.RawConfigParser:
    parser = configparser.RawConfigParser()
    parser.read([config.DEFAULTS, *config.operator_paths(config_paths)], encoding="utf-8")
    return parser


def database_url(config_paths: Optional[Sequence[str]], override: Optional[str]) -> str:
    if override:
        return db.resolve_url(override)
    return db.resolve_url(_parser(config_paths).get("storage", "db_url", fallback=""))


def settings(config_paths: Optional[Sequence[str]]) -> CrmSettings:
    """The CRM settings the server uses (``[storage] crm_*``), from the same files."""
    parser = _parser(config_paths)
    return CrmSettings.from_options(lambda name: parser.get("storage", name, fallback=None))


def engine_for(url: str) -> Engine:
    return db.make_engine(url, pool_size=1)


@contextmanager
def unit_of_work(engine: Engine) -> Iterator[Session]:
    """One transaction per command: committed if the command returns, rolled back if not."""
    if not inspect(engine).has_table("users"):
        raise SchemaMissing()
    with Session(engine, expire_on_commit=False) as session, session.begin():
        yield session


def record(session: Session, action: str, obj: str, summary: str) -> None:
    """Audit an operator's change, in the command's own transaction. The actor is the
    operating-system user: crm-admin runs on the server, for operators."""
    audit.append(session, audit.ADMIN_STREAM, action, obj, actor=operator(),
                 client="cli@" + socket.gethostname(), summary=summary)


def change(engine: Engine, action: str, obj: str, operation: Callable[[Session], str]) -> int:
    """Run one operator operation in its own unit of work, audit it with the summary it
    returns, print that summary."""
    with unit_of_work(engine) as session:
        summary = operation(session)
        record(session, action, obj, summary)
    print(summary)
    return 0


def operator() -> str:
    try:
        return "os:" + getpass.getuser()
    except Exception:
        return "os:uid%d" % os.getuid()
