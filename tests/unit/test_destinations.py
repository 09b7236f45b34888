"""Destination countries per account: the defence against SMS pumping."""

from __future__ import annotations

import pytest

from smsgw.domain import errors as de
from smsgw.domain.destinations import check_destination, country_of, normalize_countries


def test_countries_are_iso_codes_upper_cased_without_repeats():
    assert normalize_countries(["us", " GB", "US"]) == ("US", "GB")
    with pytest.raises(de.InvalidArgument) as bad:
        normalize_countries(["US", "XX"])
    assert bad.value.field == "countries[1]" and "ISO 3166" in bad.value.message


def test_a_number_abroad_is_refused_naming_its_country_and_an_empty_list_allows_all():
    assert (country_of("+14155550100"), country_of("+447400123456"), country_of("+33612345678")) == ("US", "GB", "FR")
    check_destination("+14155550100", ("US", "CA"))
    check_destination("+447400123456", ())
    with pytest.raises(de.DestinationNotAllowed) as refused:
        check_destination("+447400123456", ("US", "CA"))
    assert refused.value.field == "to" and refused.value.metadata == {"country": "GB"}
    assert "US, CA only" in refused.value.message
