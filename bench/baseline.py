"""The benchmark's baseline: a bare Flask app with one route, served exactly as the service is."""

import click
from flask import Flask

from backup_api import server


def create_app() -> Flask:
    """Return a Flask app that answers {"status": "ok"} to POST /player-events and does nothing else."""
    app = Flask(__name__)

    @app.post("/player-events")
    def ok():
        return {"status": "ok"}

    add_serve_command(app)
    return app


def add_serve_command(app: Flask) -> None:
    """Give app the service's `serve` command, so that it runs under the same waitress settings."""

    @app.cli.command("serve")
    @click.option("--host", default="127.0.0.1")
    @click.option("--port", default=8000, type=int)
    @click.option("--threads", default=server.THREADS, type=int)
    def serve(host, port, threads):
        """Serve with the service's own waitress settings."""
        server.serve(app, host=host, port=port, threads=threads)
