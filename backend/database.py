"""The one database seam of the backend: SQLite (a file in ``MODEL_DIR``, the embedded default)
or PostgreSQL (``CAMCUT_DATABASE_URL``, shared by replicas), behind one small interface.

Callers write one SQL dialect: SQLite's ``?`` placeholders, ``INSERT ... ON CONFLICT (...) DO
UPDATE`` upserts (both engines; never ``INSERT OR REPLACE``), and in migrations the column types
``TEXT``, ``INTEGER``, ``REAL`` and ``BLOB``. On PostgreSQL :func:`pg_sql` turns ``?`` into
psycopg's ``%s`` and :func:`pg_ddl` turns the types into what keeps SQLite's meaning: ``INTEGER``
-> ``BIGINT`` (SQLite integers are 64-bit; annotation ids may be too), ``REAL`` -> ``DOUBLE
PRECISION`` (PostgreSQL's REAL is 4 bytes: ``time.time()`` would lose minutes), ``BLOB`` ->
``BYTEA`` (bytes in, bytes out on both) and ``TEXT`` -> ``TEXT COLLATE "C"`` (comparisons and
ORDER BY byte-wise, as SQLite's: ``updated_at`` strings are compared to decide what is newer).

Transactions (:meth:`Database.transaction`): on SQLite a write transaction is ``BEGIN
IMMEDIATE``, which serialises every writer, so any read-check-write inside it is atomic. On
PostgreSQL transactions are READ COMMITTED and run concurrently; a read-check-write must lock
what it checks: ``SELECT ... FOR UPDATE`` (``Tx.for_update``) on the row, or ``Tx.lock(key)``
(a transaction-scoped advisory lock; a no-op on SQLite) on a name such as "annotation p 7".
Because each statement of a READ COMMITTED transaction sees what was committed before it
started, the statements after a lock see everything its previous holder wrote.

Schema changes are numbered migrations (``backend/migrations.py``), recorded in
``schema_version``; :meth:`Database.migrate` applies the missing ones in one transaction under
a lock, so replicas starting at once against one database migrate it once.
"""

from __future__ import annotations

import hashlib
import os
import re
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit, urlunsplit

import psycopg

# A database error of either engine (e.g. the server is gone): the correction loop logs and retries.
DatabaseError: tuple[type[Exception], ...] = (sqlite3.Error, psycopg.Error)

# Server-side TCP keepalives of every PostgreSQL session (settable per session): a replica whose
# host vanished without closing its sockets is noticed in about idle + count x interval seconds,
# its claims' presence lock is then released (backend/inbox.py).
KEEPALIVES = "-c tcp_keepalives_idle=20 -c tcp_keepalives_interval=5 -c tcp_keepalives_count=4"
IDLE_KEPT = 4  # idle PostgreSQL connections a process keeps for reuse

# The presence sessions of this process, by (database URL, lock name): process-wide, because an
# advisory lock belongs to a session and a second Database object of the same process (a second
# app on the same store) taking the same lock in its own session would wait for the first.
_held: dict[tuple[str, str], Any] = {}
_held_pid = os.getpid()
_held_lock = threading.Lock()


class Rows(Protocol):
    def fetchone(self) -> Any: ...
    def fetchall(self) -> list[Any]: ...


