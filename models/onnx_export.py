"""Export a :class:`~models.detector.Detector` to ONNX, checked against PyTorch before it is kept.

The whole scoring graph is exported as one model — backbone, patch features, nearest-neighbour
distances to the memory bank, smoothed map, supervised head and fusion — for the artifact's input size
``S`` with a dynamic batch axis:

=================  ======================  ==================================================
name               shape / dtype           meaning
=================  ======================  ==================================================
``image``  (in)    (N, 3, S, S) float32    RGB in [0, 1], then ``(x - mean) / std``
``score``          (N,) float64            fused anomaly score in [0, 1]
``anomaly_map``    (N, S, S) float32       map in [0, 1]: the larger of the one-class and patch maps
``type_logits``    (N, K) float32          head logits, class 0 is ``good``
=================  ======================  ==================================================

The exporter is PyTorch's TorchScript-based ``torch.onnx.export(..., dynamo=False)``: the
``torch.export``-based one needs ``onnxscript``, which Clearsight does not depend on. The trace is
valid for every batch size because the only Python-level branches in ``Detector.forward`` depend on
the input size and the memory-bank size, both fixed in the artifact.

Before the file is kept, PyTorch and ONNX Runtime score the same sample inputs at a batch size
different from the one traced (so the dynamic axis is exercised). Scores must agree within
:data:`SCORE_TOLERANCE` (max abs), the score's log-odds within :data:`LOG_ODDS_TOLERANCE`, logits
within :data:`LOGIT_TOLERANCE` and maps within :data:`MAP_TOLERANCE`. The log-odds are the input of
the graph's last sigmoid, read from the kept graph by exposing that tensor as an extra output for the
check only: a score pinned at 1.0 (a model's score of the synthetic inputs often is: 1.0 from
log-odds 37 up) agrees whatever the graph computes beneath, so the score check alone proved nothing
on such inputs. The map is looser because it is a clipped ratio of distances to a nearest
bank row picked by float32 dot products, where summation order can pick another of two near-tied rows
and the backbone's own float32 differences pass through unscaled. Otherwise
:class:`~datasets.errors.ExportError` is raised and nothing is left at the output path.

A sidecar ``<name>.json`` beside the ``.onnx`` file carries what a standalone runtime needs:
preprocessing, thresholds, class names, model id and the parity figures. The two are written as a
pair: both to temporary files first, then renamed into place; an export that fails at any step
leaves an earlier pair at the output path as it was (never a new ``.onnx`` beside the old model's
sidecar), and an existing pair is replaced only when the caller says so (``overwrite``).
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, BinaryIO, NamedTuple

import numpy as np
import torch

from datasets.errors import ExportError
from datasets.whole_files import temporary_beside
from models.detector import Detector

__all__ = [
    "EXPORTER",
    "FORMATS",
    "LOGIT_TOLERANCE",
    "LOG_ODDS_TOLERANCE",
    "MAP_TOLERANCE",
    "SCORE_TOLERANCE",
    "ExportReport",
    "Parity",
    "check_parity",
    "export_onnx",
    "sample_inputs",
    "sidecar_path",
    "trace_onnx",
]

FORMATS = ("onnx",)
"""Export formats ``clearsight export --format`` accepts."""

SCORE_TOLERANCE = 1e-4
"""Largest accepted |PyTorch - ONNX Runtime| of the fused score."""
LOG_ODDS_TOLERANCE = 1e-3
"""Largest accepted |PyTorch - ONNX Runtime| of the fused score's log-odds, relative to the larger of
1 and |log-odds| (float32 log-odds of 40 are rounded by up to 2e-6). Near log-odds 0 that is about
what the score check allows where the score is steepest (1e-4 at 0.5 is 4e-4 in log-odds); trained
models' exports differed by about 1e-6."""
MAP_TOLERANCE = 1e-3
"""Largest accepted |PyTorch - ONNX Runtime| of an anomaly-map pixel (maps are in [0, 1])."""
LOGIT_TOLERANCE = 1e-3
"""Largest accepted |PyTorch - ONNX Runtime| of a head logit."""

