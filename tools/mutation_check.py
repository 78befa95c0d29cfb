"""make mutation-check: break one saga rule at a time in a copy; a test must notice.

Each `Mutation` below is a small text patch (file, exact old text, new text)
that breaks one rule the project promises, plus the few tests aimed at that
rule. The check copies the working tree (the files git tracks or would track,
as they are now, uncommitted edits included) to a temporary folder, applies
each mutation in a copy of its own, runs `pytest -x` on its tests there, and
restores the file. A mutation the tests let pass "survives": the rule has no
test that guards it. The working tree is never written to.

Why our own list rather than mutmut or cosmic-ray: those mutate operators
line by line (thousands of mutants, most of them noise such as log texts),
and cannot express a rule that spans lines or files, such as "the attempt is
recorded before its RPC". Twenty-odd patches, each named after the rule it
breaks, run in minutes and say what is wrong when one survives. A patch whose
old text is no longer in its file fails the check at once, so the list
cannot rot silently when the code changes: update the patch with the code.

Run it before changing a rule (and after, to see its tests still guard it):

    make mutation-check                      # every mutation, 2 at a time
    python -m tools.mutation_check --list    # the mutations, patches checked
    python -m tools.mutation_check --only backoff --jobs 1
    python -m tools.mutation_check --rev HEAD   # the last commit, not the tree
"""

from __future__ import annotations

import argparse
import os
import queue
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RUN_TIMEOUT = 900.0
"""Seconds one pytest run may take; pytest-timeout (180 s a test) stops hangs first."""


@dataclass(frozen=True)
class Edit:
    """Replace `old` by `new` in `file`; both are written without the `indent`
    spaces that every non-empty line of theirs has in the file."""

    file: str
    old: str
    new: str
    indent: int = 0

    @property
    def before(self) -> str:
        return _indented(self.old, self.indent)

    @property
    def after(self) -> str:
        return _indented(self.new, self.indent)


def _indented(text: str, indent: int) -> str:
    return "".join(
        " " * indent + line if line.strip() else line for line in text.splitlines(keepends=True)
    )


@dataclass(frozen=True)
class Mutation:
    name: str
    rule: str
    edits: tuple[Edit, ...]
    tests: tuple[str, ...]
    """pytest arguments: files, node ids, -k expressions."""


def mutation(
    name: str, rule: str, file: str, indent: int, old: str, new: str, *tests: str
) -> Mutation:
    return Mutation(name, rule, (Edit(file, old, new, indent),), tests)


ENGINE = "orchestrator_server/saga/engine.py"
POLICY = "orchestrator_server/saga/policy.py"
SQLITE = "orchestrator_server/saga/sqlite_store.py"
PG = "orchestrator_server/saga/postgres_store.py"
SQL = "orchestrator_server/saga/sql.py"
STORE_CONTRACT = "tests/store/test_contract.py"
PAYMENT = "payment_server/service.py"
INVENTORY = "inventory_server/service.py"
CONTRACT = "tests/participants/test_contract.py"
PG_STORE_TESTS = "tests/postgres/test_store.py"
RECOVERY_AT_START = "tests/orchestrator/test_recovery_at_start.py"
CRASH = "tests/crash/test_crash_recovery.py"
FAULTS = "tests/orchestrator/test_faults.py"
BACKOFF = "tests/orchestrator/test_backoff.py"

PAYMENT_FAIL_SWITCH = """\
if request.fail:
    raise errors.failed_precondition(
        errors.INJECTED_FAILURE, "payment failed on purpose (fail=true)"
    )
"""
RECORD_THE_ATTEMPT = """\
await self._write(record, finished=unsaved, begun=attempt, status=status)
self._checkpoint(f"{phase.value}-attempt-recorded")
"""


