"""The access policy as a decision table: role × relation to the collection × grants."""

from __future__ import annotations

import pytest

from server.rights import policy
from server.rights.policy import Decision, GrantFact, Owner, PathFacts, Subject, Target

ME, MATE, FAR = "me", "mate", "far"


def subject(role: str) -> Subject:
    return Subject(ME, role, frozenset({"north"}))


def target(owner: str, tag: str = "VCALENDAR", name: str = "calendar",
           exists: bool = True) -> Target:
    teams = {ME: {"north"}, MATE: {"north"}, FAR: {"south"}}[owner]
    return Target(Owner(owner, "rep", frozenset(teams)), name, tag, exists)


WRITE_GRANT = (GrantFact("user", ME, "write"),)

# role: (own calendar, teammate's calendar, other team's calendar, granted write to me)
TABLE = {
    "admin":    ("write", "write",   "write", "write"),
    "manager":  ("write", "write",   None,    "write"),
    "rep":      ("write", "summary", None,    "write"),
    "viewer":   (None,    None,      None,    "read"),
    "external": (None,    None,      None,    "summary"),
}


@pytest.mark.parametrize("role", list(TABLE))
def test_role_tiers(role):
    own, mate, far, granted = TABLE[role]
    me = subject(role)
    # viewers' and externals' homes hold no calendar of their own: a new one is refused
    assert policy.decide(me, target(ME, tag="", exists=False)).level == own
    assert policy.decide(me, target(MATE)).level == mate
    assert policy.decide(me, target(FAR)).level == far
    assert policy.decide(me, target(FAR), WRITE_GRANT).level == granted


@pytest.mark.parametrize("kind,name", [("user", ME), ("team", "north"), ("role", "rep")])
def test_grants_reach_users_teams_and_roles(kind, name):
    decision = policy.decide(subject("rep"), target(FAR), (GrantFact(kind, name, "read"),))
    assert decision.level == "read"
    assert decision.reasons == (f"grant to {kind}:{name} at read",)


def test_grants_for_others_do_not_apply():
    grants = (GrantFact("user", "someone", "write"), GrantFact("team", "south", "write"),
              GrantFact("role", "manager", "write"))
    assert policy.decide(subject("rep"), target(FAR), grants).level is None


def test_highest_level_wins_and_caps_apply_after():
    grants = (GrantFact("team", "north", "busy"), GrantFact("user", ME, "write"))
    assert policy.decide(subject("rep"), target(MATE), grants).level == "write"
    capped = policy.decide(subject("external"), target(FAR), grants)
    assert capped.level == "summary" and "capped at summary for role external" in capped.reasons


def test_team_default_covers_calendars_not_address_books():
    assert policy.decide(subject("rep"), target(MATE, tag="VADDRESSBOOK")).level is None
    book_grant = (GrantFact("user", ME, "summary"),)
    assert policy.decide(subject("rep"), target(FAR, tag="VADDRESSBOOK"), book_grant).level \
        is None


def test_crm_books_are_never_writable():
    own_book = policy.decide(subject("rep"), target(ME, "VADDRESSBOOK", "crm-contacts"))
    assert own_book.level == "read"
    admin = policy.decide(subject("admin"), target(FAR, "VADDRESSBOOK", "crm-suggested"))
    assert admin.level == "read"


def test_reserved_names_cannot_be_created():
    assert policy.decide(subject("rep"), target(ME, "", "shared-12", exists=False)).level is None


def test_unknown_role_gets_nothing():
    assert policy.decide(Subject(ME, "intern"), target(ME)).level is None


# item classes: (collection level, full?) × CLASS → level the item is shown at
@pytest.mark.parametrize("level,full,klass,shown", [
    ("write", True, "PRIVATE", "write"),         # owner / admin: never narrowed
    ("write", False, "PUBLIC", "write"),
    ("write", False, None, "write"),
    ("write", False, "CONFIDENTIAL", "summary"),
    ("write", False, "PRIVATE", "busy"),
    ("read", False, "confidential", "summary"),
    ("summary", False, "CONFIDENTIAL", "summary"),
    ("busy", False, "CONFIDENTIAL", "busy"),
    ("read", False, "X-COMPANY-SECRET", "busy"),  # unknown class counts as PRIVATE
    ("busy", False, "PUBLIC", "busy"),
])
def test_item_classes_narrow_non_owners(level, full, klass, shown):
    assert policy.item_level(Decision(level, full=full), klass) == shown


# --- letters ----------------------------------------------------------------------------

def facts(kind: str, home: str, tgt=None, grants=(), sees_home=False) -> PathFacts:
    return PathFacts(kind, home, tgt, grants, sees_home)


@pytest.mark.parametrize("role,path_facts,expected", [
    ("rep", facts("root", ""), "R"),
    ("rep", facts("principal", ME), "RW"),
    ("viewer", facts("principal", ME), "RW"),          # auto-created; holds shared calendars
    ("rep", facts("principal", MATE, sees_home=True), "R"),
    ("rep", facts("principal", FAR), ""),
    ("admin", facts("principal", FAR), "RW"),
    ("rep", facts("collection", ME, target(ME)), "rw"),
    ("rep", facts("collection", MATE, target(MATE)), "rdol"),
    ("manager", facts("collection", MATE, target(MATE)), "rwdol"),
    ("admin", facts("collection", FAR, target(FAR)), "rw"),
    ("rep", facts("collection", FAR, target(FAR)), ""),
    ("viewer", facts("collection", ME, target(ME, tag="", exists=False)), ""),
    ("rep", facts("mirror", ME, target(MATE)), "rdol"),
    ("rep", facts("mirror", ME, target(FAR), WRITE_GRANT), "rwdol"),
    ("admin", facts("mirror", ME, target(FAR), WRITE_GRANT), "rwdol"),
    ("rep", facts("mirror", MATE, target(FAR), WRITE_GRANT), ""),   # someone else's home
    ("rep", facts("deep", ME), ""),
])
def test_letters(role, path_facts, expected):
    assert policy.letters(subject(role), path_facts) == expected


def test_no_subject_no_letters():
    assert policy.letters(None, facts("root", "")) == ""
