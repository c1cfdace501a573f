"""All models; import from here. One module per thing modelled: music (users, artists,
tracks, plays), imports (uploads, listens, Spotify tokens), spotify (the catalogue cache),
listening (stats), trending, playlists, ledger (background tasks), runs (run history,
dead letters, broker resets), schedules (the live schedule, its audit trail, fires, the
beat leader), console (admin users, tokens, audit log, alert incidents), workflows (rules,
the status changes they watch, their executions, notifications), ingest (media ingest
jobs, the pipeline's live controls, the images made for tracks)."""

from db.models.base import Base
from db.models.console import ROLES, AdminAudit, AdminUser, AlertIncident, ApiToken
from db.models.imports import Listen, SpotifyToken, UploadJob
from db.models.ingest import (
    INGEST_STATUSES,
    INGEST_STEPS,
    IngestJob,
    IngestPipeline,
    TrackImage,
)
from db.models.ledger import BackgroundTask
from db.models.listening import (
    AggregationWatermark,
    ListeningStatsDirty,
    UserArtistPlays,
    UserListeningStats,
    UserTrackPlays,
)
from db.models.music import Album, Artist, PlayHistory, Track, User
from db.models.playlists import PLAYLIST_TYPES, SmartPlaylist
from db.models.runs import BrokerReset, DeadLetter, TaskRun, TaskRunCommit
from db.models.schedules import BeatLeader, ScheduleChange, ScheduleEntry, ScheduleFire
from db.models.spotify import SpotifyArtist, SpotifyMatch, SpotifyTrack
from db.models.trending import TrendingTrack
from db.models.workflows import (
    EXECUTION_STATUSES,
    JobStatusChange,
    Notification,
    Workflow,
    WorkflowExecution,
)

__all__ = [
    "EXECUTION_STATUSES",
    "INGEST_STATUSES",
    "INGEST_STEPS",
    "PLAYLIST_TYPES",
    "ROLES",
    "AdminAudit",
    "AdminUser",
    "AggregationWatermark",
    "Album",
    "AlertIncident",
    "ApiToken",
    "Artist",
    "BackgroundTask",
    "Base",
    "BeatLeader",
    "BrokerReset",
    "DeadLetter",
    "IngestJob",
    "IngestPipeline",
    "JobStatusChange",
    "Listen",
    "ListeningStatsDirty",
    "Notification",
    "PlayHistory",
    "ScheduleChange",
    "ScheduleEntry",
    "ScheduleFire",
    "SmartPlaylist",
    "SpotifyArtist",
    "SpotifyMatch",
    "SpotifyToken",
    "SpotifyTrack",
    "TaskRun",
    "TaskRunCommit",
    "Track",
    "TrackImage",
    "TrendingTrack",
    "UploadJob",
    "User",
    "UserArtistPlays",
    "UserListeningStats",
    "UserTrackPlays",
    "Workflow",
    "WorkflowExecution",
]
