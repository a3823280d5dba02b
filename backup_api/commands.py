"""The service's commands (on `flask --app backup_api`, the `game-backup-api` command and the executable):
serve, settings, token (issue, revoke, lift, revocations, rotate-secret, retire-secrets), events and players
export/import, db snapshot/restore/check.

Each is a click command at module level, run in the app's context (with_appcontext, or an AppGroup),
so that a test can invoke it with app.test_cli_runner(); init_app adds them to the app.
"""

import json
import os
import time

import click
from flask import Flask, current_app
from flask.cli import AppGroup, with_appcontext
from marshmallow import ValidationError

from backup_api import (
    config,
    export_lines,
    keys,
    loading,
    retention,
    revocations,
    schemas,
    server,
    storage,
    tokens,
)
from backup_api.loading import LineError
from backup_api.storage import get_store, totals


@click.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (0.0.0.0: all).")
@click.option("--port", default=8000, show_default=True, type=int,
              help="Port to listen on (0: a free one, printed at start).")
@click.option("--threads", default=server.THREADS, show_default=True, type=int, help="Worker threads.")
@click.option("--stand-in", "stand_in", is_flag=True,
              help="Keep nothing: an ephemeral database, discarded at exit, and the /_stand-in/ routes"
                   " (reset, faults, rejections), for integration tests. Tokens: BACKUP_API_JWT_SECRET.")
@with_appcontext
def serve_command(host, port, threads, stand_in):
    """Serve the API with waitress, until SIGTERM or SIGINT (Ctrl-C) stops it cleanly.

    It prints "Serving on http://HOST:PORT" once it listens, and one log line per request on
    stderr. The database is BACKUP_API_DATABASE (default: instance/backup.db under the working
    directory), its secret jwt-secret beside it; both are made on first start. With --stand-in,
    nothing is kept (see docs/test-suites/).
    """
    app = current_app._get_current_object()
    channel: type = server.JSONErrorChannel
    if stand_in or app.config["STAND_IN"]:
        from backup_api import standin  # here, as in create_app: only a stand-in loads it

        if not app.config["STAND_IN"]:
            standin.init_app(app)
        channel = standin.StandInChannel
    get_store(app)  # opened before the first request, so that a bad one fails here
    keys.secret_key(app)
    pruner = None
    if app.config["RETENTION_DAYS"] is not None and not app.config["STAND_IN"]:
        pruner = retention.Pruner(app).start()
    try:
        server.serve(app, host=host, port=port, threads=threads, channel=channel)
    finally:
        if pruner is not None:
            pruner.stop()


token = AppGroup("token", help="Mint, revoke and rotate bearer tokens.")


@token.command("issue")
@click.argument("partners", nargs=-1, required=True)
@click.option("--days", default=90, show_default=True, type=click.IntRange(min=1),
              help="How many days the token is valid (at most BACKUP_API_MAX_TOKEN_DAYS).")
@click.option("--sub", help="The token holder, recorded with what it writes (default: the first partner).")
@click.option("--scope", "scopes", multiple=True, metavar="SCOPE",
              help=f"What it may do, repeatable: {', '.join(tokens.SCOPES)} (default: the first four;"
                   " players:erase only when named).")
@click.option("--ns", help="A stand-in's namespace: the token's world of its own there (the durable service"
              " ignores it).")
