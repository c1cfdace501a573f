"""``automation``: the operators' command line (up, logs, api, db, seed, trigger, status, retry,
schedule, workflow, ingest, admin, spotify)."""

from __future__ import annotations

import datetime as dt
import json
import os
import pathlib
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
@click.option("--api/--no-api", default=True, show_default=True, help="The console.")
@click.option("--flower/--no-flower", default=True, show_default=True)
@click.option(
    "--verbose", is_flag=True, help="Also every process's output, prefixed with its name."
)
def up(concurrency: int, beat: bool, api: bool, flower: bool, verbose: bool) -> None:
    """Start workers (one per queue), beat, the console and Flower; Ctrl-C stops them all.

    With DATABASE_URL and REDIS_URL unset, an embedded PostgreSQL and Redis are started
    first (data under DATA_DIR, kept across restarts). Migrations are applied on the way.
    Prints a summary as each process becomes ready; each process's output goes to
    DATA_DIR/logs/NAME.log (`automation logs NAME`).
    """
    from worker import stack

    sys.exit(
        stack.run(
            get_settings(),
            concurrency=concurrency,
            beat=beat,
            flower=flower,
            api=api,
            verbose=verbose,
        )
    )


@main.command()
@click.argument("name", required=False)
@click.option(
    "--lines",
    "-n",
    default=20,
    show_default=True,
    type=click.IntRange(min=0),
    help="Lines of history to show first.",
)
@click.option("--follow/--no-follow", default=True, show_default=True)
def logs(name: str | None, lines: int, follow: bool) -> None:
    """Follow NAME's log (as tail -f does), one of the processes `automation up` runs;
    without NAME, list the logs with their sizes."""
    from worker import child_logs

    data_dir = get_settings().data_dir.resolve()
    if name is None:
        found = child_logs.available(data_dir)
        where = child_logs.log_dir(data_dir)
        if not found:
            click.echo(f"no logs in {where} yet (`automation up` writes them)")
            return
        click.echo(f"logs in {where}:")
        for log_name, size in found.items():
            click.echo(f"  {log_name:<20} {child_logs.human_size(size):>10}")
        click.echo("follow one with `automation logs NAME`")
        return
    try:
        path = child_logs.find(data_dir, name)
    except child_logs.UnknownLogError as exc:
        raise click.ClickException(str(exc)) from None
    try:
        if follow:
            child_logs.follow(path, lines, _echo_raw)
        else:
            for line in child_logs.last_lines(path, lines):
                _echo_raw(line + "\n")
    except KeyboardInterrupt:  # Ctrl-C is how one stops following
        pass
    except BrokenPipeError:  # `automation logs beat | head`: the reader has had enough
        # The interpreter flushes standard output on its way out: into nothing, quietly.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def _echo_raw(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


@main.command()
@click.option("--host", default=None, help="Address to listen on [default: API_ADDRESS].")
@click.option("--port", type=int, default=None, help="Port [default: API_PORT].")
def api(host: str | None, port: int | None) -> None:
    """Serve the console: the HTTP API, the status page and /metrics."""
    import uvicorn

    from console.app import create_app

    settings = get_settings()
    uvicorn.run(
        create_app(settings),
        host=host or settings.api_address,
        port=port or settings.api_port,
        # The address a request came from is the client's, not a proxy's, unless a proxy
        # is named in FORWARDED_ALLOW_IPS: the sign-in throttle counts by address.
        proxy_headers=True,
        log_level="info",
    )


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
@click.option("--timeout", default=300.0, show_default=True, help="Seconds to wait, per task.")
def trigger(name: str, args: tuple[str, ...], wait: bool, timeout: float) -> None:
    """Enqueue NAME now: a public task name, a short name, or `all` (every scheduled task).

    `all` runs the aggregation, trending and playlists one after the other, each once the
    one before has finished, then the rest together; it always waits, and reports each.
    """
    from tasks.automation.status import UnknownTriggerError, ordered_stages, resolve_trigger
    from worker import app

    kwargs = _parse_kwargs(args)
    try:
        names = resolve_trigger(app, name)
    except UnknownTriggerError as exc:
        raise click.ClickException(str(exc)) from None
    if not names:
        raise click.ClickException(f"{name!r} stands for no task (nothing is scheduled yet)")
    in_order, rest = ordered_stages(names) if name == "all" else ([], names)
    failed = False
    for task in in_order:
        result = app.send_task(task, kwargs=kwargs)
        click.echo(f"sent {task} [{result.id}]")
        failed |= not _report(task, result, timeout)
    results = [(task, app.send_task(task, kwargs=kwargs)) for task in rest]
    for task, result in results:
        click.echo(f"sent {task} [{result.id}]")
    if wait or in_order:
        for task, result in results:
            failed |= not _report(task, result, timeout)
    if failed:
        sys.exit(1)


def _report(task: str, result: Any, timeout: float) -> bool:
    """Wait for ``result`` and print it; whether it succeeded."""
    try:
        value = result.get(timeout=timeout, propagate=True)
    except Exception as exc:
        click.echo(f"{task} failed: {type(exc).__name__}: {exc}", err=True)
        return False
    click.echo(f"{task} -> {json.dumps(value, indent=2, default=str)}")
    return True


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
        *_workflow_lines(report["workflows"]),
        *_ingest_lines(report["ingest"]),
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
        *render_schedule(report["schedule"]),
    ]
    return "\n".join(lines)


def render_schedule(entries: list[dict[str, Any]]) -> list[str]:
    """The schedule view: entry, task, schedule, paused, last run with outcome, next run."""
    if not entries:
        return ["schedule:         (no entries yet: beat adds the defaults when it starts)"]
    lines = ["schedule:"]
    for entry in entries:
        last = entry["last_run"]
        if last is None:
            last_text = "never run"
        else:
            took = last["runtime_seconds"]
            last_text = (
                f"last {last['slot']}{' (run by hand)' if last['manual'] else ''}: "
                f"{last['status']}"
                + (f" in {took:.1f} s" if took is not None else "")
                + (f" ({last['error']})" if last.get("error") else "")
            )
        state = "PAUSED" if entry["paused"] else f"next {entry['next_run_at']}"
        lines.append(
            f"  {entry['entry']:<30} {entry['task']:<26} {entry['schedule']:<28} "
            f"missed: {entry['missed']:<8} {state}; {last_text}"
        )
    return lines


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


