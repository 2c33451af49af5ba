"""The artifact: identical predictions after a round trip, and refusal of damaged directories."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from datasets.errors import ArtifactError
from models import artifact
from models.artifact import CARD_FILE, WEIGHTS_FILE, load_model, save_artifact


def _images(im) -> list[np.ndarray]:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(11)
    return [im.texture(rng), im.with_defect(im.texture(rng), rng, "plastic"), im.texture(rng, 100)]


def test_round_trip_gives_identical_predictions(tiny_model_dir: Path, tmp_path: Path, imaging) -> None:  # type: ignore[no-untyped-def]
    first = load_model(tiny_model_dir)
    copy = save_artifact(tmp_path / "copy", first.detector, first.card)
    second = load_model(copy)
    assert second.model_id == first.model_id
    assert second.thresholds == first.thresholds
    a, b = first.predict(_images(imaging)), second.predict(_images(imaging))
    for p, q in zip(a, b, strict=True):
        assert p.score == q.score
        assert p.label == q.label
        assert p.anomaly_type == q.anomaly_type
        assert np.array_equal(p.anomaly_map, q.anomaly_map)


def test_card_records_provenance(tiny_model_dir: Path) -> None:
    card = json.loads((tiny_model_dir / CARD_FILE).read_text())
    assert card["format_version"] == 7
    # 16 hex digits (64 bits) of the content hash: an 8-hex id was matched by a forged card in minutes
    assert card["model_id"] == f"bulk_ore-lite0-{card['content_sha256'][:16]}"
    assert re.fullmatch(r"bulk_ore-lite0-[0-9a-f]{16}", card["model_id"])
    assert (
        card["backbone"]["weights_sha256"]
        == "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"
    )
    assert card["preprocessing"]["input_size"] == 64
    assert (
        card["training"]["counts"]["train"]["good"] + card["training"]["counts"]["validation"]["good"] == 14
    )
    assert card["training"]["pseudo_anomalies"] is False
    assert card["validation"]["anomalies"] == "labelled"
    # a cut from n anomalous validation images promises at most 1 / (n + 1) of new ones released
    n = card["validation"]["n_anomalous"]
    assert n > 0 and card["validation"]["miss_rate_bound"] == pytest.approx(1 / (n + 1))
    assert card["validation"]["misses_allowed"] == 0  # the rule its release cut was placed by
    setter = card["validation"]["release_set_by"]  # named where an anomaly, not the normals, set it
    assert (setter is None) == (card["thresholds"]["method"] != "miss_rate_on_validation")
    if setter is not None:
        assert setter["path"].startswith("train/") and setter["score"] >= card["thresholds"]["release"]
    assert card["validation"]["anomalies_for_target_bound"] == 99
    assert set(card["thresholds"]) == {"release", "hold", "target_miss_rate", "method"}
    assert len(card["training"]["files_sha256"]) == 64


def _truncate(d: Path) -> None:
    data = (d / WEIGHTS_FILE).read_bytes()
    (d / WEIGHTS_FILE).write_bytes(data[: len(data) // 2])


def _flip_byte(d: Path) -> None:
    data = bytearray((d / WEIGHTS_FILE).read_bytes())
    data[-100] ^= 0x01
    (d / WEIGHTS_FILE).write_bytes(bytes(data))


def _edit_threshold(d: Path) -> None:
    card = json.loads((d / CARD_FILE).read_text())
    card["thresholds"]["release"] = 0.999
    (d / CARD_FILE).write_text(json.dumps(card))


def _break_json(d: Path) -> None:
    (d / CARD_FILE).write_text("{not json")


def _old_format(d: Path) -> None:
    card = json.loads((d / CARD_FILE).read_text())
    card["format_version"] = 99
    (d / CARD_FILE).write_text(json.dumps(card))


def _rehashed(edit: Callable[[dict], None], *, content: bool = False) -> Callable[[Path], None]:
    """An edit of the card whose author recomputed the card's own hash (and with ``content`` the
    content hash and model id too), as someone who read the source could."""

    def damage(d: Path) -> None:
        card = json.loads((d / CARD_FILE).read_text())
        edit(card)
        if content:
            card["content_sha256"] = artifact._content_hash(card)
            card["model_id"] = card["model_id"].rsplit("-", 1)[0] + "-" + card["content_sha256"][:16]
        card.pop("card_sha256")
        card["card_sha256"] = artifact._card_hash(card)
        (d / CARD_FILE).write_text(json.dumps(card))

    return damage


def _set(path: str, value: object) -> Callable[[dict], None]:
    def edit(card: dict) -> None:
        *parents, last = path.split(".")
        node = card
        for key in parents:
            node = node[key]
        node[last] = value

    edit.__name__ = f"{path}={value!r}"[:60]  # the test's id
    return edit


def test_a_card_from_before_float64_scores_keeps_its_float32_scores(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    # its thresholds were placed on float32 scores: a hold of 1.0 (scores saturated there) read on
    # float64 scores would hold none of the anomalies it held
    card = json.loads((tiny_model_dir / CARD_FILE).read_text())
    assert card["detector"]["score_dtype"] == "float64"  # this version's models
    target = tmp_path / "model"
    shutil.copytree(tiny_model_dir, target)
    _rehashed(lambda c: c["detector"].pop("score_dtype"), content=True)(target)
    old = load_model(target, runtime="torch")
    assert old.detector.fusion.score_dtype == "float32"
    assert load_model(tiny_model_dir, runtime="torch").detector.fusion.score_dtype == "float64"


def test_a_fully_rehashed_edit_loads_only_under_another_model_id(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    target = tmp_path / "model"
    shutil.copytree(tiny_model_dir, target)
    before = json.loads((target / CARD_FILE).read_text())
    release = before["thresholds"]["release"]
    _rehashed(_set("thresholds.release", release / 2), content=True)(target)
    assert load_model(target, runtime="torch").model_id != before["model_id"]


@pytest.mark.parametrize(
    ("damage", "match"),
    [
        (lambda d: (d / WEIGHTS_FILE).unlink(), r"weights\.safetensors' is missing"),
        (lambda d: (d / CARD_FILE).unlink(), r"model\.json' is missing"),
        (lambda d: shutil.rmtree(d), "does not exist"),
        (_truncate, r"weights\.safetensors' has sha256 .* expected"),
        (_flip_byte, r"weights\.safetensors' has sha256 .* expected"),
        (_edit_threshold, r"model\.json' was modified"),
        (_break_json, r"model\.json' is not valid JSON"),
        (_old_format, r"has format_version 99; expected 5, 6 or 7 \(train the model again"),
        # edits whose author recomputed the card's hash (and the content hash and id), as anyone could
        (_rehashed(_set("thresholds.release", 0.999)), r"pseudo types were changed after training"),
        (_rehashed(_set("detector.std", [0.0, 0.5, 0.5])), r"pseudo types were changed after training"),
        (
            _rehashed(_set("thresholds.release", 1.5), content=True),
            r"thresholds release 1\.5 / hold .* are not 0 <= release <= hold <= 1",
        ),
        (
            _rehashed(_set("thresholds.hold", -1), content=True),
            r"are not 0 <= release <= hold <= 1",
        ),
        (
            _rehashed(_set("detector.std", [0.0, 0.5, 0.5]), content=True),
            r"normalisation mean .* / std \[0\.0, 0\.5, 0\.5\] is not three finite numbers, std > 0",
        ),
        (
            _rehashed(_set("cargo_type", "vacuum_pack"), content=True),
            r"model id '.*' does not name its cargo type 'vacuum_pack'",
        ),
    ],
    ids=[
        "no-weights",
        "no-card",
        "no-dir",
        "truncated",
        "flipped-byte",
        "edited-card",
        "bad-json",
        "format",
        "threshold-card-rehashed",
        "std-card-rehashed",
        "release-over-one",
        "negative-hold",
        "zero-std",
        "cargo-type-changed",
    ],
)
def test_damaged_artifacts_are_refused(
    tiny_model_dir: Path, tmp_path: Path, damage: Callable[[Path], None], match: str
) -> None:
    target = tmp_path / "model"
    shutil.copytree(tiny_model_dir, target)
    damage(target)
    with pytest.raises(ArtifactError, match=match):
        load_model(target)


@pytest.mark.parametrize("extra", [(16 << 20) + 1, 1 << 30], ids=["past-the-header-allowance", "1-GiB"])
def test_a_weights_file_larger_than_the_card_allows_is_refused_unread(
    tiny_model_dir: Path, tmp_path: Path, extra: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "model"
    shutil.copytree(tiny_model_dir, target)
    tensors = sum(
        t.numel() * t.element_size()
        for t in load_model(target, runtime="torch").detector.state_dict().values()
    )
    with (target / WEIGHTS_FILE).open("r+b") as fh:
        fh.truncate(tensors + extra)  # sparse: nothing written to disk
    reads: list[int] = []
    opened = Path.open

    def counting_open(self: Path, *args: object, **kwargs: object):  # type: ignore[no-untyped-def]
        handle = opened(self, *args, **kwargs)
        if self.name == WEIGHTS_FILE:
            read = handle.read
            handle.read = lambda n=-1: reads.append(n) or read(n)  # type: ignore[method-assign]
        return handle

    monkeypatch.setattr(Path, "open", counting_open)
    with pytest.raises(
        ArtifactError, match=rf"weights\.safetensors' holds {tensors + extra} bytes, more than the \d+ that"
    ):
        load_model(target, runtime="torch")
    assert reads == []


def test_the_weights_are_as_readable_as_the_card(tiny_model_dir: Path) -> None:
    mode = {name: (tiny_model_dir / name).stat().st_mode & 0o777 for name in (CARD_FILE, WEIGHTS_FILE)}
    assert mode[WEIGHTS_FILE] == mode[CARD_FILE]


def test_a_model_swapped_in_while_loading_is_never_mixed_with_the_card_read(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # `train --overwrite` replaces the whole folder (old out, new in) while a service loads it: the
    # swap lands right after the weights were first read; what loads must be one model, card and all
    served, staging, retired = tmp_path / "model", tmp_path / ".model.new", tmp_path / ".model.old"
    shutil.copytree(tiny_model_dir, served)
    old = load_model(served, runtime="torch")
    retrained = old.detector
    with torch.no_grad():
        retrained.attn_temp.mul_(2.0)
    save_artifact(staging, retrained, old.card)
    old = load_model(served, runtime="torch")
    opened = Path.open

    def open_then_swap(self: Path, *args: object, **kwargs: object):  # type: ignore[no-untyped-def]
        handle = opened(self, *args, **kwargs)
        if self.name == WEIGHTS_FILE and staging.exists():
            close = handle.close

            def close_and_swap() -> None:
                close()
                if staging.exists():
                    os.replace(served, retired)
                    os.replace(staging, served)

            handle.close = close_and_swap  # type: ignore[method-assign]
        return handle

    monkeypatch.setattr(Path, "open", open_then_swap)
    loaded = load_model(served, runtime="torch")
    monkeypatch.undo()
    assert not staging.exists()  # the swap happened during the load
    assert loaded.model_id == old.model_id
    assert torch.equal(loaded.detector.attn_temp, old.detector.attn_temp)


def _resealed(edit: Callable[[dict], None]) -> Callable[[Path], None]:
    """An edit re-sealed as a forger would: content hash, model id (of the card's own cargo type and
    backbone) and the card's hash all recomputed."""

    def damage(d: Path) -> None:
        card = json.loads((d / CARD_FILE).read_text())
        edit(card)
        card["content_sha256"] = artifact._content_hash(card)
        card["model_id"] = (
            f"{card.get('cargo_type')}-{card['detector']['backbone']}-{card['content_sha256'][:16]}"
        )
        card.pop("card_sha256")
        card["card_sha256"] = artifact._card_hash(card)
        (d / CARD_FILE).write_text(json.dumps(card))

    return damage


