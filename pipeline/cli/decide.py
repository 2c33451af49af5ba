"""`clearsight decide`: re-decide stored image verdicts under a policy, without re-scoring.

Used for what-if analysis: how many shipments each tier gets under a policy, and with
``--compare-policy`` how that differs from another one (how many more releases a threshold gives).
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from datasets.errors import DatasetFormatError, InputError
from pipeline.decide import decide_rows
from pipeline.policy import Policy, default_policy_path, load_policy
from pipeline.settings import Settings
from pipeline.verdicts import ImageVerdict, ShipmentDecision, Tier

__all__ = ["decision_key", "read_verdicts", "register"]

_NESTED = ("declaration", "type_probabilities")
_FLOATS = ("score", "threshold", "hold_threshold")


def _verdict(record: dict[str, Any], where: str) -> ImageVerdict:
    try:
        return ImageVerdict.model_validate(record)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise DatasetFormatError(f"{where}: not an image verdict row ({problems})") from exc


def _from_flat(record: dict[str, Any], where: str) -> ImageVerdict:
    """A CSV/Parquet row: empty cells are None, nested fields are JSON strings, numbers may be text."""
    data: dict[str, Any] = {}
    for key, value in record.items():
        if value == "" or value is None:
            continue
        if key in _NESTED and isinstance(value, str):
            try:
                value = json.loads(value)
            except ValueError as exc:
                raise DatasetFormatError(f"{where}: column {key} is not a JSON object ({exc})") from exc
        elif key in _FLOATS and isinstance(value, str):
            try:
                value = float(value)
            except ValueError as exc:
                raise DatasetFormatError(f"{where}: column {key} = {value!r} is not a number") from exc
        data[key] = value
    return _verdict(data, where)


def read_verdicts(path: Path) -> Iterator[ImageVerdict]:
    """Read image verdict rows from ``.jsonl``, ``.csv`` or ``.parquet`` (the batch scorer's output).

    Raises:
        InputError: missing file or another suffix.
        DatasetFormatError: a row that is not an image verdict (file and row named).
    """
    suffix = path.suffix.lower()
    if suffix not in (".jsonl", ".csv", ".parquet"):
        raise InputError(
            f"--verdicts {str(path)!r}: suffix {suffix!r} not accepted (.jsonl, .csv or .parquet)"
        )
    if not path.is_file():
        raise InputError(f"--verdicts {str(path)!r}: no such file")
    if suffix == ".jsonl":
        with path.open(encoding="utf-8") as fh:
            for number, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except ValueError as exc:
                    raise DatasetFormatError(f"{path}:{number}: not JSON ({exc})") from exc
                if not isinstance(record, dict):
                    raise DatasetFormatError(f"{path}:{number}: a row must be a JSON object")
                yield _verdict(record, f"{path}:{number}")
    elif suffix == ".csv":
        with path.open(newline="", encoding="utf-8") as fh:
            for number, record in enumerate(csv.DictReader(fh), start=2):
                yield _from_flat(record, f"{path}:{number}")
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            batches = pq.ParquetFile(path).iter_batches(batch_size=4096)
            number = 0
            for batch in batches:
                for record in batch.to_pylist():
                    number += 1
                    yield _from_flat(record, f"{path} row {number}")
        except (pa.ArrowException, OSError) as exc:
            raise DatasetFormatError(f"{path}: not a readable Parquet file ({exc})") from exc


def decision_key(decision: ShipmentDecision) -> str:
    """Idempotency key of a re-decision: the shipment's inputs and the policy, not the decision time."""
    inputs = {
        "policy_sha256": decision.policy_sha256,
        "shipment_id": decision.shipment_id,
        "images": sorted(
            (i.path, i.sha256 or "", repr(i.score), i.error or "", i.model_id or "") for i in decision.images
        ),
    }
    digest = hashlib.sha256(json.dumps(inputs, sort_keys=True).encode("utf-8")).hexdigest()
    return f"decide:{decision.shipment_id[:100]}:{digest}"


def _decide_all(policy: Policy, rows: list[ImageVerdict], key: bytes, label: str) -> list[ShipmentDecision]:
    total = len({r.shipment_id or r.declaration.get("shipment_id") for r in rows})
    decisions = []
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=Console(stderr=True), transient=True) as progress:
        task = progress.add_task(label, total=total)
        for decision in decide_rows(policy, rows, audit_key=key):
            decisions.append(decision)
            progress.advance(task)
    return decisions


