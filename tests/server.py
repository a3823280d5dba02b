"""Start the real service (waitress, its own process) for end-to-end tests."""

import http.client
import json
import os
import re
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


class Server:
    """The service on a free port of 127.0.0.1, in a process of its own."""

    def __init__(
        self, database: Path, secret: str | None = None, threads: int | None = None, module: str = "backup_api"
    ):
        self.database = database
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("BACKUP_API_")}
        self.env["BACKUP_API_DATABASE"] = str(database)
        self.env["PYTHONUNBUFFERED"] = "1"  # so the "Serving on" line arrives at once
        if secret is not None:
            self.env["BACKUP_API_JWT_SECRET"] = secret
        self.threads = threads
        # Another module with the same "serve" command (the benchmark's bare Flask baseline).
        self.module = module
        self.proc = None
        self.port = None
        self.stderr = subprocess.DEVNULL  # or an open file, to read the log after

    def start(self, timeout: float = 20, command: list[str] | None = None, cwd: Path = ROOT) -> "Server":
        """Start the server (by default `flask --app MODULE serve --port 0`) and wait until it listens."""
        # Port 0: the kernel picks a free port, and waitress prints the one it got.
        # threads None: the serve command's own default, as `make run` uses.
        threads = [] if self.threads is None else ["--threads", str(self.threads)]
        self.proc = subprocess.Popen(
            command or [sys.executable, "-m", "flask", "--app", self.module, "serve", "--port", "0", *threads],
            cwd=cwd, env=self.env, stdout=subprocess.PIPE, stderr=self.stderr, text=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            # select first, so that a server that never prints cannot block us past the deadline.
            ready, _, _ = select.select([self.proc.stdout], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                break
            line = self.proc.stdout.readline()
            match = re.search(r"Serving on http://127\.0\.0\.1:(\d+)", line)
            if match:
                self.port = int(match.group(1))
                return self
            if not line and self.proc.poll() is not None:
                break
        self.stop()
        raise RuntimeError("the server did not start")

    def request(self, method: str, path: str, body=None, token: str | None = None,
                headers: dict | None = None, timeout: float = 10):
        """Send one request; return (status, headers (case-insensitive), parsed JSON body)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            all_headers = {"Content-Type": "application/json", **(headers or {})}
            if token:
                all_headers["Authorization"] = f"Bearer {token}"
            data = body if isinstance(body, (bytes, str)) or body is None else json.dumps(body)
            conn.request(method, path, body=data, headers=all_headers)
            response = conn.getresponse()
            raw = response.read()
            return response.status, response.headers, json.loads(raw) if raw else None
        finally:
            conn.close()

    def kill(self) -> None:
        """Kill the server with SIGKILL, as a crash would."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)
        self._close_pipe()

    def stop(self) -> None:
        """Stop the server."""
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()
        self._close_pipe()

    def _close_pipe(self) -> None:
        """Close our end of the server's stdout."""
        if self.proc and self.proc.stdout and not self.proc.stdout.closed:
            self.proc.stdout.close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
