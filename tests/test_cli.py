"""crm-admin: output for people and scripts, one-line errors, exit codes, no partial changes."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys

import pytest

from admin_cli.main import main
from server.crm import schema

pytestmark = []


def run(capsys, url, *argv, stdin: str | None = None, monkeypatch=None):
    if stdin is not None:
        monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    code = main(["--db-url", url, *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_user_lifecycle(capsys, monkeypatch, db_url):
    code, out, _ = run(capsys, db_url, "user", "add", "Peter.Horvath", "--role", "manager",
                       "--password-stdin", stdin="long enough pw\n", monkeypatch=monkeypatch)
    assert code == 0 and out == "user peter.horvath created (role manager)\n"
    code, out, _ = run(capsys, db_url, "user", "add", "gen-user")
    assert code == 0 and out.splitlines()[1].startswith("password: ")
    assert len(out.splitlines()[1].split(": ", 1)[1]) >= 16
    code, out, _ = run(capsys, db_url, "user", "list", "--json")
    listed = {u["username"]: u for u in json.loads(out)}
    assert listed["peter.horvath"]["role"] == "manager" and not listed["gen-user"]["disabled"]
    code, out, _ = run(capsys, db_url, "user", "disable", "gen-user")
    assert code == 0 and out == "user gen-user disabled\n"
    code, out, _ = run(capsys, db_url, "user", "list")
    line = next(line for line in out.splitlines() if line.startswith("gen-user"))
    assert " yes " in line
    code, out, _ = run(capsys, db_url, "user", "add", "gen-user", "--if-missing")
    assert code == 0 and "already exists" in out


@pytest.mark.parametrize("argv,stdin,message", [
    (["user", "add", "bad/name"], None, "invalid user name 'bad/name'"),
    (["user", "add", "short", "--password-stdin"], "abc\n", "password too short"),
    (["user", "add", "nopw", "--password-stdin"], "\n", "no password on standard input"),
    (["user", "disable", "ghost"], None, "user 'ghost' does not exist"),
])
def test_refusals_are_one_line_and_change_nothing(capsys, monkeypatch, db_url, snapshot, argv,
                                                  stdin, message):
    before = snapshot()
    code, out, err = run(capsys, db_url, *argv, stdin=stdin, monkeypatch=monkeypatch)
    assert code == 1 and out == ""
    assert err == f"crm-admin: error: {message}" + err[len(f"crm-admin: error: {message}"):]
    assert err.count("\n") == 1 and message in err
    assert snapshot() == before


def test_duplicate_user(capsys, monkeypatch, db_url):
    run(capsys, db_url, "user", "add", "twice")
    code, _, err = run(capsys, db_url, "user", "add", "twice")
    assert code == 1 and err == "crm-admin: error: user 'twice' already exists\n"


def test_empty_database_and_unreachable_database(capsys, tmp_path):
    empty = f"sqlite:///{tmp_path}/empty.db"
    code, _, err = run(capsys, empty, "user", "list")
    assert code == 1 and "no radicale-crm schema: run `crm-admin db upgrade`" in err
    head = schema.head()
    code, out, _ = run(capsys, empty, "db", "upgrade")
    assert code == 0 and f"schema upgraded from empty to {head}" in out
    code, out, _ = run(capsys, empty, "db", "upgrade")
    assert code == 0 and f"schema already at {head}" in out
    code, out, _ = run(capsys, empty, "db", "status")
    assert code == 0 and out == f"schema {head} (latest {head})\n"
    code, _, err = run(capsys, "postgresql://postgres@127.0.0.1:1/x", "user", "list")
    assert code == 3 and err.startswith("crm-admin: error: database unavailable: ")
    assert err.count("\n") == 1


def test_console_script_reads_the_config_file(tmp_path):
    config = tmp_path / "radicale.conf"
    config.write_text(f"[storage]\ntype = server.storage.plugin\n"
                      f"db_url = sqlite:///{tmp_path}/fromconfig.db\n")
    exe = os.path.join(os.path.dirname(sys.executable), "crm-admin")
    done = subprocess.run([exe, "--config", str(config), "db", "upgrade"],
                          capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "fromconfig.db").exists()
    usage = subprocess.run([exe, "user"], capture_output=True, text=True)
    assert usage.returncode == 2 and "crm-admin user: error" in usage.stderr


def test_database_url_from_environment_and_precedence(tmp_path, monkeypatch, capsys):
    from admin_cli import context
    from server.crm import db as crm_db
    monkeypatch.chdir(tmp_path)  # no ./config/radicale.conf here
    monkeypatch.delenv("RADICALE_CONFIG", raising=False)
    monkeypatch.delenv("CRM_CONFIG", raising=False)
    monkeypatch.delenv("CRM_DATABASE_URL", raising=False)
    assert context.database_url(None, None) == "sqlite:///var/radicale-crm.db"
    monkeypatch.setenv("CRM_DATABASE_URL", f"sqlite:///{tmp_path}/env.db")
    assert context.database_url(None, None) == f"sqlite:///{tmp_path}/env.db"
    assert main(["db", "upgrade"]) == 0 and (tmp_path / "env.db").exists()
    config = tmp_path / "c.conf"
    config.write_text(f"[storage]\ndb_url = sqlite:///{tmp_path}/file.db\n")
    assert context.database_url([str(config)], None) == f"sqlite:///{tmp_path}/file.db"
    assert context.database_url([str(config)], "postgresql://u@h/d") == \
        "postgresql+psycopg://u@h/d"
    assert crm_db.resolve_url("postgres://u@h/d") == "postgresql+psycopg://u@h/d"
