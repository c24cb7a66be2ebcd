"""Login against the users table: disabled accounts, password changes, hash upgrades,
throttling of failed logins, and passwords kept out of the log."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
import time
import uuid

import bcrypt
import pytest
from sqlalchemy.orm import Session
from sqlalchemy import select

from conftest import create_user
from crmkit import Crm
from davclient import Dav, http_request, make_configuration
from ical import event
from server.app import CrmApplication
from server.crm import access, audit, db, throttle, users
from server.crm.models import User


def test_disabled_user_is_refused_on_the_next_request(app, make_user, db_url):
    name, password = make_user()
    client = Dav(app, name, password)
    assert client.propfind(f"/{name}/").status == 207  # verified and cached
    with Session(db.shared_engine(db_url)) as s, s.begin():
        users.set_disabled(s, name, True)
    assert client.propfind(f"/{name}/").status == 401
    with Session(db.shared_engine(db_url)) as s, s.begin():
        users.set_disabled(s, name, False)
    assert client.propfind(f"/{name}/").status == 207


def test_changed_password_takes_effect_at_once(app, make_user, db_url):
    name, password = make_user()
    assert Dav(app, name, password).propfind(f"/{name}/").status == 207
    with Session(db.shared_engine(db_url)) as s, s.begin():
        users.set_password(s, name, "a brand new password")
    assert Dav(app, name, password).propfind(f"/{name}/").status == 401
    assert Dav(app, name, "a brand new password").propfind(f"/{name}/").status == 207


def test_bcrypt_hash_is_accepted_and_upgraded_to_argon2(app, make_user, db_url):
    name, _ = make_user()
    legacy = bcrypt.hashpw(b"legacy password", bcrypt.gensalt(rounds=4)).decode()
    with Session(db.shared_engine(db_url)) as s, s.begin():
        s.scalar(select(User).where(User.username == name)).password_hash = legacy
    assert Dav(app, name, "legacy password").propfind(f"/{name}/").status == 207
    with Session(db.shared_engine(db_url)) as s:
        stored = s.scalar(select(User.password_hash).where(User.username == name))
    assert stored.startswith("$argon2id$")
    assert Dav(app, name, "legacy password").propfind(f"/{name}/").status == 207


def test_login_is_case_insensitive_on_the_name(app, make_user):
    name, password = make_user()
    assert Dav(app, name.upper(), password).propfind(f"/{name}/").status == 207


def test_role_and_teams_reach_radicale_as_groups_read_afresh(app, make_user, db_url):
    name, password = make_user(role="manager")
    auth = app._auth
    assert auth._login_ext_with_groups(name, password, None) == (name, {"role:manager"})
    team = "grp-" + name
    with Session(db.shared_engine(db_url)) as s, s.begin():
        access.add_member(s, access.add_team(s, team), users.get_user(s, name))
        users.set_role(s, users.get_user(s, name), "viewer")
    assert auth._login_ext_with_groups(name, password, None) == (
        name, {"role:viewer", f"team:{team}"})
    assert auth._login_ext_with_groups(name, "wrong password", None) == ("", set())


# --- throttling of failed logins --------------------------------------------------------------

def throttled_app(db_url, **auth):
    """Throttling on (the test default turns it off), the client address taken from
    X-Forwarded-For as a trusted proxy at 127.0.0.1 would send it: each test uses addresses
    of its own, so tests sharing one PostgreSQL database do not count against each other."""
    options = {"delay": "0", "throttle_window": "60", "throttle_account_failures": "3",
               "throttle_address_failures": "100", "trusted_proxies": "127.0.0.1/32", **auth}
    return CrmApplication(make_configuration(db_url, auth=options))


def fresh_address() -> str:
    return "198.51.100.%d" % (uuid.uuid4().int % 250 + 1)


def login(app, name, password, address):
    return Dav(app, name, password, {"X-Forwarded-For": f"10.9.9.9, {address}"}).propfind(
        f"/{name}/")


def test_repeated_failures_lock_the_account_even_for_the_right_password(db_url, make_user,
                                                                         snapshot):
    app = throttled_app(db_url)
    name, password = make_user()
    other, other_password = make_user()
    address = fresh_address()
    for n in range(3):
        assert login(app, name, f"guess number {n}", address).status == 401
    refused = login(app, name, password, address)      # right, but a guesser must not learn it
    assert refused.status == 429
    assert 1 <= int(refused.headers["retry-after"]) <= 61
    assert refused.text.count("\n") == 1 and refused.text.startswith(
        "too many failed logins for this account or address: retry in ")
    assert login(app, name, password, fresh_address()).status == 429   # from anywhere
    assert login(app, other, other_password, address).status == 207   # others go on
    before = snapshot()
    assert login(app, name, "yet another guess", address).status == 429
    assert snapshot() == before           # refused logins are not counted, nothing changes
    with Session(db.shared_engine(db_url)) as s:
        key = throttle.account_key(name)
        assert throttle.counters(s, [key])[key].failures == 3
    Crm(db_url, None, None).cli("user", "unlock", name)
    assert login(app, name, password, address).status == 207


def test_one_stale_password_repeated_by_a_device_counts_once(db_url, make_user):
    app = throttled_app(db_url)
    name, password = make_user()
    address = fresh_address()
    for _ in range(10):        # a phone polling with the password from before a change
        assert login(app, name, "the old password", address).status == 401
    assert login(app, name, password, address).status == 207


def test_repeated_failures_from_one_address_throttle_that_address(db_url, make_user):
    app = throttled_app(db_url, throttle_address_failures="4")
    name, password = make_user()
    address = fresh_address()
    for n in range(4):          # unknown accounts count against the address only
        assert login(app, f"nobody{n}", "whatever123", address).status == 401
    assert login(app, name, password, address).status == 429
    assert login(app, name, password, fresh_address()).status == 207


def test_x_forwarded_for_is_ignored_unless_the_peer_is_a_trusted_proxy(db_url, make_user):
    app = throttled_app(db_url, trusted_proxies="", throttle_address_failures="3")
    name, password = make_user()
    # The peer (127.0.0.1 here) is the address: a forged header does not dodge the count.
    # Each run uses a fresh account, and the peer's counter may carry other tests' failures:
    # on PostgreSQL they share one database. Forget it first.
    Crm(db_url, None, None).cli("user", "unlock", name, "--address", "127.0.0.1")
    for n in range(3):
        assert login(app, f"ghost{n}x{uuid.uuid4().hex[:6]}", "pw123456", fresh_address()
                     ).status == 401
    assert login(app, name, password, fresh_address()).status == 429
    Crm(db_url, None, None).cli("user", "unlock", name, "--address", "127.0.0.1")
    assert login(app, name, password, fresh_address()).status == 207


def test_the_window_ends_the_throttle(db_url, make_user):
    app = throttled_app(db_url, throttle_window="1")
    name, password = make_user()
    address = fresh_address()
    for n in range(3):
        assert login(app, name, f"wrong {n}", address).status == 401
    assert login(app, name, password, address).status == 429
    time.sleep(1.2)
    assert login(app, name, password, address).status == 207


def test_radicales_delay_on_a_failed_login_stays_on(db_url, make_user):
    app = throttled_app(db_url, delay="0.2")
    name, password = make_user()
    started = time.monotonic()
    assert login(app, name, "not it at all", fresh_address()).status == 401
    assert time.monotonic() - started >= 0.1     # Radicale sleeps 0.5-1.5 x the delay


def test_passwords_never_reach_the_log(db_url, live_server, tmp_path):
    """A debug-level log of logins that succeed, fail and are throttled, of writes and of
    the CLI setting passwords: neither a password nor its Basic token appears in it."""
    secret, wrong = "Sekret-Pass-4471", "Wrong-Pass-9931"
    name, _ = create_user(db_url, password=secret)
    server = live_server(db_url, "--logging-level=debug", "--auth-throttle-window=60",
                         "--auth-throttle-account-failures=2")
    for password in (secret, wrong, wrong + "2", secret, wrong + "3"):
        http_request(server.url, name, password, "PROPFIND", f"/{name}/", b"", {"Depth": "1"})
    http_request(server.url, name, secret, "PUT", f"/{name}/calendar/p.ics",
                 event("p"), {"Content-Type": "text/calendar"})
    new = "Brand-New-Pass-5512"
    cli = subprocess.run([os.path.join(os.path.dirname(sys.executable), "crm-admin"),
                          "--db-url", db_url, "user", "passwd", name, "--password-stdin"],
                         input=new + "\n", capture_output=True, text=True, check=True)
    server.stop()
    log = open(server.log_path, encoding="utf-8").read() + cli.stdout + cli.stderr
    assert "Login throttled" in log and "Failed login attempt" in log   # it did log logins
    for password in (secret, wrong, wrong + "2", wrong + "3", new):
        assert password not in log
        token = base64.b64encode(f"{name}:{password}".encode()).decode()
        assert token not in log


def test_the_audit_records_the_client_behind_a_trusted_proxy(db_url, make_user):
    name, password = make_user()
    address = fresh_address()
    for app, expected in ((throttled_app(db_url), address),
                          (throttled_app(db_url, trusted_proxies=""), "127.0.0.1")):
        rep = Dav(app, name, password, {"X-Forwarded-For": f"10.9.9.9, {address}"})
        href = f"a{uuid.uuid4().hex[:6]}.ics"
        assert rep.put(f"/{name}/calendar/{href}", event(href)).status == 201
        with Session(db.shared_engine(db_url)) as s:
            [entry] = audit.entries(s, obj=f"{name}/calendar/{href}")
        assert entry.client == expected


def test_bad_throttle_settings_and_unknown_users_are_refused_with_a_reason(db_url):
    with pytest.raises(RuntimeError, match=r"\[auth\] trusted_proxies: 'not-an-ip' is not an "
                                           r"address or network"):
        throttled_app(db_url, trusted_proxies="127.0.0.1, not-an-ip")
    out = Crm(db_url, None, None).cli("user", "unlock", "nobody-at-all", expect=1)
    assert out.startswith("crm-admin: error: ") and out.count("\n") == 1
