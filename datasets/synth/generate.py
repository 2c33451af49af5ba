"""Write a synthetic dataset: MVTec layout per cargo type, ``manifest.csv`` and ``dataset.json``.

Layout under ``out``::

    <cargo>/train/good/000000.png            normal training images
    <cargo>/train/<type>/000000.png          labelled anomalous training images (never held-out types)
    <cargo>/test/good/, <cargo>/test/<type>/ the test images (every anomaly type)
    <cargo>/ground_truth/<type>/<stem>_mask.png   0/255 masks of every anomalous image
    manifest.csv                              the test images grouped into shipments
    dataset.json                              generator version, seed, arguments, counts, per-image facts
                                              (each image's and mask's sha256 among them), and
                                              manifest.csv's sha256

Stems are numbered per cargo and type across splits (train first), so a train and a test image of
the same type never share a mask name. Each image's seed is spawned from (seed, cargo, split, type,
index), so the same arguments give byte-identical files whatever the number of workers.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import multiprocessing
import os
import re
from collections.abc import Callable, Collection, Mapping
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
    "changed_files",
    "generate_dataset",
    "journaled_files",
    "listed_files",
    "not_generated",
    "plan_jobs",
    "written_by_generator",
]

GENERATOR_NAME = "clearsight.datasets.synth"
"""``dataset.json``'s ``generator``: how a folder this module wrote is told from another tool's."""
GENERATOR_VERSION = "2.2"
_SPLITS = ("train", "test")
_META_NEXT = ".dataset.json.tmp"  # dataset.json being written, renamed into place once whole
_PNG = [cv2.IMWRITE_PNG_COMPRESSION, 6]


MAX_WORKERS = 64
"""The most rendering processes one run starts (as `clearsight serve` caps its workers)."""


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
        if not 1 <= self.workers <= MAX_WORKERS:  # each a process importing OpenCV: 1000 of them swapped
            raise InputError(f"--workers {self.workers} is out of range; accepted: 1 to {MAX_WORKERS}")
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
    journal: str  # the file each written image's sha256 is appended to first; "" for none


@dataclass(frozen=True)
class SynthSummary:
    """What a run wrote."""

    root: Path
    images: int
    counts: dict[str, dict[str, dict[str, int]]] = field(default_factory=dict)


def plan_jobs(config: SynthConfig, *, journal: Path | None = None) -> list[_Job]:
    """Every image of the run, in a fixed order (cargo, split, type, index); ``journal`` as for
    :func:`generate_dataset`."""
    jobs: list[_Job] = []
    for cargo, splits in config.counts().items():
        stems: dict[str, int] = {}
        for split in _SPLITS:
            for anomaly_type, n in splits[split].items():
                for i in range(n):
                    stem = stems.get(anomaly_type, 0)
                    stems[anomaly_type] = stem + 1
                    jobs.append(
                        _Job(
                            str(config.out),
                            cargo,
                            split,
                            anomaly_type,
                            i,
                            stem,
                            config.seed,
                            config.size,
                            "" if journal is None else str(journal),
                        )
                    )
    return jobs


def _image_rel(job: _Job) -> str:
    return f"{job.cargo}/{job.split}/{job.anomaly_type}/{job.stem:06d}.png"


def _mask_rel(job: _Job) -> str:
    return f"{job.cargo}/ground_truth/{job.anomaly_type}/{job.stem:06d}_mask.png"


def _seed_for(job: _Job) -> np.random.SeedSequence:
    cargo_i = CARGO_TYPES.index(job.cargo)
    type_i = ([GOOD, *ANOMALY_TYPES[job.cargo]]).index(job.anomaly_type)
    return np.random.SeedSequence(job.seed, spawn_key=(cargo_i, _SPLITS.index(job.split), type_i, job.index))


def _write_png(job: _Job, rel: str, pixels: np.ndarray) -> str:
    """Write ``pixels`` to ``job.root / rel`` as PNG; returns the file's sha256 (hex).

    The sha256 goes to the journal before the file is written: a run killed in between leaves no
    file of the generator's that its journal does not vouch for. The bytes go to a hidden
    ``.NAME.tmp`` beside the file (:func:`_part_of`), renamed into place once whole: written in
    place, a file cut short (Ctrl-C, a full disk) held other bytes than its journal line, and
    ``--overwrite`` refused it as saved over by the user."""
    path = Path(job.root) / rel
    img = pixels[..., ::-1] if pixels.ndim == 3 else pixels
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(img), _PNG)
    if not ok:
        raise ClearsightError(f"OpenCV could not PNG-encode {path} ({pixels.dtype}, shape {pixels.shape})")
    data = buf.tobytes()
    digest = hashlib.sha256(data).hexdigest()
    try:
        if job.journal:
            _journal(Path(job.journal), rel, digest)
        part = path.with_name(_part_of(path.name))
        part.write_bytes(data)
        os.replace(part, path)
    except OSError as exc:
        raise InputError(
            f"cannot write {exc.filename or path}: {exc.strerror}; check that the output folder is writable"
        ) from exc
    return digest


def _part_of(name: str) -> str:
    """The name an image or mask ``name`` is written under until it is whole."""
    return f".{name}.tmp"


def _journal(journal: Path, rel: str, digest: str) -> None:
    # One line in one write to a file opened for appending: the workers' lines never interleave, and
    # a run killed mid-line leaves a line cut short, which the reader skips.
    line = json.dumps({"path": rel, "sha256": digest}) + "\n"
    fd = os.open(journal, os.O_WRONLY | os.O_APPEND)
    try:
        os.write(fd, line.encode("utf-8"))
    finally:
        os.close(fd)


def journaled_files(text: str) -> dict[str, str]:
    """The files a journal (``text``, as :func:`generate_dataset` appends to it) vouches for: path
    relative to the output folder -> sha256. Lines that are not records (a header, one cut short)
    are skipped; a path written twice keeps its last sha256."""
    found: dict[str, str] = {}
    for line in text.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and _is_path(record.get("path")) and _is_sha256(record.get("sha256")):
            found[record["path"]] = record["sha256"]
    return found


def _is_path(value: object) -> bool:
    return isinstance(value, str) and bool(value)


_SHA256 = re.compile(r"[0-9a-f]{64}")


def _is_sha256(value: object) -> bool:
    return isinstance(value, str) and _SHA256.fullmatch(value) is not None


def _run_job(job: _Job) -> dict[str, Any]:
    """Render and write one image (and its mask); returns its dataset.json entry."""
    sample = render_sample(job.cargo, job.anomaly_type, seed=_seed_for(job), size=job.size)
    rel = _image_rel(job)
    digest = _write_png(job, rel, sample.image)
    mask_rel = mask_digest = ""
    if job.anomaly_type != GOOD:
        mask_rel = _mask_rel(job)
        mask_digest = _write_png(job, mask_rel, sample.mask)
    return {
        "path": rel,
        "sha256": digest,
        "mask_path": mask_rel,
        "mask_sha256": mask_digest,
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
    config: SynthConfig,
    *,
    progress: Callable[[int, int], None] | None = None,
    journal: Path | None = None,
) -> SynthSummary:
    """Render the dataset described by ``config`` into ``config.out``.

    Args:
        progress: called as ``progress(done, total)`` after each image.
        journal: an existing file to which a line (JSON: ``path``, ``sha256``) is appended for each
            image and mask before it is written, so that a run cut short still says which files
            there are its own, and with what content (:func:`journaled_files` reads it back).

    Raises:
        InputError: the output folder cannot be written.
    """
    root = config.out
    jobs = plan_jobs(config, journal=journal)
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
    manifest_sha256 = _write_manifest(root / "manifest.csv", config, entries)
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
        # so that --overwrite can tell a manifest.csv the user edited (a shipment added) from its own
        "manifest_sha256": manifest_sha256,
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


def _write_manifest(path: Path, config: SynthConfig, entries: list[dict[str, Any]]) -> str:
    """Write the manifest of the test images; returns its sha256 (hex)."""
    rows: list[dict[str, Any]] = []
    for cargo in config.cargo:
        images = [
            ManifestImage(e["path"], e["anomaly_type"], e["mask_path"])
            for e in entries
            if e["cargo_type"] == cargo and e["split"] == "test"
        ]
        rows += build_shipments(images, cargo=cargo, seed=config.seed, cargo_index=CARGO_TYPES.index(cargo))
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=list(MANIFEST_COLUMNS), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("true" if v is True else "false" if v is False else v) for k, v in row.items()})
    data = text.getvalue().encode("utf-8")
    path.write_bytes(data)
    return hashlib.sha256(data).hexdigest()


_IMAGE_NAME = re.compile(r"\d{6}\.png")
_MASK_NAME = re.compile(r"\d{6}_mask\.png")


def written_by_generator(root: Path) -> bool:
    """Whether ``root/dataset.json`` is one :func:`generate_dataset` wrote (its ``generator`` says so);
    other tools (nnU-Net, Hugging Face) write a ``dataset.json`` too."""
    return _generator_meta(root) is not None


def listed_files(root: Path) -> dict[str, str | None] | None:
    """The images and masks ``root/dataset.json`` lists, each image's ``path`` and ``mask_path``
    (relative to ``root``) -> the ``sha256`` and ``mask_sha256`` it records, and ``manifest.csv``
    -> its ``manifest_sha256``; None where it is not one :func:`generate_dataset` wrote.

    A dataset.json of a version before 2.2 records no sha256: its files map to None (known by their
    path alone). An entry that is not a path, or whose sha256 is there but is not one, lists
    nothing; so does a ``manifest_sha256`` that is not one, or none (an earlier dataset.json's:
    its manifest.csv is the generator's by its name alone)."""
    meta = _generator_meta(root)
    if meta is None:
        return None
    images = meta.get("images")
    listed: dict[str, str | None] = {}
    for entry in images if isinstance(images, list) else []:
        if not isinstance(entry, dict):
            continue
        for key, hash_key in (("path", "sha256"), ("mask_path", "mask_sha256")):
            path, digest = entry.get(key), entry.get(hash_key)
            if _is_path(path) and (hash_key not in entry or _is_sha256(digest)):
                listed[path] = digest
    if _is_sha256(meta.get("manifest_sha256")):
        listed["manifest.csv"] = meta["manifest_sha256"]
    return listed


def changed_files(root: Path, files: Mapping[str, str | None]) -> list[str]:
    """Which of ``files`` (paths relative to ``root`` -> the sha256 the generator recorded for them,
    None for none) hold other bytes than it wrote, as sorted paths; a file that is not there, or not
    a plain file (:func:`not_generated` names those), or has no sha256 recorded, is not listed.

    A file saved by someone under a name the generator gives is not its own, and must not go with
    its dataset."""
    changed: list[str] = []
    for rel, digest in sorted(files.items()):
        path = root / rel
        if digest is None or path.is_symlink() or not path.is_file():
            continue
        try:
            with path.open("rb") as fh:
                held = hashlib.file_digest(fh, "sha256").hexdigest()
        except OSError:
            held = None  # one that cannot be read cannot be told for the generator's
        if held != digest:
            changed.append(rel)
    return changed


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
    ``root``: what its ``dataset.json`` lists, :func:`listed_files`, or what a run's journal
    vouches for, :func:`journaled_files`) names it: an image of such a name that someone added
    beside the dataset is theirs. So does a hidden ``.NNNNNN.png.tmp`` (``.NNNNNN_mask.png.tmp``)
    where ``files`` names the image (mask) it was being written as: a run killed mid-write leaves
    it. Whether a file named so still holds what was written there is :func:`changed_files`' to say.
    Anything else (a link, another file, a folder of another name) is listed, a folder once without
    what it holds. ``also`` names more top-level files to accept (a marker).
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

    def own(folder: str, file_name: str, name: re.Pattern[str]) -> bool:
        # a hidden .NAME.tmp is NAME being written: its journal line went first, so it is listed
        part = file_name.startswith(".") and file_name.endswith(".tmp")
        final = file_name[1 : -len(".tmp")] if part else file_name
        return name.fullmatch(final) is not None and f"{folder}/{final}" in listed

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
                    if not (plain_file(f) and own(rel(kind), f.name, name))
                ]
    return other
