"""Login against the users table: disabled accounts, password changes, hash upgrades."""

from __future__ import annotations

import bcrypt
from sqlalchemy.orm import Session
from sqlalchemy import select

from davclient import Dav
from server.crm import access, db, users
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
