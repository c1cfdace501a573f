"""Enrichment's pure pieces: reading Spotify's values (runs are in the integration tier)."""

from __future__ import annotations

from tasks.enrichment.enrich import release_date


def test_release_dates_of_every_precision_are_read() -> None:
    assert release_date("1981-12-15") == "1981-12-15"
    assert release_date("1981-12") == "1981-12-01"
    assert release_date("1981") == "1981-01-01"
    assert release_date("0000") is None
    assert release_date(None) is None
    assert release_date("soon") is None