def _drop(path: str) -> Callable[[dict], None]:
    def edit(card: dict) -> None:
        *parents, last = path.split(".")
        node = card
        for key in parents:
            node = node[key]
        del node[last]

    edit.__name__ = f"no-{path}"
    return edit


_NOT = r"is not accepted; expected"


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (_set("preprocessing.tiling.tile_size", "abc"), rf"preprocessing\.tiling\.tile_size = 'abc' {_NOT}"),
        (_set("preprocessing.tiling.evil", 1), rf"preprocessing\.tiling = .* {_NOT} an object of tile_size"),
        (_set("preprocessing.tiling.overlap", 500), rf"preprocessing\.tiling\.overlap = 500 {_NOT}"),
        (
            _set("preprocessing.sixteen_bit_depth", 7),
            rf"sixteen_bit_depth = 7 {_NOT} a whole number in \[8, 16\]",
        ),
        (
            _set("preprocessing.sixteen_bit_depth", 17),
            rf"sixteen_bit_depth = 17 {_NOT} a whole number in \[8, 16\]",
        ),
        # a 512 x 512 image in 1 px tiles was 262,144 views (12 GiB): tiles are at least half the input
        (
            _set("preprocessing.tiling.tile_size", 1),
            rf"tile_size = 1 {_NOT} 0 \(no tiles\) or at least 32: a tile is enlarged at most 2x to the 64",
        ),
        (_set("preprocessing.tiling.tile_size", 31), rf"tile_size = 31 {_NOT} 0 \(no tiles\) or at least 32"),
        (_drop("thresholds.method"), rf"thresholds\.method = None {_NOT} a non-empty string"),
        (_set("thresholds.target_miss_rate", float("nan")), rf"thresholds\.target_miss_rate = nan {_NOT}"),
        (_set("thresholds.target_miss_rate", -5), rf"target_miss_rate = -5 {_NOT} a number in \(0, 1\)"),
        (_set("thresholds.target_miss_rate", 1.0), rf"target_miss_rate = 1\.0 {_NOT}"),
        (_set("detector.input_size", 0), rf"detector\.input_size = 0 {_NOT} a whole number in \[32, 1024\]"),
        (_set("detector.input_size", "64"), rf"detector\.input_size = '64' {_NOT}"),
        (_set("detector.input_size", 10**6), rf"detector\.input_size = 1000000 {_NOT}"),
        (_set("detector.sigma", float("nan")), rf"detector\.sigma = nan {_NOT}"),
        (_set("detector.sigma", 1e9), rf"detector\.sigma = 1000000000\.0 {_NOT}"),
        (_set("detector.topk", 0), rf"detector\.topk = 0 {_NOT} a whole number in \[1, 4096\]"),
        (_set("detector.chunk", 0), rf"detector\.chunk = 0 {_NOT}"),
        (_set("detector.chunk", True), rf"detector\.chunk = True {_NOT}"),
        (_set("detector.chunk", 2), rf"detector\.chunk = 2 {_NOT} at least 32 \(bank rows per matmul\)"),
        (_set("detector.bank_size", 10**12), rf"detector\.bank_size = 1000000000000 {_NOT}"),
        # in range, but not what the weights hold: refused before a bank of that size is allocated
        (_set("detector.bank_size", 10**6), r"detector\.bank_size gives 1000000, but .* holds bank\.bank"),
        (_set("detector.patch_hidden", 10**8), r"detector\.patch_hidden gives 100000000, but .* holds"),
        (_set("detector.class_names", "good"), rf"detector\.class_names = 'good' {_NOT}"),
        (_set("detector.backbone", "lite9"), rf"detector\.backbone = 'lite9' {_NOT} one of \['lite0'"),
        (_set("detector.fine_scale", "yes"), rf"detector\.fine_scale = 'yes' {_NOT} true or false"),
        # what only building the detector finds: named as the card's, not a bare ValueError
        (_set("detector.pad", 8), r"model\.json' has an unusable detector config: pad 8 must be a multiple"),
        (_set("detector.pool_sizes", [3]), r"unusable detector config: pool_sizes \(3,\) must give one"),
        (_drop("preprocessing"), rf"preprocessing = None {_NOT} an object"),
        (_set("preprocessing.source_resolution.downscale", "x"), rf"downscale = 'x' {_NOT}"),
        (_set("preprocessing.source_resolution.downscale", float("nan")), rf"downscale = nan {_NOT}"),
        (_set("training", "oops"), rf"training = 'oops' {_NOT} an object"),
        # an AttributeError naming no field before
        (_set("training.sixteen_bit", "x"), rf"training\.sixteen_bit = 'x' {_NOT} an object"),
        (_set("training.sixteen_bit", []), rf"training\.sixteen_bit = \[\] {_NOT} an object"),
        # a ModelError naming no card before
        (
            _set("preprocessing.source_resolution.downscale_hw", [1]),
            rf"model\.json': preprocessing\.source_resolution\.downscale_hw = \[1\] {_NOT} a list of two",
        ),
        (_set("preprocessing.source_resolution.downscale_hw", [0, 1]), rf"downscale_hw = \[0, 1\] {_NOT}"),
        (
            _set("preprocessing.source_resolution.downscale_hw", ["1", 1]),
            rf"downscale_hw = \['1', 1\] {_NOT}",
        ),
        (_set("preprocessing.source_resolution.downscale_hw", None), rf"downscale_hw = None {_NOT}"),
        (
            _set("preprocessing.source_resolution.downscale_hw_range", 5),
            rf"model\.json': preprocessing\.source_resolution\.downscale_hw_range = 5 {_NOT} \[\[least, "
            r"most\]",
        ),
        (
            _set("preprocessing.source_resolution.downscale_hw_range", [[1, 2]]),
            rf"downscale_hw_range = \[\[1, 2\]\] {_NOT}",
        ),
        (
            _set("preprocessing.source_resolution.downscale_hw_range", [[2, 1], [1, 2]]),
            rf"downscale_hw_range = \[\[2, 1\], \[1, 2\]\] {_NOT} .* least no more than most",
        ),
        (
            _set("preprocessing.source_resolution.downscale_hw_range", [[1, 2], [float("nan"), 2]]),
            rf"downscale_hw_range = \[\[1, 2\], \[nan, 2\]\] {_NOT}",
        ),
        (
            _set("preprocessing.source_resolution.downscale_short_long", [2, 1]),
            rf"model\.json': preprocessing\.source_resolution\.downscale_short_long = \[2, 1\] {_NOT} "
            r"\[median along a view's shorter side, .* the shorter no more than the longer",
        ),
        (
            _set("preprocessing.source_resolution.downscale_short_long", [0, 1]),
            rf"downscale_short_long = \[0, 1\] {_NOT}",
        ),
        (
            _set("preprocessing.source_resolution.downscale_short_long", "1"),
            rf"downscale_short_long = '1' {_NOT}",
        ),
        (
            _set("training.pseudo_types", "foreign_object"),
            rf"training\.pseudo_types = 'foreign_object' {_NOT}",
        ),
        (_set("cargo_type", None), rf"cargo_type = None {_NOT} a non-empty string"),
        (_set("cargo_type", ""), rf"cargo_type = '' {_NOT} a non-empty string"),
        (_set("cargo_type", 7), rf"cargo_type = 7 {_NOT} a non-empty string"),
        (_set("cargo_type", ["bulk_ore", "x"]), rf"cargo_type = \['bulk_ore', 'x'\] {_NOT}"),
        (_set("cargo_type", "../../etc/passwd"), rf"cargo_type = '\.\./\.\./etc/passwd' {_NOT} at most 64"),
        (_set("cargo_type", " bulk_ore"), rf"cargo_type = ' bulk_ore' {_NOT}"),
        (_set("cargo_type", "bulk\nore"), rf"cargo_type = 'bulk\\nore' {_NOT}"),
        (_set("cargo_type", "x" * 65), rf"cargo_type = 'x+' {_NOT}"),
        # a card written before the name rule: refused, not loaded (reads as ero_klub, and no
        # declaration naming it is taken)
        (_set("cargo_type", "\u202ebulk_ore"), rf"cargo_type = '\\u202ebulk_ore' {_NOT} a name .* U\+202E"),
        (_set("cargo_type", "bulk\u200bore"), rf"cargo_type = 'bulk\\u200bore' {_NOT} a name .* U\+200B"),
    ],
    ids=lambda v: getattr(v, "__name__", "refused"),
)
def test_a_resealed_card_out_of_range_is_refused_naming_the_field(
    tiny_model_dir: Path, tmp_path: Path, edit: Callable[[dict], None], match: str
) -> None:
    target = tmp_path / "model"
    shutil.copytree(tiny_model_dir, target)
    _resealed(edit)(target)
    with pytest.raises(ArtifactError, match=match):
        load_model(target, runtime="torch")


