"""The one typed configuration object, read from the environment once per process.

Every knob the project has lives here; nothing else reads ``os.environ``. A bad value
stops start-up with one line that names the variable (see ``load_settings``).
"""

from __future__ import annotations

import functools
import ipaddress
from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# Where the embedded services listen when DATABASE_URL / REDIS_URL are unset. Fixed, so a
# second shell (`celery -A worker inspect ...`) finds the stack `automation up` started
# without any state file; chosen away from the standard ports so a local PostgreSQL or
# Redis never clashes.
EMBEDDED_POSTGRES_PORT = 55432
EMBEDDED_REDIS_PORT = 56379
EMBEDDED_DATABASE_URL = (
    f"postgresql+psycopg://postgres@127.0.0.1:{EMBEDDED_POSTGRES_PORT}/automation"
)
EMBEDDED_REDIS_URL = f"redis://127.0.0.1:{EMBEDDED_REDIS_PORT}/0"
REDIS_SCHEMES = ("redis://", "rediss://", "unix://")
# kombu's names for RabbitMQ (py-amqp): amqp:// and pyamqp:// are the same transport.
AMQP_SCHEMES = ("amqp://", "amqps://", "pyamqp://")
# The ingest pipeline's steps, for INGEST_STEP_CONCURRENCY's check: settings may not import
# the models (the layers in pyproject.toml), so a test holds this equal to
# db.models.ingest.INGEST_STEPS.
INGEST_STEP_NAMES = ("probe", "analysis", "images", "publish")


