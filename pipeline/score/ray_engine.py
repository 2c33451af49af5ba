"""The Ray engine: the same decode-and-score step on a Ray Data actor pool.

Ray is optional (``pip install 'clearsight[ray]'``) and imported only when this engine runs. Each
actor builds its predictors once (from MODEL_DIRs, or from a factory the caller passes) and scores
batches with :func:`~pipeline.score.batch.score_batch`, so rows equal the local engine's. Tasks are
sent in windows of ``window`` images: Ray Data needs a finite list, and a window keeps the driver's
memory bounded on a 100k-image archive.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from datasets.errors import ClearsightError, EngineError, InputError
from models.inference import Predictor
from pipeline.score.batch import Decoded, ScoredRow, decode_task, error_row, score_batch
from pipeline.score.routing import ModelRouter
from pipeline.score.sources import ImageTask
from pipeline.verdicts import ImageVerdict

__all__ = ["ModelDirs", "PredictorFactory", "RayEngine"]

PredictorFactory = Callable[[], Sequence[Predictor]]
"""Builds the predictors inside each actor; must be picklable (cloudpickle)."""

RAY_EXTRA = "pip install 'clearsight[ray]'"


@dataclass(frozen=True)
class ModelDirs:
    """A :data:`PredictorFactory` that loads each MODEL_DIR with ``models.artifact.load_model``."""

    dirs: tuple[str, ...]
    runtime: str = "onnxruntime"

    def __call__(self) -> list[Predictor]:
        from models.artifact import load_model

        return [load_model(Path(d), runtime=self.runtime) for d in self.dirs]


def _import_ray() -> Any:
    try:
        import ray
        import ray.data
    except ImportError as exc:
        raise EngineError(f"the Ray engine needs the optional Ray extra: {RAY_EXTRA} ({exc})") from exc
    return ray


class _RayScorer:
    """Ray Data callable class: one per actor, predictors built once in ``__init__``."""

    def __init__(self, factory: PredictorFactory, limits: Any, heatmaps: bool, batch_size: int) -> None:
        self.router = ModelRouter(list(factory()))
        self.limits = limits
        self.heatmaps = heatmaps
        self.batch_size = batch_size

    def _rows(self, tasks: list[ImageTask]) -> list[ScoredRow]:
        rows: list[ScoredRow] = []
        groups: dict[str, list[tuple[ImageTask, Decoded]]] = {}
        for task in tasks:
            route = self.router.route(task.cargo_type)
            if route.predictor is None:
                assert route.error is not None
                rows.append(error_row(task, route.error))
                continue
            assert route.cargo_type is not None
            decoded = decode_task(task.path, self.limits)
            if decoded.error is not None:
                rows.append(
                    error_row(task, decoded.error, cargo_type=route.cargo_type, sha256=decoded.sha256)
                )
            else:
                groups.setdefault(route.cargo_type, []).append((task, decoded))
        for cargo_type, items in groups.items():
            predictor = self.router.route(cargo_type).predictor
            assert predictor is not None
            for start in range(0, len(items), self.batch_size):
                chunk = items[start : start + self.batch_size]
                rows.extend(score_batch(predictor, chunk, heatmaps=self.heatmaps))
        return rows

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        tasks = [
            ImageTask(
                path=os.fsdecode(path),
                shipment_id=str(shipment) or None,
                cargo_type=str(cargo) or None,
                declaration=json.loads(str(declaration)),
            )
            for path, shipment, cargo, declaration in zip(
                batch["path"], batch["shipment_id"], batch["cargo_type"], batch["declaration"], strict=True
            )
        ]
        rows = self._rows(tasks)
        return {
            "row": np.array([row.verdict.model_dump_json() for row in rows], dtype=object),
            "png": np.array([row.heatmap_png or b"" for row in rows], dtype=object),
        }


def _item(task: ImageTask) -> dict[str, str | bytes]:
    # Empty strings, not None: Ray Data's numpy batches keep strings as strings. The path travels as
    # the file system's bytes: a name that is not UTF-8 has surrogates no Arrow string can hold.
    return {
        "path": os.fsencode(task.path),
        "shipment_id": task.shipment_id or "",
        "cargo_type": task.cargo_type or "",
        "declaration": json.dumps(task.declaration, sort_keys=True),
    }


def _clearsight_cause(exc: BaseException) -> ClearsightError | None:
    """The ClearsightError an actor raised, unwrapped from Ray's wrappers, if there is one."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, ClearsightError):
            return current
        seen.add(id(current))
        cause = getattr(current, "cause", None)
        current = cause if isinstance(cause, BaseException) else current.__cause__
    return None


