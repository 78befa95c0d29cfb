"""service_kit.database: group commit, per-job rollback, versioned migrations."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from service_kit.database import Database

V1 = "CREATE TABLE IF NOT EXISTS items (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE);"
V2 = "ALTER TABLE items ADD COLUMN colour TEXT NOT NULL DEFAULT 'red';"


def insert(name: str) -> Callable[[sqlite3.Connection], int]:
    def job(conn: sqlite3.Connection) -> int:
        return int(conn.execute("INSERT INTO items (name) VALUES (?)", (name,)).lastrowid or 0)

    return job


def fail(conn: sqlite3.Connection) -> None:
    conn.execute("INSERT INTO items (name) VALUES ('doomed')")
    raise ValueError("the job changes its mind")


async def test_concurrent_jobs_share_commits_and_a_failing_job_rolls_back_alone(
    tmp_path: Path,
) -> None:
    db = await Database(tmp_path / "x.db", schema=V1).open()
    try:
        results = await asyncio.gather(
            *(db.run(insert(f"n{i}")) for i in range(200)),
            db.run(fail),
            db.run(insert("n0")),  # a duplicate: sqlite3.IntegrityError for this job only
            return_exceptions=True,
        )
        assert all(isinstance(r, int) for r in results[:200])
        assert isinstance(results[200], ValueError)
        assert isinstance(results[201], sqlite3.IntegrityError)
        names = await db.run(lambda c: [r[0] for r in c.execute("SELECT name FROM items")])
        assert len(names) == 200 and "doomed" not in names
        assert db.commits < 100  # 202 jobs, far fewer fsyncs
    finally:
        await db.close()


async def test_a_refusal_before_any_write_leaves_the_batch_alone_a_late_failure_reruns_it(
    tmp_path: Path,
) -> None:
    """Jobs share a transaction without savepoints: a job that raises having
    written nothing undoes nothing, so its batch runs once; one that raises
    after a write sends the batch round again, each job in a savepoint."""
    db = await Database(tmp_path / "x.db", schema=V1).open()
    runs: list[str] = []

    def counted(name: str, then_fail: str = "") -> Callable[[sqlite3.Connection], int]:
        def job(conn: sqlite3.Connection) -> int:
            runs.append(name)
            if then_fail == "before":
                raise ValueError("refused before writing")
            rowid = insert(name)(conn)
            if then_fail == "after":
                raise ValueError("refused after writing")
            return rowid

        return job

    async def batch(*jobs: Callable[[sqlite3.Connection], int]) -> list[object]:
        # The writer is busy with a job that waits on `hold`: the others queue
        # behind it and run together in the next batch.
        hold = asyncio.get_running_loop().create_future()
        started = asyncio.Event()
        loop = asyncio.get_running_loop()

        def blocker(conn: sqlite3.Connection) -> None:
            loop.call_soon_threadsafe(started.set)
            asyncio.run_coroutine_threadsafe(asyncio.wait_for(hold, 60), loop).result()

        first = asyncio.ensure_future(db.run(blocker))
        await started.wait()
        rest = [asyncio.ensure_future(db.run(job)) for job in jobs]
        await asyncio.sleep(0)  # every job is queued before the writer moves on
        hold.set_result(None)
        await first
        return await asyncio.gather(*rest, return_exceptions=True)

    try:
        runs.clear()
        results = await batch(counted("a"), counted("b", "before"), counted("c"))
        assert isinstance(results[1], ValueError) and runs == ["a", "b", "c"]
        runs.clear()
        results = await batch(counted("d"), counted("e", "after"), counted("f"))
        assert isinstance(results[1], ValueError)
        assert runs == ["d", "e", "d", "e", "f"]  # rolled back at e, then each apart
        names = await db.run(lambda c: [r[0] for r in c.execute("SELECT name FROM items")])
        assert sorted(names) == ["a", "c", "d", "f"]
    finally:
        await db.close()


async def test_migrations_run_once_in_order_and_keep_the_data(tmp_path: Path) -> None:
    path = tmp_path / "m.db"
    db = await Database(path, schema=[V1]).open()
    await db.run(insert("kept"))
    await db.close()

    db = await Database(path, schema=[V1, V2]).open()  # a newer release adds a column
    try:
        row = await db.run(lambda c: c.execute("SELECT name, colour FROM items").fetchone())
        assert tuple(row) == ("kept", "red")
        assert await db.run(lambda c: c.execute("PRAGMA user_version").fetchone()[0]) == 2
    finally:
        await db.close()

    with pytest.raises(RuntimeError, match="schema version 2"):
        await Database(path, schema=[V1]).open()  # older code refuses a newer file