EXPORTER = "torch.onnx.export (TorchScript, dynamo=False)"
MIN_OPSET = 13
"""The least opset the graph exports at (``Unflatten`` and ``ReduceSum`` with axes as an input)."""
MAX_OPSET = 20
"""The highest opset the TorchScript exporter writes (``torch.onnx._constants``'s
``ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET`` in the torch this was checked with)."""
SIDECAR_FORMAT = "clearsight-onnx/2"
"""2: ``score`` is float64 (it was float32, saturating at 1.0 above log-odds 16.6), and every output
names its dtype."""
INPUT_NAME = "image"
OUTPUT_NAMES = ("score", "anomaly_map", "type_logits")
_LOG_ODDS_OUTPUT = "score_log_odds"
"""The extra output the parity check reads the score's log-odds from; the kept graph has none."""
RESIZE = "OpenCV INTER_AREA where either side shrinks, INTER_LINEAR where neither does"
"""How images reach the input size (``models.tiling``); anything else scores differently."""
TILES = (
    "with tile_size t > 0 and an image whose longer side exceeds t: tiles of min(t, height) x "
    "min(t, width), starting along an axis no longer than t at 0 alone, and along a longer one at 0, "
    "t - overlap, 2 (t - overlap), ... below side - t, and at side - t (the last tile flush with the "
    "edge); otherwise the whole image is one view"
)
"""Where tiles lie (``models.tiling.plan_views``), for a runtime that cuts them itself."""
MAP_MEANING = (
    "at each pixel the larger of the one-class map and the patch head's map (where the model has one), "
    "each on the model's own scale"
)
_TRACE_BATCH = 2


class Parity(NamedTuple):
    """Max differences between PyTorch and ONNX Runtime on the sample inputs: absolute, and for
    ``log_odds`` relative to the larger of 1 and |log-odds| (see :data:`LOG_ODDS_TOLERANCE`)."""

    score: float
    anomaly_map: float
    type_logits: float
    samples: int
    log_odds: float

    def within_tolerance(self) -> bool:
        return (
            self.score <= SCORE_TOLERANCE
            and self.log_odds <= LOG_ODDS_TOLERANCE
            and self.anomaly_map <= MAP_TOLERANCE
            and self.type_logits <= LOGIT_TOLERANCE
        )


class ExportReport(NamedTuple):
    """What :func:`export_onnx` wrote and measured."""

    onnx_path: Path
    sidecar_path: Path
    parity: Parity
    opset: int
    sha256: str


def sidecar_path(onnx_path: str | Path) -> Path:
    """``model.onnx`` -> ``model.json`` beside it."""
    return Path(onnx_path).with_suffix(".json")


def _refuse_overwriting_other_json(side: Path) -> None:
    """The sidecar may replace an earlier export's sidecar, never another file: ``--out
    MODEL_DIR/model.onnx`` would otherwise write over the model's own card, ``model.json``."""
    if not side.exists():
        return
    try:
        earlier = json.loads(side.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):  # not UTF-8, not JSON, 4,300+ digits, nested deep
        earlier = None
    # any version's sidecar: re-exporting over an export of an earlier version replaces it
    if not isinstance(earlier, dict) or not str(earlier.get("format")).startswith("clearsight-onnx/"):
        raise ExportError(
            f"{str(side)!r} exists and is not an earlier export's sidecar (a model card?); the export "
            f"writes its sidecar there, so choose an --out outside the model folder or under another name"
        )


def _check_destination(target: Path) -> None:
    """Refuse, before minutes of tracing, an output that is a folder or lies under a file, which
    only the last step (the rename into place) would have found. The trace goes to a new
    temporary file beside it (:func:`~datasets.whole_files.temporary_beside`), made before tracing
    too, so that a folder that takes no file is also found first."""
    if target.is_dir():
        raise ExportError(
            f"output file {str(target)!r} is a folder; name an .onnx file to write, e.g. "
            f"{str(target / 'model.onnx')!r}"
        )
    for parent in target.parents:  # the nearest one that exists must be a folder
        if parent.exists():
            if not parent.is_dir():
                raise ExportError(
                    f"output file {str(target)!r} cannot be written: {str(parent)!r} is a file, not a folder"
                )
            return


