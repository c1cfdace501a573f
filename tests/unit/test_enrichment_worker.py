"""The measure the system tier's shared-limit test relies on, checked on its own."""

from __future__ import annotations

from tests.enrichment_support import busiest_window


def test_busiest_window_counts_half_open_intervals() -> None:
    assert busiest_window([0.0, 0.5, 1.0, 1.99, 2.0], 2.0) == 4
    assert busiest_window([], 2.0) == 0
