"""Concurrent writers (processes, threads) on SQLite and PostgreSQL never fork the chain or lose a record."""

from __future__ import annotations

import multiprocessing
import sqlite3
import threading
import traceback
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from datasets.errors import AuditError
from pipeline.audit import AuditStore
from pipeline.audit.store import sqlite_file
from pipeline.verdicts import Declaration, ShipmentDecision, Tier

WORKERS = 4
PER_WORKER = 25


def decision(shipment: str) -> ShipmentDecision:
    return ShipmentDecision(
        shipment_id=shipment,
        cargo_type="bulk_ore",
        tier=Tier.RELEASE,
        reasons=[],
        declaration=Declaration(shipment_id=shipment, cargo_type="bulk_ore"),
        images=[],
        policy_version="p1",
        policy_sha256="cd" * 32,
        model_ids=[],
        decided_at="2026-11-05T10:30:00.000000+00:00",
    )


def _write(url: str, worker: int, errors: list[str]) -> None:
    try:
        with AuditStore.open(url) as store:
            for i in range(PER_WORKER):
                store.record(decision(f"W{worker}-{i:03d}"), idempotency_key=f"W{worker}-{i:03d}")
                if i == PER_WORKER // 2:  # every writer races to record the same shipment once
                    store.record(decision("SHARED"), idempotency_key="shared-key")
    except Exception:
        errors.append(traceback.format_exc())


def _process_main(url: str, worker: int, start: object, queue: multiprocessing.Queue[str]) -> None:
    errors: list[str] = []
    start.wait(timeout=30)  # type: ignore[attr-defined]
    _write(url, worker, errors)
    for error in errors:
        queue.put(error)


def _check(url: str) -> None:
    with AuditStore.open(url) as store:
        report = store.verify()
        assert (report.ok, report.records_checked) == (True, WORKERS * PER_WORKER + 1), report.message
        queue = store.list(limit=10_000)
        assert len(queue) == WORKERS * PER_WORKER + 1
        assert len({r.decision.shipment_id for r in queue}) == WORKERS * PER_WORKER + 1


