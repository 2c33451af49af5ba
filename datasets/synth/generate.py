"""Write a synthetic dataset: MVTec layout per cargo type, ``manifest.csv`` and ``dataset.json``.

Layout under ``out``::

    <cargo>/train/good/000000.png            normal training images
    <cargo>/train/<type>/000000.png          labelled anomalous training images (never held-out types)
    <cargo>/test/good/, <cargo>/test/<type>/ the test images (every anomaly type)
    <cargo>/ground_truth/<type>/<stem>_mask.png   0/255 masks of every anomalous image
    manifest.csv                              the test images grouped into shipments
    dataset.json                              generator version, seed, arguments, counts, per-image facts

Stems are numbered per cargo and type across splits (train first), so a train and a test image of
the same type never share a mask name. Each image's seed is spawned from (seed, cargo, split, type,
index), so the same arguments give byte-identical files whatever the number of workers.
"""

from __future__ import annotations

import csv
import json
import multiprocessing
import os
import re
from collections.abc import Callable, Collection
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from datasets.errors import CargoTypeError, ClearsightError, InputError
from datasets.synth.sample import ANOMALY_TYPES, CARGO_TYPES, GOOD, render_sample
from datasets.synth.shipments import MANIFEST_COLUMNS, ManifestImage, build_shipments

__all__ = [
    "GENERATOR_NAME",
    "GENERATOR_VERSION",
    "SynthConfig",
    "SynthSummary",
    "generate_dataset",
    "listed_files",
    "not_generated",
    "plan_jobs",
    "planned_files",
    "written_by_generator",
]

GENERATOR_NAME = "clearsight.datasets.synth"
"""``dataset.json``'s ``generator``: how a folder this module wrote is told from another tool's."""
GENERATOR_VERSION = "2.1"
_SPLITS = ("train", "test")
_META_NEXT = ".dataset.json.tmp"  # dataset.json being written, renamed into place once whole
_PNG = [cv2.IMWRITE_PNG_COMPRESSION, 6]


@dataclass(frozen=True)
class SynthConfig:
    """Arguments of one generation run; validated on construction.

    Counts are per cargo type; the anomalous counts are per anomaly type.
    """

    out: Path
    cargo: tuple[str, ...] = CARGO_TYPES
    seed: int = 0
    size: int = 256
    train_good: int = 100
    train_anomalous: int = 0
    test_good: int = 40
    test_anomalous: int = 10
    holdout_types: tuple[str, ...] = ()
    workers: int = 2

    def __post_init__(self) -> None:
        for c in self.cargo:
            if c not in CARGO_TYPES:
                raise CargoTypeError(f"unknown cargo type {c!r}; accepted: {', '.join(CARGO_TYPES)}, all")
        if not self.cargo:
            raise CargoTypeError(f"no cargo type given; accepted: {', '.join(CARGO_TYPES)}, all")
        known = sorted({t for c in self.cargo for t in ANOMALY_TYPES[c]})
        for t in self.holdout_types:
            if t not in known:
                raise InputError(
                    f"unknown holdout type {t!r}; accepted for {', '.join(self.cargo)}: {', '.join(known)}"
                )
        if not 64 <= self.size <= 4096:
            raise InputError(f"--size {self.size} is out of range; accepted: 64 to 4096 pixels")
        for name in ("train_good", "train_anomalous", "test_good", "test_anomalous"):
            value = getattr(self, name)
            least = 1 if name == "train_good" else 0
            if value < 0:
                raise InputError(
                    f"--{name.replace('_', '-')} {value} is negative; accepted: {least} or more images"
                )
        if self.train_good < 1:
            # the MVTec layout needs train/good: a dataset without it could not be trained on
            raise InputError(
                "--train-good 0 writes a dataset no model can be trained on; accepted: 1 or more"
            )
        if self.test_good + self.test_anomalous < 1:
            raise InputError(
                "--test-good and --test-anomalous are both 0: the manifest would hold no shipment; "
                "accepted: 1 or more test images"
            )
        if self.workers < 1:
            raise InputError(f"--workers {self.workers} is out of range; accepted: 1 or more")
        if self.seed < 0:
            raise InputError(f"--seed {self.seed} is negative; accepted: 0 or more")

    def counts(self) -> dict[str, dict[str, dict[str, int]]]:
        """Planned image count per cargo, split and type (types with no images left out)."""
        out: dict[str, dict[str, dict[str, int]]] = {}
        for c in self.cargo:
            train = {GOOD: self.train_good}
            train.update({t: self.train_anomalous for t in ANOMALY_TYPES[c] if t not in self.holdout_types})
            test = {GOOD: self.test_good}
            test.update(dict.fromkeys(ANOMALY_TYPES[c], self.test_anomalous))
            out[c] = {s: {k: v for k, v in d.items() if v > 0} for s, d in (("train", train), ("test", test))}
        return out


