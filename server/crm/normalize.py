"""Normal forms the CRM compares by: folded names, company names without legal forms,
blocking keys, e-mail addresses and domains, phone numbers.

Pure functions, no database. Folding removes accents and case ("Ján Novák" → "jan novak"),
so Slovak, Czech or German spellings with and without diacritics meet. Company names also
lose their legal form in several languages ("Škoda Auto a.s." → "skoda auto",
"华为技术有限公司" → "华为技术").
"""

from __future__ import annotations

import re
import unicodedata
from typing import Iterable, Optional

# Legal forms, as commonly written; dots and spaces inside them are optional when matching.
_LATIN_LEGAL_FORMS = (
    # English
    "incorporated", "inc", "corporation", "corp", "company", "co", "limited", "ltd", "llc",
    "llp", "lp", "plc", "pty", "pty ltd", "co ltd", "co., ltd.",
    # German, Austrian, Swiss
    "gmbh", "gmbh & co. kg", "mbh", "ag", "kg", "kgaa", "ohg", "e.v.", "ug",
    # Slovak, Czech
    "s.r.o.", "spol. s r.o.", "a.s.", "k.s.", "v.o.s.", "s.p.", "druzstvo",
    # French, Spanish, Italian, Portuguese
    "s.a.", "sa", "sarl", "sas", "s.a.s.", "s.l.", "sl", "s.p.a.", "spa", "s.r.l.", "srl", "ltda",
    # Dutch, Nordic, Polish, Japanese romanised
    "b.v.", "bv", "n.v.", "nv", "oy", "oyj", "ab", "as", "asa", "a/s", "aps",
    "sp. z o.o.", "s.a.", "kk", "k.k.",
)
# CJK legal forms are substrings, not words: longest first.
_CJK_LEGAL_FORMS = ("股份有限公司", "有限责任公司", "有限責任公司", "有限公司", "株式会社",
                    "合同会社", "有限会社", "公司")

_CJK = r"\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff"
_CJK_RUN = re.compile(f"[{_CJK}]+")
_NON_WORD = re.compile(r"[^\w]+", re.UNICODE)


def _legal_form_pattern(form: str) -> str:
    groups = [g for g in re.split(r"[\s.,]+", form) if g]
    body = r"[\s.,]*".join(re.escape(g) for g in groups)
    return rf"(?<![\w&/]){body}\.?(?![\w&/])"


_LEGAL_FORMS = re.compile("|".join(_legal_form_pattern(f) for f in
                                   sorted(set(_LATIN_LEGAL_FORMS), key=len, reverse=True)))


def fold(text: str) -> str:
    """Lower case, no accents, compatibility forms unified (full-width → ASCII)."""
    decomposed = unicodedata.normalize("NFKD", text or "")
    stripped = "".join(c for c in decomposed if not unicodedata.combining(c))
    return unicodedata.normalize("NFC", stripped).casefold()


def _words(folded: str) -> str:
    return " ".join(_NON_WORD.sub(" ", folded).replace("_", " ").split())


def person_name(name: str) -> str:
    """A person's name as compared: folded, punctuation gone, spaces collapsed."""
    return _words(fold(name))[:255]


def company_name(name: str) -> str:
    """A company name as compared: folded, legal forms removed wherever they appear."""
    folded = fold(name)
    for form in _CJK_LEGAL_FORMS:
        folded = folded.replace(form, " ")
    stripped = _words(_LEGAL_FORMS.sub(" ", folded))
    # A name that is nothing but a legal form ("Company Ltd" → "") keeps its words.
    return (stripped or _words(folded))[:255]


def text_for_matching(text: str) -> str:
    """Free text (SUMMARY, LOCATION) in the same normal form as company names."""
    return company_name(text)


def keys(normalized: str) -> set[str]:
    """Blocking keys: words of two or more characters, and two-character runs of CJK text
    (which has no spaces between words)."""
    out: set[str] = set()
    for word in normalized.split():
        for run in _CJK_RUN.findall(word):
            out.update(run[i:i + 2] for i in range(max(1, len(run) - 1)))
        latin = _CJK_RUN.sub(" ", word).split()
        out.update(w[:64] for w in latin if len(w) >= 2)
    return out


def email(value: Optional[str]) -> Optional[str]:
    """``mailto:Jan@Acme.SK`` → ``jan@acme.sk``; None if it is not an address."""
    if not value:
        return None
    text = value.strip()
    if text[:7].lower() == "mailto:":
        text = text[7:]
    text = text.strip().strip("<>").lower()
    local, at, domain = text.rpartition("@")
    if not at or not local or "." not in domain or any(c.isspace() for c in text):
        return None
    return text[:320]


def domain_of(address: str) -> str:
    return address.rpartition("@")[2]


def domain_candidates(domain: str) -> list[str]:
    """``eu.sales.acme.com`` → itself and its parents down to ``acme.com``."""
    parts = domain.split(".")
    return [".".join(parts[i:]) for i in range(len(parts) - 1)]


def domain_matches(domain: str, configured: Iterable[str]) -> bool:
    """Whether ``domain`` is one of ``configured`` or a subdomain of one."""
    wanted = set(configured)
    return any(candidate in wanted for candidate in domain_candidates(domain))


def phone(value: Optional[str]) -> Optional[str]:
    """Digits only, with the leading + kept; None if too short to identify anyone."""
    if not value:
        return None
    text = value.strip()
    if text[:4].lower() == "tel:":
        text = text[4:]
    digits = re.sub(r"\D", "", text)
    if len(digits) < 6:
        return None
    return ("+" if text.lstrip().startswith(("+", "00")) else "") + \
        (digits[2:] if text.lstrip().startswith("00") else digits)


def display_name_from_email(address: str) -> str:
    """``jan.novak@acme.sk`` → ``Jan Novak``: a contact created without a CN."""
    local = address.partition("@")[0]
    words = [w for w in re.split(r"[._\-+]+", local) if w]
    return " ".join(w.capitalize() for w in words) or address