def _write_jsonl(path: Path, decisions: list[ShipmentDecision]) -> None:
    """Write whole to a temporary name, then rename: the file is either complete or absent."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tmp.open("w", encoding="utf-8") as fh:
            for decision in decisions:
                fh.write(decision.model_dump_json() + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise InputError(f"--out {str(path)!r}: cannot write ({exc})") from exc


def _counts(decisions: list[ShipmentDecision]) -> Counter[str]:
    counts: Counter[str] = Counter(d.tier.value for d in decisions)
    counts["random_audit"] = sum(d.random_audit for d in decisions)
    return counts


def _summary(
    policy: Policy, decisions: list[ShipmentDecision], other: tuple[Policy, list[ShipmentDecision]] | None
) -> Table:
    mine = _counts(decisions)
    n = len(decisions)
    table = Table(title=f"{n} shipments")
    table.add_column("tier")
    table.add_column(policy.version, justify="right")
    theirs: Counter[str] = Counter()
    if other is not None:
        theirs = _counts(other[1])
        table.add_column(f"{other[0].version} (compare)", justify="right")
        table.add_column("difference", justify="right")
    for name in [t.value for t in Tier] + ["random_audit"]:
        share = f"{mine[name]} ({100.0 * mine[name] / n:.1f} %)" if n else "0"
        cells = [name, share]
        if other is not None:
            cells += [str(theirs[name]), f"{mine[name] - theirs[name]:+d}"]
        table.add_row(*cells)
    return table


def register(app: typer.Typer) -> None:
    """Add ``decide`` to the root app."""

    @app.command("decide")
    def decide(
        verdicts: Annotated[
            Path, typer.Option("--verdicts", help="Image verdicts: the scorer's .jsonl, .csv or .parquet.")
        ],
        out: Annotated[
            Path, typer.Option("--out", help="Where to write the decisions (JSONL, one shipment a line).")
        ],
        policy: Annotated[
            Path | None, typer.Option("--policy", help="Policy YAML (default: the bundled example).")
        ] = None,
        audit_db: Annotated[
            str | None,
            typer.Option("--audit-db", help="Also record each decision in this audit store (URL)."),
        ] = None,
        compare_policy: Annotated[
            Path | None,
            typer.Option("--compare-policy", help="Also decide under this policy and print the difference."),
        ] = None,
    ) -> None:
        """Re-decide stored image verdicts under a policy, without re-scoring (what-if analysis).

        Prints the count per tier; with --compare-policy, how many more (or fewer) shipments each tier
        gets under --policy than under the other one. The random-audit key is CLEARSIGHT_AUDIT_SECRET.
        """
        settings = Settings()
        key = settings.audit_secret.get_secret_value().encode("utf-8")
        chosen = load_policy(policy or default_policy_path())
        other = load_policy(compare_policy) if compare_policy is not None else None
        rows = list(read_verdicts(verdicts))
        decisions = _decide_all(chosen, rows, key, f"deciding under {chosen.version}")
        _write_jsonl(out, decisions)
        recorded = ""
        if audit_db:
            from pipeline.audit import AuditStore

            with AuditStore.open(audit_db) as store:
                for decision in decisions:
                    store.record(decision, idempotency_key=decision_key(decision))
                recorded = f", recorded in {store.url}"
        compared = None
        if other is not None:
            compared = (other, _decide_all(other, rows, key, f"deciding under {other.version}"))
        console = Console()
        console.print(_summary(chosen, decisions, compared))
        if compared is not None:
            gained = sum(d.tier is Tier.RELEASE for d in decisions) - sum(
                d.tier is Tier.RELEASE for d in compared[1]
            )
            changed = sum(a.tier is not b.tier for a, b in zip(decisions, compared[1], strict=True))
            console.print(
                f"{chosen.version} releases {gained:+d} shipments compared with {compared[0].version} "
                f"({changed} shipments change tier)"
            )
        console.print(f"wrote {len(decisions)} decisions to {out}{recorded}")
