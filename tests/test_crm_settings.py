"""CRM settings come from ``[storage] crm_*``; a wrong value stops the server with one line."""

from __future__ import annotations

import pytest

from davclient import make_configuration
from server.app import CrmApplication
from server.crm.errors import InvalidInput
from server.crm.settings import CrmSettings


def test_defaults_and_parsing():
    defaults = CrmSettings.from_options(lambda name: None)
    assert defaults.match_threshold == 80 and "gmail.com" in defaults.free_mail_domains
    parsed = CrmSettings.from_options({"crm_internal_domains": "OurCo.example, @sub.ourco.example",
                                       "crm_match_threshold": " 90 "}.get)
    assert parsed.internal_domains == {"ourco.example", "sub.ourco.example"}
    assert parsed.match_threshold == 90


@pytest.mark.parametrize("option,value,reason", [
    ("crm_match_threshold", "high", "[storage] crm_match_threshold = 'high' is not a whole number"),
    ("crm_match_threshold", "0", "[storage] crm_match_threshold = 0 is outside 1..100"),
    ("crm_recurrence_horizon_days", "-5", "is outside 1..36600"),
    ("crm_max_occurrences", "1e9", "is not a whole number"),
])
def test_a_wrong_value_stops_the_server_with_one_line(sqlite_url, option, value, reason):
    with pytest.raises(InvalidInput) as refused:
        CrmApplication(make_configuration(sqlite_url, storage={option: value}))
    assert reason in str(refused.value) and "\n" not in str(refused.value)
