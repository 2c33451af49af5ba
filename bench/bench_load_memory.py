"""Memory a loaded model holds: process RSS after ``load_model``, per runtime, old path beside new.

    .venv/bin/python bench/bench_load_memory.py --bank-rows 614,100000
    .venv/bin/python bench/bench_load_memory.py --bank-rows 614,100000 --speed 8 --threads 1,2

Trains one small model (`bulk_ore`, 30 normals and 2 labelled anomalies per type at 128 px, seed 3)
and re-saves it with a memory bank of each size in ``--bank-rows`` (rows drawn from the trained bank
plus a little noise: the bank's size, not its quality, is what is measured). Each load runs in a
fresh process that has already imported torch, ONNX Runtime and the exporter, so the figures are the
load's own: its peak (the kernel's high-water mark, reset just before the load), its steady RSS
after a ``gc``, and that RSS once glibc's ``malloc_trim(0)`` has handed freed heap pages back (how
much of it is heap let go but kept mapped, which varies by tens of MB between runs), all over the
RSS before it, beside the size of ``weights.safetensors``.

Three paths, each in its own processes: ``s35``, before session 36: ONNX Runtime's Python session
kept the bytes of the traced graph it was made from (every weight the graph runs, the bank twice) for
its whole life; ``s36``, before session 37: the bytes let go, but the session held the bank once for
the nearest row's gather and once packed for the search beside the torch detector's own copy;
``new``: the session is handed the detector's own bank rows (``models.runtime._share_banks``).
Under ``torch`` the three paths are the same code (the row is a check of the noise).

With ``--speed ROUNDS`` the ``s36`` and ``new`` paths are also loaded side by side in one process per
thread count and score the same 16 random images (``predict``) in alternating order for ROUNDS
rounds: images/s (median) and their ratio. Their predictions are compared on those images and on the
training data's test pictures (:func:`_comparison_images`): the largest differences of scores, maps,
type probabilities and each signal's log-odds between the two, and how many of the pictures scored
between 0.01 and 0.99. Random noise scores 1.0 to six places on the bench's model (log-odds 8.7 to
13.9) whatever the bank says, so its scores alone showed nothing; the log-odds and the unsaturated
pictures do.
"""

from __future__ import annotations

import argparse
import ctypes
import dataclasses
import gc
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def _status(key: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(key):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {key} in /proc/self/status")


PATHS = ("s35", "s36", "new")


def _use_path(path: str) -> None:
    """Have later loads in this process take ``path`` (one of :data:`PATHS`)."""
    import models.runtime

    if path not in PATHS:
        raise ValueError(f"unknown path {path!r}; accepted: {list(PATHS)}")
    if path == "new":
        return
    # before session 37 the session kept copies of the bank of its own, and prepacked its matmuls
    models.runtime._share_banks = lambda options, graph, detector: []  # type: ignore[assignment]
    if path == "s35":  # the session keeps the traced graph's bytes, as before session 36
        models.runtime._forget_model_bytes = lambda session: None  # type: ignore[assignment]


def child(model: str, runtime: str, path: str) -> None:
    """Load ``model`` once under ``runtime`` and print the RSS figures as JSON."""
    import onnxruntime  # noqa: F401
    import torch.onnx  # noqa: F401

    from models.artifact import load_model

    _use_path(path)
    gc.collect()
    before = _status("VmRSS:")
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")  # resets the high-water mark (VmHWM) to the current RSS
    predictor = load_model(model, runtime=runtime)
    peak = _status("VmHWM:")
    gc.collect()
    steady = _status("VmRSS:")
    assert predictor.runtime == runtime
    try:  # glibc keeps freed heap pages mapped; what is left once they are handed back
        ctypes.CDLL("libc.so.6").malloc_trim(0)
        trimmed = _status("VmRSS:")
    except (OSError, AttributeError):  # not glibc
        trimmed = steady
    print(json.dumps({"peak": peak - before, "steady": steady - before, "trimmed": trimmed - before}))


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


UNSATURATED = (0.01, 0.99)
"""Scores strictly inside this range count as unsaturated in :func:`_differences`."""


def _comparison_images(model: str | Path) -> list[Any]:
    """The test pictures of the data ``model`` was trained on (its card's ``training.data_root``),
    normals and anomalies, decoded: pictures like the training ones, which a model does not all
    score 0 or 1 as it does random noise."""
    from datasets.decode.decoding import decode_image
    from models.artifact import load_model

    root = Path(load_model(model, runtime="torch").card["training"]["data_root"])
    return [decode_image(f).pixels for f in sorted((root / "test").rglob("*.png"))]


def _differences(a: list[Any], b: list[Any]) -> dict[str, float]:
    """The largest differences between two runs' predictions of the same images, field by field,
    and how many of ``a``'s scores are between 0.01 and 0.99 (``unsaturated``: where a change in the
    distances moves the score by about as much)."""
    import numpy as np

    pairs = list(zip(a, b, strict=True))
    return {
        "score": max(abs(x.score - y.score) for x, y in pairs),
        "map": max(float(np.abs(x.anomaly_map - y.anomaly_map).max()) for x, y in pairs),
        "probs": max(
            abs(p - y.type_probabilities[k]) for x, y in pairs for k, p in x.type_probabilities.items()
        ),
        "log_odds": max(
            (
                abs(v - (y.signal_log_odds or {})[k]) if k in (y.signal_log_odds or {}) else float("inf")
                for x, y in pairs
                for k, v in (x.signal_log_odds or {}).items()
            ),
            default=0.0,
        ),
        "unsaturated": sum(UNSATURATED[0] < x.score < UNSATURATED[1] for x in a),
    }


def speed(model: str, threads: int, rounds: int) -> None:
    """Load ``model`` by the ``s36`` and ``new`` paths side by side and print images/s and the
    largest differences between their predictions as JSON."""
    import statistics
    import time

    import numpy as np
    import torch

    import models.runtime
    from models.artifact import load_model

    torch.set_num_threads(threads)
    share = models.runtime._share_banks
    predictors = {}
    for path in ("s36", "new"):
        models.runtime._share_banks = share  # type: ignore[assignment]
        _use_path(path)
        predictors[path] = load_model(model)
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (128, 128, 3), dtype=np.uint8) for _ in range(16)]
    compared = images + _comparison_images(model)
    outputs = {path: p.predict(compared) for path, p in predictors.items()}
    diff = _differences(outputs["s36"], outputs["new"])
    diff["compared"] = len(compared)
    times: dict[str, list[float]] = {path: [] for path in predictors}
    for r in range(rounds):
        for path in sorted(predictors, reverse=bool(r % 2)):
            start = time.perf_counter()
            predictors[path].predict(images)
            times[path].append(time.perf_counter() - start)
    rate = {path: len(images) / statistics.median(t) for path, t in times.items()}
    print(json.dumps({"s36": rate["s36"], "new": rate["new"], **diff}))


