"""Memory a loaded model holds: process RSS after ``load_model``, per runtime, old path beside new.

    .venv/bin/python bench/bench_load_memory.py --bank-rows 614,100000

Trains one small model (`bulk_ore`, 30 normals and 2 labelled anomalies per type at 128 px, seed 3)
and re-saves it with a memory bank of each size in ``--bank-rows`` (rows drawn from the trained bank
plus a little noise: the bank's size, not its quality, is what is measured). Each load runs in a
fresh process that has already imported torch, ONNX Runtime and the exporter, so the figures are the
load's own: its peak (the kernel's high-water mark, reset just before the load) and its steady RSS
after a ``gc``, both over the RSS before it, beside the size of ``weights.safetensors``.

``old`` is the path before session 36: ONNX Runtime's Python session kept the bytes of the traced
graph it was made from (every weight the graph runs, the bank twice) for its whole life. ``new``
lets them go. Under ``torch`` the two paths are the same code (the row is a check of the noise).
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _status(key: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(key):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {key} in /proc/self/status")


def child(model: str, runtime: str, path: str) -> None:
    """Load ``model`` once under ``runtime`` and print the RSS figures as JSON."""
    import onnxruntime  # noqa: F401
    import torch.onnx  # noqa: F401

    import models.runtime
    from models.artifact import load_model

    if path == "old":  # the session keeps the traced graph's bytes, as before session 36
        models.runtime._forget_model_bytes = lambda session: None  # type: ignore[assignment]
    gc.collect()
    before = _status("VmRSS:")
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")  # resets the high-water mark (VmHWM) to the current RSS
    predictor = load_model(model, runtime=runtime)
    peak = _status("VmHWM:")
    gc.collect()
    steady = _status("VmRSS:")
    assert predictor.runtime == runtime
    print(json.dumps({"peak": peak - before, "steady": steady - before}))


def _train(work: Path) -> Path:
    from pipeline.train import TrainConfig, train_model

    synth = [sys.executable, "-c", "import serve.cli as c; c.main()", "data", "synth"]
    args = ["--out", str(work / "data"), "--cargo", "bulk_ore", "--seed", "3", "--size", "128"]
    args += ["--train-good", "30", "--train-anomalous", "2", "--test-good", "4", "--test-anomalous", "1"]
    subprocess.run([*synth, *args, "--workers", "1"], check=True, cwd=ROOT, capture_output=True)
    return train_model(work / "data" / "bulk_ore", work / "model", config=TrainConfig(image_size=128)).out_dir


def _with_bank(model: Path, rows: int, out: Path) -> Path:
    import torch

    from models.artifact import load_model, save_artifact
    from models.detector import build_detector

    trained = load_model(model, runtime="torch")
    state = trained.detector.state_dict()
    if rows == state["bank.bank"].shape[0]:
        return model
    gen = torch.Generator().manual_seed(0)
    old = state["bank.bank"]
    bank = old[torch.randint(0, old.shape[0], (rows,), generator=gen)]
    bank = bank + 0.01 * torch.randn(rows, old.shape[1], generator=gen)
    state["bank.bank"], state["bank.bank_sq"] = bank, bank.pow(2).sum(1)
    detector = build_detector(dataclasses.replace(trained.detector.config, bank_size=rows))
    detector.load_state_dict(state)
    sealed = ("format_version", "detector", "weights_sha256", "model_id", "card_sha256", "content_sha256")
    card = {k: v for k, v in trained.card.items() if k not in sealed}
    return save_artifact(out, detector.eval(), card)


def _measure(model: Path, runtime: str, path: str) -> dict[str, int]:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    cmd = [sys.executable, __file__, "--child", str(model), runtime, path]
    done = subprocess.run(cmd, check=True, cwd=ROOT, env=env, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bank-rows", default="614,100000", help="comma-separated bank sizes")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    import torch

    torch.set_num_threads(1)
    mb = 1e6
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        trained = _train(work)
        print(
            f"{'bank rows':>9} {'file MB':>8} {'runtime':<11} {'old peak':>8} {'old steady':>10} "
            f"{'new peak':>8} {'new steady':>10} {'new/old steady':>14}"
        )
        for rows in (int(r) for r in args.bank_rows.split(",")):
            model = _with_bank(trained, rows, work / f"bank{rows}")
            size = (model / "weights.safetensors").stat().st_size
            for runtime in ("onnxruntime", "torch"):
                old, new = (_measure(model, runtime, path) for path in ("old", "new"))
                print(
                    f"{rows:>9} {size / mb:>8.1f} {runtime:<11} {old['peak'] / mb:>8.0f} "
                    f"{old['steady'] / mb:>10.0f} {new['peak'] / mb:>8.0f} {new['steady'] / mb:>10.0f} "
                    f"{new['steady'] / old['steady']:>14.2f}"
                )
    print("MB of RSS over the process before the load; steady after a gc; peak the high-water mark")


if __name__ == "__main__":
    main()
