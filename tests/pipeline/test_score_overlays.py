"""`clearsight score --heatmaps`: each row's overlay is its own model's map of its own picture.

Overlays were named by the picture's path alone: two runs into other outputs sharing one heatmaps
folder (two models, or one after a new scan was written over a name), or one picture listed under two
cargo types and scored by each type's model, wrote one file, and a row named a map another model drew,
or of another picture (pipeline.score.runner.heatmap_name). Named by the path, the picture and the
model alone, two outputs of one model's run on one picture shared a file, which a resume of one
removed with its row taken out while the other's row named it: the output is in the name too."""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))

from score_fakes import FakePredictor, tiny_model_dir, write_png  # noqa: E402

from datasets.decode import decode_image  # noqa: E402
from datasets.manifest import write_manifest  # noqa: E402
from models.inference import Prediction  # noqa: E402
from pipeline.heatmap import overlay_png  # noqa: E402
from pipeline.score import ImageTask, LocalEngine, ModelRouter, heatmap_name, iter_rows, score_to_file  # noqa: E402
from pipeline.verdicts import ImageVerdict  # noqa: E402


class _MirroredFake(FakePredictor):
    """Another model of the same scores whose map is the fake's turned over (1 - map): its overlay of
    a picture is not the fake's."""

    def predict(self, images: Sequence[np.ndarray]) -> list[Prediction]:
        return [p._replace(anomaly_map=1.0 - p.anomaly_map) for p in super().predict(images)]


BULK, VACUUM = FakePredictor("bulk_ore", "bulk-1"), _MirroredFake("vacuum_pack", "vacuum-1")
BULK_2 = _MirroredFake("bulk_ore", "bulk-2")  # a retrained bulk-ore model
MODELS = {p.model_id: p for p in (BULK, VACUUM, BULK_2)}


def _own_overlay(row: ImageVerdict, picture: Path) -> bytes:
    """The overlay of ``picture`` (as it is now) that the model of ``row`` draws."""
    pixels = decode_image(picture).pixels
    return overlay_png(pixels, MODELS[row.model_id or ""].predict([pixels])[0].anomaly_map)


def _run(out: Path, heat: Path, tasks: list[ImageTask], *models: FakePredictor, **kwargs: object) -> dict:
    """Score ``tasks`` into ``out`` with ``heat`` for overlays; each row of the run (by its path and
    shipment) to the overlay its own model draws of its picture as it is during the run."""
    score_to_file(tasks, LocalEngine(ModelRouter(list(models))), out, heatmap_dir=heat, **kwargs)  # type: ignore[arg-type]
    rows = list(iter_rows(out))
    return {(r.path, r.shipment_id, r.model_id): _own_overlay(r, Path(r.path)) for r in rows if r.heatmap}


def _two_models_two_outputs(tmp_path: Path, heat: Path, a: Path) -> list[tuple[Path, dict]]:
    task = [ImageTask(str(a))]
    return [
        (tmp_path / "a.jsonl", _run(tmp_path / "a.jsonl", heat, task, BULK)),
        (tmp_path / "b.jsonl", _run(tmp_path / "b.jsonl", heat, task, BULK_2)),
    ]


def _a_new_scan_under_the_name(tmp_path: Path, heat: Path, a: Path) -> list[tuple[Path, dict]]:
    task = [ImageTask(str(a))]
    first = _run(tmp_path / "a.jsonl", heat, task, BULK)
    write_png(a, 200, size=6)  # the next day's scan, written over the file name
    return [
        (tmp_path / "a.jsonl", first),
        (tmp_path / "c.jsonl", _run(tmp_path / "c.jsonl", heat, task, BULK)),
    ]


def _two_cargo_types_one_run(tmp_path: Path, heat: Path, a: Path) -> list[tuple[Path, dict]]:
    tasks = [ImageTask(str(a), "SHP-A", "bulk_ore"), ImageTask(str(a), "SHP-B", "vacuum_pack")]
    return [(tmp_path / "rows.jsonl", _run(tmp_path / "rows.jsonl", heat, tasks, BULK, VACUUM))]


@pytest.mark.parametrize(
    "runs",
    [_two_models_two_outputs, _a_new_scan_under_the_name, _two_cargo_types_one_run],
    ids=["two-models-two-outputs", "a-new-scan-under-the-name", "two-cargo-types-one-run"],
)
def test_each_row_names_its_own_models_overlay_of_its_own_picture(
    tmp_path: Path, runs: Callable[[Path, Path, Path], list[tuple[Path, dict]]]
) -> None:
    """Two rows, each of another model or picture: two overlay files, each row's its own."""
    a, heat = write_png(tmp_path / "arc" / "a.png", 40), tmp_path / "heat"
    wanted = {}
    for out, drawn in runs(tmp_path, heat, a):
        for row in iter_rows(out):
            wanted[(out, row.shipment_id)] = (row, drawn[(row.path, row.shipment_id, row.model_id)])
    assert len(wanted) == 2
    for (out, shipment), (row, overlay) in wanted.items():
        heatmap = Path(row.heatmap or "")
        assert heatmap.read_bytes() == overlay, f"{out.name} {shipment}: another model's or picture's map"
        assert heatmap.parent == heat.resolve()
        assert heatmap.name == heatmap_name(
            row.path, row.sha256 or "", row.model_id or "", str(out.resolve())
        )
    assert len(list(heat.iterdir())) == 2


