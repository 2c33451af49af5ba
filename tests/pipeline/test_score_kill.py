"""kill -9 at random moments, then --resume: every image ends up in the output exactly once.

A real subprocess runs the scorer (through its public API with the fake predictor, since a test-only
model must not be selectable from the product's CLI) and is killed with SIGKILL several times.
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from score_fakes import write_images  # noqa: E402

from pipeline.score import iter_rows  # noqa: E402
from pipeline.score.writer import journal_path  # noqa: E402

HELPER = """
import sys, time
from pathlib import Path

sys.path.insert(0, sys.argv[1])
from score_fakes import FakePredictor
from pipeline.score import ImageTask, LocalEngine, ModelRouter, score_to_file


class Slow(FakePredictor):
    def predict(self, images):
        time.sleep(0.004 * len(images))  # stretch the run so that kills land mid-way
        return super().predict(images)


images, out = Path(sys.argv[2]), Path(sys.argv[3])
tasks = (ImageTask(str(p), shipment_id=p.stem[:5]) for p in sorted(images.glob("*.png")))
print("started", flush=True)
score_to_file(tasks, LocalEngine(ModelRouter([Slow()]), batch_size=4), out, resume=True,
              heatmap_dir=out.parent / "heat", chunk_rows=3, flush_seconds=0.005)
print("finished", flush=True)
"""

N_IMAGES = 150


def _start(script: Path, images: Path, out: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(script), str(Path(__file__).parent), str(images), str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.slow
@pytest.mark.parametrize(("suffix", "seed", "kills"), [(".jsonl", 1, 4), (".csv", 2, 2), (".parquet", 3, 2)])
def test_sigkill_then_resume_scores_every_image_exactly_once(
    tmp_path: Path, suffix: str, seed: int, kills: int
) -> None:
    rng = random.Random(seed)
    images = tmp_path / "images"
    paths = write_images(images, [rng.randrange(20, 256) for _ in range(N_IMAGES)])
    script = tmp_path / "helper.py"
    script.write_text(HELPER, encoding="utf-8")
    out = tmp_path / f"out{suffix}"
    killed_mid_run = 0
    for _ in range(kills):
        proc = _start(script, images, out)
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "started"
        time.sleep(rng.uniform(0.0, 0.6))
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        if proc.returncode == -signal.SIGKILL:
            killed_mid_run += 1
        proc.stdout.close()
        assert proc.stderr is not None
        proc.stderr.close()
    assert killed_mid_run >= 1, "no kill landed before the run finished: the test would prove nothing"
    proc = _start(script, images, out)
    stdout, stderr = proc.communicate(timeout=120)
    assert (proc.returncode, stdout.split()) == (0, ["started", "finished"]), stderr
    rows = list(iter_rows(out))
    assert sorted(row.path for row in rows) == sorted(str(p) for p in paths)
    assert all(row.error is None and row.heatmap is not None and Path(row.heatmap).is_file() for row in rows)
    assert not journal_path(out).exists()
    if suffix == ".jsonl":  # the file holds nothing but whole rows
        assert all(json.loads(line)["path"] for line in out.read_text(encoding="utf-8").splitlines())
