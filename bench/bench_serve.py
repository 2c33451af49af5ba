"""Serving benchmark: latency without load, throughput with 1, 4 and 16 clients, vs offline batches.

Usage::

    python -m bench.bench_serve --model runs/demo/models/bulk_ore [--images 64] [--size 256]

With ``--model`` the server is a real ``clearsight serve`` process on 127.0.0.1 (random free port) and
this process is the asyncio/httpx load generator, so the two do not share a GIL; without it, a fake
predictor is served from a thread of this process. The offline figure is the same predictor's
``predict`` on batches of ``max_batch_size`` measured in the same run, so the ratio
``throughput(16 clients) / offline`` is what micro-batching delivers (target >= 0.8, no errors).
Without ``--model`` a CPU-costly fake predictor stands in, and the report says so; a ``--model``
that cannot be loaded stops the run with the loader's error.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import cv2
import httpx
import numpy as np

from models.inference import GOOD, Prediction, Thresholds
from pipeline.audit import AuditStore
from serve.app import create_app
from serve.settings import ServeSettings

KEY = "bench-officer-key-0123456789"  # /v1/score is an officer's route; 20+ characters: no warning
AUDIT_SECRET = "bench-serve-audit-secret-0123456789"  # the service refuses the public default


class CostlyFake:
    """Stand-in predictor with a real CPU cost: a fixed per-call overhead plus a per-image matmul."""

    cargo_type = "bulk_ore"
    model_id = "bulk_ore-costly-fake"
    thresholds = Thresholds(release=0.5, hold=0.8, target_miss_rate=0.01, method="fake")
    card: dict[str, Any] = {"name": "costly fake"}

    def __init__(self) -> None:
        rng = np.random.default_rng(0)
        self._w = rng.standard_normal((384, 384)).astype(np.float32)

    def predict(self, images: Sequence[np.ndarray]) -> list[Prediction]:
        x = np.ones((len(images) * 64, 384), np.float32)
        for _ in range(30):  # batched work: cheaper per image in larger batches, like a CNN
            x = np.tanh(x @ self._w * 0.01)
        time.sleep(0.004)  # per-call overhead (dispatch, pre/post-processing)
        out = []
        for image in images:
            score = float(np.asarray(image, np.float32).mean() / 255.0)
            amap = np.full(image.shape[:2], score, np.float32)
            out.append(
                Prediction(
                    score,
                    "anomalous" if score >= 0.5 else GOOD,
                    None,
                    {GOOD: 1 - score, "other": score},
                    amap,
                    self.thresholds,
                    self.model_id,
                )
            )
        return out


def _images(n: int, size: int) -> list[bytes]:
    rng = np.random.default_rng(1)
    encoded = []
    for _ in range(n):
        ok, buf = cv2.imencode(".png", rng.integers(0, 255, (size, size, 3), dtype=np.uint8))
        assert ok
        encoded.append(buf.tobytes())
    return encoded


def _offline(predictor: Any, images: list[np.ndarray], batch: int, *, passes: int = 2) -> float:
    """Best of ``passes`` timed passes over ``images`` in batches, after two warm-up batches."""
    for _ in range(2):
        predictor.predict(images[:batch])
    best = 0.0
    for _ in range(passes):
        started = time.perf_counter()
        for i in range(0, len(images), batch):
            predictor.predict(images[i : i + batch])
        best = max(best, len(images) / (time.perf_counter() - started))
    return best


async def _load(url: str, payloads: list[bytes], clients: int) -> tuple[float, list[float], int]:
    """Send every payload once, ``clients`` at a time; returns (images/s, latencies, errors)."""
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for p in payloads:
        queue.put_nowait(p)
    latencies: list[float] = []
    errors = 0

    async def client(http: httpx.AsyncClient) -> None:
        nonlocal errors
        while not queue.empty():
            payload = queue.get_nowait()
            t0 = time.perf_counter()
            r = await http.post(
                "/v1/score",
                files=[("images", ("x.png", payload, "image/png"))],
                data={"cargo_type": "bulk_ore"},
            )
            latencies.append(time.perf_counter() - t0)
            errors += r.status_code != 200

    limits = httpx.Limits(max_connections=clients)
    async with httpx.AsyncClient(
        base_url=url, headers={"X-API-Key": KEY}, timeout=120, limits=limits
    ) as http:
        started = time.perf_counter()
        await asyncio.gather(*(client(http) for _ in range(clients)))
        elapsed = time.perf_counter() - started
    return len(payloads) / elapsed, latencies, errors


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def _server(args: argparse.Namespace, predictor: Any, tmp: Path) -> Iterator[str]:
    """A running server's base URL: ``clearsight serve`` in a subprocess for a real model."""
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    tuning = {"max_batch_size": args.batch, "max_wait_ms": 5, "queue_size": 4096, "request_timeout_s": 120}
    if args.model is None:
        import uvicorn

        store = AuditStore.open(f"sqlite:///{tmp}/audit.db")
        settings = ServeSettings(
            _env_file=None,
            api_keys=f"officer:{KEY}",
            audit_secret=AUDIT_SECRET,
            data_dir=tmp / "data",
            **tuning,  # type: ignore[arg-type]
        )
        app = create_app(settings, predictors={predictor.cargo_type: predictor}, audit=store)
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        while not server.started:
            time.sleep(0.02)
        try:
            yield url
        finally:
            server.should_exit = True
            thread.join(10)
            store.close()
        return
    env = {**os.environ, "CLEARSIGHT_API_KEYS": f"officer:{KEY}", "CLEARSIGHT_AUDIT_SECRET": AUDIT_SECRET}
    env.update({f"CLEARSIGHT_{k.upper()}": str(v) for k, v in tuning.items()})
    env["CLEARSIGHT_RUNTIME"] = args.runtime  # the server runs the model as the offline figure does
    command = [
        sys.executable, "-m", "serve.cli", "serve", "--model", str(args.model),
        "--audit-db", f"sqlite:///{tmp}/audit.db", "--data-dir", str(tmp / "data"), "--port", str(port),
    ]  # fmt: skip
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the server did not start (exit code {proc.poll()})")
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        proc.wait(30)


