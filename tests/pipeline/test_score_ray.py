"""The Ray engine gives the local engine's rows (order aside), on a local Ray with 2 CPUs."""

from __future__ import annotations

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
        return sorted(
            row.model_copy(
                update={"heatmap": Path(row.heatmap).name if row.heatmap else None}
            ).model_dump_json()
            for row in iter_rows(out)
        )

    local_rows = rows(local_out)
    assert len(local_rows) == 7
    assert rows(ray_out) == local_rows
    for name in sorted(p.name for p in (tmp_path / "heat_local").iterdir()):
        assert (tmp_path / "heat_ray" / name).read_bytes() == (tmp_path / "heat_local" / name).read_bytes()