@pytest.mark.parametrize("cargo", ["scrap_metal", "Ore (wet) #2", "vacuum_pack", "لوله\u200cها"])
def test_a_well_formed_cargo_type_of_the_users_loads(
    tiny_model_dir: Path, tmp_path: Path, cargo: str
) -> None:
    target = tmp_path / "model"
    shutil.copytree(tiny_model_dir, target)
    _resealed(_set("cargo_type", cargo))(target)
    assert load_model(target, runtime="torch").cargo_type == cargo


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("[" * 100_000 + "]" * 100_000, r"is not a model card: its JSON is nested too deeply"),
        (" " * (16 << 20) + "{}", r"is larger than 16 MiB; a model card is a few kilobytes"),
        ('{"bank_size": ' + "9" * 5000 + "}", r"model\.json' is not valid JSON: .*4300 digits"),
    ],
    ids=["nested", "huge", "integer-of-5000-digits"],
)
def test_a_card_too_deep_or_too_large_is_refused(
    tiny_model_dir: Path, tmp_path: Path, text: str, match: str
) -> None:
    target = tmp_path / "model"
    shutil.copytree(tiny_model_dir, target)
    (target / CARD_FILE).write_text(text)
    with pytest.raises(ArtifactError, match=match):
        load_model(target, runtime="torch")


