"""CRM settings, read from the ``[storage]`` section of the Radicale configuration.

Radicale lets a plugin add options to its own section only, so the CRM's live there with a
``crm_`` prefix; the server and ``crm-admin`` read the same file.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Callable, Optional

from server.crm.errors import InvalidInput

DEFAULT_FREE_MAIL = (
    "gmail.com googlemail.com outlook.com hotmail.com live.com msn.com yahoo.com yahoo.co.uk "
    "icloud.com me.com mac.com aol.com proton.me protonmail.com gmx.com gmx.de gmx.net web.de "
    "t-online.de mail.ru yandex.ru yandex.com qq.com foxmail.com 163.com 126.com yeah.net "
    "sina.com sina.cn sohu.com aliyun.com naver.com seznam.cz email.cz centrum.cz centrum.sk "
    "azet.sk post.sk zoznam.sk atlas.sk pobox.sk")

# option name → (default, help); types are checked in ``from_options``.
OPTIONS = {
    "crm_internal_domains": ("", "e-mail domains of your own company (and their subdomains): "
                                 "such attendees are colleagues, never contacts"),
    "crm_free_mail_domains": (DEFAULT_FREE_MAIL, "domains that never identify a customer"),
    "crm_match_threshold": ("80", "similarity (0-100) at which two contact names are a possible "
                                  "duplicate and a summary or location names a customer"),
    "crm_match_margin": ("10", "points the best fuzzy customer match must lead the runner-up by"),
    "crm_recurrence_horizon_days": ("730", "recurring visits are expanded up to this many days "
                                           "ahead of today"),
    "crm_max_occurrences": ("1000", "at most this many occurrences are recorded per series"),
    "crm_max_attendees": ("200", "an event with more external attendees than this (a webinar, "
                                 "a mass invitation) is stored but is not a visit and makes no "
                                 "contacts"),
}


def _domains(text: str) -> frozenset[str]:
    return frozenset(d.strip().lower().lstrip("@").rstrip(".")
                     for d in re.split(r"[\s,]+", text or "") if d.strip())


@dataclass(frozen=True)
class CrmSettings:
    internal_domains: frozenset[str] = frozenset()
    free_mail_domains: frozenset[str] = field(default_factory=lambda: _domains(DEFAULT_FREE_MAIL))
    match_threshold: int = 80
    match_margin: int = 10
    recurrence_horizon_days: int = 730
    max_occurrences: int = 1000
    max_attendees: int = 200

    @classmethod
    def from_options(cls, get: Callable[[str], Optional[str]]) -> "CrmSettings":
        """``get(option)`` returns the configured string or None for the default."""
        def value(name: str) -> str:
            got = get(name)
            return OPTIONS[name][0] if got is None else str(got)

        def number(name: str, low: int, high: int) -> int:
            text = value(name).strip()
            try:
                number_ = int(text)
            except ValueError:
                raise InvalidInput(f"[storage] {name} = {text!r} is not a whole number") from None
            if not low <= number_ <= high:
                raise InvalidInput(f"[storage] {name} = {number_} is outside {low}..{high}")
            return number_

        return cls(internal_domains=_domains(value("crm_internal_domains")),
                   free_mail_domains=_domains(value("crm_free_mail_domains")),
                   match_threshold=number("crm_match_threshold", 1, 100),
                   match_margin=number("crm_match_margin", 0, 100),
                   recurrence_horizon_days=number("crm_recurrence_horizon_days", 1, 36600),
                   max_occurrences=number("crm_max_occurrences", 1, 100000),
                   max_attendees=number("crm_max_attendees", 1, 100000))