_LITERAL = re.compile(r"'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"|\?|%")


def pg_sql(sql: str) -> str:
    """``?`` -> ``%s`` outside quoted strings, and every ``%`` -> ``%%`` (psycopg reads ``%``
    as a placeholder even inside quotes)."""

    def one(m: re.Match[str]) -> str:
        t = m.group(0)
        return "%s" if t == "?" else t.replace("%", "%%")

    return _LITERAL.sub(one, sql)


_TYPES = {"INTEGER": "BIGINT", "REAL": "DOUBLE PRECISION", "BLOB": "BYTEA", "TEXT": 'TEXT COLLATE "C"'}
_TYPE_WORD = re.compile(r"\b(INTEGER|REAL|BLOB|TEXT)\b")


def pg_ddl(sql: str) -> str:
    """A migration's column types in PostgreSQL's words for SQLite's meaning (see the module doc);
    placeholders are translated by :meth:`Tx.execute` as in every statement."""
    return _TYPE_WORD.sub(lambda m: _TYPES[m.group(1)], sql)


def lock_key(name: str) -> int:
    """A signed 64-bit advisory lock key for a name (a collision only serialises more)."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


def redacted(url: str) -> str:
    """The URL without its password (for logs and /metrics)."""
    u = urlsplit(url)
    if u.password is None:
        return url
    host = u.hostname or ""
    netloc = f"{u.username}:***@{host}" + (f":{u.port}" if u.port else "")
    return urlunsplit((u.scheme, netloc, u.path, u.query, u.fragment))


class Tx:
    """One open transaction: ``execute`` / ``executemany`` with ``?`` placeholders."""

    def __init__(self, conn: Any, dialect: str) -> None:
        self._conn = conn
        self.dialect = dialect
        self.pg = dialect == "postgresql"

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Rows:
        if self.pg:
            return self._conn.execute(pg_sql(sql), tuple(params))
        return self._conn.execute(sql, tuple(params))

    def executemany(self, sql: str, seq: Sequence[Sequence[Any]]) -> None:
        if not seq:
            return
        if self.pg:
            with self._conn.cursor() as cur:
                cur.executemany(pg_sql(sql), [tuple(p) for p in seq])
        else:
            self._conn.executemany(sql, [tuple(p) for p in seq])

    @property
    def for_update(self) -> str:
        """Append to a SELECT that checks rows before changing them: locks them on PostgreSQL
        (SQLite's write transaction already excludes every other writer)."""
        return " FOR UPDATE" if self.pg else ""

    def lock(self, name: str) -> None:
        """Hold a lock on ``name`` until this transaction ends (PostgreSQL); SQLite: already held."""
        if self.pg:
            self._conn.execute("SELECT pg_advisory_xact_lock(%s)", (lock_key(name),))

    def lock_is_free(self, name: str) -> bool:
        """Is nobody holding ``name``'s lock (the session lock of :meth:`Database.hold`)?"""
        if not self.pg:
            return True
        return bool(self._conn.execute("SELECT pg_try_advisory_xact_lock(%s)", (lock_key(name),)).fetchone()[0])


class Database:
    """``url`` empty: SQLite at ``sqlite_path``; else a ``postgresql://`` URL (libpq syntax)."""

    def __init__(self, url: str, sqlite_path: Path) -> None:
        self.url = url.strip()
        self.dialect = "postgresql" if self.url else "sqlite"
        self.path = sqlite_path
        self._idle: list[Any] = []
        self._idle_pid = os.getpid()
        self._pool_lock = threading.Lock()
        if self.dialect == "sqlite":
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._wal()

    def describe(self) -> str:
        return redacted(self.url) if self.url else str(self.path)

    # -- connections ------------------------------------------------------------------------------
    def _wal(self) -> None:
        db = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
        try:
            db.execute("PRAGMA busy_timeout=30000")
            # Persistent: set once per database file. Switching needs an exclusive lock, and
            # SQLite does not call the busy handler for it, so two processes opening a new
            # file at once get "database is locked" at once: retry within the busy timeout.
            deadline = time.monotonic() + 30.0
            while True:
                try:
                    db.execute("PRAGMA journal_mode=WAL")
                    break
                except sqlite3.OperationalError as exc:
                    if "locked" not in str(exc) or time.monotonic() > deadline:
                        raise
                    time.sleep(0.02)
        finally:
            db.close()

    def _pg_connect(self) -> Any:
        return psycopg.connect(self.url, autocommit=True, options=KEEPALIVES, connect_timeout=10)

    def _pg_get(self) -> Any:
        # A few idle connections are reused (a new PostgreSQL session forks a server process);
        # psycopg_pool would add background threads, which a forking server must not inherit.
        with self._pool_lock:
            if self._idle_pid != os.getpid():  # forked: the parent's sockets are not ours to use
                self._idle, self._idle_pid = [], os.getpid()
            while self._idle:
                conn = self._idle.pop()
                if not conn.closed:
                    return conn
        return self._pg_connect()

    def _pg_put(self, conn: Any) -> None:
        ok = not conn.closed and conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        with self._pool_lock:
            if ok and self._idle_pid == os.getpid() and len(self._idle) < IDLE_KEPT:
                self._idle.append(conn)
                return
        conn.close()

    @contextmanager
    def transaction(self, write: bool = True) -> Iterator[Tx]:
        """One transaction, committed when the block ends, rolled back if it raises."""
        if self.dialect == "sqlite":
            db = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
            try:
                db.execute("PRAGMA busy_timeout=30000")
                db.execute("BEGIN IMMEDIATE" if write else "BEGIN")
                try:
                    yield Tx(db, self.dialect)
                except BaseException:
                    db.execute("ROLLBACK")
                    raise
                db.execute("COMMIT")
            finally:
                db.close()
            return
        conn = self._pg_get()
        try:
            conn.execute("BEGIN" if write else "BEGIN READ ONLY")
        except psycopg.OperationalError:  # an idle connection the server closed (restart): a new one
            conn.close()
            conn = self._pg_connect()
            conn.execute("BEGIN" if write else "BEGIN READ ONLY")
        try:
            try:
                yield Tx(conn, self.dialect)
            except BaseException:
                if not conn.closed:
                    conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        except BaseException:
            conn.close()
            raise
        self._pg_put(conn)

    # -- presence ---------------------------------------------------------------------------------
    def hold(self, name: str) -> None:
        """Hold ``name``'s lock for as long as this process lives (PostgreSQL; SQLite: nothing).
        The lock is a session's: it ends with the process's socket, so a SIGKILLed replica's
        lock is free as soon as the server notices the closed connection. Called again, it
        checks the session and takes the lock anew if the connection was lost (never waits: if
        the server still keeps the lost session, and so the lock, the next call tries again)."""
        global _held, _held_pid
        if self.dialect != "postgresql":
            return
        with _held_lock:
            if _held_pid != os.getpid():  # forked: the parent's sessions are not ours
                _held, _held_pid = {}, os.getpid()
            conn = _held.get((self.url, name))
            if conn is not None and not conn.closed:
                try:
                    conn.execute("SELECT 1")
                    return
                except psycopg.Error:
                    conn.close()
            _held.pop((self.url, name), None)
            conn = self._pg_connect()
            if conn.execute("SELECT pg_try_advisory_lock(%s)", (lock_key(name),)).fetchone()[0]:
                _held[(self.url, name)] = conn
            else:
                conn.close()

    # -- schema -----------------------------------------------------------------------------------
    def migrate(self, migrations: Sequence[tuple[int, str]], adopt: Any = None) -> int:
        """Apply the numbered migrations not yet in ``schema_version`` (in order, one
        transaction); ``adopt(tx)``, if given, first brings a database made before versioning
        to migration 1's shape. Returns the schema version."""
        with self.transaction() as tx:
            tx.lock("camcut schema")
            ddl = pg_ddl if tx.pg else (lambda s: s)
            tx.execute(ddl("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, applied REAL NOT NULL)"))
            done = {int(r[0]) for r in tx.execute("SELECT version FROM schema_version").fetchall()}
            if not done and adopt is not None:
                adopt(tx)
            for number, sql in sorted(migrations):
                if number in done:
                    continue
                for stmt in sql.split(";"):
                    if stmt.strip():
                        tx.execute(ddl(stmt))
                tx.execute("INSERT INTO schema_version VALUES (?, ?)", (number, time.time()))
                done.add(number)
            return max(done, default=0)
