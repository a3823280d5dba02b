"""The peer: the service a Python developer would otherwise write, FastAPI and pydantic v2 on uvicorn.

A yardstick for `make bench`, written as a good FastAPI developer would write it, not a strawman:
the same catalog as a pydantic union discriminated on event_type, a PyJWT bearer token with the
same 401 and 403 rules, the same deduplication (UNIQUE on (partner_id, event_id), else on a hash
of the content), batches all or nothing, and the same durability (SQLite in WAL mode,
synchronous=FULL, the commit before the 200). One uvicorn worker, its access log on, as the
service logs one line per request. Run: python -m bench.peer --port 0 (the database and secret
from BACKUP_API_DATABASE and BACKUP_API_JWT_SECRET).
"""

import argparse
import copy
import hashlib
import json
import os
import socket
import sqlite3
import threading
from typing import Annotated, Literal, Union

import jwt
import uvicorn
from fastapi import Depends, FastAPI, HTTPException
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, create_model

from backup_api.schemas import EVENT_RULES  # the catalog itself: the same 13 types and their required fields

# Strict where coercion would let "5" pass for 5; FastAPI validates the parsed body, so the
# timestamp, a string in JSON, stays lax.
Identifier = Annotated[str, Field(strict=True, min_length=1, max_length=255, pattern=r"^[^\x00-\x1f\x7f-\x9f]*$")]
Amount = Annotated[float, Field(strict=True, ge=0, allow_inf_nan=False)]


class EventBase(BaseModel):
    """The fields every event may carry; undeclared ones are kept."""

    model_config = ConfigDict(extra="allow")

    partner_id: Identifier
    player_login: Identifier
    session_id: Identifier | None = None
    game_id: Identifier | None = None
    amount: Amount | None = None
    currency: Annotated[str, Field(strict=True, pattern=r"^[A-Z]{3}$")] | None = None
    metadata: dict | None = None
    event_id: Identifier | None = None
    occurred_at: AwareDatetime | None = None


FIELD_TYPES = {"session_id": Identifier, "game_id": Identifier, "amount": Amount}
# One model per catalog row: its event_type a literal, its required fields without a default.
EVENT_MODELS = [
    create_model(
        f"Event_{kind}",
        __base__=EventBase,
        event_type=(Literal[kind], ...),
        **{name: (FIELD_TYPES[name], ...) for name in required},
    )
    for kind, required in EVENT_RULES.items()
]
PlayerEvent = Annotated[Union[tuple(EVENT_MODELS)], Field(discriminator="event_type")]  # noqa: UP007
Batch = Annotated[list[PlayerEvent], Field(min_length=1, max_length=1000)]


class Store:
    """One SQLite connection behind a lock, as the service keeps it."""

    def __init__(self, path: str):
        self.lock = threading.Lock()
        self.conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self.conn.execute("PRAGMA journal_mode = WAL")
        self.conn.execute("PRAGMA synchronous = FULL")
        self.conn.executescript(
            "CREATE TABLE IF NOT EXISTS events (id INTEGER PRIMARY KEY, partner_id TEXT NOT NULL, event_id TEXT,"
            " content_hash BLOB NOT NULL, sub TEXT NOT NULL, event TEXT NOT NULL);"
            "CREATE UNIQUE INDEX IF NOT EXISTS by_event_id ON events (partner_id, event_id)"
            " WHERE event_id IS NOT NULL;"
            "CREATE UNIQUE INDEX IF NOT EXISTS by_content ON events (content_hash) WHERE event_id IS NULL;"
        )

    def add(self, events: list[BaseModel], sub: str) -> list[bool]:
        """Store events all or nothing; say of each whether it was new; 409 on an event_id with other content."""
        rows = []
        for event in events:
            data = event.model_dump(mode="json", exclude_none=True)
            digest = hashlib.sha256(json.dumps(data, sort_keys=True).encode()).digest()
            rows.append((event.partner_id, event.event_id, digest, sub, json.dumps(data)))
        new = []
        with self.lock:
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                for row in rows:
                    cursor = self.conn.execute(
                        "INSERT INTO events (partner_id, event_id, content_hash, sub, event) VALUES (?, ?, ?, ?, ?)"
                        " ON CONFLICT DO NOTHING",
                        row,
                    )
                    new.append(cursor.rowcount == 1)
                    if cursor.rowcount == 0 and row[1] is not None:
                        (held,) = self.conn.execute(
                            "SELECT content_hash FROM events WHERE partner_id = ? AND event_id = ?", row[:2]
                        ).fetchone()
                        if held != row[2]:
                            raise HTTPException(409, f"event_id {row[1]!r} is already stored with other content")
                self.conn.execute("COMMIT")
            except BaseException:
                self.conn.execute("ROLLBACK")
                raise
        return new


app = FastAPI()
store = Store(os.environ["BACKUP_API_DATABASE"])
SECRET = os.environ["BACKUP_API_JWT_SECRET"]
bearer = HTTPBearer(auto_error=False)


def claims(credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> dict:
    """The verified token's claims; 401 otherwise."""
    if credentials is None:
        raise HTTPException(401, "missing bearer token", headers={"WWW-Authenticate": "Bearer"})
    try:
        return jwt.decode(credentials.credentials, SECRET, algorithms=["HS256"], options={"require": ["exp", "sub"]})
    except jwt.PyJWTError as exc:
        raise HTTPException(401, f"invalid token: {exc}", headers={"WWW-Authenticate": "Bearer"}) from None


@app.exception_handler(HTTPException)
def http_error(request, exc: HTTPException):
    """The service's error envelope."""
    return JSONResponse({"status": "error", "message": exc.detail}, exc.status_code, headers=exc.headers)


@app.post("/player-events")
def post_player_events(body: PlayerEvent | Batch, token: Annotated[dict, Depends(claims)]):
    """Store one event or a batch."""
    events = body if isinstance(body, list) else [body]
    owned = set(token.get("partners", [token["sub"]]))
    for event in events:
        if event.partner_id not in owned:
            raise HTTPException(403, f"this token does not own partner {event.partner_id!r}")
    new = store.add(events, token["sub"])
    if isinstance(body, list):
        return {"status": "ok", "accepted": sum(new), "duplicates": len(new) - sum(new)}
    return {"status": "ok"}


def main() -> None:
    """Serve on 127.0.0.1, printing the port as the service does."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()
    # IPPROTO_TCP named: asyncio sets TCP_NODELAY only on a socket whose proto says TCP, and
    # socket.socket() says 0. Without it Nagle holds the body back behind the headers until the
    # client's delayed ACK, 40 ms a request on keep-alive.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", args.port))
    sock.listen(2048)  # connections wait in the backlog until uvicorn takes the socket over
    print(f"Serving on http://127.0.0.1:{sock.getsockname()[1]}", flush=True)
    # Its log to stderr, where the service writes its own: uvicorn's default, stdout, is the pipe
    # that bench/run.py reads the port from and then leaves, and a full pipe would stop the peer.
    logging = copy.deepcopy(uvicorn.config.LOGGING_CONFIG)
    for handler in logging["handlers"].values():
        handler["stream"] = "ext://sys.stderr"
    server = uvicorn.Server(uvicorn.Config(app, workers=1, log_level="info", access_log=True, log_config=logging))
    server.run(sockets=[sock])


if __name__ == "__main__":
    main()
