"""Runtimes: ONNX Runtime gives PyTorch's predictions, refuses a graph that disagrees, names the choices."""

from __future__ import annotations

import copy
import gc
import os
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from datasets.errors import ModelError
from models.artifact import load_model
from models.detector import Detector
from models.onnx_export import sample_inputs
from models.patchcore import MemoryBank
from models.runtime import (
    DEFAULT_RUNTIME,
    RUNTIMES,
    OnnxRuntimeRaw,
    _bank_views,
    _forget_model_bytes,
    raw_runner,
)
from pipeline.settings import RuntimeName, Settings


def _images(im) -> list[np.ndarray]:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(5)
    gray16 = (im.texture(rng).mean(axis=2) * 257).astype(np.uint16)  # a 16-bit grayscale image
    return [im.texture(rng), im.with_defect(im.texture(rng), rng, "plastic"), gray16]


def test_onnxruntime_predictions_match_torch(tiny_model_dir: Path, imaging) -> None:  # type: ignore[no-untyped-def]
    fast = load_model(tiny_model_dir, runtime="onnxruntime")
    ref = load_model(tiny_model_dir, runtime="torch")
    assert (fast.runtime, ref.runtime) == ("onnxruntime", "torch")
    images = _images(imaging)
    for p, q in zip(fast.predict(images), ref.predict(images), strict=True):
        assert abs(p.score - q.score) <= 1e-5
        assert p.label == q.label and p.anomaly_type == q.anomaly_type
        assert p.anomaly_map.shape == q.anomaly_map.shape
        assert float(np.abs(p.anomaly_map - q.anomaly_map).max()) <= 1e-4
        for name, prob in p.type_probabilities.items():
            assert abs(prob - q.type_probabilities[name]) <= 1e-4


def test_default_runtime_is_onnxruntime(tiny_model_dir: Path) -> None:
    assert DEFAULT_RUNTIME == "onnxruntime"
    assert load_model(tiny_model_dir).runtime == "onnxruntime"


def test_load_time_parity_is_recorded_and_tight(tiny_model_dir: Path) -> None:
    runner = OnnxRuntimeRaw(load_model(tiny_model_dir, runtime="torch").detector)
    assert runner.parity.samples == 3
    assert runner.parity.within_tolerance()


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_views_run_side_by_side_come_back_in_order(tiny_model_dir: Path, threads: int) -> None:
    detector = load_model(tiny_model_dir, runtime="torch").detector
    views = torch.cat([sample_inputs(detector)] * 2)  # 6 different-enough views, more than the workers
    views[3:] = views[3:].flip(-1).roll(7, -2)
    with torch.inference_mode():
        want = detector.raw(views)
    gaps = want.score_raw.sort().values.diff()
    assert float(gaps.min()) > 1e-3 * float(want.score_raw.max())  # so a shuffled order would show
    have = OnnxRuntimeRaw(detector, threads=threads)(views)
    assert torch.allclose(have.score_raw, want.score_raw, rtol=1e-4)
    assert torch.allclose(have.type_logits, want.type_logits, atol=1e-3)
    assert torch.allclose(have.patch_score, want.patch_score, atol=1e-3)


def test_a_graph_that_disagrees_with_torch_is_refused(tiny_model_dir: Path) -> None:
    detector = load_model(tiny_model_dir, runtime="torch").detector
    runner = OnnxRuntimeRaw(detector)
    other = copy.deepcopy(detector)
    with torch.no_grad():
        # the graph traced from `detector` no longer computes `other`
        for bank in (other.bank, other.fine.bank) if other.fine is not None else (other.bank,):
            bank.bank.mul_(1.5)
    with pytest.raises(ModelError, match=r"disagrees with PyTorch.*runtime 'torch'"):
        runner.verify(other, sample_inputs(other))