def sample_inputs(detector: Detector, *, count: int = 3, seed: int = 0) -> torch.Tensor:
    """Deterministic normalised sample inputs (count, 3, S, S) that look a little like images.

    Image 0 is a smooth colour gradient, image 1 uniform noise, later ones blurred noise with a
    bright blob (something for the one-class branch to fire on); image 2 is grey (three equal
    channels, as an X-ray's), so that the graph's grey-picture offsets are compared too. All are
    built in [0, 1] and then normalised with the detector's mean and std, like real inputs.
    """
    cfg = detector.config
    s = cfg.input_size
    gen = torch.Generator().manual_seed(seed)
    ramp = torch.linspace(0.0, 1.0, s)
    images = []
    for i in range(count):
        if i == 0:
            img = torch.stack(
                [
                    ramp.view(1, s).expand(s, s),
                    ramp.view(s, 1).expand(s, s),
                    1.0 - ramp.view(1, s).expand(s, s),
                ]
            )
        elif i == 1:
            img = torch.rand(3, s, s, generator=gen)
        else:
            low = torch.rand(3, max(2, s // 16), max(2, s // 16), generator=gen)
            img = torch.nn.functional.interpolate(
                low[None], size=(s, s), mode="bilinear", align_corners=False
            )[0]
            yy, xx = torch.meshgrid(torch.arange(s), torch.arange(s), indexing="ij")
            cy, cx = (torch.rand(2, generator=gen) * s).tolist()
            blob = torch.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * (s / 12) ** 2))
            img = (img + blob).clamp(0.0, 1.0)
            if i == 2:
                img = img[:1].expand(3, s, s).clone()
        images.append(img)
    x = torch.stack(images)
    mean = torch.tensor(cfg.mean, dtype=torch.float32).view(1, 3, 1, 1)
    std = torch.tensor(cfg.std, dtype=torch.float32).view(1, 3, 1, 1)
    return ((x - mean) / std).float()


def _max_abs(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64)))) if a.size else 0.0


def _max_relative(a: np.ndarray, b: np.ndarray) -> float:
    """Max of |a - b| / max(1, |a|): absolute near 0, relative where log-odds run large."""
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    return float(np.max(np.abs(a64 - b64) / np.maximum(1.0, np.abs(a64)))) if a.size else 0.0


def _with_log_odds_output(onnx_path: str | Path) -> bytes:
    """The graph at ``onnx_path`` with the input of the sigmoid that gives ``score`` (the fused
    log-odds, passed through a Cast to float64 first or after) as an extra output named
    :data:`_LOG_ODDS_OUTPUT`; every node as it was.

    Raises:
        ExportError: the file cannot be read as ONNX, or ``score`` is not a sigmoid's output there.
    """
    import onnx

    try:
        model = onnx.load(str(onnx_path))
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception as exc:  # onnx raises DecodeError, ValidationError, InferenceError ...
        raise ExportError(f"cannot read the exported graph {str(onnx_path)!r}: {exc}") from exc
    made_by = {out: node for node in model.graph.node for out in node.output}
    node = made_by.get(OUTPUT_NAMES[0])
    while node is not None and node.op_type == "Cast":  # a float32 sigmoid cast to float64 after it
        node = made_by.get(node.input[0])
    if node is None or node.op_type != "Sigmoid":
        raise ExportError(
            f"the exported graph's {OUTPUT_NAMES[0]!r} is not a sigmoid's output (found "
            f"{node.op_type if node is not None else 'no node'}), so its log-odds cannot be checked"
        )
    types = {v.name: v.type for v in [*inferred.graph.value_info, *inferred.graph.output]}
    log_odds = node.input[0]
    if log_odds not in types:
        raise ExportError(f"the exported graph gives no type for the score's log-odds ({log_odds!r})")
    model.graph.node.append(onnx.helper.make_node("Identity", [log_odds], [_LOG_ODDS_OUTPUT]))
    model.graph.output.append(onnx.ValueInfoProto(name=_LOG_ODDS_OUTPUT, type=types[log_odds]))
    return model.SerializeToString()


