"""What opening an audit store costs with the seal key, against without, on a store of N records.

Usage::

    .venv/bin/python bench/bench_audit_open.py [--records 100000] [--pg-url URL | --no-pg]

A writer holding the key (the service, ``score --audit-db``, ``decide --audit-db``) looks for
records without a seal when it opens the store, one scan of the records, and refuses a store that
has any (`clearsight audit seal`). A reader (``clearsight audit verify``, ``show``, ``list``) is
spared the scan until its first write. The store is filled by inserting rows straight into the
records table (a chain of 100,000 genuine records would take half an hour to record): the scan
reads rows, not hashes, so the figure is the one a genuine store gives.

Reported: the median of 7 opens, each kind of opener with the key and without, side by side, and
the ratio.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from sqlalchemy import create_engine, text  # noqa: E402

from bench.bench_audit import make_decisions  # noqa: E402
from datasets.errors import AuditError  # noqa: E402
from pipeline.audit import AuditStore, SealKey  # noqa: E402

PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
KEY = SealKey.derive("a-long-secret-for-the-benchmark-only")


def fill(url: str, records: int) -> None:
    """Record one genuine, sealed decision, then copy its row ``records - 1`` times."""
    with AuditStore.open(url, seal_key=KEY) as store:
        store.record(make_decisions(1, 1)[0])
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            row = dict(conn.execute(text("SELECT * FROM audit_records WHERE seq = 1")).mappings().one())
            columns = list(row)
            names, values = ", ".join(columns), ", ".join(":" + c for c in columns)
            insert = text(f"INSERT INTO audit_records ({names}) VALUES ({values})")
            batch = []
            for seq in range(2, records + 1):
                copy = dict(row, seq=seq, record_hash=f"{seq:064x}", prev_hash=f"{seq - 1:064x}")
                copy.update(shipment_id=f"S{seq}", idempotency_key=None)
                batch.append(copy)
                if len(batch) == 5000:
                    conn.execute(insert, batch)
                    batch = []
            if batch:
                conn.execute(insert, batch)
            conn.execute(
                text("UPDATE audit_head SET seq = :s, record_hash = :h"),
                {"s": records, "h": f"{records:064x}"},
            )
    finally:
        engine.dispose()


def median_open(url: str, *, create: bool, key: SealKey | None, rounds: int = 7) -> float:
    times = []
    for _ in range(rounds + 1):  # the first warms the cache
        start = time.perf_counter()
        AuditStore.open(url, create=create, seal_key=key).close()
        times.append(time.perf_counter() - start)
    return statistics.median(times[1:])


def report(name: str, url: str) -> None:
    for opener, create in (("writer", True), ("reader", False)):
        with_key = median_open(url, create=create, key=KEY)
        without = median_open(url, create=create, key=None)
        print(
            f"{name:10s} {opener}: open with the key {with_key * 1e3:7.1f} ms, without "
            f"{without * 1e3:7.1f} ms ({with_key / without:.2f}x)"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=100_000, help="records in the store")
    parser.add_argument("--pg-url", default=PG_URL, help="PostgreSQL server (a temporary schema is used)")
    parser.add_argument("--no-pg", action="store_true", help="skip PostgreSQL")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'audit.db'}"
        fill(url, args.records)
        print(f"{args.records} records")
        report("SQLite", url)
    if args.no_pg:
        return 0
    schema = f"bench_open_{uuid.uuid4().hex[:8]}"
    admin = create_engine(args.pg_url)
    try:
        with admin.begin() as conn:
            conn.execute(text(f"CREATE SCHEMA {schema}"))
    except Exception as exc:  # noqa: BLE001 - any failure to reach the server skips the row
        print(f"PostgreSQL skipped: {type(exc).__name__}: {str(exc).splitlines()[0]}")
        return 0
    try:
        url = f"{args.pg_url}?options=-csearch_path%3D{schema}"
        fill(url, args.records)
        report("PostgreSQL", url)
    except AuditError as exc:
        print(f"PostgreSQL failed: {exc}")
        return 1
    finally:
        with admin.begin() as conn:
            conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
