"""ONNX export: parity with PyTorch on a dynamic batch, a usable sidecar, refusals, and the CLI."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from datasets.errors import ExportError
from models.artifact import load_model, save_artifact
from models.detector import Detector, DetectorConfig, build_detector
from models.onnx_export import (
    MAX_OPSET,
    MIN_OPSET,
    SCORE_TOLERANCE,
    export_onnx,
    sample_inputs,
    sidecar_path,
    trace_onnx,
)
from pipeline.cli import app, run

_SIZE = 64


@pytest.fixture(scope="module")
def tiny_detector() -> Detector:
    return _tiny_detector()


def _tiny_detector() -> Detector:
    """A Lite0-structured detector at 64 px whose bank holds patches of a few 'normal' images.

    The backbone keeps timm's random initialisation (no weights file is read); what matters here
    is that every stage of the graph runs and that the bank is real embeddings, not zeros.
    """
    torch.manual_seed(0)
    config = DetectorConfig(
        backbone="lite0",
        input_size=_SIZE,
        mean=(0.5, 0.5, 0.5),
        std=(0.5, 0.5, 0.5),
        proj_dim=32,
        bank_size=96,
        class_names=("good", "foreign_object"),
        chunk=40,  # several chunks, so the unrolled chunk loop is exported too
    )
    det = build_detector(config)
    normals = torch.rand(2, 3, _SIZE, _SIZE) * 0.2 + 0.4
    with torch.no_grad():
        patches, _ = det.embed((normals - 0.5) / 0.5)
        flat = patches.permute(0, 2, 3, 1).reshape(-1, patches.shape[1])
        bank = flat[torch.randperm(flat.shape[0])[:96]]
        det.bank.bank.copy_(bank)
        det.bank.bank_sq.copy_(bank.pow(2).sum(1))
        det.map_span.fill_(5.0)
        det.attn_temp.fill_(2.0)
    return det


def _card() -> dict[str, object]:
    return {
        "cargo_type": "bulk_ore",
        "preprocessing": {"tiling": {"tile_size": 0, "overlap": 0}},
        "thresholds": {"release": 0.4, "hold": 0.8, "target_miss_rate": 0.01, "method": "test"},
    }


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory, tiny_detector: Detector) -> Path:
    return save_artifact(tmp_path_factory.mktemp("model"), tiny_detector, _card())


@pytest.fixture(scope="module")
def exported(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Detector]:
    predictor = load_model(model_dir)
    out = tmp_path_factory.mktemp("onnx") / "model.onnx"
    report = export_onnx(predictor.detector, out, card=predictor.card)
    assert report.onnx_path == out
    assert report.parity.samples == 3
    assert report.parity.within_tolerance()
    return out, predictor.detector


@pytest.mark.slow  # the module fixture traces and checks a whole export
@pytest.mark.parametrize("batch", [1, 5])
def test_onnx_matches_pytorch_at_other_batch_sizes(exported: tuple[Path, Detector], batch: int) -> None:
    path, det = exported
    x = sample_inputs(det, count=batch, seed=batch)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    score, amap, logits = session.run(None, {"image": x.numpy()})
    with torch.inference_mode():
        ref = det(x)
    assert score.shape == (batch,) and amap.shape == (batch, _SIZE, _SIZE) and logits.shape == (batch, 2)
    assert np.abs(score - ref.score.numpy()).max() <= SCORE_TOLERANCE
    assert np.abs(logits - ref.type_logits.numpy()).max() <= 1e-3


def test_sidecar_carries_preprocessing_thresholds_and_id(
    exported: tuple[Path, Detector], model_dir: Path
) -> None:
    path, _ = exported
    side = json.loads(sidecar_path(path).read_text(encoding="utf-8"))
    card = json.loads((model_dir / "model.json").read_text(encoding="utf-8"))
    assert side["model_id"] == card["model_id"]
    assert side["thresholds"] == card["thresholds"]
    assert side["preprocessing"] == {"tiling": {"tile_size": 0, "overlap": 0}}
    assert side["input"]["shape"] == ["batch", 3, _SIZE, _SIZE]
    assert side["input"]["mean"] == [0.5, 0.5, 0.5]
    assert side["class_names"] == ["good", "foreign_object"]
    assert side["onnx_file"] == "model.onnx"
    # each output's dtype as the graph gives it: score turned float64 in format 2
    assert side["format"] == "clearsight-onnx/2"
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    graph = {o.name: o.type for o in session.get_outputs()}
    assert {
        name: f"tensor({'double' if o['dtype'] == 'float64' else 'float'})"
        for name, o in side["outputs"].items()
    } == graph
    assert side["exporter"] == "torch.onnx.export (TorchScript, dynamo=False)"
    # the log-odds beneath the score were checked too: a score pinned at 1.0 agrees whatever they are
    assert side["parity"]["log_odds"] <= side["parity"]["tolerance"]["log_odds"] == 1e-3


@pytest.mark.slow  # the module fixture traces and checks a whole export
def test_the_sidecars_recipe_reproduces_the_predictors_score(
    exported: tuple[Path, Detector], model_dir: Path
) -> None:
    """A standalone runtime follows the sidecar: it said bilinear while the predictor shrinks with
    INTER_AREA, and a tiny model's scores moved by up to 0.03 that way, across its release cut."""
    import cv2

    path, _ = exported
    side = json.loads(sidecar_path(path).read_text(encoding="utf-8"))
    assert side["input"]["resize"] == (
        "after scaling, in float32: the whole image (or each tile, see preprocessing.tiling) to "
        f"{_SIZE}x{_SIZE} with OpenCV INTER_AREA where either side shrinks, INTER_LINEAR where neither does"
    )
    assert side["outputs"]["anomaly_map"]["meaning"].startswith("at each pixel the larger of the one-class")
    assert "the last tile flush with the edge" in side["input"]["tiles"]  # where a runtime cuts them
    assert "along an axis no longer than t at 0 alone" in side["input"]["tiles"]  # not at side - t < 0
    rng = np.random.default_rng(5)
    images = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in ((150, 200), (40, 48), (40, 90))]
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    mean, std = np.float32(side["input"]["mean"]), np.float32(side["input"]["std"])
    for image in images:
        shrink = image.shape[0] > _SIZE or image.shape[1] > _SIZE  # 40 x 90: one side shrinks
        scaled = image.astype(np.float32) / 255  # uint8 resized first rounds: 6e-4 off here
        resized = cv2.resize(
            scaled, (_SIZE, _SIZE), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
        )
        x = ((resized - mean) / std).transpose(2, 0, 1)[None]
        (score,), _, _ = session.run(None, {"image": np.ascontiguousarray(x, dtype=np.float32)})
        assert abs(float(score) - load_model(model_dir).predict([image])[0].score) <= SCORE_TOLERANCE