# Payment's fail switch moved after its INSERT: a rejection that has written.
CHARGE_FAILS_AFTER_ITS_INSERT = (
    Edit(
        PAYMENT,
        PAYMENT_FAIL_SWITCH + "if request.amount > self.limit:\n",
        "if request.amount > self.limit:\n",
        12,
    ),
    Edit(
        PAYMENT,
        "return pb.ChargeResponse(payment=_payment(_select(conn, request.saga_id)))\n",
        PAYMENT_FAIL_SWITCH
        + "return pb.ChargeResponse(payment=_payment(_select(conn, request.saga_id)))\n",
        12,
    ),
)

MUTATIONS: tuple[Mutation, ...] = (
    # --- participants ------------------------------------------------------
    mutation(
        "replay-does-the-work-again",
        "participant idempotency",
        INVENTORY,
        16,
        "return pb.ReserveResponse(reservation=_reservation(row), replayed=True)\n",
        """\
conn.execute(
    "UPDATE products SET quantity = quantity - ?, reserved = reserved + ?"
    " WHERE product_id = ?",
    (row["quantity"], row["quantity"], row["product_id"]),
)
return pb.ReserveResponse(reservation=_reservation(row), replayed=True)
""",
        CONTRACT,
        "-k",
        "repeated_action or concurrent_identical_actions",
    ),
    mutation(
        "reused-key-replays-another-amount",
        "participant idempotency",
        PAYMENT,
        16,
        "    request.amount,\n    currency,\n):\n",
        '    row["amount"],\n    currency,\n):\n',
        CONTRACT,
        "-k",
        "other_parameters",
    ),
    mutation(
        "empty-release-leaves-no-tombstone",
        "the tombstone",
        INVENTORY,
        12,
        """\
if row is None:
    conn.execute(
        "INSERT INTO reservations (saga_id, reservation_id, product_id, quantity,"
        " status, created_at_epoch_ms, updated_at_epoch_ms)"
        " VALUES (?, '', '', 0, ?, ?, ?)",
        (request.saga_id, pb.RESERVATION_STATUS_VOIDED, now, now),
    )
    outcome = pb.RELEASE_OUTCOME_NOTHING_TO_RELEASE
""",
        """\
if row is None:
    return pb.ReleaseResponse(outcome=pb.RELEASE_OUTCOME_NOTHING_TO_RELEASE)
""",
        CONTRACT,
        "-k",
        "tombstone",
    ),
    mutation(
        "charge-ignores-the-tombstone",
        "the tombstone",
        PAYMENT,
        16,
        'if row["status"] != pb.PAYMENT_STATUS_CHARGED:\n',
        'if row["status"] == pb.PAYMENT_STATUS_REFUNDED:\n',
        CONTRACT,
        "-k",
        "tombstone or after_a_real_compensation",
    ),
    Mutation(
        "stock-checked-in-another-job",
        "stock under concurrency",
        (
            Edit(
                INVENTORY,
                "def reserve(conn: sqlite3.Connection) -> pb.ReserveResponse:\n",
                """\
checked = await self.db.run(lambda conn: _select_product(conn, request.product_id))

def reserve(conn: sqlite3.Connection) -> pb.ReserveResponse:
""",
                8,
            ),
            Edit(
                INVENTORY,
                "product = _select_product(conn, request.product_id)\n",
                "product = checked\n",
                12,
            ),
        ),
        ("tests/participants/test_inventory.py::test_concurrent_reserves_never_oversell",),
    ),
    Mutation(
        "rejection-commits-its-writes",
        "rejection writes nothing",
        (
            Edit("service_kit/database.py", 'conn.execute("ROLLBACK TO job")\n', "pass\n", 12),
            *CHARGE_FAILS_AFTER_ITS_INSERT,
        ),
        (CONTRACT, "-k", "fail_switch_fails_on_purpose_and_writes_nothing"),
    ),
    Mutation(
        "failed-job-writes-stay-in-the-batch",
        "a job that fails after writing sends its batch round again",
        (
            Edit(
                "service_kit/database.py",
                "if conn.total_changes != changes or not conn.in_transaction:\n",
                "if not conn.in_transaction:\n",
                12,
            ),
            *CHARGE_FAILS_AFTER_ITS_INSERT,
        ),
        (CONTRACT, "-k", "fail_switch_fails_on_purpose_and_writes_nothing"),
    ),
    # --- the engine ----------------------------------------------------------
    Mutation(
        "attempt-recorded-after-its-rpc",
        "write-ahead",
        (
            Edit(ENGINE, RECORD_THE_ATTEMPT, "", 8),
            Edit(
                ENGINE,
                "attempt.finished_at_ms = now_ms()\n",
                "attempt.finished_at_ms = now_ms()\n" + RECORD_THE_ATTEMPT,
                8,
            ),
        ),
        (f"{CRASH}::test_a_kill_at_any_checkpoint_is_recovered",),
    ),
    mutation(
        "compensations-in-forward-order",
        "reverse compensation",
        ENGINE,
        8,
        "for step in reversed(definition.steps):\n",
        "for step in definition.steps:\n",
        "tests/orchestrator/test_scenarios.py",
        "-k",
        "shipping_failure and sqlite",
    ),
    mutation(
        "in-doubt-step-not-undone",
        "in-doubt self-compensation",
        ENGINE,
        12,
        "attempt.code is None or step.policy.classify(attempt.code).may_have_taken_effect\n",
        'attempt.code == "OK"\n',
        FAULTS,
        "-k",
        "commit_then_unavailable and sqlite",
    ),
    mutation(
        "only-done-may-have-taken-effect",
        "in-doubt self-compensation",
        POLICY,
        8,
        "return self is not Outcome.REJECTED\n",
        "return self is Outcome.DONE\n",
        FAULTS,
        "-k",
        "commit_then_unavailable and sqlite",
    ),
    mutation(
        "action-backoff-skipped",
        "backoff",
        ENGINE,
        20,
        "await asyncio.wait_for(cancel.wait(), pause)\n",
        "await asyncio.sleep(0)\n",
        BACKOFF,
    ),
    mutation(
        "compensation-backoff-skipped",
        "backoff",
        ENGINE,
        16,
        "await asyncio.sleep(compensation.retry.backoff(tries, self._rng))\n",
        "await asyncio.sleep(0)\n",
        BACKOFF,
    ),
    mutation(
        "compensation-horizon-ignored",
        "compensation horizon",
        "orchestrator_server/saga/retry.py",
        8,
        "return self.horizon is not None and elapsed >= self.horizon\n",
        "return False\n",
        "tests/orchestrator/test_compensation_horizon.py",
        "-k",
        "runs_out and sqlite",
    ),
    mutation(
        "compensation-gives-up-at-the-old-budget",
        "compensation horizon",
        "orchestrator_server/saga/retry.py",
        8,
        "if self.maximum_attempts and attempts >= self.maximum_attempts:\n",
        "if attempts >= (self.maximum_attempts or 4):\n",
        "tests/orchestrator/test_compensation_horizon.py",
        "-k",
        "outlasts and sqlite",
    ),
    # --- step outputs and versions (issue 12) --------------------------------
    mutation(
        "output-not-recorded-with-its-outcome",
        "step outputs survive a restart",
        SQL,
        8,
        "attempt.output,\n",
        "None,\n",
        "tests/orchestrator/test_public_api.py",
        "-k",
        "restart_restores_it",
    ),
    mutation(
        "output-too-large-retried",
        "an output over the cap fails its step at once",
        ENGINE,
        16,
        "final = attempt.reason == STEP_OUTPUT_TOO_LARGE  # the same reply each time\n",
        "final = False\n",
        "tests/orchestrator/test_public_api.py",
        "-k",
        "over_the_cap",
    ),
    mutation(
        "saga-driven-on-the-newest-version",
        "a saga finishes on its version",
        ENGINE,
        8,
        "definition = self._definitions.get((record.saga_type, record.saga_version))\n",
        "definition = self._newest.get(record.saga_type)\n",
        "tests/orchestrator/test_public_api.py",
        "-k",
        "finishes_on_its_version",
    ),
    # --- the status policy: one mutation per class ---------------------------
    mutation(
        "unavailable-not-retried",
        "status class: transient",
        POLICY,
        8,
        "StatusCode.UNAVAILABLE: Outcome.TRANSIENT,\n",
        "StatusCode.UNAVAILABLE: Outcome.REJECTED,\n",
        FAULTS,
        "-k",
        "transient and sqlite",
    ),
    mutation(
        "deadline-exceeded-taken-as-rejected",
        "status class: in doubt",
        POLICY,
        8,
        "StatusCode.DEADLINE_EXCEEDED: Outcome.IN_DOUBT,\n",
        "StatusCode.DEADLINE_EXCEEDED: Outcome.REJECTED,\n",
        FAULTS,
        "-k",
        "slow_participant and sqlite",
    ),
    mutation(
        "in-doubt-not-retried",
        "status class: in doubt",
        POLICY,
        8,
        "return self in (Outcome.TRANSIENT, Outcome.IN_DOUBT)\n",
        "return self is Outcome.TRANSIENT\n",
        FAULTS,
        "-k",
        "slow_participant and sqlite",
    ),
    mutation(
        "unrecorded-taken-as-rejected",
        "status class: in doubt",
        POLICY,
        8,
        "if code == UNRECORDED:\n    return Outcome.IN_DOUBT\n",
        "if code == UNRECORDED:\n    return Outcome.REJECTED\n",
        RECOVERY_AT_START,
        "-k",
        "sqlite and cancelled",
    ),
    mutation(
        "failed-precondition-retried",
        "status class: rejected",
        POLICY,
        8,
        "StatusCode.FAILED_PRECONDITION: Outcome.REJECTED,\n",
        "StatusCode.FAILED_PRECONDITION: Outcome.TRANSIENT,\n",
        "tests/orchestrator/test_scenarios.py",
        "-k",
        "sqlite",
    ),
    # --- recovery of every non-terminal status ---------------------------------
    mutation(
        "active-statuses-skip-compensating",
        "recovery: COMPENSATING",
        SQL,
        0,
        "ACTIVE = f\"('{SagaStatus.RUNNING.value}', '{SagaStatus.COMPENSATING.value}')\"\n",
        "ACTIVE = f\"('{SagaStatus.RUNNING.value}', '{SagaStatus.RUNNING.value}')\"\n",
        RECOVERY_AT_START,
        "-k",
        "sqlite",
    ),
    mutation(
        "active-statuses-skip-running",
        "recovery: RUNNING",
        SQL,
        0,
        "ACTIVE = f\"('{SagaStatus.RUNNING.value}', '{SagaStatus.COMPENSATING.value}')\"\n",
        "ACTIVE = f\"('{SagaStatus.COMPENSATING.value}', '{SagaStatus.COMPENSATING.value}')\"\n",
        RECOVERY_AT_START,
        "-k",
        "sqlite",
    ),
    mutation(
        "postgres-recovery-skips-compensating",
        "recovery: COMPENSATING",
        PG,
        12,
        'f"SELECT saga_id FROM sagas WHERE status IN {_ACTIVE}"\n',
        "\"SELECT saga_id FROM sagas WHERE status = 'RUNNING'\"\n",
        RECOVERY_AT_START,
        "-k",
        "postgres",
    ),
    mutation(
        "engine-recovery-skips-compensating",
        "recovery: COMPENSATING",
        ENGINE,
        0,
        "await self.store.claimable()",
        "[c for c in await self.store.claimable()"
        " if (await self.store.load(c)).status is SagaStatus.RUNNING]",
        RECOVERY_AT_START,
        "-k",
        "sqlite",
    ),
    # --- request_id dedup --------------------------------------------------------
    mutation(
        "sqlite-request-id-not-looked-up",
        "request_id dedup",
        SQLITE,
        12,
        "if by_id is None and saga.request_id is not None:\n",
        "if by_id is None and saga.request_id is None:\n",
        "tests/orchestrator/test_api.py",
        "-k",
        "request_id and sqlite",
    ),
    mutation(
        "request-id-reused-for-another-order",
        "request_id dedup",
        SQL,
        4,
        "return existing.saga_type == saga.saga_type and existing.input == saga.input\n",
        "return existing.saga_type == saga.saga_type\n",
        STORE_CONTRACT,
        "-k",
        "request_id",
    ),
    mutation(
        "postgres-request-id-not-looked-up",
        "request_id dedup",
        PG,
        12,
        "if by_id is None and saga.request_id is not None:\n",
        "if by_id is None and saga.request_id is None:\n",
        STORE_CONTRACT,
        "-k",
        "request_id and postgres",
    ),
    mutation(
        "key-conflict-not-handled",
        "request_id and saga_id dedup",
        SQL,
        8,
        'f" ON CONFLICT DO NOTHING{returned}"\n',
        'f"{returned}"\n',
        STORE_CONTRACT,
        "-k",
        "concurrent_creates",
    ),
    mutation(
        "chosen-saga-id-taken-by-another-saga",
        "saga_id dedup",
        SQL,
        8,
        "if not _same(by_id, saga):\n",
        "if False:\n",
        STORE_CONTRACT,
        "-k",
        "saga_id",
    ),
    mutation(
        "request-builder-error-escapes",
        "a raising builder ends its saga",
        ENGINE,
        8,
        "except Exception as error:\n",
        "except ZeroDivisionError as error:\n",
        "tests/orchestrator/test_builder_errors.py",
        "-k",
        "sqlite",
    ),
    # --- fencing (PostgreSQL) ------------------------------------------------------
    # Both fences: the one statement of `write` and the transaction of `_fenced`.
    Mutation(
        "fence-ignores-the-owner",
        "fencing by owner",
        (
            Edit(
                PG,
                '" WHERE saga_id = $1 AND lease_owner = $2 AND lease_epoch = $3'
                ' RETURNING saga_id)"\n',
                '" WHERE saga_id = $1 AND $2::text IS NOT NULL AND lease_epoch = $3'
                ' RETURNING saga_id)"\n',
                8,
            ),
            Edit(
                PG,
                '" WHERE saga_id = $1 AND lease_owner = $2 AND lease_epoch = $3"\n',
                '" WHERE saga_id = $1 AND $2::text IS NOT NULL AND lease_epoch = $3"\n',
                20,
            ),
        ),
        (PG_STORE_TESTS, "-k", "fence or fenced or given_up"),
    ),
    Mutation(
        "fence-ignores-the-epoch",
        "fencing by epoch",
        (
            Edit(
                PG,
                '" WHERE saga_id = $1 AND lease_owner = $2 AND lease_epoch = $3'
                ' RETURNING saga_id)"\n',
                '" WHERE saga_id = $1 AND lease_owner = $2 AND $3::bigint IS NOT NULL'
                ' RETURNING saga_id)"\n',
                8,
            ),
            Edit(
                PG,
                '" WHERE saga_id = $1 AND lease_owner = $2 AND lease_epoch = $3"\n',
                '" WHERE saga_id = $1 AND lease_owner = $2 AND $3::bigint IS NOT NULL"\n',
                20,
            ),
        ),
        (PG_STORE_TESTS, "-k", "stale_epoch"),
    ),
    Mutation(  # the outcome and the next attempt written whether the fence held or not
        "fenced-out-write-still-records",
        "fencing by epoch",
        (
            Edit(
                PG,
                '" WHERE saga_id = (SELECT saga_id FROM fence) AND step',
                '" WHERE saga_id = $1 AND step',
            ),
            Edit(PG, "'bigint')} FROM fence)\"\n", "'bigint')} FROM sagas WHERE saga_id = $1)\"\n"),
        ),
        (PG_STORE_TESTS, "-k", "fenced_out"),
    ),
    mutation(
        "renewal-ignores-the-epoch",
        "fencing by epoch",
        PG,
        12,
        '" ON s.saga_id = l.saga_id AND s.lease_epoch = l.epoch"\n',
        '" ON s.saga_id = l.saga_id AND l.epoch IS NOT NULL"\n',
        PG_STORE_TESTS,
        "-k",
        "stale_epoch",
    ),
    # --- lease expiry (PostgreSQL) ---------------------------------------------------
    mutation(
        "expired-lease-never-claimable",
        "lease expiry",
        PG,
        16,
        '" AND (lease_owner IS NULL OR lease_owner = $2 OR lease_expires_at < now())"\n',
        '" AND (lease_owner IS NULL OR lease_owner = $2)"\n',
        PG_STORE_TESTS,
        "-k",
        "expired or former_owner",
    ),
    mutation(
        "live-lease-claimable",
        "lease expiry",
        PG,
        16,
        '" AND (lease_owner IS NULL OR lease_owner = $2 OR lease_expires_at < now())"\n',
        '" AND (lease_owner IS NULL OR lease_owner = $2 OR lease_expires_at IS NOT NULL)"\n',
        PG_STORE_TESTS,
        "-k",
        "live_lease",
    ),
    mutation(
        "expired-lease-not-listed-claimable",
        "lease expiry",
        PG,
        12,
        '" AND (lease_owner IS NULL OR lease_owner = $1 OR lease_expires_at < now())"\n',
        '" AND (lease_owner IS NULL OR lease_owner = $1)"\n',
        PG_STORE_TESTS,
        "-k",
        "expired",
    ),
    mutation(
        "own-clock-never-expires-a-lease",
        "lease expiry",
        PG,
        8,
        "return 0.0 if lease is None else max(0.0, lease.valid_until - self._clock())\n",
        "return 0.0 if lease is None else 3600.0\n",
        PG_STORE_TESTS,
        "-k",
        "expired or former_owner",
    ),
    mutation(
        "renewal-does-not-extend",
        "lease expiry",
        PG,
        12,
        'f" UPDATE sagas s SET lease_expires_at = {_EXPIRY % 4}"\n',
        """\
" UPDATE sagas s SET lease_expires_at ="
" s.lease_expires_at + $4::bigint * interval '0 milliseconds'"
""",
        PG_STORE_TESTS,
        "-k",
        "renew",
    ),
)


