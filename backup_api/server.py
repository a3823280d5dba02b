"""Serving: waitress with the service's settings, its own errors in the JSON envelope, and a clean stop."""

import collections
import contextlib
import gc
import logging
import resource
import signal
import socket
import threading
import time
from typing import cast

import waitress.channel
import waitress.task
from flask import Flask
from waitress import wasyncore
from waitress.adjustments import Adjustments
from waitress.server import TcpWSGIServer
from waitress.task import ThreadedTaskDispatcher

from backup_api import config, logs, storage
from backup_api.config import MAX_BODY_BYTES, ConfigError
from backup_api.errors import envelope_bytes


class AnsweredTask(waitress.task.Task):
    """A task that counts its connection's bytes as answered (ClientBounds) once it has written its answer.

    Here, not after the channel's service(): that ends by waking the event loop for the connection's
    next request, and a worker that went on to take the bounds' lock held the GIL the woken loop
    wanted. One client's requests ran 2 to 4% slower for it (issue 41, measured in turns).
    """

    def service(self):
        try:
            super().service()
        finally:
            bounded = self.channel.bounded  # the worker's thread: held is changed under the bounds' lock only
            if bounded is not None:
                bounded.release(self.channel)


class JSONErrorTask(AnsweredTask, waitress.task.ErrorTask):
    """Answer waitress's own errors (413, malformed HTTP) in the JSON envelope too."""

    def execute(self):
        error = self.request.error
        body = envelope_bytes(f"{error.reason}: {error.body}")
        self.status = f"{error.code} {error.reason}"
        self.response_headers.append(("Content-Type", "application/json"))
        self.set_close_on_finish()
        self.content_length = len(body)
        self.write(body)


class PeerTask(AnsweredTask, waitress.task.WSGITask):
    """A request's task whose environ keeps the connection's own address, whatever a proxy forwarded,
    and whose answer closes its connection while the server drains (Connection is waitress's to set)."""

    def get_environment(self):
        environ = super().get_environment()
        environ.setdefault(logs.PEER_ADDRESS, self.channel.addr[0])
        return environ

    def build_response_header(self):
        if self.channel.server.draining:
            # The client's next request opens a new connection: through the proxy, to another process.
            self.set_close_on_finish()
        return super().build_response_header()


class ClientBounds:
    """What each client address may hold of the server at once: connections, and bytes received and not yet answered.

    Behind a reverse proxy every connection is the proxy's: its address (every one, for *) is not
    bounded here, and the proxy's own limits are the ones that count. Counted by the event loop's
    thread and released by the workers', under one lock.
    """

    def __init__(self, connections: int, held_bytes: int, exempt: str | None):
        self.connections, self.held_bytes, self.exempt = connections, held_bytes, exempt
        self._open: collections.Counter = collections.Counter()
        self._held: collections.Counter = collections.Counter()
        self._lock = threading.Lock()

    def bounds(self, address: str) -> bool:
        """Tell whether address is bounded (not the trusted proxy's)."""
        return self.exempt != "*" and address != self.exempt

    def opened(self, address: str) -> bool:
        """Count a connection of address; tell whether it is within the bound (counted either way)."""
        with self._lock:
            self._open[address] += 1
            return self._open[address] <= self.connections

    def closed(self, channel: "JSONErrorChannel") -> None:
        """Forget a connection, and the bytes it held."""
        with self._lock:
            self._count_down(self._open, channel.addr[0], 1)
            self._count_down(self._held, channel.addr[0], channel.held)
            channel.held = 0

    def take(self, channel: "JSONErrorChannel", size: int) -> bool:
        """Count size bytes more held by a connection, unless its address would pass the bound; tell which."""
        with self._lock:
            if self._held[channel.addr[0]] + size > self.held_bytes:
                return False
            self._held[channel.addr[0]] += size
            channel.held += size
            return True

    def release(self, channel: "JSONErrorChannel") -> None:
        """Count the bytes a connection held as answered (its requests served)."""
        with self._lock:
            self._count_down(self._held, channel.addr[0], channel.held)
            channel.held = 0

    @staticmethod
    def _count_down(counter: collections.Counter, address: str, amount: int) -> None:
        counter[address] -= amount
        if counter[address] <= 0:
            del counter[address]  # one entry per address that holds something, no more


