"""The single executable's entry point (PyInstaller builds it): the game-backup-api command."""

from backup_api.cli import main

if __name__ == "__main__":
    main(prog_name="game-backup-api")
