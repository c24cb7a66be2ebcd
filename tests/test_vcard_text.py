"""cards.vcard writes the text vobject would: published cards keep their ETags."""

from __future__ import annotations

import random

import pytest
import vobject

from server.crm import cards

PIECES = ["Jana", "Nováková", "王小明", "O'Brien", "a,b", "x;y", "back\\slash", "line\nbreak",
          "cr\r\nlf", "🙂", "Ž" * 40, "x" * 80, "Müller-Lüdenscheidt", " ", "Ing.", "é" * 37]


def reference(contact_id, name, title, company, emails, phones) -> str:
    card = vobject.vCard()
    card.add("uid").value = f"crm-contact-{contact_id}"
    card.add("fn").value = name
    family, given = cards._split_name(name)
    card.add("n").value = vobject.vcard.Name(family=family, given=given)
    if company:
        card.add("org").value = [company]
    if title:
        card.add("title").value = title
    for address in emails:
        line = card.add("email")
        line.value = address
        line.type_param = "INTERNET"
    for number in phones:
        card.add("tel").value = number
    return card.serialize()


def text(rng: random.Random) -> str:
    return " ".join(rng.choice(PIECES) for _ in range(rng.randint(1, 6)))


@pytest.mark.parametrize("seed", range(40))
def test_vcard_is_what_vobject_writes(seed):
    rng = random.Random(seed)
    args = (rng.randint(1, 10**6), text(rng).strip() or "N",
            text(rng) if rng.random() < 0.5 else None,
            text(rng) if rng.random() < 0.6 else None,
            [f"{text(rng)[:30]}@example.com" for _ in range(rng.randint(0, 3))],
            [f"+421 {rng.randint(0, 10**9)}" for _ in range(rng.randint(0, 2))])
    assert cards.vcard(*args) == reference(*args)


def test_cjk_names_split_family_first():
    assert "N:王;小明;;;\r\n" in cards.vcard(1, "王小明", None, None, [], [])