def _workflow_lines(workflows: dict[str, Any]) -> list[str]:
    executions = workflows["executions_24h"]
    age = workflows["oldest_pending_age_seconds"]
    unmatched = workflows["unmatched_changes"]
    return [
        f"workflows:        {workflows['workflows']['active']} active, "
        f"{workflows['workflows']['inactive']} inactive; executions (24 h): "
        + ", ".join(f"{status} {count}" for status, count in executions.items()),
        "  oldest pending: "
        + ("none" if age is None else f"{age:.0f} s (since {workflows['oldest_pending']})")
        + f"; changes awaiting the dispatcher {unmatched}"
        + (f" (oldest {workflows['oldest_unmatched']})" if unmatched else ""),
    ]


@main.group()
def schedule() -> None:
    """The live schedule: list, change, pause, resume, run, delete, history.

    Changes apply within seconds, with no restart, and each is kept with who made it.
    """


def _actor() -> str:
    import getpass
    import socket

    return f"{getpass.getuser()}@{socket.gethostname()}"


def _schedule_errors() -> Any:
    from worker.schedules.store import UnknownEntryError
    from worker.schedules.timing import ScheduleError

    return (ScheduleError, UnknownEntryError)


@schedule.command("list")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def schedule_list(as_json: bool) -> None:
    """Every entry: task, schedule, paused, last run with its outcome, next run."""
    from db.session import session_scope
    from worker.schedules.store import schedule_view

    with session_scope() as session:
        view = schedule_view(session, dt.datetime.now(dt.UTC))
    click.echo(json.dumps(view, indent=2) if as_json else "\n".join(render_schedule(view)))


@schedule.command("set")
@click.argument("name")
@click.option("--task", required=True, help="A public task name.")
@click.option("--kwargs", "kwargs_json", default=None, help="The task's arguments, a JSON object.")
@click.option("--cron", default=None, help='"minute hour day-of-month month day-of-week"')
@click.option("--every", type=int, default=None, help="Seconds between runs.")
@click.option("--timezone", default=None, help="The cron's timezone [default: TIMEZONE].")
@click.option(
    "--missed",
    type=click.Choice(["run_once", "skip"]),
    default=None,
    help="A slot missed while beat was down: run once on recovery, or skip it "
    "[default: as it was; run_once for a new entry].",
)
def schedule_set(
    name: str,
    task: str,
    kwargs_json: str | None,
    cron: str | None,
    every: int | None,
    timezone: str | None,
    missed: Any,
) -> None:
    """Add entry NAME, or change it (a default changed here stays as changed)."""
    from db.session import session_scope
    from tasks.automation.operations import change_entry
    from worker import app
    from worker.errors import InvalidArgumentsError
    from worker.schedules.timing import Timing

    if (cron is None) == (every is None):
        raise click.UsageError("give exactly one of --cron and --every")
    try:
        kwargs = json.loads(kwargs_json) if kwargs_json else {}
    except json.JSONDecodeError as exc:
        raise click.BadParameter(f"not JSON: {exc}", param_hint="--kwargs") from None
    if not isinstance(kwargs, dict):
        raise click.BadParameter("must be a JSON object", param_hint="--kwargs")
    try:
        timing = Timing(
            cron=cron, every_seconds=every, timezone=timezone or get_settings().timezone
        )
        with session_scope() as session:
            entry = change_entry(
                session,
                app,
                name,
                task=task,
                timing=timing,
                actor=_actor(),
                now=dt.datetime.now(dt.UTC),
                kwargs=kwargs,
                missed=missed,
            )
            described = f"{entry.task} {timing.describe()} (missed: {entry.missed})"
    except (*_schedule_errors(), InvalidArgumentsError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"{name}: {described}; beat applies it within seconds")


def _set_paused(name: str, paused: bool) -> None:
    from db.session import session_scope
    from worker.schedules.store import set_paused

    try:
        with session_scope() as session:
            set_paused(session, name, paused, _actor(), dt.datetime.now(dt.UTC))
    except _schedule_errors() as exc:
        raise click.ClickException(str(exc)) from None


@schedule.command("pause")
@click.argument("name")
def schedule_pause(name: str) -> None:
    """Stop NAME from firing until it is resumed."""
    _set_paused(name, True)
    click.echo(f"{name}: paused")


@schedule.command("resume")
@click.argument("name")
def schedule_resume(name: str) -> None:
    """Fire NAME again from its next slot (slots passed while paused do not run)."""
    _set_paused(name, False)
    click.echo(f"{name}: resumed")


@schedule.command("run")
@click.argument("name")
@click.option("--wait", is_flag=True, help="Wait for the result and print it.")
@click.option("--timeout", default=300.0, show_default=True, help="Seconds to wait.")
def schedule_run(name: str, wait: bool, timeout: float) -> None:
    """Run NAME's task now, with its arguments (its next slot still fires)."""
    from db.session import session_scope
    from tasks.automation.operations import run_entry_now
    from worker import app

    try:
        task, result = run_entry_now(session_scope, app, name, _actor(), dt.datetime.now(dt.UTC))
    except _schedule_errors() as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"sent {task} [{result.id}]")
    if wait and not _report(task, result, timeout):
        sys.exit(1)


@schedule.command("delete")
@click.argument("name")
def schedule_delete(name: str) -> None:
    """Delete an entry an operator added (a default can only be paused)."""
    from db.session import session_scope
    from worker.schedules.store import delete_entry

    try:
        with session_scope() as session:
            delete_entry(session, name, _actor(), dt.datetime.now(dt.UTC))
    except _schedule_errors() as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"{name}: deleted")