def test_a_card_load_would_refuse_is_never_written(tiny_model_dir: Path, tmp_path: Path) -> None:
    predictor = load_model(tiny_model_dir, runtime="torch")
    card = {**predictor.card, "cargo_type": "ore/wet"}
    with pytest.raises(ArtifactError, match=r"cargo_type = 'ore/wet' is not accepted"):
        save_artifact(tmp_path / "model", predictor.detector, card)
    assert not (tmp_path / "model").exists()


def test_the_cli_refuses_a_resealed_card_with_exit_2(
    tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from pipeline.cli import app, run

    target = tmp_path / "model"
    shutil.copytree(tiny_model_dir, target)
    _resealed(_set("detector.chunk", 0))(target)
    assert run(app, ["export", "--model", str(target), "--out", str(tmp_path / "m.onnx")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"Error: '{target / CARD_FILE}': detector.chunk = 0 is not accepted")
    assert not (tmp_path / "m.onnx").exists()


def test_tiles_of_half_the_model_input_load(tiny_model_dir: Path, tmp_path: Path) -> None:
    target = tmp_path / "model"
    shutil.copytree(tiny_model_dir, target)
    _resealed(_set("preprocessing.tiling", {"tile_size": 32, "overlap": 8}))(target)
    assert load_model(target, runtime="torch").scorer.tiling.tile_size == 32


def _pseudo_types_of_every_class(card: dict) -> None:
    # every detected type reported "unknown", as if each were a synthetic training type
    card["training"]["pseudo_types"] = card["detector"]["class_names"][1:]


@pytest.mark.parametrize(
    "edit",
    [_pseudo_types_of_every_class, _set("cargo_type", "scrap_metal")],
    ids=["pseudo-types", "cargo-type"],
)
def test_an_edit_of_a_field_scoring_reads_changes_the_model_id(
    tiny_model_dir: Path, tmp_path: Path, edit: Callable[[dict], None]
) -> None:
    target = tmp_path / "model"
    shutil.copytree(tiny_model_dir, target)
    before = load_model(target, runtime="torch").model_id
    _resealed(edit)(target)
    after = load_model(target, runtime="torch").model_id
    assert after.rsplit("-", 1)[1] != before.rsplit("-", 1)[1]  # the content hash's part, not just the prefix


def test_an_edit_of_the_pseudo_types_alone_is_refused(tiny_model_dir: Path, tmp_path: Path) -> None:
    target = tmp_path / "model"
    shutil.copytree(tiny_model_dir, target)
    _rehashed(_pseudo_types_of_every_class)(target)  # the card's own hash recomputed, not the id
    with pytest.raises(ArtifactError, match=r"cargo type or pseudo types were changed after training"):
        load_model(target, runtime="torch")


def _as_format_5(card: dict) -> None:
    """The card as format 5 wrote it: its content hash of weights, detector, preprocessing and
    thresholds only (the rule spelled out here, not borrowed from the code under test)."""
    card["format_version"] = 5
    content = {k: card[k] for k in ("detector", "preprocessing", "thresholds")}
    content["weights"] = card["weights_sha256"]
    canonical = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()
    card["content_sha256"] = hashlib.sha256(canonical).hexdigest()
    card["model_id"] = f"{card['cargo_type']}-{card['detector']['backbone']}-{card['content_sha256'][:8]}"
    card.pop("card_sha256")
    card["card_sha256"] = artifact._card_hash(card)


def test_a_format_5_model_loads_under_its_own_id(tiny_model_dir: Path, tmp_path: Path) -> None:
    target = tmp_path / "model"
    shutil.copytree(tiny_model_dir, target)
    card = json.loads((target / CARD_FILE).read_text())
    _as_format_5(card)
    (target / CARD_FILE).write_text(json.dumps(card))
    assert load_model(target, runtime="torch").model_id == card["model_id"]
    assert load_model(tiny_model_dir, runtime="torch").model_id != card["model_id"]  # format 7's rule


def _sealed_as(version: int, digits: int) -> Callable[[dict], None]:
    """The card as format ``version`` with a model id of ``digits`` hex digits of its content hash
    (formats 6 and 7 hash the same fields; the id's rule spelled out here)."""

    def edit(card: dict) -> None:
        card["format_version"] = version
        card["model_id"] = (
            f"{card['cargo_type']}-{card['detector']['backbone']}-{card['content_sha256'][:digits]}"
        )
        card.pop("card_sha256")
        card["card_sha256"] = artifact._card_hash(card)

    edit.__name__ = f"format-{version}-{digits}-hex"
    return edit


@pytest.mark.parametrize(
    ("edit", "loads"),
    [
        (_sealed_as(6, 8), True),  # a model trained before format 7 keeps its id
        (_sealed_as(7, 16), True),
        (_sealed_as(6, 16), False),
        (_sealed_as(7, 8), False),  # the short id a forger could match is not this format's
        (_sealed_as(7, 12), False),
    ],
    ids=lambda v: getattr(v, "__name__", "loads" if v else "refused"),
)
def test_a_format_6_card_keeps_its_8_hex_id_and_format_7_has_16(
    tiny_model_dir: Path, tmp_path: Path, edit: Callable[[dict], None], loads: bool
) -> None:
    target = tmp_path / "model"
    shutil.copytree(tiny_model_dir, target)
    card = json.loads((target / CARD_FILE).read_text())
    edit(card)
    (target / CARD_FILE).write_text(json.dumps(card))
    if loads:
        assert load_model(target, runtime="torch").model_id == card["model_id"]
    else:
        with pytest.raises(ArtifactError, match=r"model id '.*' does not name its cargo type 'bulk_ore', "):
            load_model(target, runtime="torch")


def _class_1_synthetic(*, listed: bool) -> Callable[[dict], None]:
    def edit(card: dict) -> None:
        names = card["detector"]["class_names"]
        names[1] = "synthetic_noise"
        card["training"]["pseudo_types"] = ["synthetic_noise"] if listed else []

    edit.__name__ = f"synthetic-class-{'listed' if listed else 'unlisted'}"
    return edit


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (_pseudo_types_of_every_class, r"training\.pseudo_types = \[.*\] is not accepted; expected \[\]"),
        (_set("training.pseudo_types", ["synthetic_noise"]), r"pseudo_types = \['synthetic_noise'\]"),
        (_class_1_synthetic(listed=False), r"pseudo_types = \[\] .* expected \['synthetic_noise'\]"),
        (_drop("training"), None),  # no synthetic class: none to list
        (_class_1_synthetic(listed=True), None),
    ],
    ids=lambda v: getattr(v, "__name__", "refused" if v else "loads"),
)
def test_a_format_5_card_keeps_the_pseudo_types_training_wrote(
    tiny_model_dir: Path, tmp_path: Path, edit: Callable[[dict], None], match: str | None
) -> None:
    # a format 5 id does not cover them: a format 6 card re-sealed as 5 must not carry others
    target = tmp_path / "model"
    shutil.copytree(tiny_model_dir, target)
    card = json.loads((target / CARD_FILE).read_text())
    edit(card)
    _as_format_5(card)
    (target / CARD_FILE).write_text(json.dumps(card))
    if match is None:
        assert load_model(target, runtime="torch").model_id == card["model_id"]
    else:
        with pytest.raises(ArtifactError, match=match):
            load_model(target, runtime="torch")


