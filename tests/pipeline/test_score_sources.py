"""Scoring inputs: folders, globs and manifests, end to end through the runner with fake models."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from score_fakes import FakePredictor, write_images, write_png  # noqa: E402

from datasets.manifest import write_manifest  # noqa: E402
from pipeline.score import LocalEngine, ModelRouter, count_tasks, iter_rows, iter_tasks, score_to_file  # noqa: E402
from pipeline.verdicts import ImageVerdict  # noqa: E402


def _score(
    inputs: list[str], tmp_path: Path, *predictors: FakePredictor, cargo_type: str | None = None
) -> dict[str, ImageVerdict]:
    out = tmp_path / "out.jsonl"
    engine = LocalEngine(ModelRouter(list(predictors) or [FakePredictor()]), batch_size=3)
    score_to_file(iter_tasks(inputs, cargo_type=cargo_type), engine, out)
    return {row.path: row for row in iter_rows(out)}


def test_folder_is_walked_recursively(tmp_path: Path) -> None:
    top = write_images(tmp_path / "arc", [10, 20])
    nested = write_images(tmp_path / "arc" / "deck2", [30], prefix="n")
    rows = _score([str(tmp_path / "arc")], tmp_path)
    assert sorted(rows) == sorted(str(p) for p in [*top, *nested])
    assert count_tasks([str(tmp_path / "arc")]) == 3


def test_glob_selects_matching_images(tmp_path: Path) -> None:
    write_images(tmp_path / "arc", [10, 20, 30])
    other = write_png(tmp_path / "arc" / "other.png", 40)
    rows = _score([str(tmp_path / "arc" / "img*.png")], tmp_path)
    assert len(rows) == 3 and str(other) not in rows


@pytest.mark.parametrize(
    ("cargo_type", "expected_model"),
    [("vacuum_pack", "fake-vacuum_pack"), (None, None)],
)
def test_cargo_type_option_routes_folder_images(
    tmp_path: Path, cargo_type: str | None, expected_model: str | None
) -> None:
    write_images(tmp_path / "arc", [10])
    rows = _score(
        [str(tmp_path / "arc")],
        tmp_path,
        FakePredictor("bulk_ore"),
        FakePredictor("vacuum_pack"),
        cargo_type=cargo_type,
    )
    (row,) = rows.values()
    assert row.model_id == expected_model
    assert (row.error is None) == (expected_model is not None)


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_manifest_routes_by_cargo_type_and_carries_the_declaration(tmp_path: Path, suffix: str) -> None:
    arc = tmp_path / "arc"
    ore = write_images(arc, [40, 200], prefix="ore")
    pack = write_images(arc, [90], prefix="pack")
    crude = write_images(arc, [60], prefix="crude")
    manifest = arc / f"manifest{suffix}"
    write_manifest(
        manifest,
        [
            {
                "path": ore[0].name,
                "shipment_id": "S1",
                "cargo_type": "bulk_ore",
                "trader_id": "T1",
                "radiation_alarm": True,
            },
            {"path": ore[1].name, "shipment_id": "S1", "cargo_type": "bulk_ore", "trader_id": "T1"},
            {"path": pack[0].name, "shipment_id": "S2", "cargo_type": "vacuum_pack", "x_hs_code": "8486"},
            {"path": crude[0].name, "shipment_id": "S3", "cargo_type": "crude_oil"},
            {"path": "gone.png", "shipment_id": "S3", "cargo_type": "bulk_ore"},
        ],
    )
    rows = _score([str(manifest)], tmp_path, FakePredictor("bulk_ore"), FakePredictor("vacuum_pack"))
    resolved = {Path(p).name: row for p, row in rows.items()}
    assert sorted(resolved) == sorted([ore[0].name, ore[1].name, pack[0].name, crude[0].name, "gone.png"])
    first = resolved[ore[0].name]
    assert (first.shipment_id, first.model_id) == ("S1", "fake-bulk_ore")
    assert first.score == pytest.approx(40 / 255)
    assert first.declaration["trader_id"] == "T1" and first.declaration["radiation_alarm"] is True
    assert resolved[pack[0].name].model_id == "fake-vacuum_pack"
    assert resolved[pack[0].name].declaration["x_hs_code"] == "8486"
    no_model = "no model for cargo type 'crude_oil'; loaded: 'bulk_ore', 'vacuum_pack'"
    assert resolved[crude[0].name].error == no_model
    gone = resolved["gone.png"]  # listed, not there: the manifest's error
    assert gone.error is not None and gone.error.startswith("DatasetFormatError: ")
    assert gone.shipment_id == "S3"