@schedule.command("history")
@click.argument("name")
@click.option("--runs", "n_runs", default=10, show_default=True, help="How many last runs.")
@click.option("--changes", "n_changes", default=10, show_default=True, help="How many changes.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def schedule_history(name: str, n_runs: int, n_changes: int, as_json: bool) -> None:
    """NAME's last runs (status, duration, error, from task_runs) and its changes (who,
    when, before, after)."""
    from db.session import session_scope
    from worker.schedules.store import entry_changes, entry_runs

    with session_scope() as session:
        changes = entry_changes(session, name, n_changes)
        try:
            runs = entry_runs(session, name, n_runs)
        except _schedule_errors() as exc:
            if not changes:
                raise click.ClickException(str(exc)) from None
            runs = []  # deleted: its trail remains
    if as_json:
        click.echo(json.dumps({"runs": runs, "changes": changes}, indent=2))
        return
    click.echo(f"{name}: last {len(runs)} run(s)")
    for run in runs:
        took = run["runtime_seconds"]
        click.echo(
            f"  {run['slot']}{' (by hand)' if run['manual'] else ''}  {run['status']:<10}"
            + (f" {took:.1f} s" if took is not None else "")
            + (f"  {run['error']}" if run["error"] else "")
            + f"  [{run['task_id']}]"
        )
    click.echo(f"{name}: last {len(changes)} change(s)")
    for change in changes:
        click.echo(
            f"  {change['at']}  {change['action']:<7} by {change['actor']}: "
            f"{json.dumps(change['before'])} -> {json.dumps(change['after'])}"
        )


@main.command()
# operations.RETRY_KINDS, spelled out: importing operations here would slow every command.
@click.argument("kind", type=click.Choice(["ledger", "workflow", "ingest"]))
@click.argument("row_id", type=int)
def retry(kind: str, row_id: int) -> None:
    """Retry failed row ROW_ID of KIND (ledger: a background task; workflow: a workflow
    execution, whose actions that had succeeded are not run again; ingest: an ingest job,
    which resumes at the step that failed) with fresh attempts."""
    from db.session import session_scope
    from tasks.automation.operations import RetryError
    from tasks.automation.operations import retry as retry_row

    try:
        with session_scope() as session:
            done = retry_row(session, kind, row_id)
            _audit_cli(session, "retry", f"{kind}:{row_id}", done)
    except RetryError as exc:
        raise click.ClickException(str(exc)) from None
    if kind == "ingest":
        click.echo(
            f"ingest job {row_id}: queued again; it resumes at step {done['resumes_at'] or 'probe'}"
        )
        return
    what = done["task_type"] if kind == "ledger" else f"workflow {done['workflow_id']}"
    click.echo(f"{kind} {row_id} ({what}): pending again; it runs shortly")


def _audit_cli(session: Any, action: str, target: str, detail: dict[str, Any]) -> None:
    from console.accounts import audit

    audit(session, f"cli:{_actor()}", action, target, detail)


@main.group()
def workflow() -> None:
    """Event workflows: rules that act when a job's status changes (create, list, show,
    enable, disable, test, logs).

    A workflow file is JSON: name, trigger, conditions, actions (webhook, task,
    notification), limits; tasks/workflows/definition.py describes every key.
    """


def _read_workflow_file(path: str) -> Any:
    """The file's JSON (``-``: standard input); one line saying why not, if it is not."""
    try:
        raw = sys.stdin.read() if path == "-" else pathlib.Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise click.ClickException(f"cannot read {path}: {reason}") from None
    try:
        return json.loads(raw)
    except json.JSONDecodeError as exc:
        raise click.ClickException(f"{path} is not JSON: {exc}") from None


@workflow.command("create")
@click.option(
    "--file", "path", required=True, metavar="FILE", help="The workflow file (- reads stdin)."
)
def workflow_create(path: str) -> None:
    """Save the workflow in FILE. Prints its webhook signing secret (shown once) and then
    the new workflow's id, alone on the last line."""
    from db.session import session_scope
    from tasks.automation.status import public_task_names
    from tasks.workflows import store
    from tasks.workflows.definition import DefinitionError
    from worker import app
    from worker.secrets import SecretCipher

    data = _read_workflow_file(path)
    settings = get_settings()
    cipher = SecretCipher.from_settings(settings)
    try:
        with session_scope() as session:
            workflow_id, secret = store.create(
                session,
                data,
                created_by=f"cli:{_actor()}",
                known_tasks=public_task_names(app),
                allowed_hosts=settings.webhook_hosts,
                cipher=cipher,
            )
            row = store.get(session, workflow_id)
            name, active = row.name, row.active
            _audit_cli(
                session,
                "workflow.create",
                f"workflow:{workflow_id}",
                {"name": name, "source": row.source, "active": active},
            )
    except DefinitionError as exc:
        raise click.ClickException(f"workflow file refused: {exc}") from None
    click.echo(f"workflow {workflow_id} ({name}): created, {'active' if active else 'disabled'}")
    if isinstance(data, dict) and "secret" in data:
        click.echo("webhook signing secret: the one in the file (kept encrypted, not shown)")
    else:
        click.echo(
            "webhook signing secret (shown once, only its encrypted form is kept; the receiver "
            "verifies X-Automation-Signature: sha256=HMAC-SHA256(body) with it): " + secret
        )
    click.echo(workflow_id)


@workflow.command("list")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def workflow_list(as_json: bool) -> None:
    """Every workflow: id, state, source, owner, the statuses it fires on, its actions."""
    from db.session import session_scope
    from tasks.workflows import store

    with session_scope() as session:
        rows = store.listing(session)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo("no workflows yet (`automation workflow create --file W.json`)")
        return
    click.echo(
        f"{'ID':>6}  {'STATE':<8}  {'SOURCE':<16}  {'OWNER':<10}  {'ON':<20}  NAME [ACTIONS]"
    )
    for row in rows:
        owner = "everyone" if row["user_id"] is None else f"user {row['user_id']}"
        on = ",".join(row["on_statuses"]) if row["on_statuses"] else "any"
        click.echo(
            f"{row['id']:>6}  {'active' if row['active'] else 'disabled':<8}  "
            f"{row['source']:<16}  {owner:<10}  {on:<20}  {row['name']} "
            f"[{', '.join(row['actions'])}]"
        )


@workflow.command("show")
@click.argument("workflow_id", type=int)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def workflow_show(workflow_id: int, as_json: bool) -> None:
    """WORKFLOW_ID's definition, who made it and its last day's executions (never its
    secret)."""
    from db.session import session_scope
    from tasks.workflows import store

    with session_scope() as session:
        view = store.describe(session, store.get(session, workflow_id), dt.datetime.now(dt.UTC))
    if as_json:
        click.echo(json.dumps(view, indent=2))
        return
    executions = ", ".join(f"{k} {v}" for k, v in sorted(view["executions_24h"].items()))
    # What the header lines already say is left out of the definition below them.
    shown = {"id", "name", "active", "on_statuses", "created_by", "created_at", "updated_at"}
    definition = {k: v for k, v in view.items() if k not in shown | {"executions_24h"}}
    click.echo(
        "\n".join(
            [
                f"workflow {view['id']}: {view['name']} "
                f"({'active' if view['active'] else 'disabled'})",
                f"  watches {view['trigger']['source']} "
                + (
                    "(every user's jobs)"
                    if view["user_id"] is None
                    else f"(user {view['user_id']}'s jobs)"
                )
                + " changing to "
                + (", ".join(view["on_statuses"]) if view["on_statuses"] else "any status"),
                f"  created {view['created_at']} by {view['created_by']}; "
                f"updated {view['updated_at']}",
                f"  executions (24 h): {executions or 'none'}",
                "  definition:",
                *(f"    {line}" for line in json.dumps(definition, indent=2).splitlines()),
            ]
        )
    )


def _set_workflow_active(workflow_id: int, active: bool) -> str:
    from db.session import session_scope
    from tasks.workflows import store

    with session_scope() as session:
        row = store.set_active(session, workflow_id, active)
        _audit_cli(
            session,
            "workflow.enable" if active else "workflow.disable",
            f"workflow:{workflow_id}",
            {"name": row.name},
        )
        return row.name


@workflow.command("enable")
@click.argument("workflow_id", type=int)
def workflow_enable(workflow_id: int) -> None:
    """Let WORKFLOW_ID fire again, on changes made from now on."""
    name = _set_workflow_active(workflow_id, True)
    click.echo(f"workflow {workflow_id} ({name}): enabled; it fires on changes from now on")


@workflow.command("disable")
@click.argument("workflow_id", type=int)
def workflow_disable(workflow_id: int) -> None:
    """Stop WORKFLOW_ID: its jobs' changes are no longer matched against it, and its
    executions not yet run are skipped."""
    name = _set_workflow_active(workflow_id, False)
    click.echo(f"workflow {workflow_id} ({name}): disabled; executions not yet run will be skipped")


@workflow.command("test")
@click.argument("workflow_id", type=int)
@click.option("--job", "job_id", type=int, required=True, help="A job of the workflow's source.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def workflow_test(workflow_id: int, job_id: int, as_json: bool) -> None:
    """Dry run: what WORKFLOW_ID would do if job JOB_ID had just changed to the status it
    has now. Which conditions hold, what each action would send; nothing is sent, queued
    or written."""
    from db.session import session_scope
    from tasks.workflows import store
    from worker.secrets import SecretCipher

    cipher = SecretCipher.from_settings(get_settings())
    with session_scope() as session:
        report = store.try_on_job(session, workflow_id, job_id, dt.datetime.now(dt.UTC), cipher)
        # A dry run writes nothing, whatever a future helper might add to the session.
        session.rollback()
    if as_json:
        click.echo(json.dumps(report, indent=2, default=str))
    else:
        click.echo("\n".join(render_dry_run(report)))


def render_dry_run(report: dict[str, Any]) -> list[str]:
    """A dry run for people: the change, each condition, each action's would-be request."""
    change = report["change"]
    holds = report["conditions_hold"]
    lines = [
        f"DRY RUN of workflow {report['workflow_id']} on {change['source']} job "
        f"{change['job_id']}, as if it had just changed to {change['new_status']!r}: "
        "nothing was sent, queued or written",
        "conditions: "
        + ("hold: it would run" if holds else "do not hold: it would be skipped")
        + (f" ({len(report['conditions'])})" if report["conditions"] else " (none: always)"),
    ]
    for leaf in report["conditions"]:
        lines.append(
            f"  {'yes' if leaf['holds'] else 'NO ':<3}  {leaf['path']}: {leaf['field']} "
            f"{leaf['op']} {json.dumps(leaf['value'])} (it is {json.dumps(leaf['actual'])})"
        )
    lines.append(
        "actions it would take, in order:" if holds else "actions it would take if they held:"
    )
    for number, action in enumerate(report["actions"], start=1):
        kind = action["type"]
        if "error" in action:
            lines.append(f"  {number}. {kind}: would FAIL: {action['error']}")
        elif kind == "webhook":
            lines += [
                f"  {number}. webhook: POST {action['url']}",
                f"       Idempotency-Key: {action['idempotency_key']}",
                f"       X-Automation-Signature: {action['signature']} (of the body as "
                "compact JSON with sorted keys; the real POST names its execution, so its "
                "signature differs)",
                *(f"       {name}: {value}" for name, value in action["headers"].items()),
                f"       body: {json.dumps(action['body'], default=str)}",
            ]
        elif kind == "task":
            lines.append(f"  {number}. task: {action['task']} {json.dumps(action['kwargs'])}")
        else:
            lines.append(
                f"  {number}. notification to user {action['user_id']}: {action['title']!r}"
                + (f" {action['body']!r}" if action["body"] else "")
            )
    return lines


@workflow.command("logs")
@click.argument("workflow_id", type=int)
@click.option("--limit", default=20, show_default=True, type=click.IntRange(1, 1000))
@click.option(
    "--before", "before", type=int, default=None, help="Only executions older than this id."
)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def workflow_logs(workflow_id: int, limit: int, before: int | None, as_json: bool) -> None:
    """WORKFLOW_ID's executions, newest first: what ran, what was skipped and why."""
    from db.session import session_scope
    from tasks.workflows import store

    with session_scope() as session:
        store.get(session, workflow_id)  # an unknown id is an error, not an empty log
        rows = store.logs(session, workflow_id, limit=limit, before=before)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo(
            f"workflow {workflow_id}: no executions" + (f" before {before}" if before else "")
        )
        return
    click.echo(
        f"{'ID':>8}  {'CREATED':<32}  {'JOB':>8}  {'CHANGE':<24}  {'STATUS':<10}  "
        f"{'ATTEMPTS':>8}  REASON / ERROR"
    )
    for row in rows:
        change = f"{row['old_status'] or '(new)'}->{row['new_status']}"
        click.echo(
            f"{row['id']:>8}  {row['created_at']:<32}  {row['job_id']:>8}  {change:<24}  "
            f"{row['status']:<10}  {row['attempts']:>8}  "
            f"{row['skip_reason'] or row['error'] or ''}"
        )
    if len(rows) == limit:
        click.echo(f"older: --before {rows[-1]['id']}")


class _IngestGroup(click.Group):
    """``automation ingest FILE...``, the issue's form, is ``automation ingest add FILE...``:
    a first word that is not a subcommand (nor --help) starts the files, so a file cannot
    be named like a subcommand unless given as ./NAME, after ``--``, or to ``add``."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ctx.help_option_names:
            args = ["add", *args]
        return super().parse_args(ctx, args)


@main.group(cls=_IngestGroup, subcommand_metavar="FILE... | COMMAND [ARGS]...")
def ingest() -> None:
    """Media ingest: send files (`automation ingest FILE... [--user ID]`, the same as
    `ingest add`), pause and resume the pipeline, its statistics, its jobs, its controls.

    A file named like a command (`status`) is taken as the command: give it as ./status,
    after --, or to `ingest add`.
    """


def command_hint(name: str, commands: list[str]) -> str | None:
    """For a missing "file" that looks like a mistyped subcommand (no suffix, no folder),
    the subcommand it was probably meant to be."""
    import difflib

    if pathlib.PurePath(name).suffix or "/" in name or os.sep in name:
        return None
    close = difflib.get_close_matches(name, commands, n=1, cutoff=0.6)
    return close[0] if close else None


@ingest.command("add")
@click.argument(
    "files", nargs=-1, required=True, type=click.Path(path_type=pathlib.Path), metavar="FILE..."
)
@click.option("--user", "user_id", type=int, help="The user the tracks belong to.")
@click.option(
    "--cover",
    type=click.Path(path_type=pathlib.Path),
    help="Cover art for the one audio file sent (else an image of the same name is its "
    "cover, else the embedded art).",
)
@click.option("--track", "track_id", type=int, help="With an image: a new cover for this track.")
def ingest_add(
    files: tuple[pathlib.Path, ...],
    user_id: int | None,
    cover: pathlib.Path | None,
    track_id: int | None,
) -> None:
    """Copy FILE... into the ingest bucket and queue a job for each; prints each job's id
    alone on its own line. An audio file and an image of the same name (song.flac,
    song.jpg) are one job, the image its cover."""
    from db.session import session_scope
    from tasks.ingest.jobs import submit_files
    from tasks.ingest.storage import open_bucket

    for name in map(str, files):
        hint = None if pathlib.Path(name).exists() else command_hint(name, list(ingest.commands))
        if hint is not None:
            raise click.ClickException(
                f"no such file {name!r}; did you mean `automation ingest {hint}`?"
            )
    settings = get_settings()
    bucket = open_bucket(settings)
    with session_scope() as session:
        ids = submit_files(
            session,
            bucket,
            list(files),
            today=dt.datetime.now(dt.UTC).date(),
            user_id=user_id,
            track_id=track_id,
            cover=cover,
            via="cli",
            max_attempts=settings.ingest_max_attempts,
        )
    for job_id in ids:
        click.echo(job_id)
    click.echo(
        f"{len(ids)} job(s) queued in {bucket.url}; `automation ingest show ID` follows one",
        err=True,
    )


@ingest.command("pause")
def ingest_pause() -> None:
    """Stop new jobs from starting: running ones finish, queued ones stay queued."""
    from db.session import session_scope
    from tasks.ingest import control

    now = dt.datetime.now(dt.UTC)
    with session_scope() as session:
        changed = control.pause(session, _actor(), now)
        live = control.controls(session)
        if changed:
            _audit_cli(session, "ingest.pause", "ingest", {})
        counts = control.statistics(session, now, get_settings(), hours=1).counts
    if not changed:
        click.echo(
            f"ingest was already paused (since {_iso(live['paused_at'])} by {live['paused_by']}); "
            "nothing changed"
        )
        return
    click.echo(
        f"ingest paused: no new job starts; {counts['processing']} running job(s) finish, "
        f"{counts['queued']} queued job(s) wait (`automation ingest resume` starts them)"
    )


@ingest.command("resume")
def ingest_resume() -> None:
    """Start queued jobs again."""
    from db.session import session_scope
    from tasks.ingest import control

    with session_scope() as session:
        changed = control.resume(session, dt.datetime.now(dt.UTC))
        if changed:
            _audit_cli(session, "ingest.resume", "ingest", {})
    click.echo(
        "ingest resumed: queued jobs start now"
        if changed
        else "ingest was not paused; nothing changed"
    )


@ingest.command("status")
@click.option(
    "--hours",
    default=24,
    show_default=True,
    type=click.IntRange(1, 24 * 31),
    help="Hours in the per-hour table.",
)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def ingest_status(hours: int, as_json: bool) -> None:
    """Jobs per state, the last hour (done, failed, still queued, jobs per minute, median
    time), the oldest queued job, the live controls and the jobs finished per hour."""
    from db.session import session_scope
    from tasks.ingest import control

    with session_scope() as session:
        stats = control.statistics(session, dt.datetime.now(dt.UTC), get_settings(), hours=hours)
    report = stats.as_json()
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    click.echo("\n".join(render_ingest_status(report)))


def _iso(value: dt.datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _duration(seconds: float) -> str:
    """An age for people: 42 s, 3 min 12 s, 2 h 5 min."""
    whole = round(seconds)
    if whole < 60:
        return f"{whole} s"
    if whole < 3600:
        return f"{whole // 60} min {whole % 60} s"
    return f"{whole // 3600} h {whole % 3600 // 60} min"


def _pipeline_state(report: dict[str, Any]) -> str:
    if report["paused"]:
        return f"PAUSED since {report['paused_at']} by {report['paused_by']}"
    return "running"


def _ingest_counts(report: dict[str, Any]) -> str:
    counts = report["counts"]
    return (
        f"waiting {counts['queued']}, active {counts['processing']}, done {counts['done']}, "
        f"failed {counts['failed']}"
    )


def _last_hour(report: dict[str, Any]) -> str:
    median = report["median_seconds_last_hour"]
    return (
        f"done {report['done_last_hour']}, failed {report['failed_last_hour']}, still queued "
        f"{report['queued_last_hour']}; {report['jobs_per_minute']} jobs/min; median "
        + ("n/a" if median is None else f"{median} s")
    )


def _oldest_queued(report: dict[str, Any]) -> str:
    oldest = report["oldest_queued"]
    if oldest is None:
        return "none"
    return (
        f"job {oldest['id']}, waiting {_duration(oldest['waiting_seconds'])} "
        f"(since {oldest['created_at']}; {oldest['object_path']})"
    )


def _live_controls(controls: dict[str, Any]) -> str:
    concurrency = controls["step_concurrency"]
    return (
        f"batch size {controls['batch_size']}, rate "
        + (f"{controls['rate_per_minute']}/min" if controls["rate_per_minute"] else "unlimited")
        + ", concurrency "
        + (", ".join(f"{s} {n}" for s, n in sorted(concurrency.items())) or "unlimited")
    )


def render_ingest_status(report: dict[str, Any]) -> list[str]:
    """``automation ingest status`` for people."""
    lines = [
        f"ingest at {report['now']}: {_pipeline_state(report)}",
        f"  jobs:          {_ingest_counts(report)}",
        f"  last hour:     {_last_hour(report)}",
        f"  oldest queued: {_oldest_queued(report)}",
        f"  controls:      {_live_controls(report['controls'])}",
        f"  per hour ({len(report['per_hour'])} h, by finish):",
        f"    {'HOUR':<25}  {'DONE':>6}  {'FAILED':>6}  MEAN",
    ]
    for hour in report["per_hour"]:
        mean = hour["mean_seconds"]
        lines.append(
            f"    {hour['hour']:<25}  {hour['done']:>6}  {hour['failed']:>6}  "
            + ("-" if mean is None else f"{mean} s")
        )
    return lines


def _ingest_lines(section: dict[str, Any]) -> list[str]:
    """The ingest section of ``automation status``."""
    return [
        f"ingest:           {_pipeline_state(section)}; {_ingest_counts(section)}",
        f"  last hour: {_last_hour(section)}",
        f"  oldest queued: {_oldest_queued(section)}",
    ]


def _ids_detail(session: Any, asked: tuple[int, ...], acted: list[int], verb: str) -> list[str]:
    """One line per job of ``asked`` that was not ``verb``, saying why."""
    from tasks.ingest import control

    missed = [job_id for job_id in asked if job_id not in acted]
    statuses = control.job_statuses(session, missed) if missed else {}
    return [
        f"job {job_id}: not {verb}: "
        + (f"it is {statuses[job_id]}, not failed" if job_id in statuses else "no such job")
        for job_id in missed
    ]


@ingest.command("retry-failed")
@click.argument("job_ids", nargs=-1, type=int, metavar="[JOB_ID]...")
def ingest_retry_failed(job_ids: tuple[int, ...]) -> None:
    """Queue failed jobs again (all of them, or JOB_ID...), each resuming at the step that
    failed with a fresh budget of attempts. A named job that is not failed is an error."""
    from db.session import session_scope
    from tasks.ingest import control

    with session_scope() as session:
        requeued = control.retry_failed(session, list(job_ids) or None)
        if requeued:
            _audit_cli(session, "ingest.retry_failed", "ingest", {"ids": requeued})
        refused = _ids_detail(session, job_ids, requeued, "retried")
    if requeued:
        click.echo(
            f"{len(requeued)} failed job(s) queued again, each resuming at the step that "
            f"failed: {', '.join(map(str, requeued))}"
        )
    elif not job_ids:
        click.echo("no failed jobs")
    if refused:
        raise click.ClickException("; ".join(refused))


@ingest.command("clear-failed")
@click.argument("job_ids", nargs=-1, type=int, metavar="[JOB_ID]...")
@click.option("--yes", is_flag=True, help="Clear every failed job without asking.")
def ingest_clear_failed(job_ids: tuple[int, ...], yes: bool) -> None:
    """Delete failed jobs (their uploads stay in the bucket): JOB_ID..., or every failed
    job after a confirmation (--yes skips it). A named job that is not failed is an error
    and is kept."""
    from db.session import session_scope
    from tasks.ingest import control

    ids = list(job_ids)
    if not ids:
        with session_scope() as session:
            ids = [job["id"] for job in control.list_jobs(session, status="failed", limit=None)]
        if not ids:
            click.echo("no failed jobs")
            return
        # Only the jobs counted here are deleted: one failing meanwhile is not cleared
        # unconfirmed.
        if not yes:
            click.confirm(
                f"delete {len(ids)} failed job(s)? their uploads stay in the bucket", abort=True
            )
    with session_scope() as session:
        cleared = control.clear_failed(session, ids)
        if cleared:
            _audit_cli(session, "ingest.clear_failed", "ingest", {"ids": cleared})
        refused = _ids_detail(session, job_ids, cleared, "cleared")
    if cleared:
        click.echo(f"{len(cleared)} failed job(s) deleted: {', '.join(map(str, cleared))}")
    if refused:
        raise click.ClickException("; ".join(refused))


@ingest.command("backfill")
@click.argument("step", type=click.Choice(["analysis", "images"]))
def ingest_backfill(step: str) -> None:
    """Run STEP for every ingested track that lacks its output (images: a thumbnail size
    added to INGEST_THUMBNAIL_SIZES, a missing waveform or card; analysis: a missing
    analysis), in batches, without re-running the other steps. Prints the task's id."""
    import uuid

    from db.session import session_scope
    from worker import app

    task_id = str(uuid.uuid4())
    # On record before it is sent, as a schedule entry run by hand is.
    with session_scope() as session:
        _audit_cli(session, "ingest.backfill", "ingest", {"step": step, "task_id": task_id})
    app.send_task("ingest.backfill", kwargs={"step": step}, task_id=task_id)
    click.echo(f"sent ingest.backfill {step}; it goes on in batches until none lacks it", err=True)
    click.echo(task_id)


@ingest.command("config")
@click.option("--batch-size", metavar="N|default", help="Jobs in flight at most.")
@click.option("--rate", metavar="N|default", help="Jobs started per minute at most.")
@click.option(
    "--concurrency",
    "concurrency_pairs",
    multiple=True,
    metavar="STEP=N|STEP=default",
    help="Jobs in one step at once, across all workers; repeatable.",
)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def ingest_config(
    batch_size: str | None, rate: str | None, concurrency_pairs: tuple[str, ...], as_json: bool
) -> None:
    """Show the pipeline's live controls, or change them: every worker takes a change at
    once, with no restart. `default` puts a control back to its setting (INGEST_BATCH_SIZE,
    INGEST_RATE_PER_MINUTE, INGEST_STEP_CONCURRENCY)."""
    from db.session import session_scope
    from tasks.ingest import control

    changes: dict[str, Any] = {}
    if batch_size is not None:
        changes["batch_size"] = control.parse_limit("batch size", batch_size)
    if rate is not None:
        changes["rate_per_minute"] = control.parse_limit("rate", rate)
    if concurrency_pairs:
        changes["concurrency"] = control.parse_concurrency(concurrency_pairs)
    settings = get_settings()
    with session_scope() as session:
        if changes:
            control.configure(session, dt.datetime.now(dt.UTC), **changes)
            _audit_cli(session, "ingest.config", "ingest", changes)
        live = control.controls(session)
        effective = control.effective(session, settings)
    if as_json:
        click.echo(json.dumps({"live": live, "effective": effective}, indent=2, default=str))
        return
    click.echo("\n".join(render_ingest_controls(live, effective)))


def render_ingest_controls(live: dict[str, Any], effective: dict[str, Any]) -> list[str]:
    """Each control with where its value comes from: set live, or the setting."""

    def origin(is_live: bool) -> str:
        return "live" if is_live else "setting"

    live_steps = live["step_concurrency"] or {}
    steps = effective["step_concurrency"]
    return [
        "ingest controls (live: set by `automation ingest config`; setting: from the env):",
        f"  paused:      {'since ' + str(_iso(live['paused_at'])) if live['paused_at'] else 'no'}",
        f"  batch size:  {effective['batch_size']} ({origin(live['batch_size'] is not None)})",
        "  rate:        "
        + (f"{effective['rate_per_minute']}/min" if effective["rate_per_minute"] else "unlimited")
        + f" ({origin(live['rate_per_minute'] is not None)})",
        "  concurrency: "
        + (
            ", ".join(
                f"{step} {limit} ({origin(step in live_steps)})"
                for step, limit in sorted(steps.items())
            )
            or "unlimited"
        ),
    ]


@ingest.command("show")
@click.argument("job_id", type=int)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def ingest_show(job_id: int, as_json: bool) -> None:
    """JOB_ID: status, step, attempts, error, track, timings, and each finished step with
    the attempt that finished it and what it found or made."""
    from db.session import session_scope
    from tasks.ingest import control

    try:
        with session_scope() as session:
            job = control.describe_job(session, job_id)
    except LookupError as exc:
        raise click.ClickException(str(exc)) from None
    if as_json:
        click.echo(json.dumps(job, indent=2))
        return
    click.echo("\n".join(render_ingest_job(job)))


def render_ingest_job(job: dict[str, Any]) -> list[str]:
    def seconds(value: float | None) -> str:
        return "-" if value is None else f"{value} s"

    def plain(value: Any) -> str:
        return ",".join(map(str, value)) if isinstance(value, list) else str(value)

    lines = [
        f"ingest job {job['id']}: {job['status']} ({job['kind'] or 'kind not known yet'}), "
        f"step {job['step'] or '-'}, attempts {job['attempts']}/{job['max_attempts']}",
        f"  object:   {job['object_path']}"
        + (f" (cover {job['cover_path']})" if job["cover_path"] else ""),
        f"  from:     {job['submitted_via'] or 'another service'}"
        + (f", user {job['user_id']}" if job["user_id"] is not None else ""),
        f"  track:    {job['track_id'] if job['track_id'] is not None else '-'}",
        f"  created:  {job['created_at']}; started {job['started_at'] or '-'}; finished "
        f"{job['finished_at'] or '-'} (waited {seconds(job['waited_seconds'])}, took "
        f"{seconds(job['took_seconds'])})",
    ]
    if job["error"]:
        # A job queued again keeps the error of the attempt before.
        label = "error:   " if job["status"] == "failed" else "last error:"
        lines.append(f"  {label} {job['error']}")
    lines.append("  steps finished:" if job["steps"] else "  steps finished: none")
    for step in job["steps"]:
        attempt = "" if step["attempt"] is None else f"attempt {step['attempt']}"
        summary = ", ".join(
            f"{key} {plain(value)}" for key, value in step["summary"].items() if value is not None
        )
        lines.append(f"    {step['step']:<9} {attempt:<10} {summary}")
    return lines


def _shorten(text: str, width: int = 80) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


@ingest.command("list")
@click.option(
    "--status", type=click.Choice(["queued", "processing", "done", "failed"]), default=None
)
@click.option("--limit", default=20, show_default=True, type=click.IntRange(1, 1000))
@click.option("--before", type=int, default=None, help="Only jobs older than this id.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def ingest_list(status: str | None, limit: int, before: int | None, as_json: bool) -> None:
    """Recent jobs, newest first."""
    from db.session import session_scope
    from tasks.ingest import control

    with session_scope() as session:
        rows = control.list_jobs(session, status=status, limit=limit, before=before)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo("no ingest jobs" + (f" {status}" if status else ""))
        return
    click.echo(
        f"{'ID':>8}  {'STATUS':<10}  {'KIND':<5}  {'STEP':<8}  {'ATT':>5}  {'CREATED':<32}  "
        f"{'TRACK':>7}  OBJECT / ERROR"
    )
    for row in rows:
        click.echo(
            f"{row['id']:>8}  {row['status']:<10}  {row['kind'] or '-':<5}  "
            f"{row['step'] or '-':<8}  {row['attempts']:>2}/{row['max_attempts']:<2}  "
            f"{row['created_at']:<32}  {row['track_id'] if row['track_id'] else '-':>7}  "
            f"{_shorten(row['error']) if row['error'] else row['object_path']}"
        )
    if len(rows) == limit:
        click.echo(f"older: --before {rows[-1]['id']}")


@main.group()
def admin() -> None:
    """Console users, their roles and API tokens (viewer reads; admin also acts; service
    may only trigger)."""


def _admin_errors() -> Any:
    from console.accounts import AccountError

    return AccountError


@admin.command("create")
@click.argument("username")
@click.option(
    "--role", type=click.Choice(["admin", "viewer", "service"]), default="viewer", show_default=True
)
def admin_create(username: str, role: str) -> None:
    """Add console user USERNAME with ROLE."""
    from console.accounts import create_admin
    from db.session import session_scope

    try:
        with session_scope() as session:
            create_admin(session, username, role)
            _audit_cli(session, "admin.create", username, {"role": role})
    except _admin_errors() as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(
        f"{username}: {role}; `automation admin token {username}` gives an API token, "
        f"`automation admin password {username}` sets a password for the status page"
    )


@admin.command("role")
@click.argument("username")
@click.argument("role", type=click.Choice(["admin", "viewer", "service"]))
def admin_role(username: str, role: str) -> None:
    """Change USERNAME's role (its tokens and sessions take it at their next request)."""
    from console.accounts import set_role
    from db.session import session_scope

    try:
        with session_scope() as session:
            set_role(session, username, role)
            _audit_cli(session, "admin.role", username, {"role": role})
    except _admin_errors() as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"{username}: {role}")


@admin.command("token")
@click.argument("username")
def admin_token(username: str) -> None:
    """Print a new API token for USERNAME, alone on the last line. It is shown once: only
    its digest is kept. Send it as `Authorization: Bearer TOKEN`."""
    from console.accounts import issue_token
    from db.session import session_scope

    try:
        with session_scope() as session:
            token, row = issue_token(session, username)
            _audit_cli(session, "admin.token", username, {"prefix": row.prefix})
    except _admin_errors() as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(
        f"{username}: new token {row.prefix}… (shown once; revoke with "
        f"`automation admin revoke {row.prefix}`)",
        err=True,
    )
    click.echo(token)


@admin.command("user-token")
@click.argument("user_id", type=int)
def admin_user_token(user_id: int) -> None:
    """Print a new token for listener USER_ID: it reads and regenerates only that user's
    smart playlists. Alone on the last line, shown once."""
    from console.accounts import issue_user_token
    from db.session import session_scope

    try:
        with session_scope() as session:
            token, row = issue_user_token(session, user_id)
            _audit_cli(session, "admin.user_token", f"user:{user_id}", {"prefix": row.prefix})
    except _admin_errors() as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"user {user_id}: new token {row.prefix}…", err=True)
    click.echo(token)


@admin.command("revoke")
@click.argument("token_or_user")
@click.option("--all", "everything", is_flag=True, help="Every token and session of a user.")
def admin_revoke(token_or_user: str, everything: bool) -> None:
    """Revoke a token (by its first characters, as `admin list` shows them), or with --all
    every token and page session of a user. Takes effect at its next request."""
    from console.accounts import revoke_all, revoke_token
    from db.session import session_scope

    now = dt.datetime.now(dt.UTC)
    try:
        with session_scope() as session:
            if everything:
                count = revoke_all(session, token_or_user, now)
            else:
                count = revoke_token(session, token_or_user, now)
            _audit_cli(session, "admin.revoke", token_or_user, {"revoked": count})
    except _admin_errors() as exc:
        raise click.ClickException(str(exc)) from None
    if not count:
        raise click.ClickException(f"no live token matches {token_or_user!r}")
    click.echo(f"revoked {count} credential(s)")


@admin.command("password")
@click.argument("username")
def admin_password(username: str) -> None:
    """Set USERNAME's status-page password, read from standard input (at least 12
    characters; stored as an argon2 hash)."""
    from console.accounts import set_password
    from db.session import session_scope

    if sys.stdin.isatty():
        password = click.prompt("password", hide_input=True, confirmation_prompt=True)
    else:
        password = sys.stdin.readline().rstrip("\n")
    try:
        with session_scope() as session:
            set_password(session, username, password)
            _audit_cli(session, "admin.password", username, {})
    except _admin_errors() as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"{username}: password set")


