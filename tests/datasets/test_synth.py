"""The synthetic inspection data generator: determinism, masks, layout, counts, variants, errors."""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from datasets.errors import CargoTypeError, InputError
from datasets.synth import ANOMALY_TYPES, GOOD, SynthConfig, generate_dataset, render_sample
from datasets.synth.nuisance import sample_nuisance
from datasets.synth.preview import MAX_PER_TYPE, contact_sheet

TINY = {
    "seed": 5,
    "size": 64,
    "train_good": 2,
    "train_anomalous": 1,
    "test_good": 3,
    "test_anomalous": 1,
    "holdout_types": ("puncture", "wet_patch"),
}


def _hashes(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("synth") / "one_worker"
    generate_dataset(SynthConfig(out=root, workers=1, **TINY))
    return root


def _read(path: Path) -> np.ndarray:
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert img is not None, path
    return img


@pytest.mark.slow
def test_same_arguments_give_byte_identical_files_with_any_worker_count(tiny: Path, tmp_path: Path) -> None:
    generate_dataset(SynthConfig(out=tmp_path / "two_workers", workers=2, **TINY))
    assert _hashes(tmp_path / "two_workers") == _hashes(tiny)


def test_other_seed_gives_other_images(tiny: Path, tmp_path: Path) -> None:
    generate_dataset(
        SynthConfig(
            out=tmp_path / "s",
            workers=1,
            **{**TINY, "seed": 6, "train_good": 1, "train_anomalous": 0, "test_anomalous": 0},
        )
    )
    a = (tiny / "bulk_ore/train/good/000000.png").read_bytes()
    assert (tmp_path / "s/bulk_ore/train/good/000000.png").read_bytes() != a


def test_masks_exist_exactly_for_anomalous_images_and_match_them(tiny: Path) -> None:
    meta = json.loads((tiny / "dataset.json").read_text())
    assert (
        len(meta["images"]) == 2 * (2 + 3) + 2 * 3 + 2 * 4
    )  # good, train anomalous (one type held out), test
    for e in meta["images"]:
        img = _read(tiny / e["path"])
        assert img.shape[:2] == (64, 64)
        if e["anomaly_type"] == GOOD:
            assert e["mask_path"] == ""
            continue
        mask = _read(tiny / e["mask_path"])
        assert mask.shape == (64, 64) and mask.dtype == np.uint8
        assert set(np.unique(mask)) <= {0, 255}
        assert (mask > 0).any(), e["path"]
    masks = {str(p.relative_to(tiny)) for p in tiny.rglob("*_mask.png")}
    assert masks == {e["mask_path"] for e in meta["images"] if e["mask_path"]}


def test_held_out_types_are_absent_from_train_only(tiny: Path) -> None:
    assert sorted(p.name for p in (tiny / "bulk_ore/train").iterdir()) == [
        "foreign_object",
        "good",
        "oversize_lump",
        "wrong_material",
    ]
    assert sorted(p.name for p in (tiny / "vacuum_pack/train").iterdir()) == [
        "air_pocket",
        "foreign_object",
        "good",
        "seal_defect",
    ]
    assert (tiny / "bulk_ore/test/wet_patch/000000.png").is_file()
    assert (tiny / "vacuum_pack/test/puncture/000000.png").is_file()
    assert json.loads((tiny / "dataset.json").read_text())["holdout_types"] == ["puncture", "wet_patch"]


def test_counts_in_dataset_json_match_the_files(tiny: Path) -> None:
    meta = json.loads((tiny / "dataset.json").read_text())
    on_disk = {
        cargo: {
            split: {d.name: len(list(d.glob("*.png"))) for d in (tiny / cargo / split).iterdir()}
            for split in ("train", "test")
        }
        for cargo in ("bulk_ore", "vacuum_pack")
    }
    assert meta["counts"] == on_disk
    assert meta["counts"]["bulk_ore"]["test"] == {
        "good": 3,
        "foreign_object": 1,
        "wet_patch": 1,
        "wrong_material": 1,
        "oversize_lump": 1,
    }
    assert meta["arguments"]["seed"] == 5 and meta["generator_version"] == "2.2"


def test_dataset_json_records_each_image_and_mask_sha256(tiny: Path) -> None:
    # `data synth --overwrite` tells the generator's files from a user's saved under their names by it
    meta = json.loads((tiny / "dataset.json").read_text())
    recorded = {e["path"]: e["sha256"] for e in meta["images"]}
    recorded.update({e["mask_path"]: e["mask_sha256"] for e in meta["images"] if e["mask_path"]})
    assert any(p.endswith("_mask.png") for p in recorded)
    assert recorded == {p: hashlib.sha256((tiny / p).read_bytes()).hexdigest() for p in recorded}
    assert {e["mask_sha256"] for e in meta["images"] if e["anomaly_type"] == "good"} == {""}
    assert meta["manifest_sha256"] == hashlib.sha256((tiny / "manifest.csv").read_bytes()).hexdigest()


def test_stems_are_unique_per_type_across_splits(tiny: Path) -> None:
    assert (tiny / "bulk_ore/train/foreign_object/000000.png").is_file()
    assert (tiny / "bulk_ore/test/foreign_object/000001.png").is_file()
    assert (tiny / "bulk_ore/test/good/000002.png").is_file()  # train/good holds 000000-000001


def test_manifest_groups_test_images_into_shipments(tiny: Path) -> None:
    with (tiny / "manifest.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    meta = json.loads((tiny / "dataset.json").read_text())
    assert sorted(r["path"] for r in rows) == sorted(
        e["path"] for e in meta["images"] if e["split"] == "test"
    )
    shipments: dict[str, set[str]] = {}
    for r in rows:
        shipments.setdefault(r["shipment_id"], set()).add(r["cargo_type"])
        assert r["shipment_id"].startswith(f"SHP-{r['cargo_type']}-")
        assert (r["label"] == "good") == (r["anomaly_type"] == GOOD) == (r["mask_path"] == "")
        assert r["radiation_alarm"] in ("true", "false")
        assert r["aeo_tier"] in ("", "AEOF", "AEOS")
        assert r["hs_code"] in (("2601", "2603") if r["cargo_type"] == "bulk_ore" else ("8486", "8541"))
        assert (tiny / r["path"]).is_file()
    assert all(len(c) == 1 for c in shipments.values())


def test_manifest_shipment_sizes_and_flag_rate(tmp_path: Path) -> None:
    from datasets.synth.shipments import ManifestImage, build_shipments

    images = [
        ManifestImage(f"p/{i:04d}.png", GOOD if i % 5 else "puncture", "" if i % 5 else f"m/{i}")
        for i in range(2000)
    ]
    shipments, flagged = set(), set()
    for seed in range(4):  # a rate of 3 % over ~1600 shipments: one seed's ~400 can stray to 5.7 %
        rows = build_shipments(images, cargo="vacuum_pack", seed=seed, cargo_index=1)
        sizes: dict[str, int] = {}
        for r in rows:
            sizes[r["shipment_id"]] = sizes.get(r["shipment_id"], 0) + 1
        assert sorted(r["path"] for r in rows) == sorted(i.path for i in images)
        assert min(sizes.values()) >= 3 and max(sizes.values()) <= 8
        shipments |= {(seed, s) for s in sizes}
        flagged |= {
            (seed, r["shipment_id"])
            for r in rows
            if any(
                r[f]
                for f in (
                    "radiation_alarm",
                    "suspected_solid_waste",
                    "document_mismatch",
                    "declared_foreign_inclusions",
                )
            )
        }
    assert 0.02 <= len(flagged) / len(shipments) <= 0.04


def _shipments(n_good: int, n_bad: int, seed: int) -> list[list[str]]:
    """The labels of each shipment build_shipments makes of ``n_good`` normal and ``n_bad`` anomalous
    images (anomalies of four types, as the generator has)."""
    from datasets.synth.shipments import ManifestImage, build_shipments

    images = [ManifestImage(f"t/good/{i:06d}.png", GOOD, "") for i in range(n_good)]
    images += [ManifestImage(f"t/{i % 4}/{i:06d}.png", "puncture", f"m/{i}") for i in range(n_bad)]
    rows = build_shipments(images, cargo="bulk_ore", seed=seed, cargo_index=0)
    assert sorted(r["path"] for r in rows) == sorted(i.path for i in images)
    assert rows == build_shipments(images, cargo="bulk_ore", seed=seed, cargo_index=0)
    shipments: dict[str, list[str]] = {}
    for r in rows:
        shipments.setdefault(r["shipment_id"], []).append(r["label"])
    return list(shipments.values())


@pytest.mark.parametrize(
    ("n_good", "n_bad", "clean", "suspect"),
    [
        # `data synth`'s defaults, 40 good and 4 types x 10 anomalous: 20 good kept for clean ones
        (40, 40, (3, 6), (14, 21)),
        (7, 12, (1, 1), (4, 4)),  # 3 good kept, 4 left: 4 suspect shipments of 3 anomalies
        (200, 40, (13, 62), (14, 40)),
        (40, 0, (5, 13), (0, 0)),
        (3, 1, (0, 0), (1, 1)),
    ],
    ids=["defaults", "few_good", "many_good", "no_anomalies", "one_shipment"],
)
def test_shipments_hold_3_to_8_images_with_clean_and_suspect_ones_at_any_counts(
    n_good: int, n_bad: int, clean: tuple[int, int], suspect: tuple[int, int]
) -> None:
    for seed in range(3):
        shipments = _shipments(n_good, n_bad, seed)
        bad = [s.count("anomalous") for s in shipments]
        assert all(3 <= len(s) <= 8 for s in shipments)
        assert all(b <= 3 for b in bad)
        assert all(b < len(s) for b, s in zip(bad, shipments, strict=True))  # a normal image in each
        assert clean[0] <= bad.count(0) <= clean[1]
        assert suspect[0] <= len(bad) - bad.count(0) <= suspect[1]


def test_shipments_give_up_promises_in_order_when_the_counts_are_too_small() -> None:
    for n_good in range(13):
        for n_bad in range(13):
            fewest = -(-n_bad // 3)  # suspect shipments
            for seed in range(2):
                shipments = _shipments(n_good, n_bad, seed)
                bad = [s.count("anomalous") for s in shipments]
                case = (n_good, n_bad, seed, shipments)
                assert all(b <= 3 for b in bad), case
                if n_good + n_bad < 3:
                    assert len(shipments) == (1 if n_good + n_bad else 0), case
                    continue
                assert all(len(s) <= 8 for s in shipments), case
                if n_good >= 3 * fewest - n_bad:
                    assert all(len(s) >= 3 for s in shipments), case
                need = fewest + max(0, 2 * fewest - n_bad)  # a normal image in each suspect one
                if n_good >= need:
                    assert all(b < len(s) for b, s in zip(bad, shipments, strict=True)), case
                if n_good >= need + 3:
                    assert 0 in bad, case


@pytest.mark.slow
def test_special_variants_appear_about_a_quarter_of_the_time() -> None:
    variants: dict[str, list[str]] = {"bulk_ore": [], "vacuum_pack": []}
    depths = []
    for cargo in variants:
        for i in range(20):
            s = render_sample(cargo, GOOD, seed=np.random.SeedSequence(11, spawn_key=(i,)), size=64)
            variants[cargo].append(s.variant)
            if s.variant in ("grayscale", "xray"):
                assert s.image.ndim == 2
                depths.append(s.image.dtype)
            else:
                assert s.image.shape == (64, 64, 3) and s.image.dtype == np.uint8
    assert 2 <= variants["bulk_ore"].count("grayscale") <= 10
    assert 2 <= variants["vacuum_pack"].count("xray") <= 10
    assert np.dtype(np.uint16) in depths and np.dtype(np.uint8) in depths


def test_an_xray_gets_no_cast_shadow_and_otherwise_the_same_nuisance() -> None:
    # A transmission X-ray is not lit, so a gantry outside the view casts no shadow on it; the other
    # nuisance draws (and the generator's state after them) must not move, so lit images stay the same.
    shadows = 0
    for i in range(40):
        lit_rng, xray_rng = np.random.default_rng(i), np.random.default_rng(i)
        lit = sample_nuisance(lit_rng, 64, 83)
        xray = sample_nuisance(xray_rng, 64, 83, lit=False)
        assert xray.shadow is None
        shadows += lit.shadow is not None
        for field in dataclasses.fields(lit):
            if field.name != "shadow":
                assert np.array_equal(getattr(lit, field.name), getattr(xray, field.name)), field.name
        assert lit_rng.bit_generator.state == xray_rng.bit_generator.state
    assert 3 <= shadows <= 16  # about a fifth of lit images carry one


CASES = [(c, t, sev) for c, types in ANOMALY_TYPES.items() for t in types for sev in (0.0, 0.5, 1.0)]


@pytest.mark.parametrize(("cargo", "anomaly_type", "severity"), CASES)
def test_every_anomaly_renders_at_every_severity_and_changes_only_its_mask(
    cargo: str, anomaly_type: str, severity: float
) -> None:
    seed = np.random.SeedSequence(3, spawn_key=(len(anomaly_type),))
    good = render_sample(cargo, GOOD, seed=seed, size=72)
    bad = render_sample(cargo, anomaly_type, seed=seed, size=72, severity=severity)
    assert (
        bad.mask.shape == (72, 72)
        and bad.image.shape == good.image.shape
        and bad.image.dtype == good.image.dtype
    )
    assert (bad.mask == 255).any() and set(np.unique(bad.mask)) == {0, 255}
    assert bad.severity == severity and bad.detail != ""
    # Same scene and nuisance: outside the mask (grown by the reach of blur, the 16 px JPEG MCU with
    # subsampled chroma and its 1 px upsampling filter) the pixels are the same, so the anomaly is the
    # only difference between the two images.
    reach = cv2.dilate(bad.mask, np.ones((3, 3), np.uint8), iterations=20) > 0
    assert np.array_equal(bad.image[~reach], good.image[~reach])
    assert not np.array_equal(bad.image, good.image)


@pytest.mark.parametrize(
    ("anomaly_type", "least_halo"),
    [("foreign_object", 0.2), ("oversize_lump", 0.2), ("wrong_material", 0.0), ("wet_patch", 0.0)],
)
def test_an_ore_mask_is_the_object_not_the_shading_it_casts(
    anomaly_type: str, least_halo: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The mask lies where the anomaly's material does (its albedo, height or gloss changed, seen
    through the image's warp), not over the shadow and occlusion it casts on untouched ore; that
    shading stays in the image, as a camera sees it."""
    import datasets.synth.sample as sample
    from datasets.synth.nuisance import warp

    drawn: dict[str, np.ndarray] = {}
    draw = sample.ORE_ANOMALIES[anomaly_type]

    def recorded(scene, rng, severity, centre):  # noqa: ANN001, ANN202 - the anomaly's signature
        before = scene.copy()
        detail = draw(scene, rng, severity, centre)
        moved = np.abs(scene.albedo - before.albedo).max(axis=-1) > 1e-6
        moved |= (np.abs(scene.height - before.height) > 1e-6) | (np.abs(scene.gloss - before.gloss) > 1e-6)
        drawn["footprint"] = moved.astype(np.float32)
        return detail

    monkeypatch.setitem(sample.ORE_ANOMALIES, anomaly_type, recorded)
    size, halos = 64, []
    for i in range(4):
        seed = np.random.SeedSequence(4321, spawn_key=(i,))
        bad = render_sample("bulk_ore", anomaly_type, seed=seed, size=size, severity=0.5)
        good = render_sample("bulk_ore", GOOD, seed=seed, size=size)
        # the nuisance render_sample draws from the seed's third child (lit: ore is never an X-ray)
        nrng = np.random.default_rng(np.random.SeedSequence(seed.entropy, spawn_key=(*seed.spawn_key, 2)))
        nuisance = sample_nuisance(nrng, size, round(size * 1.3), lit=True)
        footprint = warp(drawn["footprint"], nuisance, size) > 0.5
        mask = bad.mask > 0
        assert (mask & ~footprint).sum() <= 0.02 * mask.sum(), i
        assert mask.sum() >= 0.8 * footprint.sum(), i
        changed = np.abs(bad.image.astype(int) - good.image.astype(int))
        changed = (changed.max(axis=-1) if changed.ndim == 3 else changed) > 3
        halos.append((changed & ~mask).sum() / mask.sum())
    assert np.median(halos) >= least_halo  # an object still shades the ore around it


def test_severity_scales_the_mask() -> None:
    seed = np.random.SeedSequence(8)
    areas = [
        int((render_sample("bulk_ore", "wet_patch", seed=seed, size=96, severity=s).mask > 0).sum())
        for s in (0.0, 1.0)
    ]
    assert areas[0] < areas[1]


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        (
            {"cargo": ("coal",)},
            CargoTypeError,
            "unknown cargo type 'coal'; accepted: bulk_ore, vacuum_pack, all",
        ),
        (
            {"holdout_types": ("rust",)},
            InputError,
            "unknown holdout type 'rust'; accepted for bulk_ore, vacuum_pack: air_pocket, foreign_object, "
            "oversize_lump, puncture, seal_defect, wet_patch, wrong_material",
        ),
        (
            {"cargo": ("bulk_ore",), "holdout_types": ("puncture",)},
            InputError,
            "unknown holdout type 'puncture'; accepted for bulk_ore: foreign_object, oversize_lump, "
            "wet_patch, wrong_material",
        ),
        ({"size": 63}, InputError, "--size 63 is out of range; accepted: 64 to 4096 pixels"),
        ({"size": 4097}, InputError, "--size 4097 is out of range; accepted: 64 to 4096 pixels"),
        ({"test_good": -1}, InputError, "--test-good -1 is negative; accepted: 0 or more images"),
        ({"train_anomalous": -2}, InputError, "--train-anomalous -2 is negative; accepted: 0 or more images"),
        ({"workers": 0}, InputError, "--workers 0 is out of range; accepted: 1 to 64"),
        (
            {"train_good": 0},
            InputError,
            "--train-good 0 writes a dataset no model can be trained on; accepted: 1 or more",
        ),
        (
            {"test_good": 0, "test_anomalous": 0},
            InputError,
            "--test-good and --test-anomalous are both 0: the manifest would hold no shipment; "
            "accepted: 1 or more test images",
        ),
    ],
)
def test_bad_arguments_are_refused_with_clear_messages(
    kwargs: dict, error: type, message: str, tmp_path: Path
) -> None:
    with pytest.raises(error) as info:
        SynthConfig(out=tmp_path, **kwargs)
    assert str(info.value) == message
    assert type(info.value) is error


@pytest.mark.parametrize(
    ("cargo", "anomaly_type", "message"),
    [
        ("coal", GOOD, "unknown cargo type 'coal'; accepted: bulk_ore, vacuum_pack"),
        (
            "bulk_ore",
            "puncture",
            "unknown anomaly type 'puncture' for bulk_ore; accepted: good, foreign_object, "
            "wet_patch, wrong_material, oversize_lump",
        ),
    ],
)
def test_render_sample_refuses_unknown_names(cargo: str, anomaly_type: str, message: str) -> None:
    with pytest.raises(InputError) as info:
        render_sample(cargo, anomaly_type, seed=np.random.SeedSequence(0), size=64)
    assert str(info.value) == message


def test_output_is_readable_by_read_mvtec_and_iter_manifest(tiny: Path) -> None:
    from datasets.manifest import iter_manifest
    from datasets.mvtec import read_mvtec

    meta = json.loads((tiny / "dataset.json").read_text())
    for cargo in ("bulk_ore", "vacuum_pack"):
        items = read_mvtec(tiny / cargo).items
        expected = sorted(
            (e["split"], e["anomaly_type"], e["path"], e["mask_path"])
            for e in meta["images"]
            if e["cargo_type"] == cargo
        )
        got = sorted(
            (
                i.split,
                i.anomaly_type or GOOD,
                str(Path(i.path).resolve().relative_to(tiny.resolve())),
                "" if i.mask_path is None else str(Path(i.mask_path).resolve().relative_to(tiny.resolve())),
            )
            for i in items
        )
        assert got == expected
        assert {i.label for i in items} == {"good", "anomalous"}
    rows = list(iter_manifest(tiny / "manifest.csv"))
    assert len(rows) == sum(1 for e in meta["images"] if e["split"] == "test")
    assert {(r.cargo_type, r.label) for r in rows} == {
        ("bulk_ore", "good"),
        ("bulk_ore", "anomalous"),
        ("vacuum_pack", "good"),
        ("vacuum_pack", "anomalous"),
    }
    assert all(isinstance(r.declaration["radiation_alarm"], bool) for r in rows)


TYPES = [(c, t) for c, types in ANOMALY_TYPES.items() for t in types]


@pytest.mark.parametrize(("cargo", "anomaly_type"), TYPES)
def test_every_anomaly_is_visible_at_its_subtlest(cargo: str, anomaly_type: str) -> None:
    # The visibility floor: at severity 0 the anomaly still changes at least 0.3 % of the image, and
    # the 0.3 % of pixels it changes most differ by 0.08 or more on average (on [0, 1], after every
    # nuisance), whatever the variant (colour, grayscale, 8/16-bit X-ray) the seed draws.
    variants = set()
    for i in range(6):
        seed = np.random.SeedSequence(11, spawn_key=(i,))
        good = render_sample(cargo, GOOD, seed=seed, size=128)
        bad = render_sample(cargo, anomaly_type, seed=seed, size=128, severity=0.0)
        scale = 65535.0 if bad.image.dtype == np.uint16 else 255.0
        delta = np.abs(bad.image.astype(np.float32) - good.image.astype(np.float32)) / scale
        if delta.ndim == 3:
            delta = delta.mean(axis=-1)
        top = np.sort(delta.ravel())[-int(0.003 * delta.size) :]
        variants.add(bad.variant)
        assert (bad.mask > 0).mean() >= 0.003, (i, bad.variant, bad.detail)
        assert top.mean() >= 0.08, (i, bad.variant, bad.detail, float(top.mean()))
    assert len(variants) == 2  # the seeds cover the colour and the special variant


@pytest.mark.parametrize(("anomaly_type", "index"), [(GOOD, 18), (GOOD, 32), ("puncture", 18)])
def test_packs_of_narrow_parts_render_at_the_smallest_size(anomaly_type: str, index: int) -> None:
    """Draws whose product is split into parts too narrow for the gap between them (64 px)."""
    seed = np.random.SeedSequence(
        0, spawn_key=(1, 0, [GOOD, *ANOMALY_TYPES["vacuum_pack"]].index(anomaly_type), index)
    )
    sample = render_sample("vacuum_pack", anomaly_type, seed=seed, size=64)
    assert sample.image.shape[:2] == (64, 64)


@pytest.mark.parametrize("mask_dtype", [np.uint8, np.uint16], ids=["8-bit", "16-bit"])
def test_preview_stretches_a_12_bit_xray_and_outlines_a_0_1_mask(mask_dtype: type, tmp_path: Path) -> None:
    # the thumbnail took the top byte of the 16-bit image (a 12-bit X-ray: 0-15, black), and masks were
    # read as 8-bit and cut at 127 (a 0/1 label map, or a 16-bit mask, outlined nothing)
    from datasets.synth import contact_sheet

    root = tmp_path / "ds"
    (root / "bulk_ore" / "test" / "foreign_object").mkdir(parents=True)
    (root / "bulk_ore" / "ground_truth" / "foreign_object").mkdir(parents=True)
    xray = np.linspace(0, 4095, 64 * 64).round().astype(np.uint16).reshape(64, 64)
    mask = np.zeros((64, 64), mask_dtype)
    mask[16:48, 16:48] = 1
    cv2.imwrite(str(root / "bulk_ore" / "test" / "foreign_object" / "000000.png"), xray)
    cv2.imwrite(str(root / "bulk_ore" / "ground_truth" / "foreign_object" / "000000_mask.png"), mask)
    entry = {
        "path": "bulk_ore/test/foreign_object/000000.png",
        "mask_path": "bulk_ore/ground_truth/foreign_object/000000_mask.png",
        "cargo_type": "bulk_ore",
        "split": "test",
        "anomaly_type": "foreign_object",
    }
    (root / "dataset.json").write_text(json.dumps({"images": [entry]}))
    sheet = cv2.imread(str(contact_sheet(root, tmp_path / "sheet.png", per_type=1)))[:, 190:, ::-1]
    assert sheet.shape == (128, 128, 3)
    magenta = np.all(sheet == (255, 0, 255), axis=-1)
    ring = np.zeros((128, 128), bool)  # the square's border, the thumbnail twice the mask's size
    ring[32:96, 32:96] = True
    ring[33:95, 33:95] = False
    assert np.array_equal(magenta, ring)
    assert sheet[~magenta].max() == 255  # the X-ray's brightest values white, as the review page shows them


@pytest.mark.parametrize("per_type", [0, MAX_PER_TYPE + 1])
def test_a_contact_sheet_row_is_bounded(tiny: Path, tmp_path: Path, per_type: int) -> None:
    """Drawn whole in memory: a --per-type of 100,000 asked for a sheet 12.8 million pixels wide."""
    with pytest.raises(InputError, match=rf"--per-type {per_type} is out of range; accepted: 1 to 100$"):
        contact_sheet(tiny, tmp_path / "sheet.png", per_type=per_type)
    assert not (tmp_path / "sheet.png").exists()