@dataclass(frozen=True)
class Result:
    mutation: Mutation
    verdict: str
    """killed, survived, or broken (the tests could not run: a bad patch, say)."""
    caught_by: str
    why: str
    """The first `E` line of pytest's report: what the test saw."""
    seconds: float
    output: str


def tracked_files(root: Path) -> list[str]:
    """What git tracks or would track (uncommitted edits included, ignored files not)."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=root,
        capture_output=True,
        check=True,
    ).stdout.decode()
    return sorted({name for name in listed.split("\0") if name and (root / name).is_file()})


def copy_tree(root: Path, files: Sequence[str], target: Path) -> None:
    for name in files:
        destination = target / name
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / name, destination)


def export_rev(root: Path, rev: str, target: Path) -> None:
    """The files of commit `rev`, as `git archive` gives them."""
    archive = subprocess.run(
        ["git", "archive", "--format=tar", rev], cwd=root, capture_output=True, check=True
    ).stdout
    target.mkdir(parents=True)
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive, check=True)


def patch_problems(root: Path, mutations: Sequence[Mutation]) -> list[str]:
    """Every edit's old text must occur exactly once in its file: else the list has rotted."""
    problems = []
    for m in mutations:
        for edit in m.edits:
            path = root / edit.file
            text = path.read_text() if path.is_file() else ""
            found = text.count(edit.before)
            if found != 1:
                where = "not found" if found == 0 else f"found {found} times"
                first = edit.old.strip().splitlines()[0] if edit.old.strip() else "(empty)"
                problems.append(f"{m.name}: old text {where} in {edit.file}: {first!r}")
    return problems


