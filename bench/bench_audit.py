"""Audit-store overhead per decision: SQLite and PostgreSQL against a plain JSONL file, same run.

Usage::

    .venv/bin/python bench/bench_audit.py [--decisions 500] [--images 4] [--pg-url URL | --no-pg] [--sealed]

Each side writes the same pre-built decisions one at a time, durably:

* baseline: append the decision's JSON to a file, flush and fsync (what ``clearsight decide --out``
  would cost if every decision had to be on disk before the next);
* ``AuditStore.record`` on a fresh SQLite file (WAL, one ``BEGIN IMMEDIATE`` transaction per record);
* ``AuditStore.record`` on PostgreSQL, in a schema created for the run and dropped afterwards.

Reported: ms per decision, and each store's ratio against the baseline, plus the time to verify the
whole chain. The PostgreSQL row is skipped, with the reason, when the server cannot be reached.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from datasets.errors import AuditError  # noqa: E402
from pipeline.audit import AuditStore, SealKey  # noqa: E402
from pipeline.decide import decide_shipment  # noqa: E402
from pipeline.policy import default_policy_path, load_policy  # noqa: E402
from pipeline.verdicts import Declaration, ImageVerdict, ShipmentDecision  # noqa: E402

PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def make_decisions(count: int, images: int) -> list[ShipmentDecision]:
    policy = load_policy(default_policy_path())
    out = []
    for i in range(count):
        sid = f"BENCH-{i:06d}"
        verdicts = [
            ImageVerdict(
                path=f"{sid}/{j}.jpg",
                sha256=f"{i:032x}{j:032x}",
                shipment_id=sid,
                cargo_type="bulk_ore",
                score=((i * 7 + j * 13) % 100) / 100,
                threshold=0.5,
                hold_threshold=0.8,
                model_id="bulk_ore-lite0-3f2a9c1b",
                type_probabilities={"good": 0.9, "foreign_object": 0.1},
            )
            for j in range(images)
        ]
        decl = Declaration(
            shipment_id=sid, cargo_type="bulk_ore", trader_id=f"T{i % 17}", extra={"hs_code": "2601"}
        )
        out.append(decide_shipment(policy, decl, verdicts, audit_key=b"bench-key"))
    return out


def bench_jsonl(decisions: list[ShipmentDecision], path: Path) -> float:
    start = time.perf_counter()
    with path.open("a", encoding="utf-8") as fh:
        for d in decisions:
            fh.write(d.model_dump_json() + "\n")
            fh.flush()
            os.fsync(fh.fileno())
    return time.perf_counter() - start


def bench_store(
    decisions: list[ShipmentDecision], url: str, key: SealKey | None = None
) -> tuple[float, float]:
    with AuditStore.open(url, seal_key=key) as store:
        start = time.perf_counter()
        for d in decisions:
            store.record(d)
        record_s = time.perf_counter() - start
        start = time.perf_counter()
        report = store.verify()
        verify_s = time.perf_counter() - start
        if not report.ok or report.records_checked != len(decisions):
            raise AuditError(f"benchmark chain did not verify: {report.message}")
    return record_s, verify_s


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--decisions", type=int, default=500, help="decisions written per backend")
    parser.add_argument("--images", type=int, default=4, help="images per shipment")
    parser.add_argument("--pg-url", default=PG_URL, help="PostgreSQL server (a temporary schema is used)")
    parser.add_argument("--no-pg", action="store_true", help="skip PostgreSQL")
    parser.add_argument(
        "--sealed",
        action="store_true",
        help="open the stores with a seal key, as the service does (each record sealed, the head's "
        "seal checked before each append)",
    )
    args = parser.parse_args(argv)
    key = SealKey.derive("a-long-benchmark-secret-not-a-real-one") if args.sealed else None

    decisions = make_decisions(args.decisions, args.images)
    n = len(decisions)
    rows: list[tuple[str, float, float | None]] = []
    with tempfile.TemporaryDirectory() as tmp:
        base = bench_jsonl(decisions, Path(tmp) / "decisions.jsonl")
        rows.append(("JSONL file + fsync (baseline)", base, None))
        record_s, verify_s = bench_store(decisions, f"sqlite:///{Path(tmp) / 'audit.db'}", key)
        rows.append(("AuditStore SQLite", record_s, verify_s))
    skipped = ""
    if not args.no_pg:
        from sqlalchemy import create_engine, text
        from sqlalchemy.exc import SQLAlchemyError

        schema = f"cs_bench_{uuid.uuid4().hex[:10]}"
        admin = create_engine(args.pg_url)
        try:
            with admin.begin() as conn:
                conn.execute(text(f'CREATE SCHEMA "{schema}"'))
            try:
                record_s, verify_s = bench_store(
                    decisions, f"{args.pg_url}?options=-csearch_path%3D{schema}", key
                )
                rows.append(("AuditStore PostgreSQL", record_s, verify_s))
            finally:
                with admin.begin() as conn:
                    conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        except (SQLAlchemyError, AuditError) as exc:
            skipped = f"PostgreSQL skipped: {type(exc).__name__}: {str(exc).splitlines()[0]}"
        finally:
            admin.dispose()

    sealed = ", sealed" if args.sealed else ""
    print(f"{n} decisions x {args.images} images, one durable write each{sealed}")
    print(f"{'backend':34s} {'ms/decision':>12s} {'x baseline':>11s} {'verify ms/record':>17s}")
    for name, seconds, verify in rows:
        per = 1000 * seconds / n
        ratio = seconds / base
        v = f"{1000 * verify / n:17.3f}" if verify is not None else f"{'-':>17s}"
        print(f"{name:34s} {per:12.3f} {ratio:11.2f} {v}")
    if skipped:
        print(skipped)
    return 0


if __name__ == "__main__":
    sys.exit(main())
