"""Looking up a picture held in N earlier shipments, as a decision does: the records' indexes of a
store made before session 36 against this version's, same store, same run, SQLite and PostgreSQL.

Usage::

    .venv/bin/python bench/bench_picture_lookup.py [--shipments 500 2000] [--others 0] [--repeat 5]
        [--analyze] [--pg-url URL | --no-pg]

Each store holds ``--others`` unrelated decisions (rows copied straight into the records table: the
lookups never read them, but PostgreSQL's old plan did), then N shipments recorded with one picture,
held at REMOTE_INSPECTION (every tenth at PHYSICAL_INSPECTION), no outcome. One more shipment
sending the picture is then decided as ``clearsight decide --audit-db`` decides it (the lookup, the
earlier holds, the decision; not recorded, so that every repeat sees the same store):

* old: the store given the indexes of ``audit_records`` it had before (``shipment_id``, ``ref_seq``);
* new: the same store opened by a writer, which replaces them with (shipment_id, seq), (ref_seq, seq).

Reported per backend and N: the median decision, the stricter-hold search's first page
(``latest_decisions_at`` at PHYSICAL_INSPECTION) and the findings query (``findings_on``), old and
new, their ratio, and whether the two decisions are the same. PostgreSQL's tables are kept from
being analysed (as a store that autovacuum has not reached yet), or with ``--analyze`` analysed
before each timing.
"""

from __future__ import annotations

import argparse
import hashlib
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from sqlalchemy import create_engine, text  # noqa: E402
from sqlalchemy.exc import SQLAlchemyError  # noqa: E402

from datasets.errors import AuditError  # noqa: E402
from pipeline.audit import AuditStore  # noqa: E402
from pipeline.audit.image_indexes import Picture, Sighting  # noqa: E402
from pipeline.batch_decisions import with_earlier_holds  # noqa: E402
from pipeline.decide import decide_shipment  # noqa: E402
from pipeline.policy import parse_policy  # noqa: E402
from pipeline.verdicts import Declaration, ImageVerdict, ShipmentDecision, Tier  # noqa: E402

PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
KEY = b"bench-key"
POLICY = parse_policy(
    {"policy_version": "b-1", "cargo_types": {"bulk_ore": {}}, "random_audit": {"rate": 0.0}}
)
SHA = "aa" * 32
PHASH = "94e46b5a2e6d3992" + "3c" * 32
BITS = 32
# the layout of audit_records' indexes before session 36, for the "old" timings
OLD_INDEXES = (
    "DROP INDEX ix_audit_records_shipment_id_seq",
    "DROP INDEX ix_audit_records_ref_seq_seq",
    "CREATE INDEX ix_audit_records_shipment_id ON audit_records (shipment_id)",
    "CREATE INDEX ix_audit_records_ref_seq ON audit_records (ref_seq)",
)
TABLES = ("audit_records", "audit_image_index", "audit_image_likeness")


def image(shipment: str, sha256: str, phash: str, score: float) -> ImageVerdict:
    return ImageVerdict(
        path=f"{shipment}.png",
        sha256=sha256,
        phash=phash,
        shipment_id=shipment,
        cargo_type="bulk_ore",
        score=score,
        threshold=0.5,
        hold_threshold=0.8,
        model_id="bulk_ore-bench",
    )


def decided(shipment: str, score: float, sha256: str = SHA, phash: str = PHASH) -> ShipmentDecision:
    declaration = Declaration(shipment_id=shipment, cargo_type="bulk_ore")
    return decide_shipment(POLICY, declaration, [image(shipment, sha256, phash, score)], audit_key=KEY)


def sql(url: str, *statements: str) -> None:
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            for statement in statements:
                conn.execute(text(statement))
    finally:
        engine.dispose()


def fill(url: str, shipments: int, others: int, *, analysed: bool) -> None:
    """``others`` unrelated decisions, then ``shipments`` holding the picture."""
    AuditStore.open(url).close()
    if url.startswith("postgresql") and not analysed:  # kept as autovacuum had not reached it yet
        sql(url, *(f"ALTER TABLE {t} SET (autovacuum_enabled = false)" for t in TABLES))
    if others:
        with AuditStore.open(url) as store:
            other = hashlib.sha256(b"other").hexdigest()
            store.record(decided("O0", 0.1, other, hashlib.sha256(b"p").hexdigest()[:16] + other))
        engine = create_engine(url)
        try:
            with engine.begin() as conn:
                row = dict(conn.execute(text("SELECT * FROM audit_records WHERE seq = 1")).mappings().one())
                columns = [c for c in row if c != "seal"]
                insert = text(
                    f"INSERT INTO audit_records ({', '.join(columns)}) "
                    f"VALUES ({', '.join(':' + c for c in columns)})"
                )
                batch = [
                    {c: row[c] for c in columns}
                    | {"seq": seq, "shipment_id": f"O{seq}", "idempotency_key": None}
                    | {"record_hash": f"{seq:064x}", "prev_hash": f"{seq - 1:064x}"}
                    for seq in range(2, others + 1)
                ]
                for start in range(0, len(batch), 5000):
                    conn.execute(insert, batch[start : start + 5000])
                if others > 1:
                    conn.execute(
                        text("UPDATE audit_head SET seq = :s, record_hash = :h"),
                        {"s": others, "h": f"{others:064x}"},
                    )
        finally:
            engine.dispose()
    with AuditStore.open(url) as store:
        for n in range(shipments):
            store.record(decided(f"H{n:05d}", 0.95 if n % 10 == 9 else 0.6))