def apply(copy: Path, m: Mutation) -> dict[Path, str]:
    """Applies m's edits in copy; returns the files' original texts."""
    originals: dict[Path, str] = {}
    for edit in m.edits:
        path = copy / edit.file
        originals.setdefault(path, path.read_text())
        path.write_text(path.read_text().replace(edit.before, edit.after, 1))
    return originals


_FIRST_FAILURE = re.compile(r"^(?:FAILED|ERROR) (\S+)", re.MULTILINE)
_FIRST_ERROR_LINE = re.compile(r"^E +(.+)$", re.MULTILINE)


def run_tests(copy: Path, tests: Sequence[str], basetemp: Path) -> tuple[int, str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(copy), str(copy / "generated")])}
    env.pop("PYTEST_ADDOPTS", None)
    command = [
        sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider",
        f"--basetemp={basetemp}", *tests,
    ]  # fmt: skip
    try:
        done = subprocess.run(
            command, cwd=copy, env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT
        )
    except subprocess.TimeoutExpired as expired:
        output = expired.stdout if isinstance(expired.stdout, str) else ""
        return -1, output + f"\n(timed out after {RUN_TIMEOUT:.0f}s)"
    return done.returncode, done.stdout + done.stderr


def judge(m: Mutation, copy: Path, temp: Path) -> Result:
    started = time.monotonic()
    originals = apply(copy, m)
    try:
        code, output = run_tests(copy, m.tests, temp / f"pytest-{m.name}")
    finally:
        for path, text in originals.items():
            path.write_text(text)
    seconds = time.monotonic() - started
    failure = _FIRST_FAILURE.search(output)
    error = _FIRST_ERROR_LINE.search(output)
    why = error.group(1)[:160] if error else ""
    if code == 0:
        return Result(m, "survived", "", why, seconds, output)
    if code == 1 and failure is not None:
        return Result(m, "killed", failure.group(1), why, seconds, output)
    if code == -1:
        return Result(m, "killed", "(a test hung past the run's timeout)", why, seconds, output)
    return Result(m, "broken", f"pytest exit {code}", why, seconds, output)