def _legacy_name(path: str) -> str:
    """The overlay's name as versions before it held the model and the picture wrote it."""
    return hashlib.sha256(path.encode()).hexdigest()[:32] + ".png"


def _as_a_version_before_wrote_it(out: Path, heat: Path) -> dict[str, bytes]:
    """Name ``out``'s overlays by their path alone, as an earlier version did: each name to its bytes."""
    rows, names = [], {}
    for row in iter_rows(out):
        if row.heatmap:
            legacy = heat / _legacy_name(row.path)
            os.replace(row.heatmap, legacy)
            names[legacy.name] = legacy.read_bytes()
            row = row.model_copy(update={"heatmap": str(legacy)})
        rows.append(row)
    out.write_text("".join(r.model_dump_json() + "\n" for r in rows))
    return names


def test_a_resume_of_an_output_an_earlier_version_wrote_keeps_its_rows_overlays(tmp_path: Path) -> None:
    """Kept rows keep naming the files the earlier version wrote; a row taken out takes its file with
    it; the picture scored again names its new overlay as this version does."""
    a, b = write_png(tmp_path / "arc" / "a.png", 40), write_png(tmp_path / "arc" / "b.png", 60)
    out, heat = tmp_path / "rows.jsonl", (tmp_path / "heat").resolve()
    tasks = [ImageTask(str(a), "S1"), ImageTask(str(b), "S2")]
    _run(out, heat, tasks, BULK)
    before = _as_a_version_before_wrote_it(out, heat)
    write_png(a, 200)  # a new scan over a's name: its row is taken out, b's kept
    drawn = _run(out, heat, tasks, BULK, resume=True)
    rows = {r.shipment_id: r for r in iter_rows(out)}
    assert rows["S2"].heatmap == str(heat / _legacy_name(str(b)))  # as the earlier version named it
    assert Path(rows["S2"].heatmap).read_bytes() == before[_legacy_name(str(b))]
    name = heatmap_name(str(a), rows["S1"].sha256 or "", "bulk-1", str(out.resolve()))
    assert Path(rows["S1"].heatmap or "").name == name
    assert Path(rows["S1"].heatmap or "").read_bytes() == drawn[(str(a), "S1", "bulk-1")]
    assert sorted(p.name for p in heat.iterdir()) == sorted(Path(r.heatmap or "").name for r in rows.values())


def _named_by_output(outs: list[Path], heat: Path) -> None:
    """As this version names overlays: each output's own file."""


def _named_without_the_output(outs: list[Path], heat: Path) -> None:
    """Name the outputs' overlays by path, sha256 and model alone, as the version before did: the
    outputs' rows of one picture by one model name one file."""
    for out in outs:
        rows = []
        for row in iter_rows(out):
            parts = (row.path, row.sha256 or "", row.model_id or "")
            shared = heat / (hashlib.sha256("\0".join(parts).encode()).hexdigest()[:32] + ".png")
            os.replace(row.heatmap or "", shared)
            rows.append(row.model_copy(update={"heatmap": str(shared)}))
        out.write_text("".join(r.model_dump_json() + "\n" for r in rows))


@pytest.mark.parametrize(
    "naming", [_named_by_output, _named_without_the_output], ids=["now", "version-before"]
)
def test_a_resume_of_one_output_leaves_the_overlay_another_outputs_row_names(
    tmp_path: Path, naming: Callable[[list[Path], Path], None]
) -> None:
    """The day's output and a shipment's, one model, one picture, one heatmaps folder; a new scan is
    written over the name and the day's output resumed: its row is taken out with its overlay, which
    was the file the shipment's untouched row named."""
    a, heat = write_png(tmp_path / "arc" / "a.png", 40), (tmp_path / "heat").resolve()
    day, shipment = tmp_path / "day.jsonl", tmp_path / "shipment.jsonl"
    drawn = _run(day, heat, [ImageTask(str(a))], BULK)
    _run(shipment, heat, [ImageTask(str(a))], BULK)
    naming([day, shipment], heat)
    (before,) = iter_rows(shipment)
    write_png(a, 200)  # the next day's scan, written over the name
    now = _run(day, heat, [ImageTask(str(a))], BULK, resume=True)
    (kept,) = iter_rows(shipment)
    assert kept == before
    assert Path(kept.heatmap or "").read_bytes() == drawn[(str(a), None, "bulk-1")]  # the old picture's
    (rescored,) = iter_rows(day)
    assert Path(rescored.heatmap or "").read_bytes() == now[(str(a), None, "bulk-1")]  # the new one's
    assert sorted(p.name for p in heat.iterdir()) == sorted(
        Path(r.heatmap or "").name for r in (kept, rescored)
    )