def _bytes_held(root: object) -> list[int]:
    """Sizes of the bytes objects reachable from ``root`` through instances and containers (not
    through modules, classes or functions, which reach everything)."""
    seen, todo, sizes = set(), [root], []
    while todo:
        obj = todo.pop()
        if id(obj) in seen or isinstance(obj, types.ModuleType | type | types.FunctionType):
            continue
        seen.add(id(obj))
        if isinstance(obj, bytes | bytearray):
            sizes.append(len(obj))
        todo.extend(gc.get_referents(obj))
    return sizes


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_a_loaded_model_keeps_no_serialized_copy_of_its_weights(tiny_model_dir: Path, runtime: str) -> None:
    # ONNX Runtime's session kept the traced graph's bytes (every weight, once more) for its lifetime
    predictor = load_model(tiny_model_dir, runtime=runtime)
    assert max(_bytes_held(predictor), default=0) < 64 << 10
    assert predictor.predict([np.zeros((40, 40, 3), np.uint8)])[0].score >= 0.0  # it still scores


class _Session:
    """An ORT session as a later version might have it: ``_model_bytes`` plain, missing, or read-only."""

    def __init__(self, held: str) -> None:
        self.fallback = True
        if held == "plain":
            self._model_bytes: bytes | None = b"graph"

    def disable_fallback(self) -> None:
        self.fallback = False


class _ReadOnlySession(_Session):
    @property
    def _model_bytes(self) -> bytes:  # type: ignore[override]
        return b"graph"


@pytest.mark.parametrize(
    ("session", "bytes_after", "fallback_after"),
    [
        (_Session("plain"), None, False),
        (_Session("missing"), "missing", True),
        # a property without a setter made loading fail, its fallback already switched off
        (_ReadOnlySession("read-only"), b"graph", True),
    ],
    ids=["plain", "missing", "read-only"],
)
def test_a_session_lets_go_of_its_graph_only_where_it_can(
    session: _Session, bytes_after: object, fallback_after: bool
) -> None:
    _forget_model_bytes(session)
    assert getattr(session, "_model_bytes", "missing") == bytes_after
    assert session.fallback is fallback_after


def test_the_session_keeps_its_arena_but_plans_no_memory_pattern(tiny_model_dir: Path) -> None:
    # the pattern's one block per run, kept by the arena, held ~130 MB more at a 100k-row bank;
    # the arena itself is what keeps a run from faulting its buffers in afresh (bench/README.md)
    runner = OnnxRuntimeRaw(load_model(tiny_model_dir, runtime="torch").detector)
    options = runner._session.get_session_options()
    assert options.enable_mem_pattern is False
    assert options.enable_cpu_mem_arena is True


def _banks(detector: Detector) -> list[MemoryBank]:
    return [detector.bank] + ([detector.fine.bank] if detector.fine is not None else [])


def _chunked(detector: Detector) -> Detector:
    for bank in _banks(detector):
        bank.chunk = max(1, bank.bank.shape[0] // 3)  # several chunks, and a short last one
    return detector


def test_the_session_is_handed_the_detectors_own_bank_rows(tiny_model_dir: Path) -> None:
    # ORT held the whole bank once more for the nearest row's gather: 61 MB at a 100k-row bank
    detector = _chunked(load_model(tiny_model_dir, runtime="torch").detector)
    runner = OnnxRuntimeRaw(detector)
    handed = {(value.data_ptr(), tuple(value.shape())) for value in runner._shared}
    for bank in _banks(detector):
        rows, dim = bank.bank.shape
        row_bytes = dim * bank.bank.element_size()
        want = {(bank.bank.data_ptr(), (rows, dim))}  # the gather's, then each chunk of the search
        want |= {
            (bank.bank.data_ptr() + lo * row_bytes, (min(bank.chunk, rows - lo), dim))
            for lo in range(0, rows, bank.chunk)
        }
        assert want <= handed
    assert len(handed) == len(runner._shared)
    assert runner.parity.within_tolerance()


_AFTER_A_STORAGE_SWAP = """
import sys, gc, torch
from models.artifact import load_model
from models.onnx_export import sample_inputs
predictor = load_model(sys.argv[1], runtime="onnxruntime")
detector = predictor.detector
views = sample_inputs(detector)
before = predictor.scorer._raw(views)
banks = [detector.bank] + ([detector.fine.bank] if detector.fine is not None else [])
if sys.argv[2] == "module":
    detector.share_memory()
else:
    for bank in banks:
        bank.bank.share_memory_()
gc.collect()
# what now takes the memory torch let go of, if the session still read it
junk = [torch.full(bank.bank.shape, 1e6) for _ in range(500) for bank in banks]
after = predictor.scorer._raw(views)
for name, x, y in zip(before._fields, before, after):
    assert torch.equal(x, y), (name, x.flatten()[:4].tolist(), y.flatten()[:4].tolist())
print("same")
"""


@pytest.mark.parametrize("how", ["module", "tensors"])
def test_scores_survive_the_banks_moving_to_shared_memory(tiny_model_dir: Path, how: str) -> None:
    # Module.share_memory (also what torch.multiprocessing's pickler does to a detector handed to a
    # spawn pool) copies each storage to shared memory and frees the old block: the session had read
    # the freed block (scores of 1.0 for good images, or a crash), so it runs in a process of its own
    done = subprocess.run(
        [sys.executable, "-c", _AFTER_A_STORAGE_SWAP, str(tiny_model_dir), how],
        capture_output=True,
        text=True,
        env=dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]), OMP_NUM_THREADS="1"),
        timeout=300,
    )
    assert done.returncode == 0 and done.stdout.strip() == "same", done.stderr[-2000:]