@pytest.mark.slow
def test_concurrent_processes(db_url: str) -> None:
    AuditStore.open(db_url).close()  # the schema exists before the race; creation races are retried anyway
    ctx = multiprocessing.get_context("fork")  # the target lives in a test module spawn could not import
    start = ctx.Barrier(WORKERS)
    queue: multiprocessing.Queue[str] = ctx.Queue()
    procs = [ctx.Process(target=_process_main, args=(db_url, w, start, queue)) for w in range(WORKERS)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    errors = [queue.get(timeout=1) for _ in range(queue.qsize())] if not queue.empty() else []
    assert errors == []
    assert [p.exitcode for p in procs] == [0] * WORKERS
    _check(db_url)


def test_concurrent_threads_share_one_store(db_url: str) -> None:
    """The server's way: one store, many request threads."""
    errors: list[str] = []
    with AuditStore.open(db_url) as store:

        def write(worker: int) -> None:
            try:
                for i in range(PER_WORKER):
                    store.record(decision(f"T{worker}-{i:03d}"))
                store.record(decision("SHARED"), idempotency_key="shared-key")
            except Exception:
                errors.append(traceback.format_exc())

        threads = [threading.Thread(target=write, args=(w,)) for w in range(WORKERS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
    assert errors == []
    _check(db_url)


def test_threads_share_an_in_memory_store() -> None:
    """sqlite:// is one connection for every thread: unserialised, one thread's rollback undid
    another's insert, and records record() returned as written were lost from the chain."""
    errors: list[str] = []
    returned = []
    with AuditStore.open("sqlite://") as store:

        def write(worker: int) -> None:
            try:
                for i in range(PER_WORKER):
                    returned.append(store.record(decision(f"M{worker}-{i:03d}")))
            except Exception:
                errors.append(traceback.format_exc())

        threads = [threading.Thread(target=write, args=(w,)) for w in range(WORKERS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        assert errors == []
        assert [store.hash_at(r.seq) for r in returned] == [r.record_hash for r in returned]
        report = store.verify()
        assert (report.ok, report.records_checked) == (True, WORKERS * PER_WORKER), report.message


@contextmanager
def _write_lock_held(url: str) -> Iterator[None]:
    """Another connection holding the chain's write lock, as a writer stuck mid-transaction (paused,
    cut off) holds it."""
    file = sqlite_file(url)
    if file is not None:
        holder = sqlite3.connect(file, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")
        try:
            yield
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        return
    engine = create_engine(url)
    try:
        with engine.connect() as conn, conn.begin():
            conn.execute(text("SELECT seq FROM audit_head FOR UPDATE"))
            yield
    finally:
        engine.dispose()


WRITES: list[tuple[str, Callable[[AuditStore], object], str]] = [
    ("record", lambda store: store.record(decision("S2")), "recording shipment 'S2'"),
    (
        "outcome",
        lambda store: store.record_outcome("S1", found=None, officer="o-1"),
        "recording the outcome of shipment 'S1'",
    ),
]


@pytest.mark.parametrize(("write", "what"), [w[1:] for w in WRITES], ids=[w[0] for w in WRITES])
def test_a_writer_waits_for_a_held_lock_only_as_long_as_it_may(
    db_url: str, write: Callable[[AuditStore], object], what: str
) -> None:
    """PostgreSQL waited for the head row for ever; SQLite its busy timeout once per try (8 x 30 s)."""
    with AuditStore.open(db_url) as store:
        store.record(decision("S1"))
    with (
        AuditStore.open(db_url, busy_timeout_s=0.2) as store,
        _write_lock_held(db_url),
        pytest.raises(AuditError) as info,
    ):
        write(store)
    assert str(info.value).startswith(
        f"audit store {store.url}: {what} failed: another writer held the lock for the 0.2 s this call "
        "may wait ("
    )
    with AuditStore.open(db_url) as store:  # the lock let go, the write goes through
        write(store)
        assert store.verify().records_checked == 2


def test_the_readiness_probe_fails_while_a_writer_holds_the_lock(db_url: str) -> None:
    """A stuck writer fails every write while reads go on: a probe that only read said ready."""
    with AuditStore.open(db_url) as store:
        store.record(decision("S1"))
        store.ping(write_wait_s=0.2)  # free: the probe takes the lock and lets it go
        with _write_lock_held(db_url):
            store.ping()  # the database answers
            with pytest.raises(AuditError, match="writes are blocked: another writer held the lock"):
                store.ping(write_wait_s=0.2)
        store.ping(write_wait_s=0.2)
        assert store.record(decision("S2")).seq == 2  # the probe recorded nothing
        assert store.verify().records_checked == 2


def test_the_readiness_probe_fails_on_a_read_only_database(tmp_path: Path) -> None:
    """A file opened read-only took the probe's locking read, while every write failed."""
    file = tmp_path / "audit.db"
    AuditStore.open(f"sqlite:///{file}").close()
    with AuditStore.open(f"sqlite:///file:{file}?mode=ro&uri=true") as store:
        store.ping()
        with pytest.raises(AuditError, match="readonly"):
            store.ping(write_wait_s=0.2)


def test_the_readiness_probe_fails_without_a_chain_head(tmp_path: Path) -> None:
    """Every append reads the head row; a probe whose no-op write matched no row said ready."""
    file = tmp_path / "audit.db"
    AuditStore.open(f"sqlite:///{file}").close()
    with closing(sqlite3.connect(file)) as conn:
        conn.execute("DELETE FROM audit_head")
        conn.commit()
    with (
        AuditStore.open(f"sqlite:///{file}", create=False) as store,
        pytest.raises(AuditError, match="its chain head is missing"),
    ):
        store.ping(write_wait_s=0.2)


def test_a_reader_opens_and_reads_while_a_writer_holds_the_lock(db_url: str) -> None:
    """`clearsight audit verify`, `show` and `list` open with create=False: opening took the write
    lock (BEGIN IMMEDIATE) on SQLite, so an auditor waited on every writer, and failed on a stuck one."""
    with AuditStore.open(db_url) as store:
        store.record(decision("S1"))
    with _write_lock_held(db_url), AuditStore.open(db_url, create=False, busy_timeout_s=0.2) as store:
        assert store.verify().ok
        assert [r.decision.shipment_id for r in store.list()] == ["S1"]


@pytest.mark.parametrize("released", [True, False], ids=["lock-let-go", "lock-kept"])
def test_a_new_sqlite_store_opens_while_another_connection_writes_the_file(
    tmp_path: Path, released: bool
) -> None:
    """SQLite answers the switch to WAL "database is locked" at once, without its busy timeout: a
    second process opening a new store at the same moment failed at once, not after a wait."""
    path = tmp_path / "audit.db"
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("CREATE TABLE other (x)")  # a file not yet in WAL
    holder.execute("BEGIN IMMEDIATE")
    holder.execute("INSERT INTO other VALUES (1)")
    let_go = threading.Timer(0.3, lambda: holder.execute("ROLLBACK"))
    try:
        if released:
            let_go.start()
            with AuditStore.open(f"sqlite:///{path}") as store:
                store.record(decision("S1"))
                assert store.verify().records_checked == 1
            assert sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone() == ("wal",)
        else:
            with pytest.raises(AuditError) as info:
                AuditStore.open(f"sqlite:///{path}", busy_timeout_s=0.2)
            assert str(info.value) == (
                f"audit store sqlite:///{path}: open failed: another writer held the lock for the 0.2 s "
                "this call may wait (OperationalError: database is locked)"
            )
    finally:
        if released:
            let_go.join()
        else:
            holder.execute("ROLLBACK")
        holder.close()


def test_a_reader_leaves_a_file_in_its_journal_mode(tmp_path: Path) -> None:
    """Switching to WAL takes the file's write lock: a reader opening a store whose file is not in
    WAL (copied, or switched back by a tool) while a writer holds it failed at open."""
    url = f"sqlite:///{tmp_path / 'audit.db'}"
    with AuditStore.open(url) as store:
        store.record(decision("S1"))
    sqlite3.connect(tmp_path / "audit.db").execute("PRAGMA journal_mode=DELETE").fetchone()
    with _write_lock_held(url), AuditStore.open(url, create=False, busy_timeout_s=0.2) as store:
        assert store.verify().records_checked == 1
    assert sqlite3.connect(tmp_path / "audit.db").execute("PRAGMA journal_mode").fetchone() == ("delete",)


def _under(shipment: str, version: str, sha: str) -> ShipmentDecision:
    return decision(shipment).model_copy(update={"policy_version": version, "policy_sha256": sha})


def test_writers_recording_under_one_new_policy_at_once_both_record(db_url: str) -> None:
    """Each adds the policy's pair to the policy index in its decision's transaction: the second
    finds it there, and the index keeps the first decision."""
    AuditStore.open(db_url).close()
    errors: list[str] = []
    start = threading.Barrier(WORKERS)

    def write(worker: int) -> None:
        try:
            with AuditStore.open(db_url) as store:
                start.wait(timeout=30)
                store.check_policy("p2", "ef" * 32)
                for i in range(3):
                    store.record(_under(f"P{worker}-{i}", "p2", "ef" * 32))
        except Exception:
            errors.append(traceback.format_exc())

    threads = [threading.Thread(target=write, args=(w,)) for w in range(WORKERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert errors == []
    with AuditStore.open(db_url) as store:
        report = store.verify()
        assert (report.ok, report.records_checked) == (True, WORKERS * 3), report.message
    engine = create_engine(db_url)
    with engine.connect() as conn:
        pairs = conn.execute(text("SELECT policy_version, seq FROM audit_policy_versions")).all()
    engine.dispose()
    assert [tuple(p) for p in pairs] == [("p2", 1)]


def test_a_pair_added_by_two_transactions_at_once_is_kept_once_with_the_first_seq(db_url: str) -> None:
    """The write lock serialises appends; the index's key is the backstop, and a pair another
    transaction added (committed while this one waited for it, on PostgreSQL) is skipped, not an
    error that would fail the decision."""
    from pipeline.audit import policy_index

    AuditStore.open(db_url).close()
    pair = {"policy_version": "p3", "policy_sha256": "ab" * 32}
    engine = create_engine(db_url)
    errors: list[str] = []

    def second() -> None:
        try:
            with engine.begin() as conn:
                policy_index.add_decision(conn, pair, 2)
        except Exception:
            errors.append(traceback.format_exc())

    try:
        with engine.begin() as conn:
            policy_index.add_decision(conn, pair, 1)
            other = threading.Thread(target=second)
            other.start()
            if engine.dialect.name == "postgresql":  # until the second waits on the first's key
                with engine.connect() as watch:
                    for _ in range(1000):
                        if watch.execute(text("SELECT count(*) FROM pg_locks WHERE NOT granted")).scalar():
                            break
                        watch.rollback()
        other.join(timeout=60)
        with engine.connect() as conn:
            rows = conn.execute(text("SELECT policy_version, seq FROM audit_policy_versions")).all()
    finally:
        engine.dispose()
    assert errors == []
    assert [tuple(r) for r in rows] == [("p3", 1)]


def test_a_writer_opening_while_another_appends_waits_and_opens(db_url: str) -> None:
    """PostgreSQL: the head row's lock, taken in the query that joined it to its record, waited for
    another writer's append, then read the new head with the record as it was before: no record
    matched, and the writer opening was refused with HeadSealError, the chain intact."""
    from pipeline.audit.chain import created_at_now
    from pipeline.audit.seal import SealKey
    from pipeline.audit.writing import append, decision_json

    key = SealKey.derive("a-long-enough-secret-for-the-open-race")
    AuditStore.open(db_url, seal_key=key).close()
    engine = create_engine(db_url)
    errors: list[str] = []

    def open_meanwhile() -> None:
        try:
            AuditStore.open(db_url, seal_key=key).close()
        except Exception:
            errors.append(traceback.format_exc())

    try:
        with engine.begin() as conn:
            content = {
                "kind": "decision",
                "shipment_id": "RACE",
                "idempotency_key": None,
                "created_at": created_at_now(),
                "decision": decision_json(decision("RACE")),
            }
            append(conn, content, key)
            other = threading.Thread(target=open_meanwhile)
            other.start()
            if engine.dialect.name == "postgresql":  # until the opener waits on the head's lock
                with engine.connect() as watch:
                    for _ in range(1000):
                        if watch.execute(text("SELECT count(*) FROM pg_locks WHERE NOT granted")).scalar():
                            break
                        watch.rollback()
    finally:
        engine.dispose()
    other.join(timeout=60)
    assert errors == []
    with AuditStore.open(db_url, seal_key=key) as store:
        report = store.verify()
        assert (report.ok, report.records_checked) == (True, 1), report.message
