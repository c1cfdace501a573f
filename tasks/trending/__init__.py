"""Trending tracks: trend score, plays and unique listeners over 24 h and 7 d."""
