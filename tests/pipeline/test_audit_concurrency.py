"""Concurrent writers (processes, threads) on SQLite and PostgreSQL never fork the chain or lose a record."""

from __future__ import annotations

import multiprocessing
import threading
import traceback

import pytest

from pipeline.audit import AuditStore
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
