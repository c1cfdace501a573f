"""Enrichment of imported listens with Spotify metadata, within Spotify's rate limits."""
