"""Serving: waitress with the service's settings, its own errors in the JSON envelope, and a clean stop."""

import logging
import signal
import threading
import time

import waitress
import waitress.channel
import waitress.task
from flask import Flask
from waitress import wasyncore

from backup_api import logs, storage
from backup_api.config import MAX_BODY_BYTES, ConfigError
from backup_api.errors import envelope_bytes


class JSONErrorTask(waitress.task.ErrorTask):
    """Answer waitress's own errors (413, malformed HTTP) in the JSON envelope too."""

    def execute(self):
        error = self.request.error
        body = envelope_bytes(f"{error.reason}: {error.body}")
        self.status = f"{error.code} {error.reason}"
        self.response_headers.append(("Content-Type", "application/json"))
        self.set_close_on_finish()
        self.content_length = len(body)
        self.write(body)


class JSONErrorChannel(waitress.channel.HTTPChannel):
    """An HTTP channel whose error responses are JSON (the channel every server uses, unless given another)."""

    error_task_class = JSONErrorTask


# The waitress settings `serve` uses (the README's configuration section explains them).
WAITRESS = {
    "connection_limit": 1000,
    "channel_timeout": 30,
    "cleanup_interval": 10,
    "max_request_header_size": 64 * 1024,
    "max_request_body_size": 2 * MAX_BODY_BYTES,
}


# Worker threads. Requests waiting for a commit share the next one (and its fsync): eight let
# eight clients' writes share it, which took single events from about 2,000 to 2,300 a second
# on 2 cores (make bench; 16 did no better).
THREADS = 8


# How long a stop (SIGTERM, SIGINT) waits for the requests under way to be answered.
STOP_GRACE_SECONDS = 10


def create(app: Flask, host: str = "127.0.0.1", port: int = 8000, threads: int = THREADS,
           channel: type[waitress.channel.HTTPChannel] = JSONErrorChannel):
    """Make the waitress server for app, listening on host:port (0: a free port), with the service's settings.

    channel: the class of its HTTP connections (a JSONErrorChannel, or a subclass of it).
    """
    try:
        server = waitress.create_server(
            app,
            host=host,
            port=port,
            threads=threads,
            # Idle and slow connections cost a socket, not a thread (waitress reads requests
            # whole before a thread sees them): allow many, and close the silent ones sooner
            # than waitress's default 120 s.
            connection_limit=WAITRESS["connection_limit"],
            channel_timeout=WAITRESS["channel_timeout"],
            cleanup_interval=WAITRESS["cleanup_interval"],
            max_request_header_size=WAITRESS["max_request_header_size"],
            # Above Flask's own 1 MiB limit, so that Flask answers 413 for most bodies; waitress
            # refuses anything larger still, by Content-Length, before buffering it.
            max_request_body_size=WAITRESS["max_request_body_size"],
        )
    except OSError as exc:  # the port taken, or an address not of this machine
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    server.channel_class = channel
    # Waitress warns "Task queue depth is N" on nearly every request under load, drowning the
    # access log, whose durations show load anyway; its errors still come through.
    logging.getLogger("waitress.queue").setLevel(logging.ERROR)
    return server


def run(app: Flask, server, stop: list) -> None:
    """Serve until stop holds something (pull the server's trigger after adding it), then stop cleanly."""
    try:
        while not stop:
            _serve_once(server, server.adj.asyncore_loop_timeout)
        app.logger.info("stopping on %s: no new connections; answering the requests under way", stop[0])
        _finish_requests(server)
    finally:
        server.task_dispatcher.shutdown(cancel_pending=True, timeout=STOP_GRACE_SECONDS)
        wasyncore.close_all(server._map)
        storage.close_store(app)
    app.logger.info("stopped cleanly")


def serve(app: Flask, host: str = "127.0.0.1", port: int = 8000, threads: int = THREADS,
          channel: type[waitress.channel.HTTPChannel] = JSONErrorChannel) -> None:
    """Serve app with waitress until SIGTERM or SIGINT, then stop cleanly."""
    server = create(app, host, port, threads, channel)
    logs.lighten_records()
    stop = []

    def request_stop(signum, frame):
        stop.append(signal.Signals(signum).name)
        server.pull_trigger()  # wake the event loop now, not at its next timeout

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, request_stop)
    # Printed, not logged, so that scripts can read the port (useful with --port 0).
    print(f"Serving on http://{server.effective_host}:{server.effective_port}", flush=True)
    run(app, server, stop)


class InThread:
    """The app served by waitress in a thread of this process, as the pytest plugin runs it."""

    def __init__(self, app: Flask, host: str = "127.0.0.1", port: int = 0, threads: int = THREADS,
                 channel: type[waitress.channel.HTTPChannel] = JSONErrorChannel):
        self.app = app
        self._server = create(app, host, port, threads, channel)
        self.url = f"http://{self._server.effective_host}:{self._server.effective_port}"
        self._stop: list = []
        self._thread = threading.Thread(target=run, args=(app, self._server, self._stop), daemon=True,
                                        name="backup-api-server")
        self._thread.start()

    def stop(self) -> None:
        """Stop it as a signal would: the requests under way are answered first."""
        self._stop.append("stop()")
        self._server.pull_trigger()
        self._thread.join(timeout=STOP_GRACE_SECONDS + 5)


def _serve_once(server, timeout: float) -> None:
    """Run one turn of waitress's event loop."""
    wasyncore.loop(timeout=timeout, map=server._map, use_poll=server.adj.asyncore_use_poll, count=1)


def _finish_requests(server) -> None:
    """Stop listening, answer every request already received, and close connections as they fall idle."""
    # Connections the kernel has completed but waitress has not yet accepted would be reset when
    # the listening socket closes, and the requests their clients already sent on them lost:
    # take them in first.
    known = None
    while len(server._map) != known:
        known = len(server._map)
        server.handle_accept()
    # The listening socket alone: new connections are refused from here on. Not server.close(), which
    # closes the trigger too, that workers finishing a request pull to wake this loop (EBADF).
    wasyncore.dispatcher.close(server)
    deadline = time.monotonic() + STOP_GRACE_SECONDS
    while time.monotonic() < deadline:
        # A turn first: requests already sent, still in the sockets, are read and go to work.
        _serve_once(server, 0.05)
        busy = False
        for channel in list(server._map.values()):
            if isinstance(channel, waitress.channel.HTTPChannel):
                if channel.requests or channel.total_outbufs_len:
                    busy = True
                else:
                    channel.handle_close()
        if not busy:
            return