def check_parity(detector: Detector, onnx_path: str | Path, samples: torch.Tensor) -> Parity:
    """Run PyTorch and ONNX Runtime on ``samples`` (N, 3, S, S) and return the max differences.

    The score's log-odds are compared as well as its outputs (see :func:`_with_log_odds_output`).

    Raises:
        ExportError: ONNX Runtime cannot load or run the file, or its outputs have other shapes.
    """
    import onnxruntime as ort

    detector = detector.eval()
    with torch.inference_mode():
        ref = detector(samples)
        raw = detector.raw(samples)
        ref_log_odds = detector.fusion.fused_log_odds(raw.score_raw, raw.type_logits, raw.patch_score)
    graph = _with_log_odds_output(onnx_path)
    try:
        options = ort.SessionOptions()
        options.log_severity_level = 3  # errors only: ORT's warnings about unused initialisers are noise
        session = ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"])
        *got, got_log_odds = session.run([*OUTPUT_NAMES, _LOG_ODDS_OUTPUT], {INPUT_NAME: samples.numpy()})
    except Exception as exc:  # onnxruntime raises its own untyped exceptions (Fail, InvalidGraph, ...)
        raise ExportError(f"ONNX Runtime could not run {str(onnx_path)!r}: {exc}") from exc
    for name, want, have in zip(
        (*OUTPUT_NAMES, _LOG_ODDS_OUTPUT), (*ref, ref_log_odds), (*got, got_log_odds), strict=True
    ):
        if tuple(want.shape) != tuple(have.shape):
            raise ExportError(
                f"ONNX output {name!r} has shape {tuple(have.shape)}, PyTorch gives {tuple(want.shape)}"
            )
    return Parity(
        score=_max_abs(ref.score.numpy(), got[0]),
        anomaly_map=_max_abs(ref.anomaly_map.numpy(), got[1]),
        type_logits=_max_abs(ref.type_logits.numpy(), got[2]),
        samples=int(samples.shape[0]),
        log_odds=_max_relative(ref_log_odds.numpy(), got_log_odds),
    )


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _sidecar(
    detector: Detector, card: Mapping[str, Any], onnx_file: Path, sha256: str, opset: int, parity: Parity
) -> dict[str, Any]:
    import onnxruntime as ort

    cfg = detector.config
    s = cfg.input_size
    return {
        "format": SIDECAR_FORMAT,
        "onnx_file": onnx_file.name,
        "onnx_sha256": sha256,
        "model_id": card.get("model_id"),
        "cargo_type": card.get("cargo_type"),
        "source_card_sha256": card.get("card_sha256"),
        "input": {
            "name": INPUT_NAME,
            "shape": ["batch", 3, s, s],
            "dtype": "float32",
            "layout": "NCHW, RGB",
            "scaling": "uint8 / 255 (uint16 / (2 ** preprocessing.sixteen_bit_depth - 1), clipped to 1; "
            "/ 65535 where preprocessing has no sixteen_bit_depth); gray replicated to 3 channels; "
            "alpha dropped",
            # as the predictor resizes: a runtime that shrank with bilinear scored anomalies lower
            "resize": f"after scaling, in float32: the whole image (or each tile, see preprocessing.tiling) "
            f"to {s}x{s} with {RESIZE}",
            "tiles": TILES,
            "mean": list(cfg.mean),
            "std": list(cfg.std),
        },
        "preprocessing": card.get("preprocessing"),
        "outputs": {
            "score": {
                "shape": ["batch"],
                "dtype": "float64",
                "range": [0.0, 1.0],
                "meaning": "fused anomaly score",
            },
            "anomaly_map": {
                "shape": ["batch", s, s],
                "dtype": "float32",
                "range": [0.0, 1.0],
                "meaning": MAP_MEANING,
            },
            "type_logits": {
                "shape": ["batch", len(cfg.class_names)],
                "dtype": "float32",
                "classes": list(cfg.class_names),
            },
        },
        "image_score": "max of 'score' over an image's tiles; label 'anomalous' if >= thresholds.release",
        "thresholds": card.get("thresholds"),
        "class_names": list(cfg.class_names),
        "exporter": EXPORTER,
        "opset": opset,
        "torch_version": torch.__version__,
        "onnxruntime_version": ort.__version__,
        "parity": {
            **parity._asdict(),
            "tolerance": {
                "score": SCORE_TOLERANCE,
                "log_odds": LOG_ODDS_TOLERANCE,
                "anomaly_map": MAP_TOLERANCE,
                "type_logits": LOGIT_TOLERANCE,
            },
        },
    }