@admin.command("disable")
@click.argument("username")
def admin_disable(username: str) -> None:
    """Disable USERNAME: every token and session stops working at its next request."""
    from console.accounts import disable_admin
    from db.session import session_scope

    try:
        with session_scope() as session:
            count = disable_admin(session, username, dt.datetime.now(dt.UTC))
            _audit_cli(session, "admin.disable", username, {"revoked": count})
    except _admin_errors() as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"{username}: disabled; {count} credential(s) revoked")


@admin.command("list")
@click.argument("username", required=False)
def admin_list(username: str | None) -> None:
    """Console users with their roles; with USERNAME, that user's API tokens."""
    from console.accounts import list_admins, list_tokens
    from db.session import session_scope

    try:
        with session_scope() as session:
            if username is None:
                for row in list_admins(session):
                    click.echo(
                        f"{row['username']:<24} {row['role']:<8} "
                        f"{'password' if row['password'] else 'no password':<12} "
                        f"{row['live_tokens']} live token(s)"
                        + ("  DISABLED" if row["disabled"] else "")
                    )
                return
            for token in list_tokens(session, username):
                click.echo(
                    f"{token['prefix']}…  created {token['created_at']}  last used "
                    f"{token['last_used_at'] or 'never'}"
                    + (f"  REVOKED {token['revoked_at']}" if token["revoked_at"] else "")
                )
    except _admin_errors() as exc:
        raise click.ClickException(str(exc)) from None


@main.group()
def spotify() -> None:
    """Users' Spotify connections (refresh tokens are stored encrypted)."""


@spotify.command("connect")
@click.argument("user_id", type=int)
def spotify_connect(user_id: int) -> None:
    """Store USER_ID's Spotify refresh token, read from standard input."""
    from db.session import session_scope
    from tasks.enrichment.accounts import connect
    from worker.secrets import SecretCipher

    refresh_token = sys.stdin.readline().strip()
    if not refresh_token:
        raise click.ClickException("no refresh token on standard input")
    settings = get_settings()
    with session_scope() as session:
        connect(
            session,
            SecretCipher.from_settings(settings),
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
    from worker.secrets import new_key

    click.echo(new_key())


if __name__ == "__main__":
    main()