@pytest.mark.parametrize(
    ("given", "damage", "match"),
    [
        (
            CARD_FILE,
            None,
            r"model\.json' is not a folder; a model is the folder that holds model\.json and "
            r"weights\.safetensors; did you mean its folder '.*/model'\?",
        ),
        (
            WEIGHTS_FILE,
            None,
            r"weights\.safetensors' is not a folder; .* did you mean its folder '.*/model'\?",
        ),
        (
            None,
            lambda d: (d / "notes.txt").touch(),
            r"notes\.txt' is not a folder; a model is the folder that "
            r"holds model\.json and weights\.safetensors$",
        ),
        (
            ".",
            lambda d: ((d / WEIGHTS_FILE).unlink(), (d / WEIGHTS_FILE).mkdir()),
            r"weights\.safetensors' is a folder, not a file; expected the weights written with",
        ),
        (
            ".",
            lambda d: ((d / CARD_FILE).unlink(), (d / CARD_FILE).mkdir()),
            r"model\.json' is a folder, not a file; expected the model card written by training",
        ),
        # said to be a folder before, which it was not
        (
            ".",
            lambda d: ((d / WEIGHTS_FILE).unlink(), os.mkfifo(d / WEIGHTS_FILE)),
            r"weights\.safetensors' is not a regular file \(a pipe, a socket or a device\?\); expected "
            r"the weights written with model\.json$",
        ),
        (
            ".",
            lambda d: ((d / WEIGHTS_FILE).unlink(), (d / WEIGHTS_FILE).symlink_to("/dev/zero")),
            r"weights\.safetensors' is not a regular file \(a pipe, a socket or a device\?\)",
        ),
        (
            ".",
            lambda d: ((d / CARD_FILE).unlink(), os.mkfifo(d / CARD_FILE)),
            r"model\.json' is not a regular file \(a pipe, a socket or a device\?\); expected the model card",
        ),
    ],
    ids=[
        "card-given",
        "weights-given",
        "other-file-given",
        "weights-a-folder",
        "card-a-folder",
        "weights-a-fifo",
        "weights-a-link-to-a-device",
        "card-a-fifo",
    ],
)
def test_a_model_path_that_is_a_file_or_a_file_that_is_a_folder_is_named_so(
    tiny_model_dir: Path,
    tmp_path: Path,
    given: str | None,
    damage: Callable[[Path], object] | None,
    match: str,
) -> None:
    target = tmp_path / "model"
    shutil.copytree(tiny_model_dir, target)
    if damage is not None:
        damage(target)
    path = target / "notes.txt" if given is None else target / given
    with pytest.raises(ArtifactError, match=match):
        load_model(path, runtime="torch")