def test_disagreement_is_refused_and_nothing_is_left(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_detector: Detector
) -> None:
    import models.onnx_export as mod

    monkeypatch.setattr(mod, "SCORE_TOLERANCE", -1.0)  # any difference, even 0, now fails
    out = tmp_path / "m.onnx"
    with pytest.raises(ExportError, match=r"disagrees with PyTorch on 3 samples"):
        export_onnx(tiny_detector, out, card=_card())
    assert sorted(p.name for p in tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("out_name", "samples_shape", "fragment"),
    [
        ("m.txt", None, "must end in .onnx"),
        ("m.onnx", (2, 3, 32, 32), r"shape \(N, 3, 64, 64\)"),
    ],
)
def test_bad_arguments_raise(
    tmp_path: Path,
    out_name: str,
    samples_shape: tuple[int, ...] | None,
    fragment: str,
    tiny_detector: Detector,
) -> None:
    samples = None if samples_shape is None else torch.zeros(samples_shape)
    with pytest.raises(ExportError, match=fragment):
        export_onnx(tiny_detector, tmp_path / out_name, card=_card(), samples=samples)


@pytest.mark.parametrize("opset", [MIN_OPSET - 1, MAX_OPSET + 1, 999])
def test_an_opset_the_exporter_cannot_write_is_refused_before_tracing(
    tmp_path: Path, tiny_detector: Detector, opset: int
) -> None:
    with pytest.raises(ExportError, match=rf"^opset {opset} is not supported; accepted: 13 to 20$"):
        export_onnx(tiny_detector, tmp_path / "m.onnx", card=_card(), opset=opset)
    assert list(tmp_path.iterdir()) == []


def test_the_opset_bounds_are_the_exporters() -> None:
    from torch.onnx import _constants

    assert MIN_OPSET >= _constants.ONNX_MIN_OPSET
    assert MAX_OPSET == _constants.ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET


