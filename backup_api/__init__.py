"""The Game Backup API: keeps casino partners' player events and VIP flags safely.

`flask --app backup_api`, `waitress-serve --call backup_api:create_app` and the `game-backup-api`
command (backup_api.cli) all start from create_app. The README's "Where things are" names each module.
"""

__version__ = "0.2.0"

from backup_api.app import ConfigError, create_app  # noqa: E402  (after __version__, which cli reads)

__all__ = ["ConfigError", "__version__", "create_app"]
