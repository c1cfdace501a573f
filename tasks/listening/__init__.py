"""Listening-history aggregation into per-user stats."""