def trace_onnx(
    module: torch.nn.Module,
    target: str | Path | BinaryIO,
    sample: torch.Tensor,
    *,
    output_names: Sequence[str],
    opset: int = 17,
    dynamic_batch: bool = True,
) -> None:
    """Trace ``module`` (already in eval mode) on ``sample`` repeated to the trace batch; write ONNX.

    The input is named :data:`INPUT_NAME`. With ``dynamic_batch`` the batch axis of the input and
    every output is dynamic; without it the graph is for batch 1 and every shape in it is static, so
    ONNX Runtime can fold the shape arithmetic of the backbone's TF-style "same" padding into
    constants and fuse those pads into the convolutions (about 15 % faster per view).
    ``target`` is a path or a binary buffer (the ONNX Runtime runtime keeps the model in memory).

    Raises:
        ExportError: the exporter failed.
    """
    trace_input = sample[:1].repeat(_TRACE_BATCH if dynamic_batch else 1, 1, 1, 1)
    names = [INPUT_NAME, *output_names]
    try:
        with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
            # The legacy exporter warns that it is legacy, that it traces Python branches on fixed
            # sizes (true and intended: S and the bank size are fixed) and about constant folding.
            warnings.simplefilter("ignore")
            torch.onnx.export(
                module,
                (trace_input,),
                target if not isinstance(target, Path) else str(target),
                dynamo=False,
                opset_version=opset,
                input_names=[INPUT_NAME],
                output_names=list(output_names),
                dynamic_axes={name: {0: "batch"} for name in names} if dynamic_batch else None,
                do_constant_folding=True,
            )
    except Exception as exc:  # the exporter raises RuntimeError, torch.onnx.errors.*, ValueError ...
        cfg = getattr(module, "config", None)
        what = f"{cfg.backbone!r} at {cfg.input_size}x{cfg.input_size}" if cfg else type(module).__name__
        # the exporter's message can go on with a dump of the whole Torch IR graph (700 lines):
        # its first line says what failed, and --debug shows the rest
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ExportError(f"torch.onnx.export failed for {what}: {first}") from exc


def _replace_pair(tmp: Path, target: Path, tmp_side: Path, side: Path, made: list[Path]) -> None:
    """Rename the new ``.onnx`` and its sidecar into place, the ``.onnx`` first; where the sidecar's
    rename fails, the earlier ``.onnx`` (kept under a temporary name meanwhile) is put back, or the
    new one removed where there was none: a failed export left the new model beside the old one's
    sidecar, which a runtime would have read together. ``made``: the temporary files, which the
    caller removes.

    Raises:
        ExportError: either rename failed; the earlier pair, if any, is as it was.
    """
    kept: Path | None = None
    try:
        if target.exists():
            kept, fd = temporary_beside(target)
            made.append(kept)
            os.close(fd)
            try:  # a second name for the earlier file: the output path never goes missing
                kept.unlink()
                os.link(target, kept)
            except OSError:  # a file system without hard links: moved aside for a moment
                os.replace(target, kept)
        os.replace(tmp, target)
    except OSError as exc:
        if kept is not None and not target.exists():
            os.replace(kept, target)
        raise ExportError(f"cannot write {str(target)!r}: {exc.strerror or exc}") from exc
    try:
        os.replace(tmp_side, side)
    except OSError as exc:
        try:
            if kept is not None:
                os.replace(kept, target)
            else:
                target.unlink()
        except OSError as undo:
            raise ExportError(
                f"cannot write the sidecar {str(side)!r} ({exc.strerror or exc}), and {str(target)!r} "
                f"could not be put back ({undo.strerror or undo}): it is the new export, {str(side)!r} "
                "the earlier one's; export again"
            ) from exc
        raise ExportError(
            f"cannot write the sidecar {str(side)!r}: {exc.strerror or exc}; {str(target)!r} is "
            f"{'the earlier export, as it was' if kept is not None else 'removed'}"
        ) from exc


