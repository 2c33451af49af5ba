"""What checking a policy's version against the audit trail costs: the policy index against the
read of the records it replaced, same run, on stores of N records.

Usage::

    .venv/bin/python bench/bench_policy_check.py [--records 20000 --records 100000] [--pg-url URL | --no-pg]

A run or the service checks its policy's (version, sha256) as it starts (``check_policy``, twice as
`clearsight serve` starts), and each write again under the write lock. Before schema 6 the start
read every decision record, filtered by the database on its text (:func:`former_check`, kept here
as it was), and each write the records since; now each is one read of ``audit_policy_versions``.
The store is filled as ``bench_audit_open.py`` fills it, one genuine decision copied straight into
the records table (a chain of 100,000 genuine records takes half an hour to record): the former
read scans the rows' text, not their hashes, so it costs what a genuine trail of the size costs.
Every copy names the same policy, the common case, in which the former filter let nothing through.

Reported, median of 7 after one to warm the cache:

* start: ``check_policy`` (a read of its own) against the former read of the whole trail, in the
  same kind of read;
* write: the statements a write runs for the check under the lock, in one transaction rolled back,
  median of 200: the former read of the one record since the last write, against the index read and
  the insert of the decision's pair (skipped: the pair is there), which the write now runs instead.
  A whole write (4 to 15 ms, durable) is timed by ``bench_audit.py``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from sqlalchemy import Connection, create_engine, select, text  # noqa: E402

from bench.bench_audit_open import PG_URL, fill  # noqa: E402
from datasets.errors import AuditError  # noqa: E402
from pipeline.audit import AuditStore, policy_index  # noqa: E402
from pipeline.audit.schema import audit_records  # noqa: E402


def former_check(conn: Connection, version: str, sha: str, *, after: int, head: int) -> None:
    """The read ``refuse_a_reused_policy_version`` made before the policy index (commit 36dd4db):
    the decisions numbered after ``after`` up to ``head`` naming ``version`` and not ``sha``, each
    parsed and compared."""
    named = '"policy_version":' + json.dumps(version, ensure_ascii=False)
    same_sha = '"policy_sha256":' + json.dumps(sha, ensure_ascii=False)
    found = conn.execute(
        select(audit_records.c.seq, audit_records.c.content)
        .where(
            audit_records.c.seq > after,
            audit_records.c.seq <= head,
            audit_records.c.kind == "decision",
            audit_records.c.content.contains(named, autoescape=True),
            ~audit_records.c.content.contains(same_sha, autoescape=True),
        )
        .order_by(audit_records.c.seq)
    )
    for _seq, content in found:
        recorded = json.loads(content)["decision"]
        if recorded.get("policy_version") == version and recorded.get("policy_sha256") != sha:
            raise AssertionError("the benchmark's trail holds one policy")


def median(run: Callable[[], object], rounds: int = 7) -> float:
    times = []
    for _ in range(rounds + 1):  # the first warms the cache
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times[1:])


def report(name: str, url: str, records: int) -> None:
    # opened to read: the copies' hashes are not a chain, and a writer holding the key refuses the head
    with AuditStore.open(url, create=False) as store:
        first = store.get("BENCH-000000")
        assert first is not None
        version, sha = first.decision.policy_version, first.decision.policy_sha256
        pair = {"policy_version": version, "policy_sha256": sha}

        def start_before() -> None:
            with store._db.reading("checking the policy's version against the trail") as conn:
                former_check(conn, version, sha, after=0, head=records)

        def write_after(conn: Connection) -> None:
            assert policy_index.recorded_otherwise(conn, version, sha) is None
            policy_index.add_decision(conn, pair, records + 1)

        was, now = median(start_before), median(lambda: store.check_policy(version, sha))
        print(
            f"{name:10s} {records:7d} records, start: trail read {was * 1e3:8.2f} ms, policy index "
            f"{now * 1e3:6.2f} ms ({was / now:.1f}x)"
        )
        # the statements alone, in one transaction (rolled back), as a write runs them under the lock
        with store._db.engine.connect() as conn, conn.begin() as transaction:
            was = median(lambda: former_check(conn, version, sha, after=records - 1, head=records), 200)
            now = median(lambda: write_after(conn), 200)
            transaction.rollback()
        print(
            f"{name:10s} {records:7d} records, write: records since {was * 1e6:6.0f} µs, policy index "
            f"{now * 1e6:6.0f} µs ({was / now:.2f}x)"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--records", type=int, action="append", help="records in the store (repeatable; 20000, 100000)"
    )
    parser.add_argument("--pg-url", default=PG_URL, help="PostgreSQL server (a temporary schema is used)")
    parser.add_argument("--no-pg", action="store_true", help="skip PostgreSQL")
    args = parser.parse_args(argv)
    sizes = args.records or [20_000, 100_000]
    for records in sizes:
        with tempfile.TemporaryDirectory() as tmp:
            url = f"sqlite:///{Path(tmp) / 'audit.db'}"
            fill(url, records)
            report("SQLite", url, records)
    if args.no_pg:
        return 0
    admin = create_engine(args.pg_url)
    try:
        with admin.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as exc:  # noqa: BLE001 - any failure to reach the server skips the rows
        print(f"PostgreSQL skipped: {type(exc).__name__}: {str(exc).splitlines()[0]}")
        return 0
    try:
        for records in sizes:
            schema = f"bench_policy_{uuid.uuid4().hex[:8]}"
            with admin.begin() as conn:
                conn.execute(text(f"CREATE SCHEMA {schema}"))
            try:
                url = f"{args.pg_url}?options=-csearch_path%3D{schema}"
                fill(url, records)
                with create_engine(url).begin() as conn:  # as a store in use is, its statistics taken
                    conn.execute(text("ANALYZE"))
                report("PostgreSQL", url, records)
            finally:
                with admin.begin() as conn:
                    conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))
    except AuditError as exc:
        print(f"PostgreSQL failed: {exc}")
        return 1
    finally:
        admin.dispose()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