class JSONErrorChannel(waitress.channel.HTTPChannel):
    """An HTTP channel whose error responses are JSON (the channel every server uses, unless given another).

    It also notes when the request it is reading began (its first byte), for the deadline that
    close_late_requests keeps: waitress's own timeout starts again at every byte; and it keeps
    its client within the server's ClientBounds.
    """

    error_task_class = JSONErrorTask
    task_class = PeerTask
    request_began: float | None = None  # time.monotonic() of the partial request's first byte
    held = 0  # bytes received and not yet answered, counted in the server's ClientBounds (under its lock)
    bounded: ClientBounds | None = None

    def __init__(self, server, sock, addr, adj, map=None):
        super().__init__(server, sock, addr, adj, map)
        server.accepted += 1
        bounds = server.client_bounds
        if bounds is None or not bounds.bounds(self.addr[0]):
            return
        self.bounded = bounds
        if not bounds.opened(self.addr[0]):
            # Refused as soon as accepted, with a word for the client: its send buffer is empty.
            with contextlib.suppress(OSError):
                self.socket.send(TOO_MANY_CONNECTIONS)
            self.close()

    def del_channel(self, map=None):
        bounded, self.bounded = self.bounded, None
        if bounded is not None:
            bounded.closed(self)
        super().del_channel(map)

    def writable(self):
        """Waitress's test, less the time a task holds the output lock: the task is writing its answer, and sends it
        itself (pulling the trigger when the socket cannot take it all, and when it ends).

        Waitress asked poll() about such a socket: writable at once, again and again, while handle_write could
        not take the lock. The event loop spun, holding the GIL the task needed to finish, and eight connections
        got a fifth of one connection's rate (issue 41).
        """
        wants = super().writable()  # bytes waiting, or a close (nearly always nothing: a task sends its own)
        if wants and self.requests and not (self.will_close or self.close_when_flushed):
            if not self.outbuf_lock.acquire(False):
                return False
            self.outbuf_lock.release()
        return wants

    def received(self, data):
        if self.bounded is not None and data and not self.bounded.take(self, len(data)):
            self.will_close = True  # more than its client may hold: closed, unanswered
            return False
        partial = self.request
        result = super().received(data)
        if self.request is None:
            self.request_began = None  # nothing half-read
        elif self.request is not partial:
            self.request_began = time.monotonic()  # a new request began with these bytes
        return result


# The answer to a connection past MAX_CONNECTIONS_PER_CLIENT, sent as it is closed.
_REFUSED = envelope_bytes("too many connections from this address (BACKUP_API_MAX_CONNECTIONS_PER_CLIENT)")
TOO_MANY_CONNECTIONS = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
                        b"Connection: close\r\nContent-Length: %d\r\n\r\n" % len(_REFUSED)) + _REFUSED

