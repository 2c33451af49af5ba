"""An archive of pictures and the verdict rows a score run would have written for them.

The content benchmarks (``bench_manifest_content.py``, ``bench_resume_content.py``) only hash the
pictures, never decode them: random bytes of a set size stand in for scans, so that the figure is
the cost of reading each picture again.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any


def write_scored_archive(
    folder: Path, files: int, per_shipment: int, kib: int
) -> tuple[Path, list[dict[str, Any]]]:
    """``files`` pictures of ``kib`` KiB under ``folder/arc``, ``per_shipment`` to a shipment, and
    their rows (each picture's sha256 and a score) in ``folder/rows.jsonl``: (the rows' path, each
    picture as a manifest lists it)."""
    from pipeline.verdicts import ImageVerdict

    rows, listed = [], []
    (folder / "arc").mkdir(parents=True, exist_ok=True)
    for n in range(files):
        picture = folder / "arc" / f"scan{n:05d}.png"
        data = os.urandom(kib * 1024)
        picture.write_bytes(data)
        shipment = f"S{n // per_shipment:05d}"
        listed.append({"path": str(picture), "shipment_id": shipment, "cargo_type": "bulk_ore"})
        rows.append(
            ImageVerdict(
                path=str(picture),
                sha256=hashlib.sha256(data).hexdigest(),
                shipment_id=shipment,
                cargo_type="bulk_ore",
                score=0.1 + 0.8 * (n % 10) / 10,
                threshold=0.5,
                hold_threshold=0.8,
                model_id="ore-m1",
                declaration={"shipment_id": shipment, "cargo_type": "bulk_ore"},
            )
        )
    verdicts = folder / "rows.jsonl"
    verdicts.write_text("".join(r.model_dump_json() + "\n" for r in rows))
    return verdicts, listed
