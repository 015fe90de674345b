"""The default job store: one SQLite file (stdlib ``sqlite3``, WAL), safe across processes."""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from flashvl.jobs.store import Claimed, check_claim, holder_is_dead, new_token, retry_delay

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    job_id TEXT PRIMARY KEY, task TEXT NOT NULL, options TEXT NOT NULL, created REAL NOT NULL,
    owner TEXT);                                      -- the submitting principal; NULL: a local command
CREATE TABLE IF NOT EXISTS items (
    job_id TEXT NOT NULL, key TEXT NOT NULL, seq INTEGER NOT NULL, payload TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'queued',            -- queued | taken | done | parked
    token TEXT, lease_until REAL, next_at REAL NOT NULL DEFAULT 0,
    failures INTEGER NOT NULL DEFAULT 0, claims INTEGER NOT NULL DEFAULT 0,
    result TEXT, error TEXT, finished REAL,
    PRIMARY KEY (job_id, key));
CREATE INDEX IF NOT EXISTS items_due ON items (job_id, state, next_at, seq);
"""


class SqliteJobStore:
    """Every state change is one ``BEGIN IMMEDIATE`` transaction, so two processes never take one item."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
        self._lock = threading.Lock()
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")  # a finished item survives power loss, not just kill -9
        self._db.executescript(SCHEMA)
        self._tx(_migrate)

    def _tx(self, fn: Any) -> Any:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                out = fn(self._db)
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
            return out

    def create_job(
        self,
        job_id: str,
        task: str,
        items: list[tuple[str, dict[str, Any]]],
        options: dict[str, Any] | None = None,
        owner: str | None = None,
    ) -> dict[str, int]:
        def run(db: sqlite3.Connection) -> dict[str, int]:
            held = db.execute("SELECT task, owner FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
            if held is not None:
                check_claim(job_id, task, owner, held[0], held[1])
            else:
                db.execute(
                    "INSERT INTO jobs (job_id, task, options, created, owner) VALUES (?, ?, ?, ?, ?)",
                    (job_id, task, json.dumps(options or {}), time.time(), owner),
                )
            start = db.execute("SELECT COALESCE(MAX(seq), -1) + 1 FROM items WHERE job_id = ?", (job_id,)).fetchone()[0]
            before = db.total_changes
            db.executemany(
                "INSERT OR IGNORE INTO items (job_id, key, seq, payload) VALUES (?, ?, ?, ?)",
                [(job_id, key, start + i, json.dumps(payload)) for i, (key, payload) in enumerate(items)],
            )
            added = db.total_changes - before
            total = db.execute("SELECT COUNT(*) FROM items WHERE job_id = ?", (job_id,)).fetchone()[0]
            return {"added": added, "total": total}

        return self._tx(run)

    def get_job(self, job_id: str) -> dict[str, Any] | None:
        with self._lock:
            row = self._db.execute(
                "SELECT job_id, task, options, created, owner FROM jobs WHERE job_id = ?", (job_id,)
            ).fetchone()
        return _job(row) if row else None

    def list_jobs(self, owner: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        query = "SELECT job_id, task, options, created, owner FROM jobs"
        args: tuple[Any, ...] = ()
        if owner is not None:
            query, args = query + " WHERE owner = ?", (owner,)
        with self._lock:
            rows = self._db.execute(query + " ORDER BY created DESC, job_id LIMIT ?", (*args, limit)).fetchall()
        return [_job(row) for row in rows]

    def open_jobs(self) -> list[str]:
        with self._lock:
            rows = self._db.execute("SELECT DISTINCT job_id FROM items WHERE state IN ('queued', 'taken')").fetchall()
        return [r[0] for r in rows]

    def claim(self, job_id: str, limit: int, lease_s: float) -> list[Claimed]:
        def run(db: sqlite3.Connection) -> list[Claimed]:
            now = time.time()
            rows = db.execute(
                "SELECT key, payload FROM items WHERE job_id = ? AND ((state = 'queued' AND next_at <= ?) "
                "OR (state = 'taken' AND lease_until < ?)) ORDER BY seq LIMIT ?",
                (job_id, now, now, limit),
            ).fetchall()
            token = new_token()
            db.executemany(
                "UPDATE items SET state = 'taken', token = ?, lease_until = ?, claims = claims + 1 "
                "WHERE job_id = ? AND key = ?",
                [(token, now + lease_s, job_id, k) for k, _ in rows],
            )
            return [Claimed(job_id, key, json.loads(payload), token) for key, payload in rows]

        return self._tx(run)

    def complete(self, item: Claimed, result: dict[str, Any]) -> bool:
        def run(db: sqlite3.Connection) -> bool:
            cursor = db.execute(
                "UPDATE items SET state = 'done', result = ?, error = NULL, token = NULL, finished = ? "
                "WHERE job_id = ? AND key = ? AND state = 'taken' AND token = ?",
                (json.dumps(result, ensure_ascii=False), time.time(), item.job_id, item.key, item.token),
            )
            return cursor.rowcount == 1

        return self._tx(run)

    def fail(self, item: Claimed, error: str, max_attempts: int, backoff_s: float) -> str:
        def run(db: sqlite3.Connection) -> str:
            row = db.execute(
                "SELECT failures FROM items WHERE job_id = ? AND key = ? AND state = 'taken' AND token = ?",
                (item.job_id, item.key, item.token),
            ).fetchone()
            if row is None:
                return "stale"
            failures = row[0] + 1
            if failures >= max_attempts:
                db.execute(
                    "UPDATE items SET state = 'parked', failures = ?, error = ?, token = NULL, finished = ? "
                    "WHERE job_id = ? AND key = ?",
                    (failures, error, time.time(), item.job_id, item.key),
                )
                return "parked"
            db.execute(
                "UPDATE items SET state = 'queued', failures = ?, error = ?, token = NULL, next_at = ? "
                "WHERE job_id = ? AND key = ?",
                (failures, error, time.time() + retry_delay(backoff_s, failures), item.job_id, item.key),
            )
            return "retry"

        return self._tx(run)

    def release_orphans(self, job_id: str) -> int:
        def run(db: sqlite3.Connection) -> int:
            tokens = [
                r[0]
                for r in db.execute("SELECT DISTINCT token FROM items WHERE job_id = ? AND state = 'taken'", (job_id,))
            ]
            dead = [t for t in tokens if t and holder_is_dead(t)]
            count = 0
            for token in dead:
                count += db.execute(
                    "UPDATE items SET state = 'queued', token = NULL, next_at = 0 "
                    "WHERE job_id = ? AND state = 'taken' AND token = ?",
                    (job_id, token),
                ).rowcount
            return count

        return self._tx(run)

    def progress(self, job_id: str) -> dict[str, Any]:
        with self._lock:
            rows = self._db.execute(
                "SELECT state, COUNT(*) FROM items WHERE job_id = ? GROUP BY state", (job_id,)
            ).fetchall()
        counts = dict(rows)
        out = {
            "total": sum(counts.values()),
            "done": counts.get("done", 0),
            "parked": counts.get("parked", 0),
            "queued": counts.get("queued", 0),
            "taken": counts.get("taken", 0),
        }
        return out | {"finished": out["total"] > 0 and out["queued"] + out["taken"] == 0}

    def results(self, job_id: str) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._db.execute(
                "SELECT key, state, failures, result, error FROM items WHERE job_id = ? AND state IN "
                "('done', 'parked') ORDER BY seq",
                (job_id,),
            ).fetchall()
        return [
            {
                "key": key,
                "status": state,
                "failures": failures,
                "result": json.loads(result) if result else None,
                "error": error if state == "parked" else None,
            }
            for key, state, failures, result, error in rows
        ]

    def close(self) -> None:
        with self._lock:
            self._db.close()


def _migrate(db: sqlite3.Connection) -> None:
    """Bring a file written by an older flashvl up to date (inside one transaction: two processes opening
    the same old file do not both add the column)."""
    columns = {row[1] for row in db.execute("PRAGMA table_info(jobs)")}
    if "owner" not in columns:  # before jobs had owners: such jobs have none (only admin sees them)
        db.execute("ALTER TABLE jobs ADD COLUMN owner TEXT")
    db.execute("CREATE INDEX IF NOT EXISTS jobs_by_owner ON jobs (owner, created)")


def _job(row: tuple[Any, ...]) -> dict[str, Any]:
    job_id, task, options, created, owner = row
    return {"job_id": job_id, "task": task, "options": json.loads(options), "created": created, "owner": owner}