def baseline(copies: Sequence[Path], mutations: Sequence[Mutation], temp: Path) -> list[str]:
    """The mutations' tests on the unmutated copies: they must pass, or a kill means nothing."""
    specs = sorted({m.tests for m in mutations})
    free: queue.Queue[Path] = queue.Queue()
    for copy in copies:
        free.put(copy)

    def run(number: int, tests: tuple[str, ...]) -> str:
        copy = free.get()
        try:
            code, output = run_tests(copy, tests, temp / f"pytest-baseline-{number}")
        finally:
            free.put(copy)
        if code == 0:
            return ""
        tail = "\n".join(output.strip().splitlines()[-15:])
        return f"pytest {' '.join(tests)} fails unmutated (exit {code}):\n{tail}"

    with ThreadPoolExecutor(max_workers=len(copies)) as pool:
        found = pool.map(run, range(len(specs)), specs)
        return [problem for problem in found if problem]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tools.mutation_check",
        description="Apply each curated mutation to a temporary copy of the working tree and "
        "run the tests aimed at its rule; fail if any mutation survives.",
    )
    parser.add_argument("--jobs", type=int, default=2, help="mutations at a time (default 2)")
    parser.add_argument(
        "--only", action="append", default=[], metavar="TEXT",
        help="only mutations whose name or rule contains TEXT (repeatable)",
    )  # fmt: skip
    parser.add_argument("--list", action="store_true", help="list the mutations and stop")
    parser.add_argument(
        "--no-baseline", action="store_true", help="skip running the tests unmutated first"
    )
    parser.add_argument(
        "--rev",
        metavar="COMMIT",
        help="check the code of COMMIT (git archive) instead of the working tree, whose "
        "uncommitted edits are otherwise included",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary copies")
    parser.add_argument("-v", "--verbose", action="store_true", help="show pytest's output")
    args = parser.parse_args(argv)

    started = time.monotonic()
    names = [m.name for m in MUTATIONS]
    duplicates = {n for n in names if names.count(n) > 1}
    if duplicates:
        print(f"mutation names used twice: {sorted(duplicates)}", file=sys.stderr)
        return 2
    chosen = [
        m for m in MUTATIONS if not args.only or any(t in m.name or t in m.rule for t in args.only)
    ]
    if not chosen:
        print(f"no mutation matches {args.only}", file=sys.stderr)
        return 2

    temp = Path(tempfile.mkdtemp(prefix="minisaga-mutation-"))
    try:
        jobs = max(1, min(args.jobs, len(chosen)))
        copies = [temp / f"copy-{n}" for n in range(jobs)]
        if args.rev:
            export_rev(ROOT, args.rev, copies[0])
        else:
            copy_tree(ROOT, tracked_files(ROOT), copies[0])
        problems = patch_problems(copies[0], MUTATIONS)
        if problems:
            print("the mutation list no longer matches the code:", file=sys.stderr)
            for problem in problems:
                print(f"  {problem}", file=sys.stderr)
            return 2
        if args.list:
            for m in chosen:
                print(f"{m.rule:28} {m.name:45} pytest {' '.join(m.tests)}")
            return 0
        for extra in copies[1:]:
            shutil.copytree(copies[0], extra, symlinks=True)
        source = f"commit {args.rev}" if args.rev else "the working tree"
        print(f"{len(chosen)} mutations of {source}, {jobs} at a time, in {temp}", flush=True)
        if not args.no_baseline:
            failing = baseline(copies, chosen, temp)
            if failing:
                print("the tests fail without any mutation; fix them first:", file=sys.stderr)
                for problem in failing:
                    print(problem, file=sys.stderr)
                return 2
            print(f"baseline passes ({time.monotonic() - started:.0f}s)", flush=True)

        free: queue.Queue[Path] = queue.Queue()
        for copy in copies:
            free.put(copy)

        def one(m: Mutation) -> Result:
            copy = free.get()
            try:
                result = judge(m, copy, temp)
            finally:
                free.put(copy)
            mark = "ok  " if result.verdict == "killed" else "FAIL"
            print(
                f"{mark} {result.verdict:8} {m.name:45} {result.seconds:5.0f}s  {result.caught_by}"
                f"\n{'':14}{result.why}",
                flush=True,
            )
            if args.verbose or result.verdict != "killed":
                print(result.output[-4000:], flush=True)
            return result

        with ThreadPoolExecutor(max_workers=jobs) as pool:
            results = list(pool.map(one, chosen))
    finally:
        if args.keep:
            print(f"kept {temp}")
        else:
            shutil.rmtree(temp, ignore_errors=True)

    elapsed = time.monotonic() - started
    print()
    print(f"{'rule':28} {'mutation':45} {'verdict':8} caught by")
    for r in results:
        print(f"{r.mutation.rule:28} {r.mutation.name:45} {r.verdict:8} {r.caught_by}")
    bad = [r for r in results if r.verdict != "killed"]
    killed = len(results) - len(bad)
    print(f"\n{killed}/{len(results)} mutations killed in {elapsed:.0f}s")
    if bad:
        for r in bad:
            print(f"{r.verdict.upper()}: {r.mutation.name} ({r.mutation.rule})", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