@dataclass(frozen=True)
class _Job:
    root: str
    cargo: str
    split: str
    anomaly_type: str
    index: int  # within (cargo, split, type): part of the seed
    stem: int  # within (cargo, type) across splits: the file name
    seed: int
    size: int


@dataclass(frozen=True)
class SynthSummary:
    """What a run wrote."""

    root: Path
    images: int
    counts: dict[str, dict[str, dict[str, int]]] = field(default_factory=dict)


def plan_jobs(config: SynthConfig) -> list[_Job]:
    """Every image of the run, in a fixed order (cargo, split, type, index)."""
    jobs: list[_Job] = []
    for cargo, splits in config.counts().items():
        stems: dict[str, int] = {}
        for split in _SPLITS:
            for anomaly_type, n in splits[split].items():
                for i in range(n):
                    stem = stems.get(anomaly_type, 0)
                    stems[anomaly_type] = stem + 1
                    jobs.append(
                        _Job(str(config.out), cargo, split, anomaly_type, i, stem, config.seed, config.size)
                    )
    return jobs


def planned_files(config: SynthConfig) -> list[str]:
    """The images and masks :func:`generate_dataset` will write for ``config``, as paths relative to
    ``config.out`` in :func:`plan_jobs`' order (what ``dataset.json`` lists once it is written)."""
    files: list[str] = []
    for job in plan_jobs(config):
        files.append(_image_rel(job))
        if job.anomaly_type != GOOD:
            files.append(_mask_rel(job))
    return files


def _image_rel(job: _Job) -> str:
    return f"{job.cargo}/{job.split}/{job.anomaly_type}/{job.stem:06d}.png"


def _mask_rel(job: _Job) -> str:
    return f"{job.cargo}/ground_truth/{job.anomaly_type}/{job.stem:06d}_mask.png"


def _seed_for(job: _Job) -> np.random.SeedSequence:
    cargo_i = CARGO_TYPES.index(job.cargo)
    type_i = ([GOOD, *ANOMALY_TYPES[job.cargo]]).index(job.anomaly_type)
    return np.random.SeedSequence(job.seed, spawn_key=(cargo_i, _SPLITS.index(job.split), type_i, job.index))


def _write_png(path: Path, pixels: np.ndarray) -> None:
    img = pixels[..., ::-1] if pixels.ndim == 3 else pixels
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(img), _PNG)
    if not ok:
        raise ClearsightError(f"OpenCV could not PNG-encode {path} ({pixels.dtype}, shape {pixels.shape})")
    try:
        path.write_bytes(buf.tobytes())
    except OSError as exc:
        raise InputError(
            f"cannot write {path}: {exc.strerror}; check that the output folder is writable"
        ) from exc


