"""The saved model: one directory, ``weights.safetensors`` + ``model.json``, and nothing pickled.

``weights.safetensors`` holds every tensor of the :class:`~models.detector.Detector` — backbone
weights included, so loading never needs the backbone package's weights file (the card records that
file's sha256 for provenance). ``model.json`` is the model card: ids, preprocessing, detector config,
thresholds, validation metrics, training-data summary, versions, and two hashes:

* ``weights_sha256``: of ``weights.safetensors``; a changed or truncated file is refused;
* ``card_sha256``: of the card's own canonical JSON without that field; an edited card (say, a
  lowered threshold) is refused.

``model_id`` is ``<cargo>-<backbone>-<first 8 hex of the content hash>``, the content hash covering the
weights hash, the detector config, the preprocessing and the thresholds.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from safetensors.torch import save_file

from datasets.errors import ArtifactError, ModelError
from models.detector import Detector, DetectorConfig, build_detector
from models.predictor import ArtifactPredictor
from models.runtime import DEFAULT_RUNTIME, RUNTIMES

__all__ = ["CARD_FILE", "FORMAT_VERSION", "WEIGHTS_FILE", "load_model", "read_card", "save_artifact"]

FORMAT_VERSION = 5
"""Format 5: patch embeddings average counting the feature maps' zero padding
(``DetectorConfig.zero_padded_pooling``). A format-4 model would load into a detector that embeds
its images differently from its memory bank, so it is refused: train it again."""
WEIGHTS_FILE = "weights.safetensors"
CARD_FILE = "model.json"


def _canonical(data: Mapping[str, Any]) -> bytes:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _card_hash(card: Mapping[str, Any]) -> str:
    return hashlib.sha256(_canonical({k: v for k, v in card.items() if k != "card_sha256"})).hexdigest()


def save_artifact(out_dir: str | Path, detector: Detector, card: Mapping[str, Any]) -> Path:
    """Write ``detector`` and its card to ``out_dir`` (created; existing model files replaced).

    Args:
        out_dir: the model directory.
        detector: the fitted detector.
        card: card fields (``cargo_type``, ``preprocessing``, ``thresholds``, metrics, ...);
            this function adds ``format_version``, ``detector``, ``weights_sha256``, ``model_id``
            and ``card_sha256``.

    Returns:
        The model directory.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().contiguous().clone() for k, v in detector.state_dict().items()}
    tmp = out / (WEIGHTS_FILE + ".tmp")
    save_file(tensors, str(tmp))
    os.replace(tmp, out / WEIGHTS_FILE)
    full = dict(card)
    full["format_version"] = FORMAT_VERSION
    full["detector"] = detector.config.to_dict()
    full["weights_sha256"] = _sha256_file(out / WEIGHTS_FILE)
    content = _content_hash(full)
    full["content_sha256"] = content
    full["model_id"] = f"{full.get('cargo_type', 'cargo')}-{detector.config.backbone}-{content[:8]}"
    full.pop("card_sha256", None)
    full["card_sha256"] = _card_hash(full)
    tmp_card = out / (CARD_FILE + ".tmp")
    tmp_card.write_text(json.dumps(full, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp_card, out / CARD_FILE)
    # safetensors writes its file owner-only (0600): give the weights the card's mode (the umask's),
    # so that a service account that may read the card may read the weights too
    os.chmod(out / WEIGHTS_FILE, stat.S_IMODE(os.stat(out / CARD_FILE).st_mode))
    return out


def _content_hash(card: dict[str, Any]) -> str:
    """sha256 of what decides a model's scores and verdicts: weights, detector, preprocessing, thresholds."""
    return hashlib.sha256(
        _canonical(
            {
                "weights": card.get("weights_sha256"),
                "detector": card.get("detector"),
                "preprocessing": card.get("preprocessing"),
                "thresholds": card.get("thresholds"),
            }
        )
    ).hexdigest()


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _check_card(card: dict[str, Any], card_path: Path) -> None:
    """The model id must name the card's content, and the numbers that decide verdicts must be sane.

    The card's own hash catches an accidental edit; an edit that recomputes it must still change the
    model id (so decisions name the model that made them) and keep thresholds and normalisation in
    range (a release cut above the hold cut, or a zero std, would score nonsense without an error).
    """
    where = repr(str(card_path))
    content = _content_hash(card)
    model_id = str(card.get("model_id", ""))
    backbone = (card.get("detector") or {}).get("backbone")
    if model_id != f"{card.get('cargo_type', 'cargo')}-{backbone}-{str(card.get('content_sha256'))[:8]}":
        raise ArtifactError(
            f"{where}: model id {model_id!r} does not name its cargo type {card.get('cargo_type')!r} and "
            f"backbone {backbone!r} (the cargo type decides which images it scores); train the model again"
        )
    if card.get("content_sha256") != content:
        raise ArtifactError(
            f"{where}: its weights, detector, preprocessing or thresholds were changed after training "
            f"(content hash {content[:12]}..., the card says {str(card.get('content_sha256'))[:12]}... "
            f"and model id {model_id!r}); train the model again"
        )
    thresholds = card.get("thresholds") or {}
    release, hold = thresholds.get("release"), thresholds.get("hold")
    if not (_finite(release) and _finite(hold) and 0.0 <= release <= hold <= 1.0):
        raise ArtifactError(
            f"{where}: thresholds release {release!r} / hold {hold!r} are not 0 <= release <= hold <= 1"
        )
    detector = card.get("detector") or {}
    mean, std = detector.get("mean"), detector.get("std")
    if not (
        isinstance(mean, list | tuple)
        and isinstance(std, list | tuple)
        and len(mean) == len(std) == 3
        and all(_finite(m) for m in mean)
        and all(_finite(s) and s > 0 for s in std)
    ):
        raise ArtifactError(
            f"{where}: normalisation mean {mean!r} / std {std!r} is not three finite numbers, std > 0"
        )


def read_card(model_dir: str | Path) -> dict[str, Any]:
    """Read and verify ``model.json`` (format version and self-hash); does not read the weights."""
    root = Path(model_dir)
    card_path = root / CARD_FILE
    if not root.is_dir():
        raise ArtifactError(
            f"model directory {str(root)!r} does not exist; expected a folder with {CARD_FILE}"
        )
    if not card_path.is_file():
        raise ArtifactError(f"{str(card_path)!r} is missing; expected the model card written by training")
    try:
        card = json.loads(card_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"{str(card_path)!r} is not valid JSON: {exc}") from exc
    if not isinstance(card, dict):
        raise ArtifactError(f"{str(card_path)!r} must hold a JSON object")
    if card.get("format_version") != FORMAT_VERSION:
        raise ArtifactError(
            f"{str(card_path)!r} has format_version {card.get('format_version')!r}; "
            f"expected {FORMAT_VERSION} (train the model again with this version of clearsight)"
        )
    expected = card.get("card_sha256")
    actual = _card_hash(card)
    if expected != actual:
        raise ArtifactError(
            f"{str(card_path)!r} was modified: its content hash is {actual}, the card says {expected!r}"
        )
    _check_card(card, card_path)
    return card


def load_model(
    model_dir: str | Path, *, batch_size: int = 16, runtime: str = DEFAULT_RUNTIME
) -> ArtifactPredictor:
    """Load and verify a model directory.

    Args:
        model_dir: the artifact directory.
        batch_size: views per forward pass.
        runtime: what executes the scoring graph, one of :data:`models.runtime.RUNTIMES`:
            ``"onnxruntime"`` (default; traced in memory and checked against PyTorch on load) or
            ``"torch"``.

    Raises:
        ArtifactError: a missing file, an edited card, a weights file whose sha256 differs from the
            card's (truncated or tampered), or tensors that do not fit the detector config.
        ModelError: an unknown runtime, or an ONNX Runtime graph that disagrees with PyTorch.
    """
    if runtime not in RUNTIMES:
        raise ModelError(f"unknown runtime {runtime!r}; accepted: {list(RUNTIMES)}")
    root = Path(model_dir)
    card = read_card(root)
    weights = root / WEIGHTS_FILE
    if not weights.is_file():
        raise ArtifactError(f"{str(weights)!r} is missing; expected the weights written with {CARD_FILE}")
    # Read once, then hash and parse the same bytes: opened twice, a `train --overwrite` swapping the
    # folder in between gave the new weights under the old card (checked against the old hash).
    try:
        data = weights.read_bytes()
    except OSError as exc:
        raise ArtifactError(f"{str(weights)!r} cannot be read: {exc.strerror or exc}") from exc
    actual = hashlib.sha256(data).hexdigest()
    if actual != card.get("weights_sha256"):
        raise ArtifactError(
            f"{str(weights)!r} has sha256 {actual}, expected {card.get('weights_sha256')!r} "
            f"(truncated, replaced or modified)"
        )
    try:
        config = DetectorConfig.from_dict(card["detector"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ArtifactError(f"{str(root / CARD_FILE)!r} has an unusable detector config: {exc}") from exc
    try:
        tensors = load_safetensors(data)
    except SafetensorError as exc:
        raise ArtifactError(f"{str(weights)!r} cannot be read as safetensors: {exc}") from exc
    del data  # the tensors are copies: the file's bytes need not stay in memory beside them
    detector = build_detector(config)
    try:
        detector.load_state_dict(tensors, strict=True)
    except RuntimeError as exc:
        raise ArtifactError(f"{str(weights)!r} does not fit the detector in the card: {exc}") from exc
    return ArtifactPredictor(detector.eval(), card, batch_size=batch_size, runtime=runtime)
