-- Not a trigger: the reproducible randomness smart playlists are drawn with. The same
-- (user, track, seed) always gives the same number in [0, 1). The seed stands for the
-- playlist type and period, so a re-run the same day draws the same playlist and
-- tomorrow's differs. Integer hashes (no text built per candidate: it runs for every
-- candidate of every user); SQL and immutable, so the planner inlines it.
CREATE OR REPLACE FUNCTION playlist_random(user_id bigint, track_id bigint, seed bigint)
RETURNS double precision LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
        SELECT (hashint8extended(track_id, hashint8extended(user_id, seed))
                & 281474976710655)::double precision / 281474976710656.0
    $$;
