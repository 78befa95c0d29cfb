"""SQLite behind a single writer thread, with group commit.

Every job is a plain function of a `sqlite3.Connection`, run on the thread
that owns the connection; it changes nothing but the database, because it may
run twice (see below). Jobs that arrive while a commit is in progress are run
together in the next transaction and share one COMMIT — one fsync for many
concurrent requests. One job's error must undo only that job: a job that
raises before changing anything needs no undo; if one raises after a change,
the batch is rolled back and run again with each job in its own SAVEPOINT
(a savepoint on every job costs two statements each, on the path every write
takes). A job's result reaches its caller only after the commit, so nothing is
acknowledged before it is durable.

Why not aiosqlite: it commits per call, so concurrent requests pay one fsync
each; and one thread owning the connection serialises writers, which is what
makes stock checks race-free.
"""

from __future__ import annotations

import asyncio
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

from service_kit.errors import overloaded
from service_kit.limits import MAX_DB_QUEUE, RETRY_AFTER_SECONDS

T = TypeVar("T")
Synchronous = Literal["OFF", "NORMAL", "FULL", "EXTRA"]

_MAX_BATCH = 512


@dataclass
class _Job:
    fn: Callable[[sqlite3.Connection], Any]
    future: asyncio.Future[Any]


_STOP = object()


class Database:
    """An SQLite file in WAL mode, written through one thread with group commit."""

    def __init__(
        self,
        path: str | Path,
        *,
        schema: str | Sequence[str],
        synchronous: Synchronous = "FULL",
        max_queue: int = MAX_DB_QUEUE,
        on_commit: Callable[[float, int], None] | None = None,
    ):
        """`schema` is the list of migrations, oldest first (a single script is
        migration 1). The file's `PRAGMA user_version` says how many are applied;
        the missing ones run at open, each in its own transaction. At most
        `max_queue` jobs wait for (or are in) the writer: see `run`. `on_commit`
        (metrics) is called on the writer thread after each group commit with its
        seconds, BEGIN to COMMIT, and its number of jobs."""
        self.path = str(path)
        self._migrations = [schema] if isinstance(schema, str) else list(schema)
        self._synchronous = synchronous
        self._jobs: queue.SimpleQueue[_Job | object] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.commits = 0  # batches committed, for tests and the benchmark
        self.max_queue = max_queue
        self.pending = 0
        """Jobs queued or running, at most max_queue."""
        self.waiting = 0
        """Jobs that wait for room in the queue (wait_for_room)."""
        self._room = asyncio.Event()  # set whenever jobs leave the queue
        self._on_commit = on_commit

    async def open(self) -> Database:
        self._loop = asyncio.get_running_loop()
        ready: asyncio.Future[None] = self._loop.create_future()
        self._thread = threading.Thread(
            target=self._run, args=(ready,), name=f"sqlite:{self.path}", daemon=True
        )
        self._thread.start()
        await ready
        return self

    async def close(self) -> None:
        if self._thread is None:
            return
        self._jobs.put(_STOP)
        await asyncio.to_thread(self._thread.join)
        self._thread = None

    async def run(self, fn: Callable[[sqlite3.Connection], T], *, wait_for_room: bool = False) -> T:
        """Runs fn in a transaction; returns its result once committed.

        When `max_queue` jobs are already waiting, a request is shed: it raises
        RESOURCE_EXHAUSTED with RetryInfo, having run nothing. Work that must not
        be dropped (a saga's own log writes) passes wait_for_room and waits its turn.
        """
        if self._loop is None or self._thread is None:
            raise RuntimeError("database is not open")
        while self.pending >= self.max_queue:
            if not wait_for_room:
                raise overloaded(
                    f"the database of this service has {self.pending} jobs queued "
                    f"(--max-db-queue {self.max_queue}); try again shortly",
                    RETRY_AFTER_SECONDS,
                    limit="max-db-queue",
                )
            self._room.clear()
            self.waiting += 1
            try:
                await self._room.wait()
            finally:
                self.waiting -= 1
        self.pending += 1
        future: asyncio.Future[T] = self._loop.create_future()
        self._jobs.put(_Job(fn, future))
        return await future

    # --- the writer thread -------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={self._synchronous}")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute("PRAGMA busy_timeout=5000")
        self._migrate(conn)
        return conn

    def _migrate(self, conn: sqlite3.Connection) -> None:
        applied = conn.execute("PRAGMA user_version").fetchone()[0]
        if applied > len(self._migrations):
            raise RuntimeError(
                f"{self.path} has schema version {applied}; this code knows only "
                f"{len(self._migrations)}: run a newer minisaga"
            )
        for version, script in enumerate(self._migrations[applied:], start=applied + 1):
            conn.executescript(
                f"BEGIN IMMEDIATE;\n{script}\nPRAGMA user_version = {version};\nCOMMIT;"
            )

    def _run(self, ready: asyncio.Future[None]) -> None:
        assert self._loop is not None
        try:
            conn = self._connect()
        except BaseException as error:  # hand the failure to open()'s caller
            self._loop.call_soon_threadsafe(_settle, ready, None, error)
            return
        self._loop.call_soon_threadsafe(_settle, ready, None, None)
        stopping = False
        while not stopping:
            batch: list[_Job] = []
            item = self._jobs.get()
            while True:
                if item is _STOP:
                    stopping = True
                    break
                assert isinstance(item, _Job)
                batch.append(item)
                if len(batch) >= _MAX_BATCH:
                    break
                try:
                    item = self._jobs.get_nowait()
                except queue.Empty:
                    break
            if batch:
                self._commit_batch(conn, batch)
        conn.close()

    def _commit_batch(self, conn: sqlite3.Connection, batch: list[_Job]) -> None:
        assert self._loop is not None
        outcomes: list[tuple[asyncio.Future[Any], Any, BaseException | None]] | None
        started = time.perf_counter()
        try:
            conn.execute("BEGIN IMMEDIATE")
            outcomes = _run_together(conn, batch)
            if outcomes is None:  # a job failed half-way: undo all, each in a savepoint
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                conn.execute("BEGIN IMMEDIATE")
                outcomes = _run_apart(conn, batch)
            conn.execute("COMMIT")
            self.commits += 1
            if self._on_commit is not None:
                self._on_commit(time.perf_counter() - started, len(batch))
        except sqlite3.Error as error:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            outcomes = [(job.future, None, error) for job in batch]
        self._loop.call_soon_threadsafe(self._settle_batch, outcomes)

    def _settle_batch(
        self, outcomes: list[tuple[asyncio.Future[Any], Any, BaseException | None]]
    ) -> None:
        """On the event loop: answers a committed batch and makes room in the queue."""
        self.pending -= len(outcomes)
        self._room.set()
        _settle_all(outcomes)


