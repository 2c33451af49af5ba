"""The Ray engine gives the local engine's rows (order aside), on a local Ray with 2 CPUs."""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

import score_fakes  # noqa: E402
from score_fakes import POISON, fake_factory, write_images  # noqa: E402

from pipeline.score import ImageTask, LocalEngine, ModelRouter, RayEngine, iter_rows, score_to_file  # noqa: E402


@pytest.mark.slow
@pytest.mark.ray
def test_ray_engine_equals_local_engine(tmp_path: Path) -> None:
    ray_cloudpickle = pytest.importorskip("ray.cloudpickle")
    # The actors cannot import this test folder: ship the fakes' code with the factory.
    ray_cloudpickle.register_pickle_by_value(score_fakes)
    paths = write_images(tmp_path / "img", [10, 60, POISON, 130, 200, 250])
    (tmp_path / "img" / "bad.png").write_bytes(b"junk")
    kinds = ["bulk_ore", "vacuum_pack", "bulk_ore", "vacuum_pack", "bulk_ore", "crude_oil"]
    tasks = [
        ImageTask(str(p), shipment_id=f"S{i % 2}", cargo_type=k)
        for i, (p, k) in enumerate(zip(paths, kinds, strict=True))
    ]
    tasks.append(ImageTask(str(tmp_path / "img" / "bad.png"), cargo_type="bulk_ore"))
    local_out, ray_out = tmp_path / "local.jsonl", tmp_path / "ray.jsonl"
    score_to_file(
        tasks,
        LocalEngine(ModelRouter(fake_factory()), batch_size=2),
        local_out,
        heatmap_dir=tmp_path / "heat_local",
    )
    engine = RayEngine(fake_factory, actors=1, batch_size=2, window=64, num_cpus=2)
    score_to_file(tasks, engine, ray_out, heatmap_dir=tmp_path / "heat_ray")

    def rows(out: Path) -> list[str]:
        # each row's overlay by its bytes: its name holds the output, so the two runs' names differ;
        # and no run id: each run has its own
        return sorted(
            row.model_copy(
                update={
                    "heatmap": hashlib.sha256(Path(row.heatmap).read_bytes()).hexdigest()
                    if row.heatmap
                    else None,
                    "run_id": None,
                }
            ).model_dump_json()
            for row in iter_rows(out)
        )

    local_rows = rows(local_out)
    assert len(local_rows) == 7
    assert rows(ray_out) == local_rows
    assert len(list((tmp_path / "heat_ray").iterdir())) == len(list((tmp_path / "heat_local").iterdir()))