def _weights_edited(edit: Callable[[dict[str, torch.Tensor]], None]) -> Callable[[Path], None]:
    """The weights file rewritten with ``edit`` applied to its tensors, and the card re-sealed to it
    (weights hash, content hash, model id and card hash), as someone who read the source could."""

    def damage(d: Path) -> None:
        from safetensors.torch import load_file, save_file

        tensors = load_file(d / WEIGHTS_FILE)
        edit(tensors)
        save_file(tensors, d / WEIGHTS_FILE)
        card = json.loads((d / CARD_FILE).read_text())
        card["weights_sha256"] = hashlib.sha256((d / WEIGHTS_FILE).read_bytes()).hexdigest()
        (d / CARD_FILE).write_text(json.dumps(card))
        _resealed(lambda c: None)(d)

    return damage


def _put(key: str, value: float, index: tuple[int, ...] = ()) -> Callable[[dict[str, torch.Tensor]], None]:
    def edit(tensors: dict[str, torch.Tensor]) -> None:
        tensors[key][index] = value

    edit.__name__ = f"{key}={value}"
    return edit


@pytest.mark.parametrize(
    ("edit", "key", "bad"),
    [
        (_put("bank.bank", float("nan"), (3,)), "bank.bank", "152 NaN or infinite values of "),
        (_put("map_span", float("nan")), "map_span", "1 NaN or infinite value of 1"),
        (_put("fusion.bias", float("-inf"), (1,)), "fusion.bias", "1 NaN or infinite value of 3"),
        (_put("head.linear.weight", float("inf"), (0, 0)), "head.linear.weight", "1 NaN or infinite"),
    ],
    ids=lambda v: getattr(v, "__name__", None),
)
@pytest.mark.parametrize("runtime", ["torch", "onnxruntime"])
def test_a_tensor_holding_nan_or_inf_is_refused_on_load_naming_it(
    tiny_model_dir: Path, tmp_path: Path, edit: Callable, key: str, bad: str, runtime: str
) -> None:
    # a NaN bank row scored NaN under torch, and ONNX Runtime was refused as disagreeing with it
    target = tmp_path / "model"
    shutil.copytree(tiny_model_dir, target)
    _weights_edited(edit)(target)
    with pytest.raises(ArtifactError) as info:
        load_model(target, runtime=runtime)
    assert str(info.value).startswith(
        f"model {str(target)!r}: tensor {key!r} of weights.safetensors holds {bad}"
    )
    assert str(info.value).endswith("a model's tensors are finite numbers (train the model again)")