def export_onnx(
    detector: Detector,
    out: str | Path,
    *,
    card: Mapping[str, Any],
    samples: torch.Tensor | None = None,
    opset: int = 17,
    overwrite: bool = False,
) -> ExportReport:
    """Export ``detector`` to ``out`` (an ``.onnx`` path), verify parity, write the sidecar JSON.

    Args:
        detector: the fitted scoring module (e.g. ``load_model(dir).detector``).
        out: destination file; its folder is created. The sidecar goes to ``out`` with ``.json``.
        card: the artifact's model card (``model_id``, ``preprocessing``, ``thresholds`` ...).
        samples: (N, 3, S, S) normalised inputs for the parity check; default
            :func:`sample_inputs` (3 images). N should differ from 2, the traced batch size, so that
            the dynamic batch axis is exercised.
        opset: ONNX opset.
        overwrite: replace an ``out`` or sidecar that exists already (an earlier export); without
            it they are refused before tracing.

    Returns:
        The paths written, the parity figures, the opset and the ONNX file's sha256.

    Raises:
        ExportError: ``out`` or its sidecar exists and not ``overwrite``, the exporter fails, ONNX
            Runtime cannot run the result, outputs disagree with PyTorch beyond the tolerances, or
            either file cannot be written: the new files are then removed, and an earlier pair at
            ``out`` is left as it was.
    """
    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise ExportError(f"opset {opset} is not supported; accepted: {MIN_OPSET} to {MAX_OPSET}")
    target = Path(out)
    if target.suffix.lower() != ".onnx":
        raise ExportError(f"output file {str(target)!r} must end in .onnx")
    _refuse_overwriting_other_json(sidecar_path(target))
    s = detector.config.input_size
    checks = sample_inputs(detector) if samples is None else samples.float()
    if checks.ndim != 4 or tuple(checks.shape[1:]) != (3, s, s):
        raise ExportError(f"parity samples must have shape (N, 3, {s}, {s}); got {tuple(checks.shape)}")
    _check_destination(target)
    if not overwrite:
        # another model's export there was replaced without a word
        existing = [str(p) for p in (target, sidecar_path(target)) if p.exists() or p.is_symlink()]
        if existing:
            raise ExportError(
                f"{' and '.join(map(repr, existing))} already exist{'s' if len(existing) == 1 else ''} "
                "(an earlier export?); pass --overwrite to replace the pair, or choose another --out"
            )
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ExportError(f"cannot create the folder of {str(target)!r}: {exc.strerror or exc}") from exc
    side = sidecar_path(target)
    made: list[Path] = []  # the temporary files, removed at the end whatever happens
    try:
        try:  # new names, never a file already beside the output (a fixed x.onnx.tmp was overwritten)
            tmp, fd = temporary_beside(target)
            made.append(tmp)
            os.close(fd)  # the exporter and ONNX Runtime open the file by its name
            tmp_side, fd = temporary_beside(side)
            made.append(tmp_side)
            os.close(fd)
        except OSError as exc:
            raise ExportError(f"cannot write {str(target)!r}: {exc.strerror or exc}") from exc
        detector = detector.eval()
        try:
            trace_onnx(detector, tmp, checks[:1], output_names=OUTPUT_NAMES, opset=opset)
            parity = check_parity(detector, tmp, checks)
            digest = _sha256(tmp)
        except OSError as exc:
            raise ExportError(f"cannot write {str(target)!r}: {exc.strerror or exc}") from exc
        if not parity.within_tolerance():
            raise ExportError(
                f"ONNX Runtime disagrees with PyTorch on {parity.samples} samples: max |diff| score "
                f"{parity.score:.3g} (accepted <= {SCORE_TOLERANCE:g}), score log-odds {parity.log_odds:.3g} "
                f"(relative, <= {LOG_ODDS_TOLERANCE:g}), map {parity.anomaly_map:.3g} "
                f"(<= {MAP_TOLERANCE:g}), logits {parity.type_logits:.3g} (<= {LOGIT_TOLERANCE:g})"
            )
        # the sidecar names the file by the name it is to have
        sidecar = _sidecar(detector, card, target, digest, opset, parity)
        try:
            tmp_side.write_text(json.dumps(sidecar, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        except OSError as exc:
            raise ExportError(f"cannot write the sidecar {str(side)!r}: {exc.strerror or exc}") from exc
        _replace_pair(tmp, target, tmp_side, side, made)
    finally:  # gone once renamed; otherwise (a failure, Ctrl-C during the trace) nothing is left
        for path in made:
            path.unlink(missing_ok=True)
    return ExportReport(onnx_path=target, sidecar_path=side, parity=parity, opset=opset, sha256=digest)
