"""All models; import from here. Split by area: music, imports, analytics, operations."""

from db.models.analytics import (
    PLAYLIST_TYPES,
    AggregationWatermark,
    ListeningStatsDirty,
    SmartPlaylist,
    TrendingTrack,
    UserArtistPlays,
    UserListeningStats,
    UserTrackPlays,
)
from db.models.base import Base
from db.models.imports import Listen, SpotifyToken, UploadJob
from db.models.music import Album, Artist, PlayHistory, Track, User
from db.models.operations import BackgroundTask, DeadLetter, TaskRun, TaskRunCommit
from db.models.spotify import SpotifyArtist, SpotifyMatch, SpotifyTrack

__all__ = [
    "PLAYLIST_TYPES",
    "AggregationWatermark",
    "Album",
    "Artist",
    "BackgroundTask",
    "Base",
    "DeadLetter",
    "Listen",
    "ListeningStatsDirty",
    "PlayHistory",
    "SmartPlaylist",
    "SpotifyArtist",
    "SpotifyMatch",
    "SpotifyToken",
    "SpotifyTrack",
    "TaskRun",
    "TaskRunCommit",
    "Track",
    "TrendingTrack",
    "UploadJob",
    "User",
    "UserArtistPlays",
    "UserListeningStats",
    "UserTrackPlays",
]
