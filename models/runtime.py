"""Runtimes that execute a loaded detector's scoring graph: PyTorch or ONNX Runtime.

Training always runs :meth:`Detector.raw <models.detector.Detector.raw>` in PyTorch (the bank and
the heads are being fitted). A loaded artifact only scores, and there the same graph, traced to ONNX
for one view with every shape static and run by ONNX Runtime, scores images 2-3x faster on a CPU
(``bench/bench_anomalib.py`` times both runtimes on the same model). The graph is traced in memory
when the model is loaded (about half a second for Lite0): nothing extra is written to or read from
the artifact, so the artifact's hashes still cover everything that runs.

The traced graph is checked against PyTorch before it is used, on :func:`sample_inputs
<models.onnx_export.sample_inputs>` and on raw values (distances, logits), which do not saturate the
way the fused score can. A disagreement fails the load (:class:`~datasets.errors.ModelError`) rather
than silently scoring with a graph nobody verified.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, NamedTuple

import numpy as np
import torch

from datasets.errors import ExportError, ModelError
from models.detector import Detector, RawOutput
from models.onnx_export import INPUT_NAME, sample_inputs, trace_onnx

__all__ = ["DEFAULT_RUNTIME", "RUNTIMES", "OnnxRuntimeRaw", "RawParity", "raw_runner"]

RUNTIMES = ("onnxruntime", "torch")
"""Accepted values of ``runtime`` in :func:`models.artifact.load_model` (and ``--runtime``)."""
DEFAULT_RUNTIME = "onnxruntime"

RAW_RELATIVE_TOLERANCE = 1e-4
"""Largest accepted |PyTorch - ORT| / |PyTorch| of the raw image score (distance units)."""
RAW_MAP_TOLERANCE = 1e-3
"""Largest accepted |PyTorch - ORT| of a raw map pixel, relative to the largest map value."""
RAW_LOGIT_TOLERANCE = 1e-3
"""Largest accepted |PyTorch - ORT| of a head logit (type head and patch head alike)."""

_RAW_OUTPUTS = RawOutput._fields


class RawParity(NamedTuple):
    """How closely the ONNX Runtime graph reproduced PyTorch at load time (max over samples).

    ``patch_score`` covers the patch head's image score and its logit map alike (logit units).
    """

    score_rel: float
    map_rel: float
    type_logits: float
    patch_score: float
    samples: int

    def within_tolerance(self) -> bool:
        return (
            self.score_rel <= RAW_RELATIVE_TOLERANCE
            and self.map_rel <= RAW_MAP_TOLERANCE
            and self.type_logits <= RAW_LOGIT_TOLERANCE
            and self.patch_score <= RAW_LOGIT_TOLERANCE
        )


class _RawGraph(torch.nn.Module):
    """``Detector.raw`` as a module returning a plain tuple (what the ONNX tracer accepts)."""

    def __init__(self, detector: Detector) -> None:
        super().__init__()
        self.detector = detector

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(self.detector.raw(x))


class OnnxRuntimeRaw:
    """``Detector.raw`` traced to ONNX and executed by ONNX Runtime; call it like ``detector.raw``.

    Args:
        detector: the loaded detector (eval mode); it is traced, and its memory banks' rows are moved
            into numpy arrays that this runner owns and shares with the detector's bank buffers
            (:func:`_own_banks`, the same values): the session reads them where they lie
            (:func:`_share_banks`). What holds if they are written to or moved afterwards:
            :func:`_own_banks`.
        threads: how many cores to use; default PyTorch's current thread count, so that the
            ``--threads`` / ``torch.set_num_threads`` the caller chose bounds both runtimes alike.
            The views of a batch run side by side, one ORT thread each, rather than one view at a
            time split over every thread: the graph of one view has too little parallel work in its
            small convolutions to keep two cores busy (side by side: 11 % more views/s on two cores).

    Raises:
        ModelError: ONNX Runtime cannot be imported, the trace fails, or the traced graph disagrees
            with PyTorch beyond the tolerances above.
    """

    def __init__(self, detector: Detector, *, threads: int | None = None) -> None:
        try:
            import onnxruntime as ort
        except ImportError as exc:  # a dependency, but a broken install should say what to do
            raise ModelError(
                f"runtime 'onnxruntime' needs the onnxruntime package ({exc}); or use runtime 'torch'"
            ) from exc
        detector = detector.eval()
        samples = sample_inputs(detector)
        buf = io.BytesIO()
        try:
            # One view per run with every shape static: faster per view than a dynamic batch axis
            # (see trace_onnx), and a last partial batch costs nothing extra.
            trace_onnx(
                _RawGraph(detector).eval(), buf, samples, output_names=_RAW_OUTPUTS, dynamic_batch=False
            )
        except ExportError as exc:
            raise ModelError(f"runtime 'onnxruntime': {exc}; use runtime 'torch' for this model") from exc
        options = ort.SessionOptions()
        options.log_severity_level = 3  # errors only
        self._workers = max(1, int(threads or torch.get_num_threads()))
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        # The memory pattern plans every intermediate of a run (the unrolled bank search's distance
        # blocks among them) into one block, which the arena then keeps for the session's life.
        # Without it the arena hands the same space to one intermediate after another: steady RSS
        # at a 100k-row bank 0.77x (one thread) and 0.83x (two), images/s unchanged (0.91-1.15x,
        # noise). The arena itself stays: without it each run maps and faults in ~100 MB afresh,
        # 0.69-0.83x the images/s (bench/README.md, session 36).
        options.enable_mem_pattern = False
        graph = buf.getvalue()
        buf.close()  # the graph is held once while the session is made, not twice
        # The OrtValues handed to the session hold numpy views of arrays the runtime owns, so the rows
        # ORT reads live as long as the runner, whatever becomes of the detector's tensors: a storage
        # moved to shared memory (Module.share_memory, torch.multiprocessing's pickler) lets go only
        # of torch's reference to them. Views of the tensors' own memory kept the Tensor objects
        # alive but not their storage, and the session read the freed block.
        self._shared = _share_banks(options, graph, detector)
        try:
            self._session = ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # ORT raises its own untyped exceptions
            raise ModelError(f"ONNX Runtime could not load the traced scoring graph: {exc}") from exc
        del graph
        _forget_model_bytes(self._session)
        self.parity = self.verify(detector, samples)

    def __call__(self, x: torch.Tensor) -> RawOutput:
        """(B, 3, S, S) normalised float32 -> :class:`~models.detector.RawOutput` (CPU tensors)."""
        batch = np.ascontiguousarray(x.numpy())

        def one(i: int) -> list[np.ndarray]:
            return self._session.run(None, {INPUT_NAME: batch[i : i + 1]})

        n = batch.shape[0]
        try:
            if self._workers == 1 or n == 1:
                runs = [one(i) for i in range(n)]
            else:  # ORT releases the GIL while it runs, and a session may be run from several threads
                with ThreadPoolExecutor(max_workers=min(self._workers, n)) as pool:
                    runs = list(pool.map(one, range(n)))
        except Exception as exc:  # ORT's untyped exceptions (shape errors, allocation failures)
            raise ModelError(f"ONNX Runtime failed on a batch of shape {tuple(x.shape)}: {exc}") from exc
        return RawOutput(*(torch.from_numpy(np.concatenate(parts)) for parts in zip(*runs, strict=True)))

    def verify(self, detector: Detector, samples: torch.Tensor) -> RawParity:
        """Compare this graph with ``detector.raw`` in PyTorch on ``samples`` (N, 3, S, S).

        Raises:
            ModelError: the two disagree beyond the tolerances.
        """
        with torch.inference_mode():
            want = detector.raw(samples)
        have = self(samples)
        ws, hs = want.score_raw.double(), have.score_raw.double()
        parity = RawParity(
            score_rel=float(((ws - hs).abs() / ws.abs().clamp_min(1e-12)).max()),
            map_rel=float(
                (want.map_raw - have.map_raw).abs().max() / want.map_raw.abs().max().clamp_min(1e-12)
            ),
            type_logits=float((want.type_logits - have.type_logits).abs().max()),
            patch_score=max(
                float((want.patch_score - have.patch_score).abs().max()),
                float((want.patch_map - have.patch_map).abs().max()),
            ),
            samples=int(samples.shape[0]),
        )
        if not parity.within_tolerance():
            raise ModelError(
                f"ONNX Runtime disagrees with PyTorch on {parity.samples} samples: relative |diff| of the "
                f"raw score {parity.score_rel:.3g} (accepted <= {RAW_RELATIVE_TOLERANCE:g}), map "
                f"{parity.map_rel:.3g} (<= {RAW_MAP_TOLERANCE:g}), logits {parity.type_logits:.3g} and "
                f"patch score {parity.patch_score:.3g} (<= {RAW_LOGIT_TOLERANCE:g}); use runtime 'torch' "
                "for this model"
            )
        return parity


def _forget_model_bytes(session: object) -> None:
    """Let ``session`` drop the serialized graph it was made from.

    ORT's Python ``InferenceSession`` keeps the bytes it was given for as long as it lives (its own
    comment: "This is bad as we're holding the memory indefinitely"), only to make the session again
    if a provider fails and it falls back to another. The graph holds every weight it runs, the bank
    twice over, while the session holds its own copy of them: kept, they were a second copy of the
    model for its whole life (``bench/bench_load_memory.py``). Our one provider is the CPU, the
    fallback's own target, so fallback is switched off and the bytes let go. A later ORT without the
    attribute, or one that will not let it be set, keeps whatever it keeps, its fallback with it:
    nothing here depends on it. The session cannot be made again afterwards (``set_providers``, a
    fallback turned back on): nothing in Clearsight does either.
    """
    disable = getattr(session, "disable_fallback", None)
    if not callable(disable) or getattr(session, "_model_bytes", None) is None:
        return
    try:
        session._model_bytes = None  # type: ignore[attr-defined]
    except AttributeError:  # a read-only attribute: the bytes stay, and so may the fallback
        return
    disable()


def _share_banks(options: Any, graph: bytes, detector: Detector) -> list[Any]:
    """Have the session made with ``options`` take the memory banks' rows from the arrays that
    ``detector``'s bank tensors are made over (:func:`_own_banks`, :func:`_bank_views`) rather than
    from copies of its own; returns the OrtValues handed over, which hold those arrays and must
    outlive the session.

    ORT held the whole bank for the nearest row's gather beside the detector's copy (which export
    and the figures read): 61 MB more at a 100k-row bank (bench/README.md, session 37). The search's
    matmuls read their chunks from the detector's rows too, but ORT packs them into a layout of its
    own when the session is made, as it did from its own copy before (a copy it then let go).
    """
    import onnxruntime as ort

    values = []
    for name, rows in _bank_views(graph, _own_banks(detector)):
        value = ort.OrtValue.ortvalue_from_numpy(rows)  # a CPU array is wrapped, not copied
        options.add_initializer(name, value)
        values.append(value)
    return values


def _own_banks(detector: Detector) -> list[tuple[np.ndarray, int]]:
    """Move the rows of ``detector``'s CPU float32 memory banks into numpy arrays and make each bank
    buffer a tensor over its array (``torch.from_numpy``: the same memory, the same values); returns
    each array with its bank's chunk size.

    The arrays, not torch, own the rows, so whoever holds them (the session's OrtValues) keeps the
    rows valid whatever torch later does with its storage. Each bank is copied once and its old
    storage let go at once, before the session is made, so a bank is still held once beside ORT's
    packed chunks.

    What holds afterwards (nothing in Clearsight writes to or moves a loaded model's bank):

    - Written in place while torch and ORT share the array (``bank.bank.mul_``, ``copy_``,
      ``load_state_dict``, which copies into the buffers): ORT computes a mixture, not the new bank
      and not the old. The nearest row's gather reads the array (the new rows), but the search's
      matmuls read the chunks ORT packed when the session was made (the old rows), and ``|b|^2``
      (``bank_sq``) is ORT's own copy from the graph (old): the row is picked among the old rows and
      its distance measured to the new row of that index. PyTorch, meanwhile, scores the new bank.
    - Moved (``Module.share_memory``, ``Tensor.share_memory_``, torch.multiprocessing's pickler,
      ``.to`` another device or dtype) or rebound (``bank.bank = other``): torch's tensor gets
      memory of its own and drops its reference to the array; ORT keeps scoring the rows loaded, all
      of them, whatever is written to torch's tensor from then on. The bank is then held twice
      (torch's and the array), as before session 37.
    """
    owned = []
    for bank in (detector.bank, getattr(detector.fine, "bank", None)):
        if bank is None or bank.bank.dtype != torch.float32 or bank.bank.device.type != "cpu":
            continue  # any other bank is left to ORT's copies
        rows = np.array(bank.bank.detach().numpy(), order="C")  # a copy, C-contiguous
        bank.bank = torch.from_numpy(rows)
        owned.append((rows, bank.chunk))
    return owned


def _bank_views(graph: bytes, tables: list[tuple[np.ndarray, int]]) -> list[tuple[str, np.ndarray]]:
    """The initializers of the traced ``graph`` that hold a memory bank's rows, each paired with a
    numpy view of those rows in one of ``tables`` (a bank's (M, D) float32 rows and its chunk size).

    The trace writes the bank whole (for the nearest row's gather) and each chunk of the search
    (``MemoryBank.chunk`` rows from a multiple of it) as a constant of its own. An initializer is
    paired only with rows whose bytes are the same as its own, so that ORT given the view computes
    exactly what it would have computed from the graph's copy; any other initializer, or a bank the
    trace wrote otherwise, stays ORT's own. Only the gather reads a view for good: the search's
    chunks are packed by ORT into a layout of its own when the session is made, so a later write to
    the tables reaches the gather and not the search (what that gives: :func:`_own_banks`).
    """
    import onnx

    model = onnx.load_from_string(graph)
    views = []
    for init in model.graph.initializer:
        if init.data_type != onnx.TensorProto.FLOAT or len(init.dims) != 2 or min(init.dims) < 1:
            continue
        rows, dim = init.dims
        candidates = [(t, step) for t, step in tables if t.shape[1] == dim and t.shape[0] >= rows]
        data = np.frombuffer(init.raw_data, dtype=np.uint32) if candidates else None
        if data is None or data.size != rows * dim:  # not written as raw bytes: left to ORT
            continue
        for table, step in candidates:
            lo = _rows_at(table.view(np.uint32), data.reshape(rows, dim), step)
            if lo is not None:
                views.append((init.name, table[lo : lo + rows]))
                break
    return views


def _rows_at(table: np.ndarray, rows: np.ndarray, step: int) -> int | None:
    """The first multiple of ``step`` where ``table`` (M, D) holds ``rows`` (R, D) bit for bit, or
    ``None``; a start is compared in full only where its first row matches."""
    for lo in range(0, table.shape[0] - rows.shape[0] + 1, step):
        if np.array_equal(table[lo], rows[0]) and np.array_equal(table[lo : lo + rows.shape[0]], rows):
            return lo
    return None


def raw_runner(detector: Detector, runtime: str) -> Callable[[torch.Tensor], RawOutput]:
    """The callable that computes ``detector.raw`` under ``runtime`` (one of :data:`RUNTIMES`).

    Raises:
        ModelError: an unknown runtime, or the ONNX Runtime graph cannot be built or verified.
    """
    if runtime == "torch":
        return detector.raw
    if runtime == "onnxruntime":
        return OnnxRuntimeRaw(detector)
    raise ModelError(f"unknown runtime {runtime!r}; accepted: {list(RUNTIMES)}")