def _run_job(job: _Job) -> dict[str, Any]:
    """Render and write one image (and its mask); returns its dataset.json entry."""
    sample = render_sample(job.cargo, job.anomaly_type, seed=_seed_for(job), size=job.size)
    root = Path(job.root)
    rel = _image_rel(job)
    _write_png(root / rel, sample.image)
    mask_rel = ""
    if job.anomaly_type != GOOD:
        mask_rel = _mask_rel(job)
        _write_png(root / mask_rel, sample.mask)
    return {
        "path": rel,
        "mask_path": mask_rel,
        "cargo_type": job.cargo,
        "split": job.split,
        "anomaly_type": job.anomaly_type,
        "variant": sample.variant,
        "bit_depth": 16 if sample.image.dtype == np.uint16 else 8,
        "severity": None if sample.severity is None else round(sample.severity, 4),
        "detail": sample.detail,
    }


def _init_worker() -> None:
    # One OpenCV thread per worker: the pool already uses every core we were given.
    cv2.setNumThreads(1)


def generate_dataset(
    config: SynthConfig, *, progress: Callable[[int, int], None] | None = None
) -> SynthSummary:
    """Render the dataset described by ``config`` into ``config.out``.

    Args:
        progress: called as ``progress(done, total)`` after each image.

    Raises:
        InputError: the output folder cannot be written.
    """
    root = config.out
    jobs = plan_jobs(config)
    try:
        root.mkdir(parents=True, exist_ok=True)
        for folder in sorted(
            {Path(j.cargo) / j.split / j.anomaly_type for j in jobs}
            | {Path(j.cargo) / "ground_truth" / j.anomaly_type for j in jobs if j.anomaly_type != GOOD}
        ):
            (root / folder).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"cannot create the output folder {root}: {exc.strerror}") from exc
    total = len(jobs)
    entries: list[dict[str, Any]] = []
    if config.workers == 1 or total < 8:
        for job in jobs:
            entries.append(_run_job(job))
            if progress:
                progress(len(entries), total)
    else:
        ctx = multiprocessing.get_context("spawn")  # fork is unsafe with OpenCV's and torch's threads
        chunk = max(1, min(8, total // (config.workers * 4)))
        with ctx.Pool(config.workers, initializer=_init_worker) as pool:
            for entry in pool.imap(_run_job, jobs, chunksize=chunk):
                entries.append(entry)
                if progress:
                    progress(len(entries), total)
    _write_manifest(root / "manifest.csv", config, entries)
    meta = {
        "generator": GENERATOR_NAME,
        "generator_version": GENERATOR_VERSION,
        "seed": config.seed,
        "arguments": {
            k: (list(v) if isinstance(v, tuple) else v)
            for k, v in asdict(config).items()
            if k not in ("out", "workers")
        },
        "holdout_types": list(config.holdout_types),
        "anomaly_types": {c: list(ANOMALY_TYPES[c]) for c in config.cargo},
        "counts": config.counts(),
        "images": entries,
    }
    # written whole, then renamed into place: one cut short (Ctrl-C, a full disk) left a dataset.json
    # that named no generator, and --overwrite refused the folder as another tool's
    text = json.dumps(meta, indent=2, sort_keys=True) + "\n"
    try:
        (root / _META_NEXT).write_text(text, encoding="utf-8")
        os.replace(root / _META_NEXT, root / "dataset.json")
    except OSError as exc:
        raise InputError(
            f"cannot write {root / 'dataset.json'}: {exc.strerror}; check that the output folder is writable"
        ) from exc
    return SynthSummary(root, total, config.counts())


def _write_manifest(path: Path, config: SynthConfig, entries: list[dict[str, Any]]) -> None:
    rows: list[dict[str, Any]] = []
    for cargo in config.cargo:
        images = [
            ManifestImage(e["path"], e["anomaly_type"], e["mask_path"])
            for e in entries
            if e["cargo_type"] == cargo and e["split"] == "test"
        ]
        rows += build_shipments(images, cargo=cargo, seed=config.seed, cargo_index=CARGO_TYPES.index(cargo))
    with path.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(MANIFEST_COLUMNS), lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow(
                {k: ("true" if v is True else "false" if v is False else v) for k, v in row.items()}
            )


_IMAGE_NAME = re.compile(r"\d{6}\.png")
_MASK_NAME = re.compile(r"\d{6}_mask\.png")


def written_by_generator(root: Path) -> bool:
    """Whether ``root/dataset.json`` is one :func:`generate_dataset` wrote (its ``generator`` says so);
    other tools (nnU-Net, Hugging Face) write a ``dataset.json`` too."""
    return _generator_meta(root) is not None


def listed_files(root: Path) -> frozenset[str] | None:
    """The images and masks ``root/dataset.json`` lists (each image's ``path`` and ``mask_path``,
    relative to ``root``); None where it is not one :func:`generate_dataset` wrote. An entry that is
    not a path lists nothing."""
    meta = _generator_meta(root)
    if meta is None:
        return None
    images = meta.get("images")
    listed: set[str] = set()
    for entry in images if isinstance(images, list) else []:
        if isinstance(entry, dict):
            listed.update(v for k in ("path", "mask_path") if isinstance(v := entry.get(k), str) and v)
    return frozenset(listed)


def _generator_meta(root: Path) -> dict[str, Any] | None:
    try:
        meta = json.loads((root / "dataset.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    return meta if isinstance(meta, dict) and meta.get("generator") == GENERATOR_NAME else None


def not_generated(root: Path, *, files: Collection[str], also: Collection[str] = ()) -> list[str]:
    """What under ``root`` :func:`generate_dataset` did not write, as sorted paths relative to it.

    The generator writes ``dataset.json`` (through a hidden ``.dataset.json.tmp``), ``manifest.csv``
    and, per cargo type, ``train/<type>/`` and
    ``test/<type>/`` folders of ``NNNNNN.png`` and ``ground_truth/<anomaly type>/`` folders of
    ``NNNNNN_mask.png``. A file there counts as its own only where ``files`` (paths relative to
    ``root``: what its ``dataset.json`` lists, :func:`listed_files`, or what a run planned,
    :func:`planned_files`) names it: an image of such a name that someone added beside the dataset
    is theirs. Anything else (a link, another file, a folder of another name) is listed, a folder
    once without what it holds. ``also`` names more top-level files to accept (a marker).
    """
    listed = frozenset(files)

    def entries(folder: Path) -> list[os.DirEntry[str]]:
        with os.scandir(folder) as it:
            return sorted(it, key=lambda e: e.name)

    def rel(entry: os.DirEntry[str]) -> str:
        return Path(entry.path).relative_to(root).as_posix()

    def plain_dir(entry: os.DirEntry[str]) -> bool:
        return entry.is_dir(follow_symlinks=False)

    def plain_file(entry: os.DirEntry[str]) -> bool:
        return entry.is_file(follow_symlinks=False)

    other: list[str] = []
    for top in entries(root):
        if top.name in ("dataset.json", _META_NEXT, "manifest.csv", *also) and plain_file(top):
            continue
        if top.name not in CARGO_TYPES or not plain_dir(top):
            other.append(rel(top) + ("/" if top.is_dir() else ""))
            continue
        types = {"train": (GOOD, *ANOMALY_TYPES[top.name]), "test": (GOOD, *ANOMALY_TYPES[top.name])}
        types["ground_truth"] = ANOMALY_TYPES[top.name]
        for split in entries(Path(top.path)):
            if split.name not in types or not plain_dir(split):
                other.append(rel(split) + ("/" if split.is_dir() else ""))
                continue
            name = _MASK_NAME if split.name == "ground_truth" else _IMAGE_NAME
            for kind in entries(Path(split.path)):
                if kind.name not in types[split.name] or not plain_dir(kind):
                    other.append(rel(kind) + ("/" if kind.is_dir() else ""))
                    continue
                other += [
                    rel(f) + ("/" if f.is_dir() else "")
                    for f in entries(Path(kind.path))
                    if not (plain_file(f) and name.fullmatch(f.name) and rel(f) in listed)
                ]
    return other
