"""The `game-backup-api` command: the service's own commands, with its own app and nothing else."""

import click
from flask.cli import FlaskGroup

from backup_api import config
from backup_api.app import create_app
from backup_api.version import __version__


@click.group(
    cls=FlaskGroup,
    create_app=create_app,
    # Only the service's own commands: Flask's development server and shell are not for operators.
    add_default_commands=False,
    add_version_option=False,
    load_dotenv=False,
    help="The Game Backup API: keep casino partners' player events and VIP flags safely.\n\n"
    "Configured by BACKUP_API_* environment variables: `settings` lists them, with the values in effect."
    " BACKUP_API_DATABASE names the"
    f" SQLite file (default: {config.DEFAULT_DATABASE} under the working directory), created with its folder"
    " when missing; the JWT secret is kept beside it, in jwt-secret. Back up both.",
)
@click.version_option(__version__, prog_name="game-backup-api")
def main():
    """The `game-backup-api` command: the same commands as `flask --app backup_api`."""


# FlaskGroup's --app and --debug would let this command load another app or run in debug mode: the
# service's command has its own app and neither. Its --env-file stays: `--env-file FILE` reads the
# BACKUP_API_* settings from a systemd EnvironmentFile (KEY=value lines) before any command runs, so
# that `token issue` and the service read the same database and secret (python-dotenv reads it).
main.params = [param for param in main.params if param.name not in ("app", "debug")]
for param in main.params:
    if param.name == "env_file":
        param.help = ("Read the BACKUP_API_* settings from FILE (the service's systemd EnvironmentFile: KEY=value"
                      " lines) before the command runs; a variable already set in the environment wins.")