# The waitress settings `serve` uses (docs/operators/settings.md explains them); the
# connection limit is derived from the descriptors the process may open (connection_limit).
WAITRESS = {
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

# A request's headers and body must arrive within this long of its first byte, however slowly
# they drip (waitress's channel_timeout starts again at every byte): then the connection is closed.
REQUEST_DEADLINE_SECONDS = 20

# Descriptors kept for everything but clients' connections: the store's files or its pool, the
# listening socket and waitress's trigger, logs, an export, the metrics' reads of /proc.
RESERVED_DESCRIPTORS = 256
# Connections at most, whatever the descriptor limit: each costs a little memory even when idle.
MAX_CONNECTIONS = 20_000
# Connections accepted in one turn of the event loop, at most.
ACCEPTS_PER_TURN = 64


def raise_descriptor_limit() -> tuple[int, int]:
    """Raise this process's soft limit on open descriptors to its hard limit; return (soft before, soft now)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):  # an infinite hard limit the kernel caps lower, say: keep the soft one
            pass
    return soft, resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def connection_limit(more_reserved: int = 0) -> int:
    """The connections waitress may hold: the descriptor limit, less what the rest of the process needs.

    more_reserved: descriptors the app needs beyond RESERVED_DESCRIPTORS (the stand-in's worlds).
    """
    reserved = RESERVED_DESCRIPTORS + more_reserved
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft == resource.RLIM_INFINITY:
        soft = MAX_CONNECTIONS + reserved
    return max(16, min(MAX_CONNECTIONS, soft - reserved))


def _proxy_settings(proxy: str | None) -> dict:
    """Waitress's settings for a trusted reverse proxy: its X-Forwarded-For and -Proto believed, others' cleared."""
    if not proxy:
        return {}  # waitress clears every client's forwarding headers by default
    return {"trusted_proxy": proxy, "trusted_proxy_headers": {"x-forwarded-for", "x-forwarded-proto"},
            "clear_untrusted_proxy_headers": True}


def close_late_requests(server) -> None:
    """Close every connection whose request began more than REQUEST_DEADLINE_SECONDS ago and is still not whole."""
    too_early = time.monotonic() - REQUEST_DEADLINE_SECONDS
    for channel in list(server.active_channels.values()):
        began = getattr(channel, "request_began", None)
        if began is not None and began < too_early:
            channel.will_close = True  # waitress closes it at its next turn, as it does an idle one


class BackupServer(TcpWSGIServer):
    """Waitress's server for one listening address, with the service's own ways of accepting and cleaning up.

    Every use of waitress's internals is here and in the channel and task classes above, each
    checked by tests/test_waitress_adapter.py against the waitress minor version pyproject.toml pins.
    """

    accepted = 0  # connections accepted, each counted by its channel
    draining = False  # set on a stop's drain (BACKUP_API_DRAIN_SECONDS): every answer closes its connection
    client_bounds: ClientBounds
    effective_host: str  # set by waitress once it listens (types-waitress leaves them out)
    effective_port: int

    def handle_accept(self):
        """Accept the connections waiting, up to ACCEPTS_PER_TURN, not one per turn of the loop.

        Each turn asks every open connection whether it wants to read or write (about 5 ms with
        3,000 open): a flood of connections taken one a turn kept a new client waiting seconds.
        """
        for _ in range(ACCEPTS_PER_TURN):
            before = self.accepted
            super().handle_accept()
            if self.accepted == before or len(self._map) >= self.adj.connection_limit:
                return  # none left waiting (or the limit reached)

    def maintenance(self, now):
        """Waitress's own clean-up (silent connections), then the requests past their deadline."""
        super().maintenance(now)
        close_late_requests(self)


def create(app: Flask, host: str = "127.0.0.1", port: int = 8000, threads: int = THREADS,
           channel: type[waitress.channel.HTTPChannel] = JSONErrorChannel) -> BackupServer:
    """Make the waitress server for app, listening on host:port (0: a free port), with the service's settings.

    channel: the class of its HTTP connections (a JSONErrorChannel, or a subclass of it).
    """
    try:
        adjustments = Adjustments(
            host=host,
            port=port,
            threads=threads,
            # Idle and slow connections cost a socket, not a thread (waitress reads requests whole
            # before a thread sees them): allow as many as there are descriptors for, wait on them
            # with poll() (select() cannot take a descriptor past 1023, and the process died of it),
            # and close the silent ones sooner than waitress's default 120 s.
            connection_limit=connection_limit(int(app.config.get("RESERVED_DESCRIPTORS", 0))),
            asyncore_use_poll=True,
            channel_timeout=WAITRESS["channel_timeout"],
            cleanup_interval=WAITRESS["cleanup_interval"],
            max_request_header_size=WAITRESS["max_request_header_size"],
            # Above Flask's own 1 MiB limit, so that Flask answers 413 for most bodies; waitress
            # refuses anything larger still, by Content-Length, before buffering it.
            max_request_body_size=WAITRESS["max_request_body_size"],
            **_proxy_settings(app.config.get("TRUSTED_PROXY")),
        )
    except (OSError, ValueError) as exc:  # a host that is not an address of this machine
        raise ConfigError(f"cannot listen on {host}:{port}: {exc}") from None
    if len(adjustments.listen) != 1:  # a name of several addresses (localhost: 127.0.0.1 and ::1)
        raise ConfigError(f"cannot listen on {host}:{port}: it names {len(adjustments.listen)} addresses; give one"
                          " (127.0.0.1, say)")
    dispatcher = ThreadedTaskDispatcher()
    dispatcher.set_thread_count(threads)
    try:
        # types-waitress types listen as a string; it is a list of socket.getaddrinfo's tuples.
        sockinfo = cast(tuple, adjustments.listen[0])
        server = BackupServer(app, map={}, dispatcher=dispatcher, adj=adjustments, sockinfo=sockinfo)
    except OSError as exc:  # the port taken, or an address not of this machine
        dispatcher.shutdown()
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    server.channel_class = channel
    server.client_bounds = ClientBounds(app.config["MAX_CONNECTIONS_PER_CLIENT"],
                                        app.config["MAX_BODY_BYTES_PER_CLIENT"], app.config.get("TRUSTED_PROXY"))
    app.config["THREADS"] = threads  # what the app's requests share (the stand-in's delays keep half free)
    return server


def run(app: Flask, server, stop: list) -> None:
    """Serve until stop holds something (pull the server's trigger after adding it), then stop cleanly."""
    try:
        while not stop:
            _serve_once(server, server.adj.asyncore_loop_timeout)
        _drain(app, server, stop)
        app.logger.info("stopping on %s: no new connections; answering the requests under way", stop[0])
        _finish_requests(server)
    finally:
        server.task_dispatcher.shutdown(cancel_pending=True, timeout=STOP_GRACE_SECONDS)
        wasyncore.close_all(server._map)
        storage.close_store(app)
    app.logger.info("stopped cleanly")


def _drain(app: Flask, server, stop: list) -> None:
    """Go on serving BACKUP_API_DRAIN_SECONDS while /healthz says 503 and answers close their
    connections, so that a proxy checking /healthz stops sending here first; a second stop ends it."""
    seconds = app.config["DRAIN_SECONDS"]
    if not seconds:
        return
    app.extensions["health"].stopping.set()
    server.draining = True
    app.logger.info("stopping on %s: draining for %d s (/healthz says 503; the server still answers)",
                    stop[0], seconds)
    asked, deadline = len(stop), time.monotonic() + seconds
    while len(stop) == asked and time.monotonic() < deadline:
        _serve_once(server, min(server.adj.asyncore_loop_timeout, max(0.0, deadline - time.monotonic())))


def serve(app: Flask, host: str = "127.0.0.1", port: int = 8000, threads: int = THREADS,
          channel: type[waitress.channel.HTTPChannel] = JSONErrorChannel) -> None:
    """Serve app with waitress until SIGTERM or SIGINT, then stop cleanly."""
    before, soft = raise_descriptor_limit()
    server = create(app, host, port, threads, channel)
    # A process of its own: waitress warns "Task queue depth is N" on nearly every request under
    # load, drowning the access log, whose durations show load anyway; its errors still come through.
    # (Never done for a server in another program's process: its loggers are its own.)
    logging.getLogger("waitress.queue").setLevel(logging.ERROR)
    logs.lighten_records()
    app.logger.info("%s", config.start_line(app, storage.get_store(app).name))
    app.logger.info("open descriptors: at most %d (raised from %d); connections: at most %d", soft, before,
                    server.adj.connection_limit)
    stop = []

    def request_stop(signum, frame):
        stop.append(signal.Signals(signum).name)
        server.pull_trigger()  # wake the event loop now, not at its next timeout

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, request_stop)
    # Printed, not logged, so that scripts can read the port (useful with --port 0).
    print(f"Serving on http://{server.effective_host}:{server.effective_port}", flush=True)
    # What exists now (modules, the app, its store) lives as long as the process: left out of every collection
    # from here on. Each full collection walked all of it, about 50,000 instructions a request (issue 41).
    # (Never done for a server in another program's process: its heap is its own.)
    gc.freeze()
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


def _unread(channel: waitress.channel.HTTPChannel) -> bool:
    """Tell whether bytes wait in the channel's socket, unread (peeked at, not taken)."""
    if channel.socket is None:  # closed already
        return False
    try:
        return bool(channel.socket.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT))
    except OSError:  # nothing waiting (EAGAIN), or the connection gone
        return False


def _finish_requests(server) -> None:
    """Stop listening, answer every request already received, and close connections as they fall idle."""
    # Connections the kernel has completed but waitress has not yet accepted would be reset when
    # the listening socket closes, and the requests their clients already sent on them lost:
    # take them in first.
    known = None
    while server.accepted != known:
        known = server.accepted
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
                # Under way too: a request read in part (its headers in one turn, its body in the
                # next), and one not read yet (a keep-alive client's next request, sent as soon as
                # the answer reached it, while the channel was not yet readable again for the turn).
                if (channel.requests or channel.total_outbufs_len or channel.request is not None
                        or _unread(channel)):
                    busy = True
                else:
                    channel.handle_close()
        if not busy:
            return