def issue(partners, days, sub, scopes, ns):
    """Print a bearer token that owns PARTNERS (partner_ids), signed with this database's secret."""
    if not all(partners):
        raise click.BadParameter("a partner_id cannot be empty", param_hint="PARTNERS")
    if ns is not None and not tokens.is_namespace(ns):
        raise click.BadParameter(f"a namespace is 1 to {tokens.MAX_NAMESPACE_CHARS} characters, without control"
                                 " characters", param_hint="--ns")
    chosen = [name for given in scopes for name in given.replace(",", " ").split()] if scopes else None
    most = int(current_app.config["MAX_TOKEN_DAYS"])
    if days > most:
        raise click.ClickException(f"--days {days} is past BACKUP_API_MAX_TOKEN_DAYS ({most}): the service would"
                                   " refuse the token")
    if current_app.config["STAND_IN"] and current_app.config["JWT_SECRET"] is None:
        raise click.ClickException("a stand-in keeps no secret: set BACKUP_API_JWT_SECRET, here and for the"
                                   " stand-in, to mint tokens it accepts")
    keys.secret_key()  # a ConfigError, printed as one line, when it cannot be opened
    try:
        click.echo(tokens.issue(partners, days, sub, chosen, ns))
    except ValueError as exc:  # an unknown scope, or none: tokens.issue says which
        raise click.ClickException(f"--scope: {exc}") from None


@token.command("rotate-secret")
def rotate_secret():
    """Make a new secret in jwt-secret; the old one keeps verifying (jwt-secret.previous) until retire-secrets.

    Running servers read the secrets at start: restart them to sign with the new one.
    """
    kid = keys.rotate_secret_file(current_app._get_current_object())
    click.echo(f"a new secret (kid {kid}) signs from the next start; the old one still verifies until"
               " `token retire-secrets`")


@token.command("retire-secrets")
def retire_secrets():
    """Remove jwt-secret.previous: from the next start, tokens signed with those secrets are refused."""
    held = keys.retire_previous_file(current_app._get_current_object())
    click.echo(f"{held} previous secret{'' if held == 1 else 's'} retired: tokens they signed are refused"
               " from the next start")


def _revocation_target(jti: str | None, sub: str | None) -> tuple[str, str]:
    """The kind and value that --jti or --sub (exactly one, not empty) name."""
    if (jti is None) == (sub is None):
        raise click.ClickException("name the token by --jti, or its holder by --sub (one of the two)")
    kind, value = ("jti", jti) if jti is not None else ("sub", sub)
    # The holder rule, which a token's sub meets (a jti too: recorded as text beside it).
    if not schemas.is_holder(value):
        raise click.ClickException(f"--{kind} cannot be empty, nor hold control characters")
    assert isinstance(value, str)
    return kind, value


_JTI = click.option("--jti", help="The token's jti claim.")
_SUB = click.option("--sub", help="The token holder (sub claim): every token of theirs issued up to now.")