class RayEngine:
    """Scores tasks on Ray Data with an actor pool.

    Args:
        factory: builds the predictors in each actor (:class:`ModelDirs` for MODEL_DIRs).
        address: join this Ray cluster; ``None`` starts a local Ray (``num_cpus``, no dashboard,
            quiet) for the run and stops it afterwards.
        actors: actors in the pool.
        batch_size: images per ``predict`` call (and per Ray batch).
        limits: the decoder's limits.
        window: images handed to Ray Data at a time (bounds the driver's memory).
        num_cpus: CPUs of the local Ray.
    """

    peak_in_flight = 0

    def __init__(
        self,
        factory: PredictorFactory,
        *,
        address: str | None = None,
        actors: int = 1,
        batch_size: int = 8,
        limits: Any = None,
        window: int = 4096,
        num_cpus: int = 2,
    ) -> None:
        sizes = {"actors": actors, "batch_size": batch_size, "window": window, "num_cpus": num_cpus}
        for name, value in sizes.items():
            if value < 1:
                raise InputError(f"Ray engine {name} must be at least 1, got {value}")
        self.factory = factory
        self.address = address
        self.actors = actors
        self.batch_size = batch_size
        self.limits = limits
        self.window = window
        self.num_cpus = num_cpus

    def _start(self, ray: Any) -> bool:
        """Connect to Ray; True when this engine started it (and must stop it)."""
        if ray.is_initialized():
            return False
        try:
            if self.address:
                ray.init(address=self.address, logging_level=logging.ERROR, log_to_driver=False)
            else:
                ray.init(
                    num_cpus=self.num_cpus,
                    include_dashboard=False,
                    logging_level=logging.ERROR,
                    log_to_driver=False,
                )
        except Exception as exc:
            where = f"the Ray cluster at {self.address!r}" if self.address else "a local Ray"
            raise EngineError(f"could not start {where}: {type(exc).__name__}: {exc}") from exc
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False
        return True

    def run(self, tasks: Iterable[ImageTask], *, heatmaps: bool = False) -> Iterator[ScoredRow]:
        """Score ``tasks`` window by window, yielding one row per task (order within a window is Ray's)."""
        ray = _import_ray()
        from ray.data import ActorPoolStrategy

        started = self._start(ray)
        try:
            iterator = iter(tasks)
            while window := list(itertools.islice(iterator, self.window)):
                dataset = ray.data.from_items([_item(task) for task in window]).map_batches(
                    _RayScorer,
                    fn_constructor_args=(self.factory, self.limits, heatmaps, self.batch_size),
                    compute=ActorPoolStrategy(size=self.actors),
                    batch_size=self.batch_size,
                    batch_format="numpy",
                )
                try:
                    for record in dataset.iter_rows():
                        png = record["png"]
                        yield ScoredRow(ImageVerdict.model_validate_json(record["row"]), bytes(png) or None)
                except ClearsightError:
                    raise
                except Exception as exc:
                    cause = _clearsight_cause(exc)
                    if cause is not None:
                        raise cause from exc
                    raise EngineError(f"the Ray engine failed: {type(exc).__name__}: {exc}") from exc
        finally:
            if started:
                ray.shutdown()
