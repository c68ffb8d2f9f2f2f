"""The demo app's SQLite persistence: guests, sessions, cards, chat, presence, changes.

Every row carries a ``tenant``: empty for real traffic, the load run's id for
requests tagged with ``X-Perfnb-Run``, so a load run's data stays apart and is
removed whole after the run. Writes also append to a ``changes`` log, which is
what the smart-polling endpoint serves.

The methods are synchronous (stdlib :mod:`sqlite3`, the connection pool of
:mod:`perfnb.demo.sqlite`); the app calls them through :meth:`Database.call`,
which runs them on a worker thread inside a ``db`` Server-Timing span so the
event loop never blocks.

>>> import tempfile, pathlib
>>> db = Database(pathlib.Path(tempfile.mkdtemp()) / "demo.sqlite3")
>>> user, code, session = db.create_guest("", "ada")
>>> db.create_card("", user["id"], "first", "hello")["title"]
'first'
>>> db.close()
"""

from __future__ import annotations

import hashlib
import json
import secrets
import sqlite3
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from perfnb.demo.sqlite import ConnectionPool

__all__ = ["Conflict", "Database"]

Row = dict[str, Any]

#: The change log keeps this many entries; a poll from before them is told to reload.
CHANGES_KEPT: Final = 20_000
#: A user counts as present while their last heartbeat is this recent.
PRESENCE_SECONDS: Final = 30.0

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS users (
    id TEXT PRIMARY KEY, tenant TEXT NOT NULL, name TEXT NOT NULL,
    code_hash TEXT NOT NULL, created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS sessions (
    token_hash TEXT PRIMARY KEY, tenant TEXT NOT NULL, user_id TEXT NOT NULL,
    created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS cards (
    id INTEGER PRIMARY KEY AUTOINCREMENT, tenant TEXT NOT NULL, owner_id TEXT NOT NULL,
    title TEXT NOT NULL, body TEXT NOT NULL, version INTEGER NOT NULL DEFAULT 1,
    created REAL NOT NULL, updated REAL NOT NULL);
CREATE INDEX IF NOT EXISTS cards_tenant ON cards (tenant, id);
CREATE TABLE IF NOT EXISTS conversations (
    id INTEGER PRIMARY KEY AUTOINCREMENT, tenant TEXT NOT NULL, title TEXT NOT NULL,
    created_by TEXT NOT NULL, created REAL NOT NULL);
CREATE INDEX IF NOT EXISTS conversations_tenant ON conversations (tenant, id);
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT, tenant TEXT NOT NULL,
    conversation_id INTEGER NOT NULL, author_id TEXT NOT NULL, body TEXT NOT NULL,
    created REAL NOT NULL);
CREATE INDEX IF NOT EXISTS messages_conversation ON messages (tenant, conversation_id, id);
CREATE TABLE IF NOT EXISTS presence (
    tenant TEXT NOT NULL, user_id TEXT NOT NULL, status TEXT NOT NULL,
    location TEXT NOT NULL, updated REAL NOT NULL, PRIMARY KEY (tenant, user_id));
CREATE TABLE IF NOT EXISTS changes (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, tenant TEXT NOT NULL, entity TEXT NOT NULL,
    entity_id INTEGER NOT NULL, op TEXT NOT NULL, data TEXT NOT NULL, time REAL NOT NULL);
CREATE INDEX IF NOT EXISTS changes_tenant ON changes (tenant, seq);
"""
_TENANT_TABLES: Final = ("users", "sessions", "cards", "conversations", "messages", "presence")


class Conflict(Exception):
    """An edit named a card version that is no longer current."""

    def __init__(self, current: Row) -> None:
        super().__init__("version conflict")
        self.current = current


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _card(row: sqlite3.Row) -> Row:
    return {
        "id": row["id"],
        "title": row["title"],
        "body": row["body"],
        "owner_id": row["owner_id"],
        "version": row["version"],
        "created": _iso(row["created"]),
        "updated": _iso(row["updated"]),
    }


def _message(row: sqlite3.Row) -> Row:
    return {
        "id": row["id"],
        "conversation_id": row["conversation_id"],
        "author_id": row["author_id"],
        "body": row["body"],
        "created": _iso(row["created"]),
    }


def _conversation(row: sqlite3.Row) -> Row:
    return {
        "id": row["id"],
        "title": row["title"],
        "created_by": row["created_by"],
        "created": _iso(row["created"]),
    }


class Database(ConnectionPool):
    """The demo app's data in one SQLite file, WAL mode, a pool of connections.

    ``slow_ms`` is read before every call (the slow-DB fault); ``span`` opens the
    Server-Timing span that times each call (``perfnb.server.timing``).
    """

    def __init__(
        self,
        path: str | Path,
        *,
        pool_size: int = 8,
        slow_ms: Callable[[], float] = lambda: 0.0,
        span: Callable[[str], AbstractContextManager[object]] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(path, pool_size=pool_size, slow_ms=slow_ms, span=span, clock=clock)
        with self._connection() as conn:
            conn.executescript(_SCHEMA)

    def _log(
        self, conn: sqlite3.Connection, tenant: str, entity: str, entity_id: int, op: str, data: Row
    ) -> int:
        cur = conn.execute(
            "INSERT INTO changes (tenant, entity, entity_id, op, data, time) VALUES (?,?,?,?,?,?)",
            (tenant, entity, entity_id, op, json.dumps(data), self._clock()),
        )
        seq = int(cur.lastrowid or 0)
        if seq % 1000 == 0:
            conn.execute("DELETE FROM changes WHERE seq <= ?", (seq - CHANGES_KEPT,))
        return seq

    # -- guests and sessions --------------------------------------------------

    def create_guest(self, tenant: str, name: str) -> tuple[Row, str, str]:
        """Create a guest user, signed in: return it, its login code and a session token."""
        self._delay()
        user_id, code, now = secrets.token_hex(8), secrets.token_urlsafe(12), self._clock()
        token = secrets.token_urlsafe(24)
        with self._write() as conn:
            conn.execute(
                "INSERT INTO users (id, tenant, name, code_hash, created) VALUES (?,?,?,?,?)",
                (user_id, tenant, name, _hash(code), now),
            )
            conn.execute(
                "INSERT INTO sessions (token_hash, tenant, user_id, created) VALUES (?,?,?,?)",
                (_hash(token), tenant, user_id, now),
            )
        return {"id": user_id, "name": name, "created": _iso(now)}, code, token

    def login(self, tenant: str, user_id: str, code: str) -> tuple[Row, str] | None:
        """Check a guest's code; open a session and return (user, session token)."""
        self._delay()
        with self._write() as conn:
            row = conn.execute(
                "SELECT id, name, code_hash, created FROM users WHERE id = ? AND tenant = ?",
                (user_id, tenant),
            ).fetchone()
            if row is None or not secrets.compare_digest(row["code_hash"], _hash(code)):
                return None
            token = secrets.token_urlsafe(24)
            conn.execute(
                "INSERT INTO sessions (token_hash, tenant, user_id, created) VALUES (?,?,?,?)",
                (_hash(token), tenant, user_id, self._clock()),
            )
        return {"id": row["id"], "name": row["name"], "created": _iso(row["created"])}, token

    def session_user(self, tenant: str, token: str) -> Row | None:
        """The user a session token belongs to, within this tenant."""
        self._delay()
        with self._connection() as conn:
            row = conn.execute(
                "SELECT u.id, u.name, u.created FROM sessions s JOIN users u ON u.id = s.user_id"
                " WHERE s.token_hash = ? AND s.tenant = ?",
                (_hash(token), tenant),
            ).fetchone()
        if row is None:
            return None
        return {"id": row["id"], "name": row["name"], "created": _iso(row["created"])}

    def logout(self, tenant: str, token: str) -> bool:
        """End a session; False when there was none."""
        self._delay()
        with self._write() as conn:
            cur = conn.execute(
                "DELETE FROM sessions WHERE token_hash = ? AND tenant = ?", (_hash(token), tenant)
            )
        return cur.rowcount > 0

    # -- cards ----------------------------------------------------------------

    def list_cards(self, tenant: str, *, limit: int, after: int) -> list[Row]:
        """Cards in id order, ``limit`` of them after id ``after``."""
        self._delay()
        with self._connection() as conn:
            rows = conn.execute(
                "SELECT * FROM cards WHERE tenant = ? AND id > ? ORDER BY id LIMIT ?",
                (tenant, after, limit),
            ).fetchall()
        return [_card(r) for r in rows]

    def get_card(self, tenant: str, card_id: int) -> Row | None:
        """One card, or None."""
        self._delay()
        with self._connection() as conn:
            row = conn.execute(
                "SELECT * FROM cards WHERE tenant = ? AND id = ?", (tenant, card_id)
            ).fetchone()
        return None if row is None else _card(row)

    def create_card(self, tenant: str, owner_id: str, title: str, body: str) -> Row:
        """Create a card."""
        return self.bulk_create(tenant, owner_id, [(title, body)])[0]

    def bulk_create(
        self, tenant: str, owner_id: str, cards: Sequence[tuple[str, str]]
    ) -> list[Row]:
        """Create many cards in one transaction."""
        self._delay()
        now = self._clock()
        out: list[Row] = []
        with self._write() as conn:
            for title, body in cards:
                cur = conn.execute(
                    "INSERT INTO cards (tenant, owner_id, title, body, created, updated)"
                    " VALUES (?,?,?,?,?,?) RETURNING *",
                    (tenant, owner_id, title, body, now, now),
                )
                card = _card(cur.fetchone())
                self._log(conn, tenant, "card", card["id"], "upsert", card)
                out.append(card)
        return out

    def update_card(
        self,
        tenant: str,
        card_id: int,
        *,
        title: str | None,
        body: str | None,
        version: int | None,
    ) -> Row | None:
        """Edit a card; None when it does not exist, :class:`Conflict` on a stale version."""
        self._delay()
        with self._write() as conn:
            row = conn.execute(
                "SELECT * FROM cards WHERE tenant = ? AND id = ?", (tenant, card_id)
            ).fetchone()
            if row is None:
                return None
            if version is not None and version != row["version"]:
                raise Conflict(_card(row))
            cur = conn.execute(
                "UPDATE cards SET title = ?, body = ?, version = version + 1, updated = ?"
                " WHERE id = ? RETURNING *",
                (
                    row["title"] if title is None else title,
                    row["body"] if body is None else body,
                    self._clock(),
                    card_id,
                ),
            )
            card = _card(cur.fetchone())
            self._log(conn, tenant, "card", card_id, "upsert", card)
        return card

    def delete_card(self, tenant: str, card_id: int) -> bool:
        """Delete a card; False when it did not exist."""
        self._delay()
        with self._write() as conn:
            cur = conn.execute("DELETE FROM cards WHERE tenant = ? AND id = ?", (tenant, card_id))
            if cur.rowcount:
                self._log(conn, tenant, "card", card_id, "delete", {"id": card_id})
        return cur.rowcount > 0

    def export_cards(self, tenant: str) -> list[Row]:
        """Every card of the tenant."""
        self._delay()
        with self._connection() as conn:
            rows = conn.execute(
                "SELECT * FROM cards WHERE tenant = ? ORDER BY id", (tenant,)
            ).fetchall()
        return [_card(r) for r in rows]

    # -- conversations and messages ------------------------------------------

    def list_conversations(self, tenant: str, *, limit: int) -> list[Row]:
        """The newest conversations first."""
        self._delay()
        with self._connection() as conn:
            rows = conn.execute(
                "SELECT * FROM conversations WHERE tenant = ? ORDER BY id DESC LIMIT ?",
                (tenant, limit),
            ).fetchall()
        return [_conversation(r) for r in rows]

    def create_conversation(self, tenant: str, user_id: str, title: str) -> Row:
        """Start a conversation."""
        self._delay()
        with self._write() as conn:
            cur = conn.execute(
                "INSERT INTO conversations (tenant, title, created_by, created)"
                " VALUES (?,?,?,?) RETURNING *",
                (tenant, title, user_id, self._clock()),
            )
            conv = _conversation(cur.fetchone())
            self._log(conn, tenant, "conversation", conv["id"], "upsert", conv)
        return conv

    def list_messages(
        self, tenant: str, conversation_id: int, *, limit: int, after: int
    ) -> list[Row] | None:
        """Messages in order after id ``after``; None when the conversation does not exist."""
        self._delay()
        with self._connection() as conn:
            if not self._has_conversation(conn, tenant, conversation_id):
                return None
            rows = conn.execute(
                "SELECT * FROM messages WHERE tenant = ? AND conversation_id = ? AND id > ?"
                " ORDER BY id LIMIT ?",
                (tenant, conversation_id, after, limit),
            ).fetchall()
        return [_message(r) for r in rows]

    def post_message(
        self, tenant: str, conversation_id: int, user_id: str, body: str
    ) -> Row | None:
        """Post a message; None when the conversation does not exist."""
        self._delay()
        with self._write() as conn:
            if not self._has_conversation(conn, tenant, conversation_id):
                return None
            cur = conn.execute(
                "INSERT INTO messages (tenant, conversation_id, author_id, body, created)"
                " VALUES (?,?,?,?,?) RETURNING *",
                (tenant, conversation_id, user_id, body, self._clock()),
            )
            msg = _message(cur.fetchone())
            self._log(conn, tenant, "message", msg["id"], "upsert", msg)
        return msg

    @staticmethod
    def _has_conversation(conn: sqlite3.Connection, tenant: str, conversation_id: int) -> bool:
        row = conn.execute(
            "SELECT 1 FROM conversations WHERE tenant = ? AND id = ?", (tenant, conversation_id)
        ).fetchone()
        return row is not None

    # -- presence -------------------------------------------------------------

    def set_presence(self, tenant: str, user_id: str, status: str, location: str) -> Row:
        """Record a user's heartbeat."""
        self._delay()
        now = self._clock()
        with self._write() as conn:
            conn.execute(
                "INSERT INTO presence (tenant, user_id, status, location, updated)"
                " VALUES (?,?,?,?,?) ON CONFLICT (tenant, user_id) DO UPDATE SET"
                " status = excluded.status, location = excluded.location,"
                " updated = excluded.updated",
                (tenant, user_id, status, location, now),
            )
        return {"user_id": user_id, "status": status, "location": location, "seen": _iso(now)}

    def list_presence(self, tenant: str) -> list[Row]:
        """Users seen in the last :data:`PRESENCE_SECONDS`."""
        self._delay()
        with self._connection() as conn:
            rows = conn.execute(
                "SELECT p.*, u.name FROM presence p JOIN users u ON u.id = p.user_id"
                " WHERE p.tenant = ? AND p.updated >= ? ORDER BY p.updated DESC",
                (tenant, self._clock() - PRESENCE_SECONDS),
            ).fetchall()
        return [
            {
                "user_id": r["user_id"],
                "name": r["name"],
                "status": r["status"],
                "location": r["location"],
                "seen": _iso(r["updated"]),
            }
            for r in rows
        ]

    # -- smart polling ----------------------------------------------------------

    def changes(self, tenant: str, since: int | None, *, limit: int) -> Row:
        """Changes after cursor ``since``: ``{cursor, changes, more, reset}``.

        Without ``since`` only the current cursor is returned (a client's first
        poll). ``reset`` is true when ``since`` is older than the kept log, so the
        client should reload instead of patching.
        """
        self._delay()
        with self._connection() as conn:
            # One read transaction, so the cursor and the rows are the same snapshot.
            conn.execute("BEGIN")
            try:
                top, oldest = conn.execute(
                    "SELECT COALESCE(MAX(seq), 0), COALESCE(MIN(seq), 1) FROM changes"
                ).fetchone()
                rows = []
                if since is not None and since <= top:
                    rows = conn.execute(
                        "SELECT seq, entity, entity_id, op, data FROM changes"
                        " WHERE tenant = ? AND seq > ? ORDER BY seq LIMIT ?",
                        (tenant, since, limit + 1),
                    ).fetchall()
            finally:
                conn.execute("COMMIT")
        if since is None:
            return {"cursor": top, "changes": [], "more": False, "reset": False}
        if since > top or since + 1 < oldest:
            # A cursor from another life of the database, or older than the kept log.
            return {"cursor": top, "changes": [], "more": False, "reset": True}
        more = len(rows) > limit
        changes = [
            {
                "seq": r["seq"],
                "entity": r["entity"],
                "id": r["entity_id"],
                "op": r["op"],
                "data": json.loads(r["data"]),
            }
            for r in rows[:limit]
        ]
        # The cursor is global, so a tenant with no news still moves forward.
        cursor = changes[-1]["seq"] if more else top
        return {"cursor": cursor, "changes": changes, "more": more, "reset": False}

    # -- load-run tenants -----------------------------------------------------

    def tenants(self) -> dict[str, int]:
        """Load-run tenants and how many users each holds (real traffic excluded)."""
        with self._connection() as conn:
            rows = conn.execute(
                "SELECT tenant, COUNT(*) AS n FROM users WHERE tenant != '' GROUP BY tenant"
            ).fetchall()
        return {r["tenant"]: r["n"] for r in rows}

    def delete_tenant(self, tenant: str) -> dict[str, int]:
        """Remove every row of one load-run tenant; return rows removed per table."""
        removed: dict[str, int] = {}
        with self._write() as conn:
            for table in (*_TENANT_TABLES, "changes"):
                cur = conn.execute(f"DELETE FROM {table} WHERE tenant = ?", (tenant,))
                removed[table] = cur.rowcount
        return removed