@token.command("revoke")
@_JTI
@_SUB
def revoke(jti, sub):
    """Revoke one token (--jti), or every token of a holder issued up to now (--sub).

    Every server on this database refuses it within seconds (401 "the token has been revoked"),
    until `token lift`. A holder's tokens without an iat claim are revoked too; those issued once
    this command has returned are not.
    """
    kind, value = _revocation_target(jti, sub)
    try:
        revoked_at = get_store().revoke(kind, value)
    except storage.StorageError as exc:
        raise click.ClickException(str(exc)) from None
    if kind == "sub":
        # iat counts whole seconds: a token issued in the second of the revocation would be
        # revoked too, so the command returns once that second is over.
        time.sleep(max(0.0, (revoked_at // 1_000_000 + 1) - time.time()))
    what = f"the token with jti {value!r}" if kind == "jti" else f"every token of {value!r} issued up to now"
    click.echo(f"revoked {what} at {storage.rfc3339_us(revoked_at)}; servers refuse it within"
               f" {revocations.REFRESH_SECONDS:g} s")


@token.command("lift")
@_JTI
@_SUB
def lift(jti, sub):
    """Lift the revocation of a token (--jti) or of a holder (--sub): the servers accept it again within seconds."""
    kind, value = _revocation_target(jti, sub)
    try:
        lifted = get_store().lift(kind, value)
    except storage.StorageError as exc:
        raise click.ClickException(str(exc)) from None
    if not lifted:
        raise click.ClickException(f"no revocation of {kind} {value!r} is recorded (see `token revocations`)")
    click.echo(f"lifted the revocation of {kind} {value!r}")


@token.command("revocations")
def list_revocations():
    """List the revocations, oldest first: KIND (jti or sub), VALUE and when, separated by tabs."""
    try:
        listed = get_store().revocations()
    except storage.StorageError as exc:
        raise click.ClickException(str(exc)) from None
    for kind, value, revoked_at in listed:
        click.echo(f"{kind}\t{value}\t{storage.rfc3339_us(revoked_at)}")
    if not listed:
        click.echo("no token is revoked", err=True)


events = AppGroup("events", help="Export and import stored events.")


# Where an export goes: stdout, or a new file of its owner's alone (mode 0600, as snapshots are).
_OUTPUT = click.option("--output", "-o", type=click.Path(dir_okay=False),
                       help="Write to this new file (mode 0600, its folder made 0700) rather than stdout.")


@events.command("export")
@click.option("--partner", help="Only this partner_id.")
@click.option("--player", help="Only this player_login.")
@_OUTPUT
def export_events(partner, player, output):
    """Write stored events as JSON Lines, oldest first."""
    _write_lines(export_lines.event_lines(get_store().export_events(partner, player)), output)


@events.command("summary")
@click.option("--partner", required=True, help="The partner_id.")
@click.option("--from", "first", help="The first day (UTC, of received_at), YYYY-MM-DD; none: the first held.")
@click.option("--to", "last", help="The last day, YYYY-MM-DD; none: the last held.")
def summary_command(partner, first, last):
    """Print a partner's events and the exact sum of their amounts by day, event_type and currency.

    One line each, separated by tabs: DAY, EVENT_TYPE, CURRENCY, EVENTS, AMOUNT (- for none), as
    GET /player-events/summary gives them.
    """
    args = {"partner_id": [partner], **({"from": [first]} if first else {}), **({"to": [last]} if last else {})}
    try:
        query = schemas.validate_summary_query(args)
    except ValidationError as exc:
        raise click.UsageError("; ".join(f"--{name}: {' '.join(map(str, problems))}"
                                         for name, problems in exc.normalized_messages().items())) from None
    try:
        rows = get_store().summary(partner, query["first"] or schemas.FIRST_DAY, query["last"] or schemas.LAST_DAY)
    except storage.StorageError as exc:
        raise click.ClickException(str(exc)) from None
    for row in rows:
        amount = "-" if row.amount is None else totals.amount_text(row.amount)
        click.echo(f"{row.day}\t{row.event_type}\t{row.currency or '-'}\t{row.events}\t{amount}")


@events.command("import")
@click.argument("file", type=click.File("rb"))
def import_events(file):
    """Load events written by `events export` from FILE (- for stdin), every line checked first.

    A bad line stops it before anything is stored. The events then go in in pieces of about a
    second, so that the service's own writes get their turn between them. Into an empty database
    everything comes back as it was, ids included; into one that holds events, those already held
    are skipped and the rest get new ids. The events of a player erased since are skipped too.
    """
    imported, held, skipped = _import(file, export_lines.load_exported_row, get_store().import_events)
    click.echo(f"imported {imported}, already held {held}" + _skipped(skipped))


def _skipped(count: int) -> str:
    return f", skipped {count} of players erased since (players erasures lists them)" if count else ""


players = AppGroup("players", help="Export, import and erase players' VIP flags and events.")


@players.command("erase")
@click.argument("partner", required=False)
@click.argument("player", required=False)
@click.option("--from-receipts", "receipts_file", type=click.File("r"),
              help="Apply the receipts `players erasures --output` wrote from a later copy of this database (after"
                   " a restore of an older snapshot): erase again the players they name.")
def erase_player(partner, player, receipts_file):
    """Erase PLAYER of PARTNER: every event of theirs and their VIP flag, in one transaction, with a receipt.

    The receipt (players erasures) keeps when, who, how many, and a salted digest of the player, never
    the login. A player_login holding "/" (which no URL path can carry) is erased here.
    """
    store = get_store()
    if receipts_file is not None:
        if partner or player:
            raise click.UsageError("give PARTNER PLAYER, or --from-receipts, not both")
        try:
            receipts = [storage.Receipt._make(export_lines.load_receipt(line)) for line in receipts_file
                        if line.strip()]
        except (ValueError, KeyError, TypeError) as exc:
            raise click.ClickException(f"{receipts_file.name} is not a file of receipts: {exc}") from None
        try:
            players_erased, events = store.reapply(receipts)
        except storage.StorageError as exc:
            raise click.ClickException(str(exc)) from None
        click.echo(f"applied {len(receipts)} receipts: erased {players_erased} players ({events} events)")
        return
    if not partner or not player:
        raise click.UsageError("give PARTNER and PLAYER (or --from-receipts FILE)")
    try:
        receipt = store.erase_player(partner, player, "command")
    except storage.StorageError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"erased {receipt.events} events and {'the' if receipt.vip else 'no'} VIP flag of {player!r}"
               f" ({partner}); receipt digest {receipt.player_digest}")


@players.command("erasures")
@click.option("--partner", help="Only this partner_id's.")
@_OUTPUT
def list_erasures(partner, output):
    """Write the receipts of the erasures as JSON Lines, oldest first (for `players erase --from-receipts`)."""
    _write_lines(export_lines.receipt_lines(get_store().erasures(partner)), output)


@players.command("export")
@_OUTPUT
def export_players(output):
    """Write the VIP flags as JSON Lines."""
    _write_lines(export_lines.player_lines(get_store().export_players()), output)


def _write_lines(lines, output: str | None) -> None:
    """Write lines to stdout, or to the new private file output (whole, or not at all)."""
    if output is None:
        for line in lines:
            click.echo(line)
        return
    try:
        storage.write_private_file(output, (line + "\n" for line in lines))
    except (OSError, storage.StorageError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"written to {output}", err=True)


@players.command("import")
@click.argument("file", type=click.File("rb"))
def import_players(file):
    """Load VIP flags written by `players export` from FILE (- for stdin), every line checked first.

    A flag newer than the one held (by updated_at) replaces it; an older one is skipped.
    """
    imported, updated, held, skipped = _import(file, export_lines.load_exported_player, get_store().import_players)
    click.echo(f"imported {imported}, updated {updated}, already held {held}" + _skipped(skipped))


def _import(file, load, store_all):
    """Check each line of file with load and hand them all to store_all; a bad line aborts it all, by number."""
    lines = loading.checked_lines(loading.bounded_lines(file), load)
    try:
        return store_all(lines)
    except LineError as exc:
        raise click.ClickException(f"line {exc.line}: {_describe(exc.__cause__)}; nothing was imported") from None
    except storage.ImportStopped as exc:
        if not isinstance(exc.__cause__, (storage.RecordError, storage.StorageError, KeyboardInterrupt)):
            raise  # not the file's fault, nor the database's: a defect, with its traceback
        raise click.ClickException(_why(exc.__cause__, exc.committed)) from None
    except (storage.RecordError, storage.StorageError, KeyboardInterrupt) as exc:  # before anything was stored
        raise click.ClickException(_why(exc, 0)) from None
    finally:
        # Stopped before its end (ids out of order, say): its worker processes are ended now, not
        # whenever the collector finds the generator.
        lines.close()


def _why(exc: BaseException | None, committed: int) -> str:
    """Why an import failed, by line where a line is at fault, and what it kept."""
    if isinstance(exc, storage.RecordError):  # a conflict, or ids out of order: the index-th record is its line
        return f"line {exc.index + 1}: {exc}; {_kept(committed)}"
    if isinstance(exc, KeyboardInterrupt):
        return f"interrupted; {_kept(committed)}"
    return f"{exc}; {_kept(committed)}"


def _kept(committed: int) -> str:
    """What an import that failed kept: nothing, or the pieces it stored before (committed records)."""
    if not committed:
        return "nothing was imported"
    return (f"lines 1 to {committed} were imported before it, the rest were not: run the import again"
            " (after mending the line, if it is at fault) and those count as already held")


def _describe(exc: Exception) -> str:
    """What is wrong with a line, as the import says it."""
    return json.dumps(exc.messages, ensure_ascii=False) if isinstance(exc, ValidationError) else str(exc)


db = AppGroup("db", help="Look after the database.")


@db.command("snapshot")
@click.argument("path", type=click.Path(dir_okay=False))
def snapshot(path):
    """Write a consistent copy of the live database to PATH (safe while serving)."""
    try:
        storage.make_private_folder(os.path.dirname(os.path.abspath(path)))
        get_store().snapshot(path)
    except (OSError, storage.StorageError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"snapshot written to {path}")


@db.command("restore")
@click.argument("snapshot_path", metavar="SNAPSHOT", type=click.Path(exists=True, dir_okay=False))
def restore(snapshot_path):
    """Replace the database with SNAPSHOT, keeping the file it replaces under a new name.

    The snapshot must be a sound database of this version's layout; the database must not be
    in use (stop the server first).
    """
    store = get_store()
    try:
        kept, events, players = store.restore(snapshot_path)
    except storage.StorageError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"restored {snapshot_path} ({events} events, {players} players) to {store.name}")
    if kept:
        click.echo(f"the database it replaced is kept as {kept}")


@db.command("prune")
@click.option("--before", help="Delete the events received before this day (UTC), YYYY-MM-DD; without it, those"
              " older than BACKUP_API_RETENTION_DAYS.")
def prune_command(before):
    """Delete old events, in small pieces that hold no writer long (VIP flags are kept); print how many."""
    days = current_app.config["RETENTION_DAYS"]
    if before is not None:
        try:
            cutoff = retention.day_start(schemas.Day().deserialize(before))
        except ValidationError as exc:
            raise click.BadParameter(" ".join(exc.messages), param_hint="--before") from None
    elif days is None:
        raise click.UsageError("give --before YYYY-MM-DD, or set BACKUP_API_RETENTION_DAYS")
    else:
        cutoff = retention.cutoff(days)
    try:
        pruned = retention.prune(current_app._get_current_object(), cutoff)
    except storage.StorageError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"deleted {pruned} events received before {storage.rfc3339_us(cutoff)}")


