"""The saved model: one directory, ``weights.safetensors`` + ``model.json``, and nothing pickled.

``weights.safetensors`` holds every tensor of the :class:`~models.detector.Detector` — backbone
weights included, so loading never needs the backbone package's weights file (the card records that
file's sha256 for provenance). ``model.json`` is the model card: ids, preprocessing, detector config,
thresholds, validation metrics, training-data summary, versions, and two hashes:

* ``weights_sha256``: of ``weights.safetensors``; a changed or truncated file is refused;
* ``card_sha256``: of the card's own canonical JSON without that field; an edited card (say, a
  lowered threshold) is refused.

Since anyone can recompute both, every field that loading and scoring read is checked too, for its
type and range, and the sizes the detector is built to against the tensors the weights hold (finite
numbers, every one): a card that fails is refused with an :class:`~datasets.errors.ArtifactError`
naming the field, and :func:`save_artifact` refuses to write one.

``model_id`` is ``<cargo>-<backbone>-<first 16 hex of the content hash>`` (formats 5 and 6: 8 hex),
the content hash covering the weights hash, the detector config, the preprocessing, the thresholds,
the cargo type and the pseudo-anomaly types: every card field that scoring reads (format 5 cards:
the first four).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from datasets.errors import ArtifactError, ModelError
from datasets.shown_text import unshown_character
from datasets.type_names import PSEUDO_PREFIX
from models.detector import Detector, DetectorConfig, build_detector
from models.predictor import ArtifactPredictor
from models.registry import list_models
from models.runtime import DEFAULT_RUNTIME, RUNTIMES
from models.tiling import MAX_TILE_ENLARGEMENT, SIXTEEN_BITS, min_tile_size
from models.weights import read_bounded

__all__ = [
    "CARD_FILE",
    "FORMAT_VERSION",
    "ID_HEX_DIGITS",
    "PSEUDO_PREFIX",
    "READABLE_FORMATS",
    "WEIGHTS_FILE",
    "load_model",
    "pseudo_types_of",
    "read_card",
    "save_artifact",
]

FORMAT_VERSION = 7
"""Format 7: the model id carries the first :data:`ID_HEX_DIGITS` (16) hex digits of the content hash,
64 bits, where formats 5 and 6 carried 8: a policy approves models by their id alone, and the content
hash covers free-text fields (``thresholds.method``), so someone who could write a model folder
raised its release threshold and searched such a field for a value that brought back an approved
8-hex id (6 of 8 hex digits matched in under a second, all 8 in some 14 CPU-minutes); a second
preimage of 64 bits is out of reach. Formats 5 and 6 still load under their 8-hex ids, but a policy
no longer approves an 8-hex id (``pipeline.policy``).

