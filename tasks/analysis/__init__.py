"""Per-track audio analysis (energy, mood, genre), run as ledger tasks."""
