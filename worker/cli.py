"""``automation``: the operators' command line (up, db, seed, trigger, status, spotify)."""

from __future__ import annotations

import datetime as dt
import json
import sys
from typing import Any

import click

# Importing the app reads the settings: a bad one ends the command with one line.
from worker.settings import get_settings


class _OperatorGroup(click.Group):
    """Turns the failures an operator meets at 3 AM into one line that says what to do."""

    def invoke(self, ctx: click.Context) -> Any:
        import kombu.exceptions
        import redis
        import sqlalchemy.exc
        from kombu.utils.url import maybe_sanitize_url
        from sqlalchemy.engine import make_url

        from db.migrate import SchemaBehindError
        from worker.embedded import ServiceStartError
        from worker.errors import PermanentError

        settings = get_settings()
        try:
            return super().invoke(ctx)
        except sqlalchemy.exc.OperationalError as exc:
            where = make_url(settings.database_url).render_as_string(hide_password=True)
            reason = str(exc.orig or exc).strip().splitlines()[0]
            raise click.ClickException(
                f"cannot reach PostgreSQL at {where}: {reason} (is the stack up? "
                "`automation up` starts it)"
            ) from None
        except redis.ConnectionError as exc:
            raise click.ClickException(
                f"cannot reach Redis at {settings.redis_url}: {exc} (is the stack up? "
                "`automation up` starts it)"
            ) from None
        except kombu.exceptions.OperationalError as exc:  # the broker: Redis or RabbitMQ
            raise click.ClickException(
                f"cannot reach the broker at {maybe_sanitize_url(settings.broker_url)}: {exc} "
                "(is the stack up? `automation up` starts it)"
            ) from None
        except (SchemaBehindError, ServiceStartError, PermanentError) as exc:
            raise click.ClickException(str(exc)) from None


@click.group(cls=_OperatorGroup)
def main() -> None:
    """Operate the music automation backend."""


@main.command()
@click.option("--concurrency", default=1, show_default=True, help="Processes per worker.")
@click.option("--beat/--no-beat", default=True, show_default=True)
@click.option("--flower/--no-flower", default=True, show_default=True)
def up(concurrency: int, beat: bool, flower: bool) -> None:
    """Start workers (one per queue), beat and Flower; Ctrl-C stops them all.

    With DATABASE_URL and REDIS_URL unset, an embedded PostgreSQL and Redis are started
    first (data under DATA_DIR, kept across restarts). Migrations are applied on the way.
    """
    from worker import stack

    sys.exit(stack.run(get_settings(), concurrency=concurrency, beat=beat, flower=flower))


@main.group()
def db() -> None:
    """Database schema."""


@db.command("upgrade")
@click.argument("revision", default="head")
def db_upgrade(revision: str) -> None:
    """Apply migrations up to REVISION (default: head)."""
    from db.migrate import upgrade

    upgrade(get_settings().database_url, revision)
    click.echo(f"database upgraded to {revision}")


@db.command("current")
def db_current() -> None:
    """Show the database's revision and whether it is at head."""
    from db.migrate import current_revisions, head_revisions
    from db.session import get_engine

    current, heads = current_revisions(get_engine()), head_revisions()
    click.echo(f"current: {', '.join(sorted(current)) or 'empty'}; head: {', '.join(heads)}")
    if current != heads:
        raise click.ClickException("behind: run `automation db upgrade`")


@main.command()
@click.option("--users", default=1000, show_default=True)
@click.option("--tracks", default=5000, show_default=True)
@click.option("--plays", default=100_000, show_default=True)
@click.option("--days", default=90, show_default=True, help="Plays spread over this many days.")
@click.option("--listens", type=int, default=None, help="Imported listens [default: plays/20].")
@click.option("--seed", "seed_value", default=42, show_default=True, help="Random seed.")
def seed(
    users: int, tracks: int, plays: int, days: int, listens: int | None, seed_value: int
) -> None:
    """Load a realistic synthetic catalogue and listening history (deterministic per seed)."""
    from db.seed import SeedSpec, seed_url

    bars: dict[str, Any] = {}

    def progress(stage: str, done: int, total: int) -> None:
        bar = bars.get(stage)
        if bar is None:
            bar = bars[stage] = click.progressbar(length=total, label=f"{stage:>8}")
            bar.__enter__()
        bar.update(done - bar.pos)
        if done >= total:
            bar.__exit__(None, None, None)

    spec = SeedSpec(
        users=users, tracks=tracks, plays=plays, days=days, seed=seed_value, listens=listens
    )
    report = seed_url(get_settings().database_url, spec, progress=progress)
    click.echo(
        f"seeded {report.users} users, {report.artists} artists, {report.albums} albums, "
        f"{report.tracks} tracks, {report.plays} plays, {report.uploads} uploads, "
        f"{report.listens} listens in {report.seconds:.1f} s"
    )