def test_the_cli_bounds_the_opset_as_the_exporter_does(
    model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "m.onnx"
    code = run(app, ["export", "--model", str(model_dir), "--out", str(out), "--opset", str(MAX_OPSET + 1)])
    assert code == 2
    err = capsys.readouterr().err  # --opset 999 dumped 729 lines of the exporter's graph
    said = f"'{MAX_OPSET + 1}' is out of range; accepted: {MAX_OPSET} or less"
    assert f"Error: Invalid value for '--opset': {said}" in err
    assert not out.exists()


class _FailsToTrace(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("Unsupported thing\n" + "Torch IR graph at exception: graph(%x.1 ...)\n" * 500)


def test_an_exporter_failure_is_named_by_its_first_line(tmp_path: Path) -> None:
    with pytest.raises(ExportError) as info:
        trace_onnx(_FailsToTrace(), tmp_path / "m.onnx", torch.zeros(1, 3, 8, 8), output_names=["y"])
    assert str(info.value) == "torch.onnx.export failed for _FailsToTrace: Unsupported thing"
    assert "Torch IR graph" in str(info.value.__cause__)  # --debug shows the whole of it


@pytest.mark.slow
def test_cli_exports_with_sample_images(
    model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import cv2

    folder = tmp_path / "samples"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        cv2.imwrite(str(folder / f"{i}.png"), rng.integers(0, 256, (40, 50, 3), dtype=np.uint8))
    out = tmp_path / "cli.onnx"
    code = run(
        app,
        [
            "export",
            "--model",
            str(model_dir),
            "--format",
            "onnx",
            "--out",
            str(out),
            "--samples",
            str(folder),
        ],
    )
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "parity on 3 inputs" in captured.out
    assert out.is_file() and sidecar_path(out).is_file()


@pytest.mark.parametrize("fmt", ["openvino", "tflite"])
def test_cli_unknown_format_names_accepted_ones(
    model_dir: Path, tmp_path: Path, fmt: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = run(app, ["export", "--model", str(model_dir), "--format", fmt, "--out", str(tmp_path / "m.onnx")])
    assert code == 2
    assert capsys.readouterr().err == f"Error: --format {fmt!r} is not supported; accepted formats: onnx\n"
    assert not (tmp_path / "m.onnx").exists()


@pytest.mark.slow
def test_sum_fusion_exports_with_parity(tmp_path: Path) -> None:
    det = _tiny_detector()
    summed = build_detector(dataclasses.replace(det.config, fusion="sum"))
    summed.load_state_dict(det.state_dict())
    summed.fusion.slope.copy_(torch.tensor([1.0, 0.0, 0.5]))  # the type head off
    summed.fusion.bias.copy_(torch.tensor([-1.0, -30.0, 0.2]))
    report = export_onnx(summed.eval(), tmp_path / "model.onnx", card=_card())
    assert report.parity.within_tolerance()
    x = sample_inputs(summed, count=2, seed=7)
    (score, _, _) = ort.InferenceSession(str(report.onnx_path), providers=["CPUExecutionProvider"]).run(
        None, {"image": x.numpy()}
    )
    with torch.inference_mode():
        raw = summed.raw(x)
        signals = summed.fusion.signals(raw.score_raw, raw.type_logits, raw.patch_score)
        expected = torch.sigmoid(signals[:, 0] * 1.0 - 1.0 + signals[:, 2] * 0.5 + 0.2)
    assert np.abs(score - expected.numpy()).max() <= SCORE_TOLERANCE


def test_co_located_fusion_exports_and_loads_with_parity(tmp_path: Path) -> None:
    det = _tiny_detector()

    def variant(co_located: bool) -> Detector:
        out = build_detector(dataclasses.replace(det.config, fusion="sum", co_located=co_located))
        out.load_state_dict(det.state_dict())
        out.fusion.slope.copy_(torch.tensor([1.0, 0.0, 0.5]))  # the type head off
        out.fusion.bias.copy_(torch.tensor([-1.0, -30.0, 0.2]))
        return out.eval()

    co, own = variant(True), variant(False)
    report = export_onnx(co, tmp_path / "model.onnx", card=_card())
    assert report.parity.within_tolerance()
    x = sample_inputs(co, count=3, seed=7)
    (score, _, _) = ort.InferenceSession(str(report.onnx_path), providers=["CPUExecutionProvider"]).run(
        None, {"image": x.numpy()}
    )
    with torch.inference_mode():  # the spot found from the plain maps, outside the graph
        raw = own.raw(x)
        z = raw.map_raw.clamp_min(1e-12).log().flatten(1)
        patch = raw.patch_map.flatten(1)
        spot = (z + 0.5 * patch).argmax(dim=1, keepdim=True)
        expected = torch.sigmoid(z.gather(1, spot) - 1.0 + 0.5 * patch.gather(1, spot) + 0.2).squeeze(1)
    assert np.abs(score - expected.numpy()).max() <= SCORE_TOLERANCE
    # the artifact: loading traces the raw graph for ONNX Runtime and refuses it if it disagrees
    predictor = load_model(save_artifact(tmp_path / "model", co, _card()))
    assert predictor.detector.config.co_located


def test_grey_offsets_export_and_load_with_parity(tmp_path: Path) -> None:
    det = _tiny_detector()
    config = dataclasses.replace(det.config, fusion="sum", co_located=True, grey_offsets=(0.4, 0.3, -0.6))
    offset = build_detector(config)
    offset.load_state_dict(det.state_dict())
    offset.fusion.slope.copy_(torch.tensor([1.0, 0.5, 0.5]))
    offset.fusion.bias.copy_(torch.tensor([-1.0, 0.1, 0.2]))
    offset.eval()
    report = export_onnx(offset, tmp_path / "model.onnx", card=_card())
    assert report.parity.within_tolerance()
    x = sample_inputs(offset, count=4, seed=7)
    x[1:3] = x[1:3, :1].expand(-1, 3, -1, -1)  # two grey views among colour ones
    assert offset.grey_views(x).tolist() == [0.0, 1.0, 1.0, 0.0]
    (score, _, _) = ort.InferenceSession(str(report.onnx_path), providers=["CPUExecutionProvider"]).run(
        None, {"image": x.numpy()}
    )
    with torch.inference_mode():
        expected = offset(x).score
        plain = build_detector(dataclasses.replace(config, grey_offsets=(0.0, 0.0, 0.0)))
        plain.load_state_dict(offset.state_dict())
        unmoved = plain.eval()(x).score
    assert np.abs(score - expected.numpy()).max() <= SCORE_TOLERANCE
    assert torch.equal(expected[[0, 3]], unmoved[[0, 3]]) and not torch.equal(expected[1:3], unmoved[1:3])
    # the artifact under ONNX Runtime, checked against PyTorch on load
    predictor = load_model(save_artifact(tmp_path / "model", offset, _card()))
    assert predictor.detector.config.grey_offsets == (0.4, 0.3, -0.6)


def test_sharp_deeper_features_export_and_load_with_parity(tmp_path: Path) -> None:
    det = _tiny_detector()
    sharp = build_detector(dataclasses.replace(det.config, pool_sizes=(3, 1)))
    sharp.load_state_dict(det.state_dict())
    sharp.eval()
    x = sample_inputs(sharp, count=2, seed=7)
    with torch.inference_mode():
        assert not torch.equal(sharp.embed(x)[0], det.embed(x)[0])  # the deeper map read cell by cell
    report = export_onnx(sharp, tmp_path / "model.onnx", card=_card())
    assert report.parity.within_tolerance()
    predictor = load_model(save_artifact(tmp_path / "model", sharp, _card()))
    assert predictor.detector.embedder.pool_sizes == (3, 1)


def test_an_export_never_writes_over_a_model_card(tmp_path: Path, tiny_detector: Detector) -> None:
    card = tmp_path / "model.json"
    card.write_text('{"format_version": 5, "model_id": "bulk_ore-lite0-1234"}\n')
    with pytest.raises(ExportError, match=r"is not an earlier export's sidecar \(a model card\?\)"):
        export_onnx(tiny_detector, tmp_path / "model.onnx", card=_card())
    assert card.read_text() == '{"format_version": 5, "model_id": "bulk_ore-lite0-1234"}\n'
    assert not (tmp_path / "model.onnx").exists()
    first = export_onnx(tiny_detector, tmp_path / "exported.onnx", card=_card())
    # its own sidecar, when told
    again = export_onnx(tiny_detector, tmp_path / "exported.onnx", card=_card(), overwrite=True)
    assert again.sidecar_path == first.sidecar_path


def _other_detector(tiny_detector: Detector) -> Detector:
    """Another model: the tiny detector with another map span, so another .onnx file."""
    import copy

    other = copy.deepcopy(tiny_detector)
    with torch.no_grad():
        other.map_span.fill_(7.0)
    return other


def test_an_earlier_export_is_replaced_only_when_told(tmp_path: Path, tiny_detector: Detector) -> None:
    """Another model's export at --out was replaced without asking."""
    out = tmp_path / "m.onnx"
    export_onnx(tiny_detector, out, card={**_card(), "model_id": "model-b"})
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    other = _other_detector(tiny_detector)
    with pytest.raises(
        ExportError, match=r"'.*m\.onnx' and '.*m\.json' already exist .*pass --overwrite to replace the pair"
    ):
        export_onnx(other, out, card={**_card(), "model_id": "model-a"})
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
    sidecar_path(out).unlink()  # the .onnx alone is refused too
    with pytest.raises(ExportError, match=r"'.*m\.onnx' already exists \(an earlier export\?\)"):
        export_onnx(other, out, card={**_card(), "model_id": "model-a"})
    report = export_onnx(other, out, card={**_card(), "model_id": "model-a"}, overwrite=True)
    assert json.loads(report.sidecar_path.read_text())["model_id"] == "model-a"
    assert out.read_bytes() != before["m.onnx"]


def test_a_failed_sidecar_leaves_the_earlier_pair_as_it_was(
    tmp_path: Path, tiny_detector: Detector, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The sidecar's write failing (an immutable file) left the new .onnx beside the old model's
    sidecar: a runtime reading the pair took one model's thresholds for another's graph."""
    import models.onnx_export as mod

    out = tmp_path / "m.onnx"
    export_onnx(tiny_detector, out, card={**_card(), "model_id": "model-b"})
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    replace = mod.os.replace

    def refuse_the_sidecar(src: object, dst: object) -> None:
        if str(dst).endswith(".json"):
            raise PermissionError(1, "Operation not permitted")
        replace(src, dst)

    monkeypatch.setattr(mod.os, "replace", refuse_the_sidecar)
    with pytest.raises(
        ExportError,
        match=r"cannot write the sidecar '.*m\.json': Operation not permitted; '.*m\.onnx' is the "
        r"earlier export, as it was",
    ):
        export_onnx(
            _other_detector(tiny_detector), out, card={**_card(), "model_id": "model-a"}, overwrite=True
        )
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before  # no temporary file either
    (tmp_path / "m.json").unlink()
    out.unlink()  # with no earlier pair, the new .onnx goes too
    with pytest.raises(ExportError, match=r"cannot write the sidecar .*; '.*m\.onnx' is removed"):
        export_onnx(tiny_detector, out, card=_card())
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "text",
    ['{"format": ' + "9" * 5000 + "}\n", "[" * 100_000 + "]" * 100_000],
    ids=["integer-of-5000-digits", "nested-deep"],
)
def test_a_file_at_the_sidecars_path_that_json_cannot_read_is_refused_as_no_sidecar(
    tmp_path: Path, tiny_detector: Detector, text: str
) -> None:
    side = tmp_path / "m.json"
    side.write_text(text)  # json's plain ValueError and RecursionError were "unexpected"
    with pytest.raises(ExportError, match=r"is not an earlier export's sidecar"):
        export_onnx(tiny_detector, tmp_path / "m.onnx", card=_card())


def _sample_folder(folder: Path, good: int, corrupt: tuple[str, ...] = ()) -> Path:
    import cv2

    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(good):
        cv2.imwrite(str(folder / f"{i:03d}.png"), rng.integers(0, 256, (40, 50, 3), dtype=np.uint8))
    for name in corrupt:
        (folder / name).write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    return folder


@pytest.mark.parametrize(
    ("good", "corrupt", "decoded", "views", "warned"),
    [
        (20, ("zzz.png",), 16, 16, []),  # stops at 16 views: the rest is never decoded
        (2, ("aaa.png",), 3, 3, ["aaa.png"]),  # skipped and named; two views, one repeated
        (1, ("aaa.png", "bbb.png"), 3, 1, ["aaa.png", "bbb.png"]),
    ],
)
def test_cli_samples_are_read_until_enough_views_skipping_unreadable_files(
    model_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    good: int,
    corrupt: tuple[str, ...],
    decoded: int,
    views: int,
    warned: list[str],
) -> None:
    import io

    from rich.console import Console

    import datasets.decode
    from pipeline.cli.export import _sample_views

    folder = _sample_folder(tmp_path / "samples", good, corrupt)
    calls: list[str] = []
    decode = datasets.decode.decode_image

    def counted(path: Path):  # type: ignore[no-untyped-def]
        calls.append(path.name)
        return decode(path)

    monkeypatch.setattr(datasets.decode, "decode_image", counted)
    out = io.StringIO()
    batch = _sample_views(load_model(model_dir, runtime="torch"), folder, Console(file=out, width=400))
    assert len(calls) == decoded
    assert tuple(batch.shape) == (views, 3, _SIZE, _SIZE)
    said = out.getvalue()
    assert [name for name in (*corrupt, "000.png") if f"skipped {folder / name}" in said] == warned


def test_cli_samples_none_of_which_can_be_read_are_refused(
    model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = _sample_folder(tmp_path / "samples", 0, ("a.png", "b.png"))
    out = tmp_path / "m.onnx"
    code = run(app, ["export", "--model", str(model_dir), "--out", str(out), "--samples", str(folder)])
    err = " ".join(capsys.readouterr().err.split())
    assert code == 2
    assert f"Warning: --samples: skipped {folder / 'a.png'}: " in err
    assert err.endswith(
        f"Error: --samples {str(folder)!r}: none of its 2 images could be read (each named above)"
    )
    assert not out.exists()


@pytest.mark.parametrize(
    ("make", "out", "match"),
    [
        (
            lambda d: (d / "x.onnx").mkdir(),
            "x.onnx",
            r"output file '.*x\.onnx' is a folder; name an \.onnx file",
        ),
        (
            lambda d: (d / "file").touch(),
            "file/c.onnx",
            r"output file '.*file/c\.onnx' cannot be written: '.*file' is a file, not a folder",
        ),
        (
            lambda d: (d / "file").touch(),
            "file/deeper/c.onnx",
            r"'.*file/deeper/c\.onnx' cannot be written: '.*file' is a file, not a folder",
        ),
    ],
    ids=["out-is-a-folder", "under-a-file", "deeper-under-a-file"],
)
def test_an_output_that_cannot_be_a_file_is_refused_before_tracing(
    tmp_path: Path,
    tiny_detector: Detector,
    monkeypatch: pytest.MonkeyPatch,
    make: object,
    out: str,
    match: str,
) -> None:
    import models.onnx_export as mod

    make(tmp_path)  # type: ignore[operator]
    before = sorted(p.name for p in tmp_path.iterdir())
    traced: list[object] = []
    monkeypatch.setattr(mod, "trace_onnx", lambda *a, **k: traced.append(a))
    with pytest.raises(ExportError, match=match):
        export_onnx(tiny_detector, tmp_path / out, card=_card())
    assert traced == []
    assert sorted(p.name for p in tmp_path.iterdir()) == before


@pytest.mark.parametrize(
    "make",
    [
        lambda p: p.write_bytes(b"the model the customs service runs"),
        lambda p: (p.mkdir(), (p / "notes.txt").write_text("kept")),
    ],
    ids=["a-file", "a-folder"],
)
def test_an_export_leaves_what_has_its_old_temporary_name_alone(
    tmp_path: Path, tiny_detector: Detector, make: object
) -> None:
    """The trace went to a fixed ``x.onnx.tmp``: a file of that name was overwritten and renamed
    onto the output, and a folder of that name refused the export."""
    old = tmp_path / "x.onnx.tmp"
    make(old)  # type: ignore[operator]
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    report = export_onnx(tiny_detector, tmp_path / "x.onnx", card=_card())
    assert {p: p.read_bytes() for p in before} == before
    assert report.parity.within_tolerance()
    ort.InferenceSession(str(tmp_path / "x.onnx"), providers=["CPUExecutionProvider"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.json", "x.onnx", "x.onnx.tmp"]


def test_a_failed_final_move_leaves_no_temporary_file(
    tmp_path: Path, tiny_detector: Detector, monkeypatch: pytest.MonkeyPatch
) -> None:
    import models.onnx_export as mod

    def refuse(src: object, dst: object) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(mod.os, "replace", refuse)
    with pytest.raises(ExportError, match=r"cannot write '.*m\.onnx': Permission denied"):
        export_onnx(tiny_detector, tmp_path / "m.onnx", card=_card())
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def _saturating_detector(score_dtype: str) -> Detector:
    """The tiny detector with its one-class signal's bias raised so far that every default sample
    input scores 1.0: as a trained model scores the synthetic inputs (log-odds 37 and up)."""
    tiny = _tiny_detector()
    det = build_detector(dataclasses.replace(tiny.config, score_dtype=score_dtype))
    det.load_state_dict(tiny.state_dict())
    det.fusion.bias.copy_(torch.tensor([50.0, -30.0, -30.0]))
    return det.eval()


def _shift_score_log_odds(path: Path, by: float) -> None:
    """Add ``by`` to the input of the sigmoid that gives ``score``: a graph that computes other
    log-odds, whose score of a saturated input does not move."""
    import onnx

    model = onnx.load(str(path))
    made_by = {n.output[0]: n for n in model.graph.node}
    sigmoid = made_by["score"]
    while sigmoid.op_type == "Cast":  # an older model's float32 sigmoid, cast to float64 after
        sigmoid = made_by[sigmoid.input[0]]
    at = list(model.graph.node).index(sigmoid)
    dtype = np.float64 if sigmoid.output[0] == "score" else np.float32
    model.graph.initializer.append(onnx.numpy_helper.from_array(np.array(by, dtype), "shift_by"))
    model.graph.node.insert(at, onnx.helper.make_node("Add", [sigmoid.input[0], "shift_by"], ["shifted"]))
    sigmoid.input[0] = "shifted"
    onnx.save(model, str(path))


@pytest.mark.slow  # two exports and a trace
@pytest.mark.parametrize("score_dtype", ["float64", "float32"])  # float32: models trained before session 28
def test_a_graph_whose_saturated_scores_hide_other_log_odds_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, score_dtype: str
) -> None:
    """The default parity inputs of trained models all scored 1.0 (or 0.9999999998): a graph that
    computed other log-odds beneath passed the score check, which then proved nothing."""
    import models.onnx_export as mod

    det = _saturating_detector(score_dtype)
    with torch.inference_mode():
        assert bool((det(sample_inputs(det)).score >= 1.0 - 1e-12).all())  # saturated, as the audit found
    assert export_onnx(det, tmp_path / "good.onnx", card=_card()).parity.within_tolerance()

    perturbed = tmp_path / "shifted.onnx"
    trace_onnx(det, perturbed, sample_inputs(det)[:1], output_names=mod.OUTPUT_NAMES)
    _shift_score_log_odds(perturbed, 0.5)
    parity = mod.check_parity(det, perturbed, sample_inputs(det))
    # the outputs the graph gives all agree: only the log-odds beneath the score tell
    assert parity.score <= SCORE_TOLERANCE and parity.anomaly_map <= 1e-3 and parity.type_logits <= 1e-3
    assert not parity.within_tolerance()

    real_trace = mod.trace_onnx

    def shifted_trace(module: torch.nn.Module, target: Path, *args: object, **kwargs: object) -> None:
        real_trace(module, target, *args, **kwargs)
        _shift_score_log_odds(target, 0.5)

    monkeypatch.setattr(mod, "trace_onnx", shifted_trace)
    with pytest.raises(
        ExportError,
        match=r"max \|diff\| score 0 \(accepted <= 0.0001\), score log-odds 0\.0\d+ \(relative, <= 0.001\)",
    ):
        export_onnx(det, tmp_path / "m.onnx", card=_card())
    assert not (tmp_path / "m.onnx").exists()


def test_cli_refuses_an_existing_out_without_overwrite(
    model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "m.onnx"
    out.write_bytes(b"another model's graph")
    assert run(app, ["export", "--model", str(model_dir), "--out", str(out)]) == 2
    assert "already exists (an earlier export?); pass --overwrite" in capsys.readouterr().err
    assert out.read_bytes() == b"another model's graph"
    assert run(app, ["export", "--model", str(model_dir), "--out", str(out), "--overwrite"]) == 0
    assert (
        json.loads(sidecar_path(out).read_text())["onnx_sha256"]
        == hashlib.sha256(out.read_bytes()).hexdigest()
    )
