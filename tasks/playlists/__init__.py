"""Smart playlists: four kinds per user, each with an expiry."""