def _parse_kwargs(pairs: tuple[str, ...]) -> dict[str, Any]:
    kwargs: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep:
            raise click.BadParameter(f"{pair!r} is not key=value", param_hint="--arg")
        try:
            kwargs[key] = json.loads(raw)
        except json.JSONDecodeError:
            kwargs[key] = raw  # a bare word is a string
    return kwargs


@main.command()
@click.argument("name")
@click.option("--arg", "args", multiple=True, help="key=value (JSON value), repeatable.")
@click.option("--wait", is_flag=True, help="Wait for the result and print it.")
@click.option("--timeout", default=300.0, show_default=True, help="Seconds to wait.")
def trigger(name: str, args: tuple[str, ...], wait: bool, timeout: float) -> None:
    """Enqueue NAME now: a public task name, a short name, or `all` (every scheduled task)."""
    from tasks.automation.status import UnknownTriggerError, resolve_trigger
    from worker import app

    kwargs = _parse_kwargs(args)
    try:
        names = resolve_trigger(app, name)
    except UnknownTriggerError as exc:
        raise click.ClickException(str(exc)) from None
    if not names:
        raise click.ClickException(f"{name!r} stands for no task (nothing is scheduled yet)")
    results = [(task, app.send_task(task, kwargs=kwargs)) for task in names]
    for task, result in results:
        click.echo(f"sent {task} [{result.id}]")
    if wait:
        failed = False
        for task, result in results:
            try:
                value = result.get(timeout=timeout, propagate=True)
            except Exception as exc:
                failed = True
                click.echo(f"{task} failed: {type(exc).__name__}: {exc}", err=True)
            else:
                click.echo(f"{task} -> {json.dumps(value, indent=2, default=str)}")
        if failed:
            sys.exit(1)


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def status(as_json: bool) -> None:
    """What the system is doing: tasks, playlists, trending, schedule, queues."""
    from db.session import session_scope
    from tasks.automation.status import collect_status
    from worker import app

    settings = get_settings()
    with session_scope() as session:
        report = collect_status(session, app, dt.datetime.now(dt.UTC), settings.redis_url)
    if as_json:
        click.echo(json.dumps(report, indent=2, default=str))
    else:
        click.echo(render_status(report))


def _broker_lines(report: dict[str, Any]) -> list[str]:
    lines = []
    broker = report.get("broker")
    if broker is not None:
        kept = broker["persistence"] or "NOTHING: a restart loses every queued message"
        workers = broker["workers_alive"]
        lines.append(
            f"broker:           keeps {kept}; {len(workers)} worker(s) alive"
            + (f" ({', '.join(workers)})" if workers else "")
        )
    resets = report["broker_resets"]
    if resets["total"]:
        latest = resets["latest"]
        lines.append(
            f"broker resets:    {resets['total']}; latest {latest['detected_at']} "
            f"(noticed by {latest['detected_by']}, {latest['ledger_republished']} ledger "
            "row(s) published again)"
        )
    return lines