def decide_again(store: AuditStore) -> ShipmentDecision:
    """One more shipment sending the picture, decided as a batch decides it (not recorded)."""
    shipment = "NEW"
    sent = image(shipment, SHA, PHASH, 0.1)
    lookup = store.sightings([Picture(SHA, PHASH)], other_than=shipment, near_copy_bits=BITS)
    seen, held_before = with_earlier_holds(
        store,
        shipment,
        [sent.model_copy(update=Sighting.verdict_fields(lookup.found.get(SHA)))],
        lookup.unnamed,
    )
    declaration = Declaration(shipment_id=shipment, cargo_type="bulk_ore")
    return decide_shipment(POLICY, declaration, seen, audit_key=KEY, held_before=held_before)


def median_ms(work: Callable[[], Any], repeat: int) -> float:
    times = []
    for _ in range(repeat + 1):  # the first warms the cache
        start = time.perf_counter()
        work()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times[1:])


def measure(url: str, repeat: int, analysed: bool) -> tuple[list[float], str]:
    if analysed and url.startswith("postgresql"):
        sql(url, *(f"ANALYZE {t}" for t in TABLES))
    with AuditStore.open(url, create=False) as store:  # a reader: its open changes nothing
        decision = decide_again(store)
        figures = [
            median_ms(lambda: decide_again(store), repeat),
            median_ms(
                lambda: store.latest_decisions_at(
                    Tier.PHYSICAL_INSPECTION, other_than="NEW", holding=SHA, limit=101
                ),
                repeat,
            ),
            median_ms(lambda: store.findings_on(other_than="NEW", holding=SHA), repeat),
        ]
    return figures, decision.model_dump_json(exclude={"decided_at"})


def run(name: str, url: str, shipments: int, others: int, repeat: int, analysed: bool) -> None:
    fill(url, shipments, others, analysed=analysed)
    sql(url, *OLD_INDEXES)
    old, old_decision = measure(url, repeat, analysed)
    AuditStore.open(url).close()  # a writer's open gives it this version's indexes
    new, new_decision = measure(url, repeat, analysed)
    same = "same" if old_decision == new_decision else "DIFFERENT"
    cells = " ".join(f"{o:9.1f} {n:8.1f} {n / o:6.2f}x" for o, n in zip(old, new, strict=True))
    print(f"{name:10s} {shipments:6d} {cells} {same:>9s}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shipments", type=int, nargs="+", default=[500, 2000], help="shipments holding it")
    parser.add_argument("--others", type=int, default=0, help="unrelated decisions recorded before them")
    parser.add_argument("--repeat", type=int, default=5, help="timings per figure (the median is shown)")
    parser.add_argument("--analyze", action="store_true", help="ANALYZE PostgreSQL's tables before timing")
    parser.add_argument("--pg-url", default=PG_URL, help="PostgreSQL server (a temporary schema is used)")
    parser.add_argument("--no-pg", action="store_true", help="skip PostgreSQL")
    args = parser.parse_args(argv)
    state = "analysed" if args.analyze else "never analysed"
    print(f"one picture held in N shipments, {args.others} other decisions; PostgreSQL {state}; ms, median")
    print(
        f"{'backend':10s} {'N':>6s} {'decide old':>9s} {'new':>8s} {'ratio':>7s} {'search old':>9s} "
        f"{'new':>8s} {'ratio':>7s} {'finds old':>9s} {'new':>8s} {'ratio':>7s} {'decisions':>9s}"
    )
    for shipments in args.shipments:
        with tempfile.TemporaryDirectory() as tmp:
            url = f"sqlite:///{Path(tmp) / 'audit.db'}"
            run("SQLite", url, shipments, args.others, args.repeat, args.analyze)
        if args.no_pg:
            continue
        schema = f"cs_bench_{uuid.uuid4().hex[:10]}"
        admin = create_engine(args.pg_url)
        try:
            with admin.begin() as conn:
                conn.execute(text(f'CREATE SCHEMA "{schema}"'))
            try:
                url = f"{args.pg_url}?options=-csearch_path%3D{schema}"
                run("PostgreSQL", url, shipments, args.others, args.repeat, args.analyze)
            finally:
                with admin.begin() as conn:
                    conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        except (SQLAlchemyError, AuditError) as exc:
            print(f"PostgreSQL skipped: {type(exc).__name__}: {str(exc).splitlines()[0]}")
        finally:
            admin.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main())