class SettingsError(Exception):
    """A setting is missing or invalid; the message is one line naming the variable."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=None, extra="ignore", frozen=True)

    environment: Literal["development", "production"] = "development"

    database_url: str = Field(
        default=EMBEDDED_DATABASE_URL,
        description="PostgreSQL for our tables and Celery's results (postgresql+psycopg://...).",
    )
    redis_url: str = Field(
        default=EMBEDDED_REDIS_URL,
        description="Redis: results, the run journal, heartbeats, locks and shared rate "
        "limits; the Celery broker too unless BROKER_URL names another.",
    )
    broker_url: str = Field(
        default="",  # empty: REDIS_URL (filled in by ``_broker_defaults_to_redis``)
        description="Celery's broker: a redis:// URL (the default, REDIS_URL) or a RabbitMQ "
        "amqp:// URL (quorum queues; README, 'Choosing RabbitMQ').",
    )
    timezone: str = Field(
        default="UTC",
        description="Timezone of the code's default schedule (beat_schedule.py) and of the "
        "playlists' day.",
    )
    data_dir: Path = Field(
        default=Path(".automation"),
        description="Embedded services' data, Flower's state, and `automation up`'s logs "
        "(DATA_DIR/logs).",
    )
    embedded_postgres_port: int = Field(
        default=EMBEDDED_POSTGRES_PORT,
        ge=1,
        le=65535,
        description="Where the embedded PostgreSQL listens (DATABASE_URL unset).",
    )
    embedded_redis_port: int = Field(
        default=EMBEDDED_REDIS_PORT,
        ge=1,
        le=65535,
        description="Where the embedded Redis listens (REDIS_URL unset).",
    )

    # Flower
    flower_port: int = Field(default=5555, ge=1, le=65535)
    flower_address: str = "127.0.0.1"
    flower_basic_auth: SecretStr | None = Field(
        default=None, description="user:password; required in production."
    )

    # The operators' console: the HTTP API, the status page and /metrics (console/)
    api_address: str = Field(
        default="127.0.0.1", description="Where the console listens; 0.0.0.0 in a container."
    )
    api_port: int = Field(default=8000, ge=1, le=65535)
    api_session_hours: float = Field(
        default=12.0, gt=0, description="A page login lasts this long."
    )
    api_login_max_failures: int = Field(
        default=5,
        ge=1,
        description="Failed logins (per name and per address) before further tries are "
        "refused for API_LOGIN_LOCKOUT_SECONDS.",
    )
    api_login_lockout_seconds: int = Field(default=15 * 60, ge=1)
    api_cookie_secure: bool | None = Field(
        default=None,
        description="Session cookie only over HTTPS; default: on in production.",
    )
    flower_url: str | None = Field(
        default=None,
        description="Flower as operators reach it, linked from the status page "
        "(default: http://FLOWER_ADDRESS:FLOWER_PORT).",
    )

    # Workers
    worker_max_memory_per_child_mb: int = Field(
        default=512, ge=64, description="A worker child over this is replaced after its task."
    )
    # Memory is bounded by the setting above; this is the backstop for a leak it cannot see.
    # Each replacement is a fork and fresh connections, so not every thousand tasks.
    worker_max_tasks_per_child: int = Field(
        default=10_000, ge=1, description="A worker child is replaced after this many tasks."
    )
    worker_lease_seconds: float = Field(
        default=60,
        ge=2,
        le=3600,
        description="A worker silent this long is presumed dead: its messages go back to "
        "their queues, its ledger rows are requeued and its runs marked lost.",
    )
    result_expires_seconds: int = Field(
        default=24 * 3600,
        ge=60,
        description="How long Redis keeps a task's result for a sender that waits on it.",
    )
    max_deliveries: int = Field(
        default=3,
        ge=1,
        description="Deliveries of one message that died with its worker before it is refused.",
    )

    # Beat (worker/schedules/)
    beat_lease_seconds: float = Field(
        default=30,
        ge=1,
        le=600,
        description="The beat leader's lease: a follower takes over within 4/3 of it after "
        "the leader dies; a slot fired within two leases of its time counts as on time.",
    )
    playlists_wait_for_aggregation_seconds: int = Field(
        default=2 * 3600,
        ge=0,
        description="playlists.generate_all waits at most this long for the day's "
        "listening.aggregate to finish, then builds on the stats as they are.",
    )

    # Spotify enrichment (tasks/enrichment/)
    spotify_client_id: str | None = None
    spotify_client_secret: SecretStr | None = None
    spotify_api_url: str = Field(
        default="https://api.spotify.com/v1/", description="Web API base (a stand-in in tests)."
    )
    spotify_token_url: str = "https://accounts.spotify.com/api/token"
    spotify_requests_per_minute: int = Field(
        default=180, ge=1, description="Shared by every worker and host (one Redis limiter)."
    )
    spotify_rate_window_seconds: float = Field(
        default=30.0,
        gt=0,
        le=60,
        description="Spotify counts over a rolling 30 s: at most the per-minute share of it.",
    )
    spotify_request_timeout_seconds: float = Field(default=10.0, gt=0)
    spotify_max_inline_wait_seconds: float = Field(
        default=35.0,
        ge=0,
        description="Longer waits (a 429's Retry-After) end the run and reschedule it.",
    )
    spotify_match_threshold: float = Field(
        default=0.85, gt=0, le=1, description="Least similarity of a non-exact match."
    )
    spotify_retry_not_found_after_hours: float = Field(
        default=14 * 24, gt=0, description="A song Spotify did not have is asked about again."
    )
    spotify_max_attempts: int = Field(
        default=5, ge=1, description="Failed requests (5xx, network) for one song, then failed."
    )
    enrichment_batch_size: int = Field(
        default=500, ge=1, le=10_000, description="Songs one step asks Spotify about."
    )
    enrichment_stall_alert_hours: float = Field(
        default=2.0, gt=0, description="Alert when a backlog has seen no progress this long."
    )
    token_encryption_key: SecretStr | None = Field(
        default=None,
        description="Fernet key(s), comma-separated: the first encrypts, all decrypt.",
    )
    alert_webhook_url: str | None = Field(
        default=None, description="Alerts are posted here as JSON (monitoring.check_alerts)."
    )
    alert_stuck_jobs: int = Field(
        default=100, ge=0, description="Alert when more ledger jobs than this are stuck pending."
    )
    alert_stuck_jobs_minutes: int = Field(
        default=60, ge=1, description="A ledger job pending longer than this counts as stuck."
    )
    alert_schedule_grace_seconds: int = Field(
        default=120,
        ge=1,
        description="A schedule slot not fired this long after its time is a missed slot.",
    )

    # Analytics and playlists (issues 3 and 4 use these)
    trending_top_n: int = Field(default=500, ge=1)
    playlist_length: int = Field(default=50, ge=1, le=500)
    playlist_max_artist_run: int = Field(default=2, ge=1)

    # Background-task ledger and audio analysis
    background_task_retention_days: int = Field(
        default=30, ge=1, description="Completed ledger rows are deleted after this."
    )
    failed_task_retention_days: int = Field(
        default=90, ge=1, description="Failed ledger rows are kept this long for inspection."
    )
    task_run_retention_days: int = Field(
        default=30, ge=1, description="Run history (task_runs) is deleted after this."
    )
    background_max_attempts: int = Field(
        default=3,
        ge=1,
        description="Claims of one ledger row (runs whose worker died count) before it fails.",
    )
    background_lost_after_seconds: int = Field(
        default=15 * 60,
        ge=60,
        description="A pending ledger row whose message is older than this is published again.",
    )
    background_dispatch_interval_seconds: float = Field(
        default=5.0,
        gt=0,
        description="The dispatcher's poll when no notification comes (missed NOTIFY).",
    )
    audio_root: Path | None = Field(
        default=None,
        description="Where relative tracks.audio_path values live (default DATA_DIR/audio).",
    )
    analysis_max_seconds: int = Field(
        default=120, ge=5, description="Audio read per track: this much from its middle."
    )

    # Event workflows (tasks/workflows)
    webhook_allowed_hosts: str = Field(
        default="",
        description="Hosts workflow webhooks may post to, comma-separated. Empty: any public "
        "host; private, loopback and link-local addresses only when their host is listed.",
    )
    workflow_webhook_timeout_seconds: float = Field(
        default=10.0, gt=0, le=60, description="A webhook that has not answered by then failed."
    )
    workflow_retry_base_seconds: float = Field(
        default=10.0,
        gt=0,
        description="First retry of a failed execution after about this; doubles each time.",
    )
    workflow_retry_cap_seconds: float = Field(
        default=3600.0, gt=0, description="No retry of an execution waits longer than this."
    )
    workflow_max_chain_depth: int = Field(
        default=3,
        ge=1,
        le=20,
        description="Workflows a change may pass through (one's action changing the job "
        "another fires on) before the next is refused as a loop.",
    )
    workflow_log_retention_days: int = Field(
        default=30, ge=1, description="Execution logs and matched changes are kept this long."
    )

    # Media ingest (tasks/ingest/)
    ingest_url: str = Field(
        default="",
        description="The ingest bucket, as an fsspec URL (s3://bucket/prefix, file:///srv/"
        "ingest). Empty: DATA_DIR/ingest, a local directory whose incoming/ is watched.",
    )
    ingest_max_bytes: int = Field(
        default=1024**3,
        ge=1,
        description="An uploaded file larger than this is refused (a 60-minute 44.1 kHz "
        "stereo WAV is 635 MB).",
    )
    ingest_thumbnail_sizes: str = Field(
        default="64,256,640",
        description="Cover thumbnail edges in pixels, comma-separated; a size added later is "
        "made for the catalogue by `automation ingest backfill images`.",
    )
    ingest_batch_size: int = Field(
        default=8,
        ge=1,
        le=10_000,
        description="Jobs in flight (published or running) at most; the rest wait in "
        "PostgreSQL, so a pause or a new order takes effect within a batch. Live value: "
        "`automation ingest config --batch-size`.",
    )
    ingest_rate_per_minute: int = Field(
        default=0,
        ge=0,
        description="Jobs started per minute at most; 0: as fast as the workers go. Live "
        "value: `automation ingest config --rate`.",
    )
    ingest_step_concurrency: str = Field(
        default="",
        description="Jobs running one step at once across all workers, as step=N pairs "
        "(analysis=2,images=4); a step not named is limited only by the workers. Live "
        "value: `automation ingest config --concurrency STEP=N`.",
    )
    ingest_max_attempts: int = Field(
        default=5,
        ge=1,
        description="Attempts of one job (transient failures, deaths of its worker) before "
        "it fails with its last error.",
    )
    ingest_retry_base_seconds: float = Field(
        default=5.0, gt=0, description="First retry of a job after about this; doubles."
    )
    ingest_retry_cap_seconds: float = Field(
        default=300.0, gt=0, description="No retry of a job waits longer than this."
    )
    ingest_waveform_columns: int = Field(
        default=1800, ge=100, le=20_000, description="Peaks measured per file for its waveform."
    )
    ingest_watch_settle_seconds: float = Field(
        default=1.0,
        ge=0,
        description="A file dropped into incoming/ is taken once its size has not changed "
        "for this long (a copy in progress is not a file yet).",
    )
    alert_ingest_queued_jobs: int = Field(
        default=100,
        ge=0,
        description="Alert when more ingest jobs than this have been queued for over "
        "ALERT_INGEST_QUEUED_MINUTES.",
    )
    alert_ingest_queued_minutes: int = Field(default=60, ge=1)

    @property
    def webhook_hosts(self) -> frozenset[str]:
        return frozenset(
            host.strip().lower() for host in self.webhook_allowed_hosts.split(",") if host.strip()
        )

    @property
    def ingest_bucket_url(self) -> str:
        if self.ingest_url:
            return self.ingest_url
        return (self.data_dir / "ingest").resolve().as_uri()

    @property
    def thumbnail_sizes(self) -> tuple[int, ...]:
        return tuple(sorted({int(size) for size in self.ingest_thumbnail_sizes.split(",")}))

    @property
    def step_concurrency(self) -> dict[str, int]:
        pairs = (p.partition("=") for p in self.ingest_step_concurrency.split(",") if p.strip())
        return {step.strip(): int(limit) for step, _, limit in pairs}

    @field_validator("ingest_thumbnail_sizes")
    @classmethod
    def _sizes(cls, value: str) -> str:
        try:
            sizes = [int(size) for size in value.split(",")]
        except ValueError:
            raise ValueError("must be pixel sizes, comma-separated (64,256,640)") from None
        if not sizes or any(not 1 <= size <= 4096 for size in sizes):
            raise ValueError("each size must be from 1 to 4096 pixels")
        return value

    @field_validator("ingest_step_concurrency")
    @classmethod
    def _step_limits(cls, value: str) -> str:
        for pair in filter(str.strip, value.split(",")):
            step, sep, limit = pair.partition("=")
            if step.strip() not in INGEST_STEP_NAMES or not sep or not limit.strip().isdigit():
                raise ValueError(
                    f"{pair.strip()!r}: must be step=N pairs, a step one of "
                    f"{', '.join(INGEST_STEP_NAMES)} and N a positive number"
                )
            if int(limit) < 1:
                raise ValueError(f"{pair.strip()!r}: a step's limit must be at least 1")
        return value

    @field_validator("database_url")
    @classmethod
    def _postgres_url(cls, value: str) -> str:
        # Accept the spellings other tools hand out, store the one SQLAlchemy wants.
        for prefix in ("postgres://", "postgresql://", "postgresql+psycopg2://"):
            if value.startswith(prefix):
                return "postgresql+psycopg://" + value[len(prefix) :]
        if not value.startswith("postgresql+psycopg://"):
            raise ValueError("must be a postgresql:// URL")
        return value

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, value: str) -> str:
        if not value.startswith(REDIS_SCHEMES):
            raise ValueError("must be a redis:// URL")
        return value

    @field_validator("broker_url")
    @classmethod
    def _broker_url(cls, value: str) -> str:
        if value and not value.startswith((*REDIS_SCHEMES, *AMQP_SCHEMES)):
            raise ValueError("must be a redis:// or amqp:// URL")
        return value

    @model_validator(mode="after")
    def _embedded_urls_follow_their_ports(self) -> Settings:
        # An unset URL names the embedded service, wherever it was told to listen; a
        # second stack (or a test) on other ports never touches the first one's data.
        # The model is frozen; this is its construction, not a change afterwards.
        if "database_url" not in self.model_fields_set:
            object.__setattr__(
                self,
                "database_url",
                f"postgresql+psycopg://postgres@127.0.0.1:{self.embedded_postgres_port}/automation",
            )
        if "redis_url" not in self.model_fields_set:
            object.__setattr__(self, "redis_url", f"redis://127.0.0.1:{self.embedded_redis_port}/0")
        return self

    @model_validator(mode="after")
    def _broker_defaults_to_redis(self) -> Settings:
        # The model is frozen; this is its construction, not a change afterwards.
        if not self.broker_url:
            object.__setattr__(self, "broker_url", self.redis_url)
        return self

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown timezone {value!r}") from exc
        return value

    @field_validator("flower_basic_auth")
    @classmethod
    def _user_password(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and ":" not in value.get_secret_value():
            raise ValueError("must be user:password")
        return value

    @field_validator("token_encryption_key")
    @classmethod
    def _fernet_keys(cls, value: SecretStr | None) -> SecretStr | None:
        # compose passes an unset variable as "": that means no key, not a bad one.
        if value is not None and not value.get_secret_value().strip():
            return None
        if value is not None:
            from cryptography.fernet import Fernet

            for key in value.get_secret_value().split(","):
                try:
                    Fernet(key.strip())
                except ValueError:
                    raise ValueError(
                        "must be Fernet keys (32 url-safe base64 bytes), comma-separated; "
                        "make one with `automation spotify new-key`"
                    ) from None
        return value

    @model_validator(mode="after")
    def _rate_window_holds_a_request(self) -> Settings:
        if self.spotify_rate_budget < 1:
            raise ValueError(
                "SPOTIFY_RATE_WINDOW_SECONDS: too short for SPOTIFY_REQUESTS_PER_MINUTE "
                "(the window must allow at least one request)"
            )
        return self

    @model_validator(mode="after")
    def _production_needs_explicit_services(self) -> Settings:
        # In production an unset URL is a mistake, not a request for the embedded stack.
        if self.environment == "production":
            for name in ("database_url", "redis_url", "flower_basic_auth"):
                if name not in self.model_fields_set:
                    raise ValueError(f"{name.upper()}: required when ENVIRONMENT=production")
        return self

    @model_validator(mode="after")
    def _flower_open_to_the_network_needs_credentials(self) -> Settings:
        # Flower shows every task's arguments and results and can revoke tasks: served
        # beyond this machine, it must ask who is there.
        if self.flower_basic_auth is None and not _is_loopback(self.flower_address):
            raise ValueError(
                f"FLOWER_BASIC_AUTH: required when FLOWER_ADDRESS ({self.flower_address}) "
                "is not a loopback address; without it Flower is open to the network"
            )
        return self

    @property
    def spotify_configured(self) -> bool:
        """An app to talk to Spotify as (compose passes unset variables as "")."""
        secret = self.spotify_client_secret
        return bool(self.spotify_client_id and secret is not None and secret.get_secret_value())

    @property
    def spotify_rate_budget(self) -> int:
        """Requests allowed in one rate window: its share of the per-minute limit."""
        return int(self.spotify_requests_per_minute * self.spotify_rate_window_seconds // 60)

    @property
    def broker_is_amqp(self) -> bool:
        """RabbitMQ rather than Redis: the pieces that read kombu's Redis keys stand aside."""
        return self.broker_url.startswith(AMQP_SCHEMES)

    @property
    def audio_directory(self) -> Path:
        return self.audio_root if self.audio_root is not None else self.data_dir / "audio"

    @property
    def secure_cookies(self) -> bool:
        return (
            self.environment == "production"
            if self.api_cookie_secure is None
            else (self.api_cookie_secure)
        )

    @property
    def flower_link(self) -> str:
        return self.flower_url or f"http://{self.flower_address}:{self.flower_port}"

    @property
    def uses_embedded_services(self) -> bool:
        """True when neither service was named, so `automation up` starts its own."""
        return not ({"database_url", "redis_url"} & self.model_fields_set)


def _one_line(error: ValidationError) -> str:
    parts = []
    for problem in error.errors():
        variable = "_".join(str(p) for p in problem["loc"]).upper()
        message = str(problem["msg"]).removeprefix("Value error, ")
        parts.append(f"{variable}: {message}" if variable else message)
    return "configuration error: " + "; ".join(parts)


def load_settings() -> Settings:
    """Read the environment; raise SettingsError with one line naming each bad variable."""
    try:
        return Settings()
    except ValidationError as exc:
        raise SettingsError(_one_line(exc)) from None


@functools.cache
def get_settings() -> Settings:
    """The process-wide settings, read once."""
    return load_settings()


def _is_loopback(address: str) -> bool:
    if address == "localhost":
        return True
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:  # a host name: it may resolve to anything
        return False