def _pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q) * 1000.0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, help="Model directory (models.artifact.load_model).")
    parser.add_argument("--images", type=int, default=64, help="Requests per concurrency level.")
    parser.add_argument("--size", type=int, default=256, help="Side of the random test images.")
    parser.add_argument("--batch", type=int, default=16, help="max_batch_size (and the offline batch).")
    parser.add_argument("--out", type=Path, default=Path("bench/results/serve.json"))
    parser.add_argument(
        "--runtime", choices=("onnxruntime", "torch"), default="onnxruntime", help="What runs the model."
    )
    args = parser.parse_args(argv)

    source = "costly fake (no --model)"
    predictor: Any = CostlyFake()
    if args.model is not None:
        from models.artifact import load_model

        predictor = load_model(args.model, runtime=args.runtime)
        source = f"artifact {predictor.model_id}"
    payloads = _images(args.images, args.size)
    decoded = [
        cv2.imdecode(np.frombuffer(p, np.uint8), cv2.IMREAD_COLOR)[:, :, ::-1].copy() for p in payloads
    ]
    offline = _offline(predictor, decoded, args.batch)

    with tempfile.TemporaryDirectory() as tmp, _server(args, predictor, Path(tmp)) as url:
        _, single, single_errors = asyncio.run(_load(url, payloads[: min(30, len(payloads))], 1))
        results = {c: asyncio.run(_load(url, payloads, c)) for c in (1, 4, 16)}
    # Measured again after the load: on a shared machine one reading alone can be disturbed.
    offline_after = _offline(predictor, decoded, args.batch)

    offline_before, offline = offline, max(offline, offline_after)
    report = {
        "predictor": source,
        "runtime": args.runtime if args.model is not None else None,
        "offline_images_per_s_readings": [round(offline_before, 2), round(offline_after, 2)],
        "image_size": args.size,
        "offline_images_per_s": round(offline, 2),
        "latency_ms_no_load": {
            "p50": round(_pct(single, 50), 1),
            "p95": round(_pct(single, 95), 1),
            "p99": round(_pct(single, 99), 1),
            "mean": round(statistics.mean(single) * 1e3, 1),
        },
        "throughput_images_per_s": {str(c): round(r[0], 2) for c, r in results.items()},
        "ratio_to_offline": {str(c): round(r[0] / offline, 3) for c, r in results.items()},
        "errors": single_errors + sum(r[2] for r in results.values()),
        "target": "16 clients >= 0.8 x offline, no errors",
    }
    report["target_met"] = report["ratio_to_offline"]["16"] >= 0.8 and report["errors"] == 0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))
    # the speed target met or not is a figure of the report, not a failure of the run (exit 1 made
    # `make bench` call the benchmark failed whenever two cores could not reach 0.8); a request
    # that failed is one: its figures were measured on error responses
    return 1 if report["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