def render_status(report: dict[str, Any]) -> str:
    def counts(mapping: dict[str, int]) -> str:
        return ", ".join(f"{k} {v}" for k, v in sorted(mapping.items())) or "none"

    bg, pl, tr = report["background_tasks"], report["smart_playlists"], report["trending"]
    lines = [
        f"status at {report['generated_at']}",
        f"background tasks: {bg['total']} (by status: {counts(bg['by_status'])})",
        *(
            f"  {task_type:<24} {counts(states)}"
            for task_type, states in sorted(bg["by_type"].items())
        ),
        "  oldest pending: "
        + (
            "none"
            if bg["oldest_pending_seconds"] is None
            else f"{bg['oldest_pending_seconds']:.0f} s"
        )
        + f"; stuck processing {bg['stuck_processing']}, lost messages "
        f"{bg['lost_pending']}, awaiting dispatch {bg['undispatched']}",
        f"smart playlists:  {pl['total']} ({counts(pl['by_type'])}); "
        f"latest generated {pl['latest_generated_at'] or 'never'}",
        f"trending:         {tr['tracks']} tracks; last calculated "
        f"{tr['last_calculated_at'] or 'never'}",
        *_enrichment_lines(report["enrichment"]),
        f"task runs (24 h): {counts(report['task_runs_24h'])}",
        f"dead letters:     {report['dead_letters']['total']}"
        + (
            f" (latest {report['dead_letters']['latest_at']})"
            if report["dead_letters"]["total"]
            else ""
        ),
        "queues:           "
        + (
            counts(report["queues"])
            if "error" not in report["queues"]
            else report["queues"]["error"]
        ),
        f"run journal:      {report.get('run_journal_waiting', 'unknown')} record(s) "
        "waiting for PostgreSQL",
        *_broker_lines(report),
        "schedule:" if report["schedule"] else "schedule:         (no entries yet)",
    ]
    for entry in report["schedule"]:
        last = entry["last_run"]
        last_text = (
            f"last {last['started_at']} {last['status']}"
            + (f" ({last['error']})" if last.get("error") else "")
            if last
            else "never run"
        )
        lines.append(
            f"  {entry['task']:<28} {entry['schedule']:<40} next {entry['next_run_at']}; "
            f"{last_text}"
        )
    return "\n".join(lines)


def _enrichment_lines(enrichment: dict[str, Any]) -> list[str]:
    connections = enrichment["connections"]
    lines = [
        f"enrichment:       {enrichment['enriched']:,} of {enrichment['total']:,} listens "
        f"enriched ({enrichment['percentage']}%): matched {enrichment['matched']:,}, "
        f"not found {enrichment['not_found']:,}, failed {enrichment['failed']:,}, "
        f"pending {enrichment['pending']:,}; Spotify connections {connections['live']} "
        f"live, {connections['revoked']} revoked"
    ]
    paused = enrichment.get("spotify_paused")
    if paused:
        lines.append(
            f"  Spotify requests paused for {paused['seconds']:.0f} s ({paused['reason']})"
        )
    backlogs = enrichment["largest_backlogs"]
    if backlogs:
        lines.append(
            "  largest backlogs: "
            + ", ".join(
                f"user {b['user_id']} {b['pending']:,}"
                + ("" if b["connected"] else " (not connected)")
                for b in backlogs
            )
        )
    return lines


@main.group()
def spotify() -> None:
    """Users' Spotify connections (refresh tokens are stored encrypted)."""


@spotify.command("connect")
@click.argument("user_id", type=int)
def spotify_connect(user_id: int) -> None:
    """Store USER_ID's Spotify refresh token, read from standard input."""
    from db.session import session_scope
    from tasks.enrichment.accounts import TokenCipher, connect

    refresh_token = sys.stdin.readline().strip()
    if not refresh_token:
        raise click.ClickException("no refresh token on standard input")
    settings = get_settings()
    with session_scope() as session:
        connect(
            session,
            TokenCipher.from_settings(settings),
            user_id,
            refresh_token,
            dt.datetime.now(dt.UTC),
        )
    click.echo(f"user {user_id}: Spotify connected; their listens are enriched from now on")


@spotify.command("disconnect")
@click.argument("user_id", type=int)
def spotify_disconnect(user_id: int) -> None:
    """Revoke USER_ID's Spotify connection: tokens wiped, enrichment stops."""
    from db.session import session_scope
    from tasks.enrichment.accounts import revoke

    with session_scope() as session:
        revoked = revoke(session, user_id, dt.datetime.now(dt.UTC), "disconnected by an operator")
    if not revoked:
        raise click.ClickException(f"user {user_id} has no live Spotify connection")
    click.echo(f"user {user_id}: Spotify disconnected; tokens wiped")


@spotify.command("new-key")
def spotify_new_key() -> None:
    """Print a new TOKEN_ENCRYPTION_KEY (prepend it to the old ones to rotate)."""
    from tasks.enrichment.accounts import new_key

    click.echo(new_key())


if __name__ == "__main__":
    main()
