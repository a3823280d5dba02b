"""The Game Backup API: keeps casino partners' player events and VIP flags safely.

`flask --app backup_api`, `waitress-serve --call backup_api:create_app` and the `game-backup-api`
command (backup_api.cli) all start from create_app. docs/design/development.md ("Where things are") names each module.
"""

from backup_api.app import create_app
from backup_api.config import ConfigError
from backup_api.version import __version__

__all__ = ["ConfigError", "__version__", "create_app"]
