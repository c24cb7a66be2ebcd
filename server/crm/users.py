"""Users: accounts, roles and password hashes (passlib's CryptContext)."""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from typing import Optional

from passlib.context import CryptContext
from sqlalchemy import select
from sqlalchemy.orm import Session

from server.crm.errors import AlreadyExists, InvalidInput, NotFound
from server.crm.models import User
from server.rights.policy import ROLES  # the one list of roles

# argon2id is the scheme new hashes get; bcrypt hashes (imported from elsewhere) still verify
# and are re-hashed to argon2 at the next successful login ("deprecated=auto").
passwords = CryptContext(schemes=["argon2", "bcrypt"], deprecated="auto",
                         argon2__memory_cost=65536, argon2__time_cost=3,
                         argon2__parallelism=4)

# Radicale 3.8+: no ':' or ',', not starting or ending with '@', at most one '@'; no '/'.
_USERNAME = re.compile(r"^[a-z0-9](?:[a-z0-9._+-]*(?:@[a-z0-9._-]+)?)?$")


@dataclass(frozen=True)
class UserInfo:
    username: str
    role: str
    email: Optional[str]
    disabled: bool
    created_at: str

    @classmethod
    def of(cls, user: User) -> "UserInfo":
        return cls(user.username, user.role, user.email, user.disabled,
                   user.created_at.isoformat(timespec="seconds"))


def normalize_username(name: str) -> str:
    name = name.strip().lower()
    if not _USERNAME.match(name) or len(name) > 255 or name.endswith(("@", ".")):
        raise InvalidInput(f"invalid user name {name!r}: use lower-case letters, digits and "
                           "._+- (one @ allowed inside)")
    return name


def generate_password() -> str:
    return secrets.token_urlsafe(15)


def check_password(password: str) -> str:
    if len(password) < 8:
        raise InvalidInput("password too short: at least 8 characters")
    if len(password) > 1024:
        raise InvalidInput("password too long: at most 1024 characters")
    return password


def find_user(session: Session, username: str) -> Optional[User]:
    return session.scalar(select(User).where(User.username == username.strip().lower()))


def get_user(session: Session, username: str) -> User:
    user = find_user(session, username)
    if user is None:
        raise NotFound("user", username)
    return user


def add_user(session: Session, username: str, password: str, role: str = "rep",
             email: Optional[str] = None) -> User:
    username = normalize_username(username)
    check_role(role)
    if session.scalar(select(User.id).where(User.username == username)) is not None:
        raise AlreadyExists("user", username)
    user = User(username=username, password_hash=passwords.hash(check_password(password)),
                role=role, email=email, disabled=False)
    session.add(user)
    session.flush()
    return user


def list_users(session: Session) -> list[User]:
    return list(session.scalars(select(User).order_by(User.username)))


def set_disabled(session: Session, username: str, disabled: bool) -> User:
    user = get_user(session, username)
    user.disabled = disabled
    return user


def check_role(role: str) -> str:
    if role not in ROLES:
        raise InvalidInput(f"unknown role {role!r}: choose one of {', '.join(ROLES)}")
    return role


def set_role(session: Session, user: User, role: str) -> User:
    user.role = check_role(role)
    session.flush()
    return user


def set_password(session: Session, username: str, password: str) -> User:
    user = get_user(session, username)
    user.password_hash = passwords.hash(check_password(password))
    return user


def login_state(session: Session, username: str) -> Optional[tuple[str, bool]]:
    """(password hash, disabled) of a user, or None: the cheap per-request check."""
    row = session.execute(select(User.password_hash, User.disabled)
                          .where(User.username == username)).first()
    return (row.password_hash or "", row.disabled) if row else None


def verify_password(session: Session, username: str, password: str) -> bool:
    """Full verification; upgrades a deprecated hash in place (the caller commits)."""
    user = session.scalar(select(User).where(User.username == username))
    if user is None or user.disabled or not user.password_hash:
        passwords.dummy_verify()
        return False
    valid, new_hash = passwords.verify_and_update(password, user.password_hash)
    if valid and new_hash:
        user.password_hash = new_hash
    return valid