def test_a_detector_holding_nan_is_never_saved(tiny_model_dir: Path, tmp_path: Path) -> None:
    predictor = load_model(tiny_model_dir, runtime="torch")
    with torch.no_grad():
        predictor.detector.map_span.fill_(float("nan"))
    with pytest.raises(
        ArtifactError, match=r"model '.*/model': tensor 'map_span' of weights\.safetensors holds 1"
    ):
        save_artifact(tmp_path / "model", predictor.detector, predictor.card)
    assert not (tmp_path / "model").exists()


def _as_dtype(key: str, dtype: torch.dtype) -> Callable[[dict[str, torch.Tensor]], None]:
    def edit(tensors: dict[str, torch.Tensor]) -> None:
        name = key if key in tensors else next(k for k in tensors if k.endswith(key))
        tensors[name] = tensors[name].to(dtype)

    edit.__name__ = f"{key}-{str(dtype).removeprefix('torch.')}"
    return edit


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (_as_dtype("bank.bank", torch.float16), r"holds tensor 'bank\.bank' as float16, where the detector"),
        (_as_dtype("bank.bank", torch.float64), r"holds tensor 'bank\.bank' as float64, where the detector"),
        (_as_dtype("bank.bank", torch.int64), r"holds tensor 'bank\.bank' as int64, where the detector"),
        (_as_dtype("pos_scale", torch.bool), r"holds tensor 'pos_scale' as bool, where the detector in"),
        (
            _as_dtype("num_batches_tracked", torch.float32),
            r"holds tensor '.*\.num_batches_tracked' as float32, where the detector in model\.json has int64",
        ),
    ],
    ids=lambda v: getattr(v, "__name__", None),
)
def test_a_tensor_of_another_dtype_is_refused_naming_it(
    tiny_model_dir: Path, tmp_path: Path, edit: Callable, match: str
) -> None:
    # each was cast to the detector's dtype on load, silently
    target = tmp_path / "model"
    shutil.copytree(tiny_model_dir, target)
    _weights_edited(edit)(target)
    with pytest.raises(ArtifactError, match=rf"weights\.safetensors' {match}"):
        load_model(target, runtime="torch")