@db.command("check")
def check():
    """Check the database: its layout, SQLite's integrity_check, and what it holds; exit 1 if unsound."""
    store = get_store()
    try:
        layout, integrity, events, players = store.check()
    except storage.StorageError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"database: {store.name}")
    click.echo(f"layout: {layout}")
    click.echo("integrity_check: " + "; ".join(integrity))
    click.echo(f"events: {events}")
    click.echo(f"players: {players}")
    differences = store.check_totals() if layout == storage.SCHEMA_VERSION else ["not kept in this layout"]
    click.echo("totals: " + ("; ".join(differences) or "ok"))
    if layout != storage.SCHEMA_VERSION or integrity != ["ok"] or differences:
        raise click.exceptions.Exit(1)


@click.command("settings")
@click.option("--markdown", is_flag=True, help="Print the table of docs/operators/settings.md instead.")
@with_appcontext
def settings_command(markdown):
    """Print every BACKUP_API_* setting in effect: its value and where it came from (a secret: set or unset).

    One line each, separated by tabs: NAME, VALUE, SOURCE (environment or default). A value the
    service cannot run with stops it here as it would stop serve: one line, Error: ..., status 1.
    """
    if markdown:
        click.echo(config.settings_table(), nl=False)
        return
    app = current_app._get_current_object()
    sources = app.extensions["settings"]
    for setting in config.SETTINGS:
        click.echo(f"{config.PREFIX}{setting.name}\t{config.shown(app, setting)}\t{sources[setting.name]}")


# The service's commands, in the order docs/operators/commands.md shows them.
COMMANDS = (serve_command, settings_command, token, events, players, db)


def init_app(app: Flask) -> None:
    """Add the serve, settings, token, events, players and db commands to app."""
    for command in COMMANDS:
        app.cli.add_command(command)