def _measure(model: Path, runtime: str, path: str) -> dict[str, Any]:
    return _run(["--child", str(model), runtime, path])


def _run(args: list[str]) -> dict[str, Any]:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    cmd = [sys.executable, __file__, *args]
    done = subprocess.run(cmd, check=True, cwd=ROOT, env=env, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bank-rows", default="614,100000", help="comma-separated bank sizes")
    parser.add_argument(
        "--speed", type=int, default=0, metavar="ROUNDS", help="also time scoring, s36 vs new"
    )
    parser.add_argument("--threads", default="1", help="comma-separated thread counts for --speed")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    parser.add_argument("--speed-child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    if args.speed_child:
        speed(args.speed_child[0], int(args.speed_child[1]), int(args.speed_child[2]))
        return
    import torch

    torch.set_num_threads(1)
    mb = 1e6
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        trained = _train(work)
        print(
            f"{'bank rows':>9} {'file MB':>8} {'runtime':<11} {'s35 peak':>8} {'s35 steady':>10} "
            f"{'s36 peak':>8} {'s36 steady':>10} {'new peak':>8} {'new steady':>10} "
            f"{'new/s36':>7} {'new/s35':>7} {'trimmed s36':>11} {'trimmed new':>11}"
        )
        built = {}
        for rows in (int(r) for r in args.bank_rows.split(",")):
            model = built[rows] = _with_bank(trained, rows, work / f"bank{rows}")
            size = (model / "weights.safetensors").stat().st_size
            for runtime in ("onnxruntime", "torch"):
                s35, s36, new = (_measure(model, runtime, path) for path in PATHS)
                print(
                    f"{rows:>9} {size / mb:>8.1f} {runtime:<11} {s35['peak'] / mb:>8.0f} "
                    f"{s35['steady'] / mb:>10.0f} {s36['peak'] / mb:>8.0f} {s36['steady'] / mb:>10.0f} "
                    f"{new['peak'] / mb:>8.0f} {new['steady'] / mb:>10.0f} "
                    f"{new['steady'] / s36['steady']:>7.2f} {new['steady'] / s35['steady']:>7.2f} "
                    f"{s36['trimmed'] / mb:>11.0f} {new['trimmed'] / mb:>11.0f}"
                )
        if args.speed:
            print(
                f"{'bank rows':>9} {'threads':>7} {'s36 img/s':>9} {'new img/s':>9} {'new/s36':>7} "
                "max |new - s36|: score, map, probabilities, log-odds; images scored in (0.01, 0.99)"
            )
            for rows, model in built.items():
                for threads in (int(t) for t in args.threads.split(",")):
                    got = _run(["--speed-child", str(model), str(threads), str(args.speed)])
                    print(
                        f"{rows:>9} {threads:>7} {got['s36']:>9.2f} {got['new']:>9.2f} "
                        f"{got['new'] / got['s36']:>7.3f} {got['score']:.1e} {got['map']:.1e} "
                        f"{got['probs']:.1e} {got['log_odds']:.1e}; {got['unsaturated']} of {got['compared']}"
                    )
    print(
        "MB of RSS over the process before the load; steady after a gc; peak the high-water mark; "
        "trimmed after malloc_trim(0) as well"
    )


if __name__ == "__main__":
    main()