_Outcomes = list[tuple[asyncio.Future[Any], Any, BaseException | None]]


def _run_together(conn: sqlite3.Connection, batch: list[_Job]) -> _Outcomes | None:
    """The batch's jobs one after another in the open transaction, with no
    savepoints (two statements fewer per job). A job that raises having changed
    nothing (the usual refusal: a check before any write) costs nothing to undo;
    one that raises after a change, or that ended the transaction, makes this
    return None: the caller rolls the batch back and runs it apart."""
    outcomes: _Outcomes = []
    for job in batch:
        changes = conn.total_changes
        try:
            result = job.fn(conn)
        except Exception as error:
            if conn.total_changes != changes or not conn.in_transaction:
                return None
            outcomes.append((job.future, None, error))
        else:
            outcomes.append((job.future, result, None))
    return outcomes


def _run_apart(conn: sqlite3.Connection, batch: list[_Job]) -> _Outcomes:
    """Each job in a SAVEPOINT of its own: one job's error undoes only that job."""
    outcomes: _Outcomes = []
    for job in batch:
        conn.execute("SAVEPOINT job")
        try:
            result = job.fn(conn)
        except Exception as error:
            conn.execute("ROLLBACK TO job")
            conn.execute("RELEASE job")
            outcomes.append((job.future, None, error))
        else:
            conn.execute("RELEASE job")
            outcomes.append((job.future, result, None))
    return outcomes


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.done():  # the caller gave up waiting; the work is committed anyway
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


def _settle_all(outcomes: list[tuple[asyncio.Future[Any], Any, BaseException | None]]) -> None:
    for future, result, error in outcomes:
        _settle(future, result, error)