def test_an_error_row_scored_again_names_its_own_overlay_beside_the_other_models(tmp_path: Path) -> None:
    """`--retry-errors` with the vacuum-pack model added: its row of the picture the bulk-ore model
    drew under another shipment names its own model's overlay, and the bulk-ore row keeps its own."""
    a, out, heat = write_png(tmp_path / "arc" / "a.png", 40), tmp_path / "rows.jsonl", tmp_path / "heat"
    tasks = [ImageTask(str(a), "SHP-A", "bulk_ore"), ImageTask(str(a), "SHP-B", "vacuum_pack")]
    score_to_file(tasks, LocalEngine(ModelRouter([BULK])), out, heatmap_dir=heat)  # type: ignore[list-item]
    assert {r.shipment_id: r.error is not None for r in iter_rows(out)} == {"SHP-A": False, "SHP-B": True}
    drawn = _run(out, heat, tasks, BULK, VACUUM, resume=True, retry_errors=True)
    rows = {r.shipment_id: r for r in iter_rows(out)}
    assert {s: r.model_id for s, r in rows.items()} == {"SHP-A": "bulk-1", "SHP-B": "vacuum-1"}
    for shipment, row in rows.items():
        assert Path(row.heatmap or "").read_bytes() == drawn[(str(a), shipment, row.model_id)], shipment
    assert rows["SHP-A"].heatmap != rows["SHP-B"].heatmap


def _noise(path: Path, *, seed: int, size: int = 40) -> Path:
    """A picture of random pixels: a flat one gives two untrained models' maps alike."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)).save(path)
    return path


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("COLUMNS", "1000")
    return tmp_path


def _largest_difference(a: np.ndarray, b: np.ndarray) -> int:
    return int(np.abs(a.astype(int) - b.astype(int)).max())


@pytest.mark.slow
def test_two_cargo_types_of_one_picture_in_one_run_each_name_their_models_overlay(env: Path) -> None:
    """End to end, tiny models: one picture listed under SHP-A (bulk_ore) and SHP-B (vacuum_pack) in two
    manifests of one run; both rows named one file, which held the vacuum-pack model's map alone."""
    from models import load_model
    from pipeline.cli import app, run
    from pipeline.heatmap import overlay

    models = {
        "bulk_ore": tiny_model_dir(env / "models"),
        "vacuum_pack": tiny_model_dir(env / "models", "vacuum_pack", seed=1),
    }
    pic = _noise(env / "arc" / "pic.png", seed=0)
    manifests = []
    for shipment, cargo in (("SHP-A", "bulk_ore"), ("SHP-B", "vacuum_pack")):
        manifests.append(env / f"manifest_{shipment}.csv")
        write_manifest(manifests[-1], [{"path": str(pic), "shipment_id": shipment, "cargo_type": cargo}])
    out, heat = env / "rows.jsonl", env / "hm"
    argv = ["score", *map(str, manifests), "--out", str(out), "--heatmaps", str(heat)]
    assert run(app, [*argv, "--model", str(models["bulk_ore"]), "--model", str(models["vacuum_pack"])]) == 0
    pixels = decode_image(pic).pixels
    want = {c: overlay(pixels, load_model(m).predict([pixels])[0].anomaly_map) for c, m in models.items()}
    assert _largest_difference(want["bulk_ore"], want["vacuum_pack"]) > 8  # two maps to tell apart
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(r["shipment_id"] for r in rows) == ["SHP-A", "SHP-B"]
    assert len({r["heatmap"] for r in rows}) == 2
    for row in rows:
        drawn = np.asarray(Image.open(row["heatmap"]).convert("RGB"))
        assert _largest_difference(drawn, want[row["cargo_type"]]) <= 2, row["shipment_id"]


@pytest.mark.slow
def test_score_runs_into_other_outputs_sharing_one_heatmaps_folder_keep_their_overlays(env: Path) -> None:
    """End to end, tiny models: run a (one model) and run b (another) into two outputs and one heatmaps
    folder, then the same model's run after a new scan was written over the name into a third: run a's
    row named the file the later runs wrote over."""
    from pipeline.cli import app, run

    first, second = tiny_model_dir(env / "m1"), tiny_model_dir(env / "m2", seed=1)
    pictures, heat = env / "in", env / "hm"
    pic = _noise(pictures / "colour.png", seed=0)

    def score(out: str, model: Path) -> dict:
        assert (
            run(
                app,
                [
                    "score",
                    str(pictures),
                    "--model",
                    str(model),
                    "--out",
                    str(env / out),
                    "--heatmaps",
                    str(heat),
                ],
            )
            == 0
        )
        (row,) = [json.loads(line) for line in (env / out).read_text().splitlines()]
        return {"row": row, "overlay": Path(row["heatmap"]).read_bytes()}

    runs = [score("a.jsonl", first), score("b.jsonl", second)]
    _noise(pic, seed=1, size=24)  # the next day's scan under the same name
    runs.append(score("c.jsonl", first))
    assert len({r["row"]["model_id"] for r in runs}) == 2 and len({r["row"]["sha256"] for r in runs}) == 2
    for written in runs:  # each row's file still holds what its own run wrote
        assert Path(written["row"]["heatmap"]).read_bytes() == written["overlay"]
    assert len({r["row"]["heatmap"] for r in runs}) == 3