Format 6: the content hash, and so the model id, covers every card field scoring reads: the cargo
type and ``training.pseudo_types`` too (an edit of the pseudo types, which turn a detected type into
"unknown", changed verdicts under the same id). Format 5 models load as they are, their content hash
kept to its own rule so that their ids do not change, if their pseudo types are the ones training
wrote (:func:`pseudo_types_of`); format 4 and older are refused (format 5's
patch embeddings count the feature maps' zero padding, ``DetectorConfig.zero_padded_pooling``)."""
READABLE_FORMATS = (5, 6, FORMAT_VERSION)
ID_HEX_DIGITS = 16
"""Hex digits of the content hash a format 7 model id ends with."""
WEIGHTS_FILE = "weights.safetensors"
CARD_FILE = "model.json"


def _canonical(data: Mapping[str, Any]) -> bytes:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def _card_hash(card: Mapping[str, Any]) -> str:
    return hashlib.sha256(_canonical({k: v for k, v in card.items() if k != "card_sha256"})).hexdigest()


def _id_digits(card: Mapping[str, Any]) -> int:
    """Hex digits of the content hash in the model id of a card of its format."""
    # formats 5 and 6 were written with 8; their ids must not change
    return 8 if card.get("format_version") in (5, 6) else ID_HEX_DIGITS


def _model_id(card: Mapping[str, Any], backbone: Any) -> str:
    """The model id a card of its format, cargo type, backbone and content hash has."""
    return f"{card.get('cargo_type')}-{backbone}-{str(card.get('content_sha256'))[: _id_digits(card)]}"


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
    tensors = {k: v.detach().contiguous().clone() for k, v in detector.state_dict().items()}
    weights = save_safetensors(tensors)
    full = dict(card)
    full["format_version"] = FORMAT_VERSION
    full["detector"] = detector.config.to_dict()
    full["weights_sha256"] = hashlib.sha256(weights).hexdigest()
    content = _content_hash(full)
    full["content_sha256"] = content
    full["model_id"] = _model_id(full, detector.config.backbone)
    full.pop("card_sha256", None)
    full["card_sha256"] = _card_hash(full)
    text = json.dumps(full, indent=2, sort_keys=True) + "\n"
    # checked as load_model will read it, before anything is written: a card it would refuse (a
    # cargo type with a slash in it) is refused here, not after training replaced a working model
    _check_card(json.loads(text), out / CARD_FILE)
    # the tensors are the detector's own: their dtypes are the built ones, no second state_dict needed
    _check_sizes(detector.config, tensors, out / CARD_FILE, out / WEIGHTS_FILE, tensors)
    _check_finite(tensors, out)
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / (WEIGHTS_FILE + ".tmp")
    tmp.write_bytes(weights)
    os.replace(tmp, out / WEIGHTS_FILE)
    tmp_card = out / (CARD_FILE + ".tmp")
    tmp_card.write_text(text, encoding="utf-8")
    os.replace(tmp_card, out / CARD_FILE)
    return out


def _content_hash(card: dict[str, Any]) -> str:
    """sha256 of what decides a model's scores and verdicts: weights, detector, preprocessing,
    thresholds and, from format 6 on, the cargo type and the pseudo-anomaly types."""
    content = {
        "weights": card.get("weights_sha256"),
        "detector": card.get("detector"),
        "preprocessing": card.get("preprocessing"),
        "thresholds": card.get("thresholds"),
    }
    if card.get("format_version") != 5:  # format 5 ids were made without them, and must not change
        training = card.get("training")
        content["cargo_type"] = card.get("cargo_type")
        content["pseudo_types"] = training.get("pseudo_types", []) if isinstance(training, dict) else training
    return hashlib.sha256(_canonical(content)).hexdigest()


def pseudo_types_of(class_names: list[str]) -> list[str]:
    """The pseudo types training writes for a detector of ``class_names``: its synthetic classes, in
    order (the verdicts report them as "unknown", not as a detected type)."""
    return [name for name in class_names if name.startswith(PSEUDO_PREFIX)]


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


MAX_INPUT_SIZE = 1024
"""Largest model input side a card may give: the largest training writes
(``pipeline.resolution.MAX_IMAGE_SIZE``); views are S x S, so S bounds every view's memory."""
MIN_INPUT_SIZE = 32
"""Smallest model input side a card may give: the smallest training writes."""
MAX_CARGO_TYPE = 64
"""Longest cargo type a card may give: the longest the service's form and the policy accept."""
_MIN_CHUNK = 32
"""Fewest memory-bank rows per matmul (unless the bank has fewer): the chunk loop runs per batch and
is unrolled into the ONNX graph, and chunks of a few rows multiply its steps for no memory saved."""
_MAX_SIGMA = 256 / 3
"""Largest map smoothing (at S = 256): its kernel reaches 3 sigma, and a kernel wider than the map
smooths it flat."""
_MAX_CARD_BYTES = 16 << 20
"""Largest model card read: cards are kilobytes (their longest lists, of file names, are capped)."""
_FAILED_BUILD = (KeyError, TypeError, ValueError, AttributeError, RuntimeError, OverflowError)
"""What torch, numpy and the model constructors raise for a config they cannot build."""


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


class _Checker:
    """Refusals that name the card, the field (``detector.topk``), its value and what is accepted."""

    def __init__(self, card_path: Path) -> None:
        self.where = repr(str(card_path))

    def refuse(self, field: str, value: Any, accepted: str) -> ArtifactError:
        return ArtifactError(
            f"{self.where}: {field} = {_shown(value)} is not accepted; expected {accepted} "
            f"(train the model again)"
        )

    def obj(
        self, parent: Mapping[str, Any], key: str, field: str, *, required: bool = True
    ) -> dict[str, Any]:
        if key not in parent and not required:
            return {}
        value = parent.get(key)
        if not isinstance(value, dict):
            raise self.refuse(field, value, "an object")
        return value

    def whole(self, value: Any, field: str, lo: int, hi: int) -> int:
        if not (_whole(value) and lo <= value <= hi):
            raise self.refuse(field, value, f"a whole number in [{lo}, {hi}]")
        return int(value)

    def flag(self, value: Any, field: str) -> None:
        if not isinstance(value, bool):
            raise self.refuse(field, value, "true or false")

    def text(self, value: Any, field: str, *, longest: int = 64) -> str:
        if not (isinstance(value, str) and value.strip() and len(value) <= longest):
            raise self.refuse(field, value, f"a non-empty string of at most {longest} characters")
        return value


def cargo_type_problem(value: Any) -> str | None:
    """Why ``value`` cannot be a model's cargo type, or None.

    Any name of goods is accepted (a cargo type of the user's, not only the packaged ones): text of
    at most :data:`MAX_CARGO_TYPE` characters, with no path separator, no whitespace around it (a
    manifest's cargo types are stripped, so it could never match one) and no character that does
    not show as itself but the two joiners of Persian and Indic names: the name flavour of
    :mod:`datasets.shown_text`, which a manifest's and a submission's cargo types are held to, so
    that every cargo type a model is trained for can be declared. A bidi control was taken here
    (``"\\u202ebulk_ore"`` reads as ``ero_klub``) while declarations refused it.

    Held as a card is loaded too: a card written before the rule with such a cargo type is refused
    with this message, not loaded (none is expected: no name of goods holds one, and the
    declarations that would pick its model are refused); train it again under its cargo type.
    """
    if not isinstance(value, str) or not value:
        return "a non-empty string"
    if len(value) > MAX_CARGO_TYPE or value != value.strip() or any(ch in "/\\" for ch in value):
        return f"at most {MAX_CARGO_TYPE} characters with no / or \\ and no whitespace at either end"
    unshown = unshown_character(value, name=True)
    if unshown is not None:
        return (
            f"a name with no control or format character but the joiners U+200C and U+200D (it holds "
            f"{unshown}, which does not show as itself)"
        )
    return None


def _check_card(card: dict[str, Any], card_path: Path) -> None:
    """Every card field that loading and scoring read must be of its type and in its range, and the
    model id must name the card's content.

    The card's own hash catches an accidental edit; an edit that recomputes it must still change the
    model id (so decisions name the model that made them) and keep every number in range: a zero
    top-k scored NaN, a zero chunk failed every image, a huge bank size allocated terabytes, and
    a wrong type surfaced as a bare TypeError far from the card.
    """
    check = _Checker(card_path)
    where = check.where
    detector = check.obj(card, "detector", "detector")
    preprocessing = check.obj(card, "preprocessing", "preprocessing")
    thresholds = check.obj(card, "thresholds", "thresholds")
    training = check.obj(card, "training", "training", required=False)
    problem = cargo_type_problem(card.get("cargo_type"))
    if problem is not None:
        raise check.refuse("cargo_type", card.get("cargo_type"), problem)
    content = _content_hash(card)
    model_id = card.get("model_id")
    backbone = detector.get("backbone")
    if model_id != _model_id(card, backbone):
        raise ArtifactError(
            f"{where}: model id {model_id!r} does not name its cargo type {card['cargo_type']!r}, "
            f"backbone {backbone!r} and the first {_id_digits(card)} hex digits of its content hash "
            "(the cargo type decides which images it scores); train the model again"
        )
    if card.get("content_sha256") != content:
        raise ArtifactError(
            f"{where}: its weights, detector, preprocessing, thresholds, cargo type or pseudo types "
            f"were changed after training "
            f"(content hash {content[:12]}..., the card says {str(card.get('content_sha256'))[:12]}... "
            f"and model id {model_id!r}); train the model again"
        )
    _check_thresholds(thresholds, check)
    _check_detector(detector, check)
    _check_preprocessing(preprocessing, detector["input_size"], check)
    sixteen = training.get("sixteen_bit")
    if sixteen is not None and not isinstance(sixteen, dict):  # scoring reads its chosen_by
        raise check.refuse("training.sixteen_bit", sixteen, "an object (how training read 16-bit images)")
    pseudo = training.get("pseudo_types", [])
    if not (isinstance(pseudo, list) and all(isinstance(name, str) for name in pseudo)):
        raise check.refuse("training.pseudo_types", pseudo, "a list of class names")
    # a format 5 id does not cover the pseudo types, so only training's own rule may stand: else a
    # format 6 card re-sealed as 5 took any pseudo types (verdicts changed) under an unchanged id
    written = pseudo_types_of(detector["class_names"])
    if card.get("format_version") == 5 and pseudo != written:
        raise check.refuse(
            "training.pseudo_types",
            pseudo,
            f"{_shown(written)}, the class names that start with {PSEUDO_PREFIX!r}, as training "
            "writes them (a format 5 model id does not cover them)",
        )


def _check_thresholds(thresholds: Mapping[str, Any], check: _Checker) -> None:
    release, hold = thresholds.get("release"), thresholds.get("hold")
    if not (_finite(release) and _finite(hold) and 0.0 <= release <= hold <= 1.0):
        raise ArtifactError(
            f"{check.where}: thresholds release {release!r} / hold {hold!r} are not 0 <= release <= hold <= 1"
        )
    rate = thresholds.get("target_miss_rate")
    if not (_finite(rate) and 0.0 < rate < 1.0):
        raise check.refuse("thresholds.target_miss_rate", rate, "a number in (0, 1)")
    # any name: tests and benchmarks write their own; the three that training writes are the only
    # ones that change what evaluate reports (models.threshold)
    check.text(thresholds.get("method"), "thresholds.method")


def _check_detector(detector: Mapping[str, Any], check: _Checker) -> None:
    mean, std = detector.get("mean"), detector.get("std")
    if not (
        isinstance(mean, list | tuple)
        and isinstance(std, list | tuple)
        and len(mean) == len(std) == 3
        and all(_finite(m) for m in mean)
        and all(_finite(s) and s > 0 for s in std)
    ):
        raise ArtifactError(
            f"{check.where}: normalisation mean {mean!r} / std {std!r} is not three finite numbers, std > 0"
        )
    backbone = detector.get("backbone")
    if backbone not in list_models():
        raise check.refuse("detector.backbone", backbone, f"one of {list_models()}")
    size = check.whole(detector.get("input_size"), "detector.input_size", MIN_INPUT_SIZE, MAX_INPUT_SIZE)
    # the sizes of tensors (bank rows, head widths) are compared with the weights file on load;
    # these bounds only keep the numbers themselves sane
    big = 1 << 31
    for name, lo, hi, required in (
        ("proj_dim", 0, big, True),
        ("bank_size", 1, big, True),
        ("topk", 1, size * size, False),  # a mean over at most one patch per pixel
        ("chunk", 1, big, False),
        ("pad", 0, size // 2, False),
        ("grid", 0, size, False),
        ("patch_hidden", 1, big, False),
        ("patch_topk", 1, size * size, False),
        ("fine_bank_size", 1, big, False),
    ):
        if required or name in detector:
            check.whole(detector.get(name), f"detector.{name}", lo, hi)
    bank, chunk = detector["bank_size"], detector.get("chunk", 4096)
    if chunk < min(bank, _MIN_CHUNK):
        raise check.refuse(
            "detector.chunk", chunk, f"at least {min(bank, _MIN_CHUNK)} (bank rows per matmul)"
        )
    sigma = detector.get("sigma", 4.0)
    if not (_finite(sigma) and 0.0 < sigma <= _MAX_SIGMA):
        raise check.refuse("detector.sigma", sigma, f"a number in (0, {_MAX_SIGMA:.4g}]")
    for name in ("fine_scale", "zero_padded_pooling", "co_located"):
        if name in detector:
            check.flag(detector[name], f"detector.{name}")
    names = detector.get("class_names")
    if not (
        isinstance(names, list)
        and 2 <= len(names) <= 1024
        and all(isinstance(n, str) and n for n in names)
        and len(set(names)) == len(names)
    ):
        raise check.refuse("detector.class_names", names, "a list of 2 to 1024 distinct names, 'good' first")
    offsets = detector.get("grey_offsets", [0.0, 0.0, 0.0])
    if not (isinstance(offsets, list) and len(offsets) == 3 and all(_finite(v) for v in offsets)):
        raise check.refuse("detector.grey_offsets", offsets, "three finite numbers")
    pools = detector.get("pool_sizes", [])
    if not (isinstance(pools, list) and len(pools) <= 8 and all(_whole(k) and 1 <= k <= size for k in pools)):
        raise check.refuse("detector.pool_sizes", pools, f"a list of odd whole numbers in [1, {size}]")
    try:
        DetectorConfig.from_dict(dict(detector))  # the names it knows and the rules it keeps
    except (KeyError, TypeError, ValueError) as exc:
        raise ArtifactError(f"{check.where} has an unusable detector config: {exc}") from exc


def _check_preprocessing(preprocessing: Mapping[str, Any], input_size: int, check: _Checker) -> None:
    tiling = check.obj(preprocessing, "tiling", "preprocessing.tiling")
    if set(tiling) != {"tile_size", "overlap"}:
        raise check.refuse("preprocessing.tiling", tiling, "an object of tile_size and overlap")
    tile = check.whole(tiling["tile_size"], "preprocessing.tiling.tile_size", 0, 1 << 31)
    if 0 < tile < min_tile_size(input_size):
        raise check.refuse(
            "preprocessing.tiling.tile_size",
            tile,
            f"0 (no tiles) or at least {min_tile_size(input_size)}: a tile is enlarged at most "
            f"{MAX_TILE_ENLARGEMENT}x to the {input_size} px model input",
        )
    check.whole(tiling["overlap"], "preprocessing.tiling.overlap", 0, max(tile - 1, 0))
    if "sixteen_bit_depth" in preprocessing:  # absent from cards written before training measured it
        # 8: an 8-bit image stored wide; 9, 11, 13 and 15 only in cards of the version that measured
        # the largest sample, so they still load
        check.whole(preprocessing["sixteen_bit_depth"], "preprocessing.sixteen_bit_depth", 8, SIXTEEN_BITS)
    source = check.obj(preprocessing, "source_resolution", "preprocessing.source_resolution", required=False)
    downscale = source.get("downscale")
    if downscale is not None and not (_finite(downscale) and downscale > 0):
        raise check.refuse(
            "preprocessing.source_resolution.downscale", downscale, "a number > 0 (or null: not recorded)"
        )
    # read by scoring (models.predictor), which refused them with a ModelError naming no card
    if "downscale_hw" in source and not _positive_pair(source["downscale_hw"]):
        raise check.refuse(
            "preprocessing.source_resolution.downscale_hw",
            source["downscale_hw"],
            "a list of two numbers > 0 (along a view's height and its width)",
        )
    span = source.get("downscale_hw_range")
    if span is not None and not (
        isinstance(span, list)
        and len(span) == 2
        and all(_positive_pair(pair) and pair[0] <= pair[1] for pair in span)
    ):
        raise check.refuse(
            "preprocessing.source_resolution.downscale_hw_range",
            span,
            "[[least, most] along the height, [least, most] along the width]: numbers > 0, least no "
            "more than most (or null: not recorded)",
        )
    sides = source.get("downscale_short_long")
    if sides is not None and not (_positive_pair(sides) and sides[0] <= sides[1]):
        raise check.refuse(
            "preprocessing.source_resolution.downscale_short_long",
            sides,
            "[median along a view's shorter side, along its longer side]: numbers > 0, the shorter no "
            "more than the longer (or null: not recorded)",
        )


def _positive_pair(value: Any) -> bool:
    return isinstance(value, list) and len(value) == 2 and all(_finite(v) and v > 0 for v in value)


def _refuse_missing(path: Path, expected: str) -> None:
    if path.is_file():
        return
    if path.is_dir():
        raise ArtifactError(f"{str(path)!r} is a folder, not a file; expected {expected}")
    if path.exists():  # a pipe, a socket, a device, or a link to one (/dev/zero)
        raise ArtifactError(
            f"{str(path)!r} is not a regular file (a pipe, a socket or a device?); expected {expected}"
        )
    raise ArtifactError(f"{str(path)!r} is missing; expected {expected}")


def read_card(model_dir: str | Path) -> dict[str, Any]:
    """Read and verify ``model.json`` (format version and self-hash); does not read the weights."""
    root = Path(model_dir)
    card_path = root / CARD_FILE
    if not root.is_dir():
        if not root.exists():
            raise ArtifactError(
                f"model directory {str(root)!r} does not exist; expected a folder with {CARD_FILE}"
            )
        meant = (
            f"; did you mean its folder {str(root.parent)!r}?"
            if root.name in (CARD_FILE, WEIGHTS_FILE)
            else ""
        )
        raise ArtifactError(
            f"{str(root)!r} is not a folder; a model is the folder that holds {CARD_FILE} and "
            f"{WEIGHTS_FILE}{meant}"
        )
    _refuse_missing(card_path, "the model card written by training")
    try:
        with card_path.open("rb") as fh:
            raw = fh.read(_MAX_CARD_BYTES + 1)
    except OSError as exc:
        raise ArtifactError(f"{str(card_path)!r} cannot be read: {exc.strerror or exc}") from exc
    if len(raw) > _MAX_CARD_BYTES:
        raise ArtifactError(
            f"{str(card_path)!r} is larger than {_MAX_CARD_BYTES >> 20} MiB; a model card is a few kilobytes"
        )
    try:
        card = json.loads(raw.decode("utf-8"))
    except ValueError as exc:  # not UTF-8, not JSON, or an integer past Python's 4300-digit limit
        raise ArtifactError(f"{str(card_path)!r} is not valid JSON: {exc}") from exc
    except RecursionError as exc:  # arrays in arrays ... deeper than the parser's stack
        raise ArtifactError(f"{str(card_path)!r} is not a model card: its JSON is nested too deeply") from exc
    if not isinstance(card, dict):
        raise ArtifactError(f"{str(card_path)!r} must hold a JSON object")
    if card.get("format_version") not in READABLE_FORMATS:
        raise ArtifactError(
            f"{str(card_path)!r} has format_version {card.get('format_version')!r}; "
            f"expected {', '.join(map(str, READABLE_FORMATS[:-1]))} or {READABLE_FORMATS[-1]} "
            "(train the model again with this "
            "version of clearsight)"
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
    _refuse_missing(weights, f"the weights written with {CARD_FILE}")
    card_path = root / CARD_FILE
    config = DetectorConfig.from_dict(card["detector"])  # read_card checked it
    small = _one_row_state(config, card_path)
    limit = _weights_limit(config, small)
    # Read once, then hash and parse the same bytes: opened twice, a `train --overwrite` swapping the
    # folder in between gave the new weights under the old card (checked against the old hash). The
    # size is checked first: a 3 GB file swapped in was read whole, and failed as a MemoryError.
    try:
        size, data = read_bounded(weights, limit)
    except OSError as exc:
        raise ArtifactError(f"{str(weights)!r} cannot be read: {exc.strerror or exc}") from exc
    if data is None:
        raise ArtifactError(
            f"{str(weights)!r} holds {size} bytes, more than the {limit} that the "
            f"detector in {CARD_FILE} can have (its tensors and the file's header); replaced or "
            "modified: train the model again"
        )
    actual = hashlib.sha256(data).hexdigest()
    if actual != card.get("weights_sha256"):
        raise ArtifactError(
            f"{str(weights)!r} has sha256 {actual}, expected {card.get('weights_sha256')!r} "
            f"(truncated, replaced or modified)"
        )
    try:
        tensors = load_safetensors(data)
    except SafetensorError as exc:
        raise ArtifactError(f"{str(weights)!r} cannot be read as safetensors: {exc}") from exc
    del data  # the tensors are copies: the file's bytes need not stay in memory beside them
    _check_sizes(config, tensors, card_path, weights, small)
    _check_finite(tensors, root)
    try:
        detector = build_detector(config)
    except _FAILED_BUILD as exc:
        raise ArtifactError(f"{str(card_path)!r} has an unusable detector config: {exc}") from exc
    try:
        detector.load_state_dict(tensors, strict=True)
    except RuntimeError as exc:
        raise ArtifactError(f"{str(weights)!r} does not fit the detector in the card: {exc}") from exc
    try:
        return ArtifactPredictor(detector.eval(), card, batch_size=batch_size, runtime=runtime)
    except RecursionError as exc:
        raise ArtifactError(f"{str(card_path)!r}: the model cannot be set up to score: {exc}") from exc
    except _FAILED_BUILD as exc:
        raise ArtifactError(
            f"{str(card_path)!r}: the model cannot be set up to score: {type(exc).__name__}: {exc}"
        ) from exc


_WEIGHTS_HEADER_BYTES = 16 << 20
"""Allowance for a weights file's safetensors header over its tensors' bytes: training writes a
header of some 100 bytes a tensor (tens of kilobytes)."""


def _one_row_state(config: DetectorConfig, card_path: Path) -> dict[str, Any]:
    """The tensors of a detector of ``config``'s structure built with its banks and patch head one row
    wide (built at full width, a huge bank size or patch head in the card allocated them before
    :func:`_check_sizes` could compare them with the weights)."""
    try:
        small = build_detector(dataclasses.replace(config, bank_size=1, fine_bank_size=1, patch_hidden=1))
    except _FAILED_BUILD as exc:
        raise ArtifactError(f"{str(card_path)!r} has an unusable detector config: {exc}") from exc
    return small.state_dict()


def _weights_limit(config: DetectorConfig, small: Mapping[str, Any]) -> int:
    """Most bytes the weights file of a detector of ``config`` holds, plus
    :data:`_WEIGHTS_HEADER_BYTES`: the tensors ``small`` of :func:`_one_row_state`, those of the banks
    and the patch head counted at the card's width."""
    rows = {
        "bank.": config.bank_size,
        "fine.bank.": config.fine_bank_size,
        "patch_head.hidden.": config.patch_hidden,
        "patch_head.out.weight": config.patch_hidden,
    }
    total = _WEIGHTS_HEADER_BYTES
    for key, tensor in small.items():
        per_row = next((n for prefix, n in rows.items() if key.startswith(prefix)), 1)
        total += tensor.numel() * tensor.element_size() * per_row
    return total


def _check_sizes(
    config: DetectorConfig,
    tensors: Mapping[str, Any],
    card_path: Path,
    weights: Path,
    built: Mapping[str, Any],
) -> None:
    """The card's sizes must be the weights' own before the detector is built to them: a bank size of
    10**12 allocated the bank (terabytes) before the weights could be compared with it. Each tensor
    must be of the dtype of its namesake in ``built``, the state of a detector of the card's structure:
    loading cast a float16 bank, an int64 bank or a bool ``pos_scale`` to it silently."""
    for key, tensor in tensors.items():
        own = built.get(key)
        if own is not None and tensor.dtype != own.dtype:
            given, wanted = (str(t.dtype).removeprefix("torch.") for t in (tensor, own))
            raise ArtifactError(
                f"{str(weights)!r} holds tensor {key!r} as {given}, where the detector in {CARD_FILE} has "
                f"{wanted}; train the model again"
            )
    sizes = [
        ("bank.bank", "bank_size", config.bank_size),
        ("pos_scale", "grid", max(1, config.grid)),
        ("patch_head.hidden.weight", "patch_hidden", config.patch_hidden),
        ("head.linear.weight", "class_names", len(config.class_names)),
    ]
    if config.fine_scale:
        sizes.append(("fine.bank.bank", "fine_bank_size", config.fine_bank_size))
    for key, field, value in sizes:
        tensor = tensors.get(key)
        if tensor is None or tensor.ndim < 1:
            raise ArtifactError(f"{str(weights)!r} holds no tensor {key!r} for detector.{field} in the card")
        if int(tensor.shape[0]) != value:
            what = f"{value} names" if field == "class_names" else str(value)
            raise ArtifactError(
                f"{str(card_path)!r}: detector.{field} gives {what}, but {str(weights)!r} holds "
                f"{key} of shape {list(tensor.shape)} ({int(tensor.shape[0])}); train the model again"
            )


def _check_finite(tensors: Mapping[str, Any], model_dir: Path) -> None:
    """Every floating tensor must hold finite numbers: a NaN bank row scored NaN under torch, and ONNX
    Runtime refused it saying it disagreed with PyTorch (use runtime 'torch'), where the model itself
    was broken; a NaN ``map_span`` gave maps of NaN.

    One pass over each tensor, its sum: a NaN or an infinity in it makes the sum NaN or infinite; finite
    values whose sum overflows are told apart by the exact count. On a model of a 100,000-row bank
    (80 MB) all its tensors took 26 ms, one thread, 2.6 % of a ``torch`` load and 0.2 % of an
    ``onnxruntime`` one; ``torch.isfinite`` took 330 ms for the bank alone, and a mask a quarter of its
    memory.
    """
    for key, tensor in tensors.items():
        if not tensor.is_floating_point() or bool(torch.isfinite(tensor.sum())):
            continue
        bad = int((~torch.isfinite(tensor)).sum())
        if bad:
            raise ArtifactError(
                f"model {str(model_dir)!r}: tensor {key!r} of {WEIGHTS_FILE} holds {bad} NaN or infinite "
                f"value{'s' if bad > 1 else ''} of {tensor.numel()}; a model's tensors are finite numbers "
                "(train the model again)"
            )