def _graph(initializers: dict[str, np.ndarray], raw: bool = True) -> bytes:
    import onnx
    from onnx import helper, numpy_helper

    tensors = []
    for name, array in initializers.items():
        tensor = numpy_helper.from_array(array, name)
        if not raw:  # as a writer may put floats: in float_data, not raw bytes
            tensor = helper.make_tensor(name, onnx.TensorProto.FLOAT, array.shape, array.ravel().tolist())
        tensors.append(tensor)
    nodes = [helper.make_node("Identity", [name], [f"{name}_out"]) for name in initializers]
    outputs = [helper.make_tensor_value_info(f"{n}_out", onnx.TensorProto.FLOAT, None) for n in initializers]
    return helper.make_model(helper.make_graph(nodes, "g", [], outputs, tensors)).SerializeToString()


_TABLE = np.arange(40, dtype=np.float32).reshape(10, 4)
_FLIPPED = _TABLE[4:8].copy()
_FLIPPED.view(np.uint32)[1, 2] ^= 1  # one bit off


@pytest.mark.parametrize(
    ("rows", "raw", "start"),
    [
        (_TABLE, True, 0),  # the whole bank (the gather's)
        (_TABLE[4:8], True, 4),  # a chunk of the search
        (_TABLE[8:], True, 8),  # the short last chunk
        (_TABLE[2:6], True, None),  # the same bytes away from a chunk's start
        (_FLIPPED, True, None),
        (_TABLE[4:8] * 2, True, None),
        (_TABLE[4:8, :3].copy(), True, None),  # another width
        (_TABLE[4:8], False, None),  # not raw bytes: left to ORT
    ],
    ids=[
        "whole",
        "chunk",
        "last-chunk",
        "unaligned",
        "one-bit-off",
        "other-values",
        "other-width",
        "float-data",
    ],
)
def test_only_a_banks_own_rows_at_a_chunks_start_are_shared(
    rows: np.ndarray, raw: bool, start: int | None
) -> None:
    table = _TABLE.copy()
    views = _bank_views(_graph({"w": rows}, raw=raw), [(table, 4)])
    if start is None:
        assert views == []
        return
    ((name, view),) = views
    assert name == "w" and np.shares_memory(view, table)
    assert view.__array_interface__["data"][0] == table[start:].__array_interface__["data"][0]
    assert view.shape == rows.shape


@pytest.mark.parametrize("name", ["tensorrt", "", "ONNXRUNTIME"])
def test_unknown_runtime_is_refused_with_the_accepted_names(tiny_model_dir: Path, name: str) -> None:
    with pytest.raises(ModelError, match=r"unknown runtime .*accepted: \['onnxruntime', 'torch'\]"):
        load_model(tiny_model_dir, runtime=name)
    with pytest.raises(ModelError, match="unknown runtime"):
        raw_runner(load_model(tiny_model_dir, runtime="torch").detector, name)


def test_settings_offer_exactly_the_model_runtimes() -> None:
    assert tuple(sorted(r.value for r in RuntimeName)) == tuple(sorted(RUNTIMES))
    assert Settings(_env_file=None).runtime == DEFAULT_RUNTIME  # type: ignore[call-arg]
    assert Settings(_env_file=None, runtime="torch").runtime == "torch"  # type: ignore[call-arg]
