"""`clearsight score` end to end with tiny real artifacts: manifest, two models, heatmaps, policy, audit."""

from __future__ import annotations

import io
import json
import math
import os
import re
import sys
from pathlib import Path

import pytest
from rich.console import Console

sys.path.insert(0, str(Path(__file__).parent))

from score_fakes import tiny_model_dir, write_images  # noqa: E402

from datasets.errors import EngineError, InputError  # noqa: E402
from datasets.manifest import write_manifest  # noqa: E402
from models.fusion import SIGNALS  # noqa: E402
from pipeline.audit import AuditStore  # noqa: E402
from pipeline.cli import app, run  # noqa: E402
from pipeline.cli.score_progress import ScoreBars, score_progress  # noqa: E402
from pipeline.policy import default_policy_path  # noqa: E402
from pipeline.score import ImageTask, RayEngine, iter_rows  # noqa: E402
from pipeline.score.output_lock import lock_output, lock_path  # noqa: E402


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("models")
    return tiny_model_dir(root, "bulk_ore", seed=0), tiny_model_dir(root, "vacuum_pack", seed=1)


@pytest.fixture
def manifest(tmp_path: Path) -> Path:
    arc = tmp_path / "arc"
    ore = write_images(arc, [40, 120, 220], prefix="ore")
    pack = write_images(arc, [90, 160], prefix="pack")
    (arc / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    rows = [{"path": p.name, "shipment_id": "S1", "cargo_type": "bulk_ore"} for p in ore]
    rows += [{"path": p.name, "shipment_id": "S2", "cargo_type": "vacuum_pack"} for p in pack]
    rows += [{"path": "broken.png", "shipment_id": "S3", "cargo_type": "bulk_ore", "radiation_alarm": True}]
    path = arc / "manifest.csv"
    write_manifest(path, rows)
    return path


@pytest.mark.slow
def test_score_manifest_with_two_models_policy_and_audit(
    tmp_path: Path,
    models: tuple[Path, Path],
    manifest: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CLEARSIGHT_AUDIT_SECRET", "score-cli-test-secret")
    out = tmp_path / "out" / "rows.csv"
    audit = f"sqlite:///{tmp_path / 'audit.db'}"
    argv = [
        "score",
        str(manifest),
        "--model",
        str(models[0]),
        "--model",
        str(models[1]),
        "--out",
        str(out),
        "--heatmaps",
        str(tmp_path / "heat"),
        "--policy",
        str(default_policy_path()),
        "--audit-db",
        audit,
        "--batch-size",
        "2",
    ]
    assert run(app, argv) == 0, capsys.readouterr().err
    stdout = capsys.readouterr().out
    rows = {Path(row.path).name: row for row in iter_rows(out)}
    names = ["broken.png", "ore0000.png", "ore0001.png", "ore0002.png", "pack0000.png", "pack0001.png"]
    assert sorted(rows) == names
    assert {rows[n].cargo_type for n in ("ore0000.png", "pack0000.png")} == {"bulk_ore", "vacuum_pack"}
    assert (rows["ore0000.png"].model_id or "").startswith("bulk_ore-lite0-")
    assert (rows["pack0001.png"].model_id or "").startswith("vacuum_pack-lite0-")
    assert all(
        0.0 <= (row.score or 0.0) <= 1.0 and Path(row.heatmap or "").is_file()
        for row in rows.values()
        if row.error is None
    )
    assert rows["broken.png"].error is not None and rows["broken.png"].heatmap is None
    # every signal of the (max-fused) artifacts said its piece, and their max gives the score back
    for row in (r for r in rows.values() if r.error is None):
        assert row.signal_log_odds is not None and set(row.signal_log_odds) == set(SIGNALS)
        assert 1 / (1 + math.exp(-max(row.signal_log_odds.values()))) == pytest.approx(row.score, abs=1e-6)
    decisions = [
        json.loads(line) for line in out.with_name("rows.csv.decisions.jsonl").read_text().splitlines()
    ]
    assert [d["shipment_id"] for d in decisions] == ["S1", "S2", "S3"]
    assert decisions[2]["tier"] == "PHYSICAL_INSPECTION"
    assert "override.radiation_alarm" in {r["rule"] for r in decisions[2]["reasons"]}
    assert "Shipments" in stdout and "PHYSICAL_INSPECTION" in stdout and "errors (total)" in stdout
    # Resuming a finished run scores nothing again and records no shipment twice in the audit trail.
    assert run(app, [*argv, "--resume"]) == 0
    assert len(list(iter_rows(out))) == 6
    with AuditStore.open(audit) as store:
        assert sorted(r.decision.shipment_id for r in store.iter_records()) == ["S1", "S2", "S3"]
        assert store.verify().ok


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--decisions", "d.jsonl"], "Error: --decisions needs --policy POLICY to decide shipments\n"),
        (["--audit-db", "notaurl"], "Error: --audit-db needs --policy POLICY to decide shipments\n"),
        (["--ray-address", "auto"], "Error: --ray-address needs --engine ray\n"),
        (["--retry-errors"], "Error: --retry-errors needs --resume\n"),
        (["--out", "rows.txt"], "Error: output 'rows.txt' has suffix '.txt'; use .jsonl, .csv or .parquet\n"),
    ],
)
def test_option_errors(
    tmp_path: Path,
    models: tuple[Path, Path],
    manifest: Path,
    capsys: pytest.CaptureFixture[str],
    extra: list[str],
    message: str,
) -> None:
    argv = ["score", str(manifest), "--model", str(models[0]), "--out", str(tmp_path / "o.jsonl"), *extra]
    assert run(app, argv) == 2
    assert capsys.readouterr().err == message


@pytest.mark.parametrize(
    ("column", "policy"),
    [("trader_id", False), ("shipment_id", False), ("shipment_id", True), ("cargo_type", False),
     ("cargo_type", True)],
)  # fmt: skip
def test_score_refuses_an_id_that_does_not_show_as_itself(
    tmp_path: Path, models: tuple[Path, Path], capsys: pytest.CaptureFixture[str], column: str, policy: bool
) -> None:
    """Without --policy no declaration is built: the manifest reader holds the character rule, or
    '\u202e24-T' (shown as T-42) went into the rows, and ``decide --verdicts`` recorded it. A shipment
    id '\u202e24-S' (shown as S-42) was taken with --policy too, decided and recorded. A cargo type
    '\u202ebulk_ore' picked no model, but its row was written (exit 0 beside rows scored) and, with
    --policy, its shipment decided and recorded under it."""
    arc = tmp_path / "arc"
    (ore,) = write_images(arc, [40], prefix="ore")
    manifest = arc / "manifest.csv"
    write_manifest(
        manifest,
        [{"path": ore.name, "shipment_id": "S1", "cargo_type": "bulk_ore", column: "\u202e24-T"}],
    )
    out = tmp_path / "o.jsonl"
    argv = ["score", str(manifest), "--model", str(models[0]), "--out", str(out)]
    decide = ["--policy", str(default_policy_path()), "--decisions", str(tmp_path / "d.jsonl")]
    assert run(app, argv + (decide if policy else [])) == 2
    assert capsys.readouterr().err.startswith(
        f"Error: {manifest}:2: column {column!r} holds U+202E (RIGHT-TO-LEFT OVERRIDE): "
    )
    assert not out.exists()


def test_existing_output_and_duplicate_models_are_errors(
    tmp_path: Path, models: tuple[Path, Path], manifest: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "o.jsonl"
    out.write_text("")
    assert run(app, ["score", str(manifest), "--model", str(models[0]), "--out", str(out)]) == 2
    assert capsys.readouterr().err == (
        f"Error: output {str(out)!r} already exists; "
        "pass --resume to continue it or --overwrite to replace it\n"
    )
    twice = [
        "score",
        str(manifest),
        "--model",
        str(models[0]),
        "--model",
        str(models[0]),
        "--out",
        str(out),
        "--overwrite",
    ]
    assert run(app, twice) == 2
    assert capsys.readouterr().err.startswith("Error: two models for cargo type 'bulk_ore': ")


def test_an_existing_decisions_file_is_kept_unless_told(
    tmp_path: Path,
    models: tuple[Path, Path],
    manifest: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Another run's decisions (a what-if an officer kept) were replaced without a word."""
    monkeypatch.setenv("CLEARSIGHT_AUDIT_SECRET", "score-cli-test-secret")
    kept = tmp_path / "kept.decisions.jsonl"
    kept.write_text("earlier decisions\n")
    argv = [
        "score",
        str(manifest),
        "--model",
        str(models[0]),
        "--model",
        str(models[1]),
        "--out",
        str(tmp_path / "o.jsonl"),
        "--policy",
        str(default_policy_path()),
        "--decisions",
        str(kept),
    ]
    assert run(app, argv) == 2
    assert capsys.readouterr().err == (
        f"Error: --decisions {str(kept)!r} already exists; pass --decisions to write another file, "
        "or --overwrite to replace it\n"
    )
    assert kept.read_text() == "earlier decisions\n" and not (tmp_path / "o.jsonl").exists()
    # --resume writes again only the decisions of the run it continues: with no run to continue, or
    # naming a what-if kept under another policy, the file stays
    assert run(app, [*argv, "--resume"]) == 2
    assert "already exists and is not this run's" in capsys.readouterr().err
    assert kept.read_text() == "earlier decisions\n"
    assert run(app, [*argv, "--overwrite"]) == 0, capsys.readouterr().err
    decided = sorted(json.loads(line)["shipment_id"] for line in kept.read_text().splitlines())
    assert decided == ["S1", "S2", "S3"]
    assert run(app, [*argv, "--resume", "--retry-errors"]) == 0, capsys.readouterr().err  # this run's
    lenient = tmp_path / "lenient.yaml"
    lenient.write_text(
        default_policy_path().read_text().replace("release_threshold:", "release_threshold: 0.5 #", 1)
    )
    what_if = tmp_path / "what-if.jsonl"
    assert (
        run(
            app,
            [
                "decide",
                "--verdicts",
                str(tmp_path / "o.jsonl"),
                "--policy",
                str(lenient),
                "--out",
                str(what_if),
            ],
        )
        == 0
    ), capsys.readouterr().err
    kept_what_if = what_if.read_bytes()
    assert run(app, [*argv[:-1], str(what_if), "--resume"]) == 2
    assert "already exists and is not this run's" in capsys.readouterr().err
    assert what_if.read_bytes() == kept_what_if


def test_a_linked_decisions_file_is_written_where_the_link_points(
    tmp_path: Path,
    models: tuple[Path, Path],
    manifest: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Renamed onto --decisions, the decisions file replaced a link, and the decisions never reached
    the file it named, as --out's did before score resolved it."""
    monkeypatch.setenv("CLEARSIGHT_AUDIT_SECRET", "score-cli-test-secret")
    (tmp_path / "archive").mkdir()
    archived = tmp_path / "archive" / "d.jsonl"
    archived.write_text("earlier decisions\n")
    link = tmp_path / "d.jsonl"
    link.symlink_to("archive/d.jsonl")
    argv = ["score", str(manifest), "--model", str(models[0]), "--model", str(models[1])]
    argv += ["--out", str(tmp_path / "o.jsonl"), "--policy", str(default_policy_path())]
    assert run(app, [*argv, "--decisions", str(link), "--overwrite"]) == 0, capsys.readouterr().err
    assert link.is_symlink()
    decided = sorted(json.loads(line)["shipment_id"] for line in archived.read_text().splitlines())
    assert decided == ["S1", "S2", "S3"]


@pytest.mark.parametrize("name", ["audit.db", "audit[1].db"])
def test_no_output_is_written_over_the_audit_store(
    tmp_path: Path,
    models: tuple[Path, Path],
    manifest: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    name: str,
) -> None:
    """--decisions naming the SQLite audit store, with --overwrite, replaced the audit trail (and a
    name with glob characters was taken for a pattern)."""
    from pipeline.audit import AuditStore

    monkeypatch.setenv("CLEARSIGHT_AUDIT_SECRET", "score-cli-test-secret")
    db = tmp_path / name
    AuditStore.open(f"sqlite:///{db}").close()
    before = db.read_bytes()
    argv = [
        "score",
        str(manifest),
        "--model",
        str(models[0]),
        "--out",
        str(tmp_path / "o.jsonl"),
        "--policy",
        str(default_policy_path()),
        "--audit-db",
        f"sqlite:///{db}",
        "--decisions",
        str(db),
        "--overwrite",
    ]
    assert run(app, argv) == 2
    said = f"{str(db.resolve())!r} is the --audit-db file: writing it would destroy the audit trail"
    assert capsys.readouterr().err.startswith(f"Error: --decisions {said}")
    verdicts = tmp_path / "v.jsonl"
    verdicts.write_text("")
    decide = [
        "decide",
        "--verdicts",
        str(verdicts),
        "--audit-db",
        f"sqlite:///{db}",
        "--out",
        str(db),
        "--overwrite",
    ]
    assert run(app, decide) == 2
    assert capsys.readouterr().err.startswith(f"Error: --out {said}")
    assert db.read_bytes() == before


def test_a_resume_refused_for_another_model_leaves_the_record_and_the_decisions(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The completion record and the decisions file were removed before the rows were read and the
    resume refused: the rows, as they were, were then refused by ``decide`` as unfinished."""
    monkeypatch.setenv("CLEARSIGHT_AUDIT_SECRET", "score-cli-test-secret")
    monkeypatch.chdir(tmp_path)
    first, other = (tiny_model_dir(tmp_path / f"m{seed}", "bulk_ore", seed=seed) for seed in (0, 5))
    a, b = write_images(tmp_path / "arc", [40, 60])
    manifest = tmp_path / "m.csv"
    write_manifest(
        manifest,
        [{"path": str(p), "shipment_id": s, "cargo_type": "bulk_ore"} for p, s in ((a, "S1"), (b, "S2"))],
    )
    policy = tmp_path / "p.yaml"
    policy.write_text(
        "policy_version: p\ncargo_types:\n  bulk_ore: {release_threshold: 0.99, hold_threshold: 1.0}\n"
        "random_audit: {rate: 0.0001}\n"
    )
    out = tmp_path / "rows.jsonl"
    score = ["score", str(manifest), "--out", str(out), "--policy", str(policy)]
    assert run(app, [*score, "--model", str(first)]) == 0
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file() and "rows" in p.name}
    assert len(before) == 3  # the rows, their decisions and the completion record
    write_images(tmp_path / "arc", [200])  # a new scan over a picture: its row would be taken out
    assert run(app, [*score, "--model", str(other), "--resume"]) == 2
    assert "not by the models loaded now" in capsys.readouterr().err
    after = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file() and "rows" in p.name}
    assert after == before
    decide = ["decide", "--verdicts", str(out), "--policy", str(policy), "--out", str(tmp_path / "d.jsonl")]
    assert run(app, decide) == 0


def test_policy_needs_manifest_inputs(
    tmp_path: Path, models: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    write_images(tmp_path / "arc", [1])
    argv = [
        "score",
        str(tmp_path / "arc"),
        "--model",
        str(models[0]),
        "--out",
        str(tmp_path / "o.jsonl"),
        "--policy",
        str(default_policy_path()),
    ]
    assert run(app, argv) == 2
    assert "every INPUT must be a manifest with shipment ids" in capsys.readouterr().err


def test_a_model_the_policy_does_not_approve_is_refused_before_scoring(
    tmp_path: Path,
    models: tuple[Path, Path],
    manifest: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from models.artifact import read_card

    monkeypatch.setenv("CLEARSIGHT_AUDIT_SECRET", "score-cli-test-secret")
    ore_id = read_card(models[0])["model_id"]
    policy = tmp_path / "approving.yaml"
    approving = "policy_version: t\nrandom_audit: {{rate: 0}}\ncargo_types:\n  bulk_ore: {{models: [{}]}}\n"
    policy.write_text(approving.format("bulk_ore-lite0-000000000000000a"))
    out = tmp_path / "rows.csv"
    db = tmp_path / "audit.db"
    argv = ["score", str(manifest), "--model", str(models[0]), "--out", str(out), "--policy", str(policy)]
    argv += ["--audit-db", f"sqlite:///{db}"]
    assert run(app, argv) == 2
    assert capsys.readouterr().err == (
        f"Error: policy t does not approve the model loaded: {ore_id} for bulk_ore (approved: "
        "bulk_ore-lite0-000000000000000a). Its scores would never release cargo; load an approved model, "
        "or list this one under cargo_types.<cargo type>.models in a new policy_version\n"
    )
    assert not out.exists() and not db.exists()  # refused before anything was scored or made
    policy.write_text(approving.format(ore_id))
    assert run(app, argv) == 0, capsys.readouterr().err
    decisions = [
        json.loads(line) for line in out.with_name("rows.csv.decisions.jsonl").read_text().splitlines()
    ]
    ore = next(d for d in decisions if d["shipment_id"] == "S1")
    rules = [r["rule"] for r in ore["reasons"]]
    assert len(rules) == 3 and set(rules) <= {"score.clear", "score.review", "score.hold"}, rules


def test_two_models_of_a_cargo_type_are_refused_before_the_store_is_made(
    tmp_path: Path,
    models: tuple[Path, Path],
    manifest: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The policy's check of the cards kept the last of each cargo type: an unapproved model given
    before an approved one passed, the store was made, and the run was refused only after."""
    from models.artifact import read_card

    monkeypatch.setenv("CLEARSIGHT_AUDIT_SECRET", "score-cli-test-secret")
    other = tiny_model_dir(tmp_path / "other", "bulk_ore", seed=5)
    first, second = read_card(other)["model_id"], read_card(models[0])["model_id"]
    policy = tmp_path / "approving.yaml"
    policy.write_text(
        f"policy_version: t\nrandom_audit: {{rate: 0}}\ncargo_types:\n  bulk_ore: {{models: [{second}]}}\n"
    )
    db = tmp_path / "audit.db"
    argv = [
        "score",
        str(manifest),
        "--model",
        str(other),
        "--model",
        str(models[0]),
        "--out",
        str(tmp_path / "o.csv"),
    ]
    argv += ["--policy", str(policy), "--audit-db", f"sqlite:///{db}"]
    assert run(app, argv) == 2
    assert capsys.readouterr().err == (
        f"Error: two models for cargo type 'bulk_ore': {first!r} and {second!r}; give one model per "
        "cargo type\n"
    )
    assert not db.exists()


def test_ray_engine_without_the_extra_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # what an environment without the extra looks like
    engine = RayEngine(lambda: [])
    with pytest.raises(EngineError, match=r"needs the optional Ray extra: pip install 'clearsight\[ray\]'"):
        list(engine.run([ImageTask("a.png")]))


@pytest.mark.slow
def test_images_off_the_training_scale_are_flagged_and_never_released(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from score_fakes import write_png

    model = tiny_model_dir(tmp_path / "models", "bulk_ore", seed=0, trained_side=8)
    arc = tmp_path / "arc"
    write_png(arc / "same.png", 20)  # 8 px, as the model was trained on
    write_png(arc / "large[1].png", 20, size=64)  # shrunk 8x more than the training images were
    rows = [
        {"path": "same.png", "shipment_id": "S1", "cargo_type": "bulk_ore"},
        {"path": "large[1].png", "shipment_id": "S2", "cargo_type": "bulk_ore"},
    ]
    write_manifest(arc / "manifest.csv", rows)
    out = tmp_path / "rows.csv"
    argv = ["score", str(arc / "manifest.csv"), "--model", str(model), "--out", str(out)]
    assert run(app, [*argv, "--policy", str(default_policy_path())]) == 0
    captured = capsys.readouterr()
    scored = {Path(row.path).name: row for row in iter_rows(out)}
    assert (scored["same.png"].scale_vs_training, scored["large[1].png"].scale_vs_training) == (1.0, 0.125)
    decisions = {
        d["shipment_id"]: d
        for d in map(json.loads, out.with_name("rows.csv.decisions.jsonl").read_text().splitlines())
    }
    off = [r for r in decisions["S2"]["reasons"] if r["rule"] == "fail_closed.off_training_scale"]
    assert [r["tier"] for r in off] == ["REMOTE_INSPECTION"]
    assert off[0]["message"].startswith("image resized for the model 8x smaller than its training images")
    assert decisions["S2"]["tier"] != "RELEASE"
    assert "fail_closed.off_training_scale" not in {r["rule"] for r in decisions["S1"]["reasons"]}
    err = " ".join(captured.err.split())  # rich wraps long lines
    assert "Warning: 1 of 2 scored images are more than 2x off the scale of their model's training" in err
    # a long path may be folded anywhere, so compare this part without any whitespace
    assert f"{arc / 'large[1].png'},forone,wasresizedforthemodel8xsmaller" in "".join(captured.err.split())
    assert "scored off the training scale (> 2x)" in captured.out


def test_outputs_never_replace_an_input(
    tmp_path: Path, models: tuple[Path, Path], manifest: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = manifest.read_bytes()
    argv = ["score", str(manifest), "--model", str(models[0]), "--out", str(manifest), "--overwrite"]
    assert run(app, argv) == 2
    assert capsys.readouterr().err.startswith(f"Error: --out {str(manifest.resolve())!r} is also an input")
    assert manifest.read_bytes() == before
    out = tmp_path / "rows.jsonl"
    same = [*argv[:4], "--out", str(out), "--policy", str(default_policy_path()), "--decisions", str(out)]
    assert run(app, same) == 2
    assert capsys.readouterr().err.startswith("Error: --out and --decisions are the same file")
    inside = ["score", str(manifest.parent), "--model", str(models[0]), "--out", str(out)]
    assert run(app, [*inside, "--heatmaps", str(manifest.parent / "heat")]) == 2
    assert "lies inside the input" in capsys.readouterr().err
    assert not out.exists()


def test_images_that_could_reach_no_model_are_refused_before_scoring(
    tmp_path: Path, models: tuple[Path, Path], manifest: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "o.jsonl"
    one = ["score", str(manifest.parent), "--model", str(models[0]), "--out", str(out)]
    assert run(app, [*one, "--cargo-type", "bulk-ore"]) == 2
    assert capsys.readouterr().err == "Error: --cargo-type 'bulk-ore' has no model; loaded: 'bulk_ore'\n"
    two = [*one, "--model", str(models[1])]
    assert run(app, two) == 2
    assert capsys.readouterr().err.startswith(
        f"Error: {str(manifest.parent)!r} is a folder, glob or image, whose images have no cargo type, "
        "and 2 models are loaded ('bulk_ore', 'vacuum_pack'): pass --cargo-type"
    )
    assert not out.exists()


@pytest.mark.parametrize(
    ("before", "noted"),
    [
        ([], False),  # a note logged at info level is for --debug
        (["--debug"], True),
    ],
)
def test_a_warning_logged_below_the_cli_prints_as_the_clis_own_once(
    tmp_path: Path,
    models: tuple[Path, Path],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    before: list[str],
    noted: bool,
) -> None:
    """``clearsight.*`` records printed as bare lines through logging's last resort; they print as
    the CLI's warnings do, once, and the loggers are left as they were."""
    import logging

    import datasets.perceptual_hash

    def fails(pixels: object) -> str:
        logging.getLogger("clearsight.score").info("hashing [one] picture")
        raise ValueError("no hash [today]")

    monkeypatch.setattr(datasets.perceptual_hash, "perceptual_hash", fails)
    (path,) = write_images(tmp_path / "arc", [90], prefix="ore")
    out = tmp_path / "o.jsonl"
    assert run(app, [*before, "score", str(path), "--model", str(models[0]), "--out", str(out)]) == 0
    said = "".join(capsys.readouterr().err.split())  # wrapped to the console's width
    warning = (
        f"Warning: {path}: no perceptual hash (ValueError: no hash [today]); found again by its bytes only"
    )
    assert said.count("".join(warning.split())) == 1 and said.count("nohash[today]") == 1
    assert said.count("Info:hashing[one]picture") == (1 if noted else 0)
    logger = logging.getLogger("clearsight")
    assert (logger.handlers, logger.level, logger.propagate) == ([], logging.NOTSET, True)


def test_a_run_where_no_image_could_be_scored_fails(
    tmp_path: Path, models: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "bad"
    folder.mkdir()
    (folder / "a.png").write_bytes(b"\x89PNG\r\n\x1a\ncut")
    (folder / "b.jpg").write_bytes(b"not a jpeg")
    out = tmp_path / "o.jsonl"
    assert run(app, ["score", str(folder), "--model", str(models[0]), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "Warning: 2 of 2 images could not be scored: " in err
    assert err.rstrip().endswith(
        f"Error: none of the 2 images could be scored; each row of {str(out)!r} says why"
    )
    assert len(list(iter_rows(out))) == 2  # the rows are kept
    # resumed, the run still failed: it exited 0, its kept rows' errors counted nowhere
    argv = ["score", str(folder), "--model", str(models[0]), "--out", str(out), "--resume"]
    assert run(app, argv) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "2 rows kept from the earlier run hold an error" in err
    assert "Error: none of the 2 images could be scored" in err


def test_the_ray_engine_checks_routing_from_the_cards_before_starting(
    tmp_path: Path, models: tuple[Path, Path], manifest: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["score", str(manifest.parent), "--model", str(models[0]), "--out", str(tmp_path / "o.jsonl")]
    assert run(app, [*argv, "--engine", "ray", "--cargo-type", "crude_oil"]) == 2
    assert capsys.readouterr().err == "Error: --cargo-type 'crude_oil' has no model; loaded: 'bulk_ore'\n"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (
            ["--out", "s_file/o.jsonl"],
            "Error: --out 's_file/o.jsonl': cannot make its folder: 's_file' is a file",
        ),
        (
            ["--out", "/proc/clearsight-o.jsonl"],
            "Error: --out '/proc/clearsight-o.jsonl': no file can be made in '/proc' (",
        ),
        (
            ["--out", "o.jsonl", "--heatmaps", "s_file/heat"],
            "Error: --heatmaps 's_file/heat': cannot make its folder: 's_file' is a file",
        ),
        (
            ["--out", "o.jsonl", "--heatmaps", "/proc/clearsight-heat"],
            "Error: --heatmaps '/proc/clearsight-heat': no file can be made in '/proc' (",
        ),
        (
            ["--out", "o.jsonl", "--policy", str(default_policy_path()), "--decisions", "s_file/d.jsonl"],
            "Error: --decisions 's_file/d.jsonl': cannot make its folder: 's_file' is a file",
        ),
        (
            ["--out", "o" * 250 + ".jsonl"],
            f"Error: --out '{'o' * 250}.jsonl': its name is 256 bytes long, over the 255 the file system",
        ),
        (  # the default decisions file, OUT.parquet.decisions.jsonl, is longer than --out
            ["--out", "o" * 235 + ".parquet", "--policy", str(default_policy_path())],
            f"Error: --out '{'o' * 235}.parquet.decisions.jsonl': its name is 259 bytes long, over the "
            "255 the "
            "file system takes; the decisions file is named after --out: give a shorter --out, or pass "
            "--decisions",
        ),
    ],
    ids=[
        "out",
        "out-in-proc",
        "heatmaps",
        "heatmaps-in-proc",
        "decisions",
        "out-too-long",
        "decisions-too-long",
    ],
)
def test_an_output_that_cannot_be_made_is_refused_before_the_models_load(
    tmp_path: Path,
    models: tuple[Path, Path],
    manifest: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    extra: list[str],
    message: str,
) -> None:
    """Found when written, each failed as 'unexpected NotADirectoryError' (exit 1), after the models
    had loaded or the whole archive had been scored."""
    import pipeline.cli.score as score_cli

    def too_early(*args: object, **kwargs: object) -> None:
        raise AssertionError("the models were loaded before the outputs were checked")

    monkeypatch.setattr(score_cli, "_load_predictors", too_early)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "s_file").write_text("a file where a folder must go\n")
    assert run(app, ["score", str(manifest), "--model", str(models[0]), *extra]) == 2
    assert capsys.readouterr().err.startswith(message)
    assert not (tmp_path / "o.jsonl").exists()


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("nonsense://x", "Error: audit store URL nonsense://x: backend 'nonsense' is not supported"),
        (  # its own option named, not also the server's environment variable, which score does not read
            "notaurl",
            "Error: audit store URL 'notaurl' is not a SQLAlchemy URL (--audit-db; accepted: sqlite:///FILE, "
            "postgresql+psycopg://USER@HOST:PORT/DB)",
        ),
        (
            "sqlite:///{tmp}/s_file",
            "Error: audit store sqlite:///{tmp}/s_file: cannot open (DatabaseError: file is not",
        ),
    ],
    ids=["backend", "not-a-url", "not-a-store"],
)
def test_a_bad_audit_store_is_refused_before_the_models_load(
    tmp_path: Path,
    models: tuple[Path, Path],
    manifest: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    url: str,
    message: str,
) -> None:
    """It was opened only to record the decisions, after the whole archive had been scored."""
    import pipeline.cli.score as score_cli

    def too_early(*args: object, **kwargs: object) -> None:
        raise AssertionError("the models were loaded before the audit store was checked")

    monkeypatch.setattr(score_cli, "_load_predictors", too_early)
    monkeypatch.setenv("CLEARSIGHT_AUDIT_SECRET", "score-cli-test-secret")
    (tmp_path / "s_file").write_text("a file, not a database\n")
    argv = ["score", str(manifest), "--model", str(models[0]), "--out", str(tmp_path / "o.jsonl")]
    policy = ["--policy", str(default_policy_path()), "--audit-db", url.format(tmp=tmp_path)]
    assert run(app, [*argv, *policy]) == 2
    assert capsys.readouterr().err.startswith(message.format(tmp=tmp_path))
    assert not (tmp_path / "o.jsonl").exists()


@pytest.mark.parametrize("suffix", [".parquet", ".jsonl"])
def test_a_linked_output_is_written_where_the_link_points(
    tmp_path: Path, models: tuple[Path, Path], suffix: str
) -> None:
    """A Parquet output (and --retry-errors) is written beside --out and renamed over it: that
    replaced a link --out with a file, and the results never reached the archive it pointed into."""
    images = tmp_path / "images"
    write_images(images, [40, 120], prefix="ore")
    (images / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    (tmp_path / "archive").mkdir()
    link = tmp_path / f"rows{suffix}"
    link.symlink_to(f"archive/rows{suffix}")
    args = ["score", str(images), "--model", str(models[0]), "--cargo-type", "bulk_ore", "--out", str(link)]
    assert run(app, args) == 0
    assert run(app, [*args, "--resume", "--retry-errors"]) == 0
    assert link.is_symlink() and (tmp_path / "archive" / f"rows{suffix}").is_file()
    assert len(list(iter_rows(link))) == 3


def test_score_leaves_a_file_named_like_its_outputs_old_temporary_file_alone(
    tmp_path: Path, models: tuple[Path, Path], manifest: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """score --out results.parquet wrote results.parquet.tmp and renamed it onto the output: the
    policy the run was given under that name was truncated, and became the output."""
    monkeypatch.setenv("CLEARSIGHT_AUDIT_SECRET", "score-cli-test-secret")
    policy = tmp_path / "results.parquet.tmp"
    policy.write_bytes(default_policy_path().read_bytes())
    out = tmp_path / "results.parquet"
    argv = ["score", str(manifest), "--model", str(models[0]), "--model", str(models[1]), "--out", str(out)]
    assert run(app, [*argv, "--policy", str(policy)]) == 0
    assert policy.read_bytes() == default_policy_path().read_bytes()
    assert len(list(iter_rows(out))) == 6
    assert not [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp") and p != policy]


def test_an_output_another_run_writes_is_refused_and_stays_locked_until_decided(
    tmp_path: Path,
    models: tuple[Path, Path],
    manifest: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two runs into one --out duplicated its rows and decided shipments on doubled picture lists."""
    import pipeline.score

    out = tmp_path / "rows.jsonl"
    argv = ["score", str(manifest), "--model", str(models[0]), "--model", str(models[1]), "--out", str(out)]
    argv += ["--policy", str(default_policy_path())]
    with lock_output(out):  # another run, writing OUT
        assert run(app, argv) == 2
        assert run(app, [*argv, "--resume"]) == 2
    err = capsys.readouterr().err
    assert f"Error: output {str(out)!r} is being written by another run (process {os.getpid()}" in err
    assert not out.exists()
    deciding = pipeline.score.decide_output
    refused: list[str] = []

    def decide_while_a_second_run_starts(out: Path, *args: object, **kwargs: object) -> int:
        with pytest.raises(InputError) as second:
            lock_output(out)
        refused.append(str(second.value))
        return deciding(out, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(pipeline.score, "decide_output", decide_while_a_second_run_starts)
    assert run(app, argv) == 0, capsys.readouterr().err
    assert len(refused) == 1 and "is being written by another run" in refused[0]
    assert not lock_path(out).exists()


def test_a_folders_jfif_pictures_are_scored_and_its_other_files_told(
    tmp_path: Path, models: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """A folder's .jfif/.jpe JPEGs, and every other file, were left out without a word (no row, no
    count, exit 0): the run looked complete."""
    import cv2
    import numpy as np

    arc = tmp_path / "arc"
    write_images(arc, [40, 120])
    jpeg = cv2.imencode(".jpg", np.full((8, 8, 3), 90, np.uint8))[1].tobytes()
    (arc / "container_17.jfif").write_bytes(jpeg)
    (arc / "container_18.jpe").write_bytes(jpeg)
    (arc / "container_19.gif").write_bytes(b"GIF89a" + bytes(16))
    (arc / ".DS_Store").write_bytes(b"x")  # hidden: never said
    out = arc / "rows.jsonl"  # kept beside the pictures: the run's own output is not left out
    argv = ["score", str(arc), "--model", str(models[0]), "--out", str(out)]
    for again in ([], ["--resume"]):
        assert run(app, [*argv, *again]) == 0
        captured = capsys.readouterr()
        names = sorted(Path(row.path).name for row in iter_rows(out))
        assert names == ["container_17.jfif", "container_18.jpe", "img0000.png", "img0001.png"]
        said = "".join(captured.err.split())  # rich folds long lines anywhere
        assert f"Warning:1fileleftout(notanimageextension),e.g.{arc / 'container_19.gif'}:" in said
        row = [line for line in captured.out.splitlines() if "left out" in line]
        assert [cell.strip() for cell in row[0].split("│")[1:-1]] == [
            "files left out (not an image extension)",
            "1",
        ]


def test_resume_with_a_policy_refuses_a_row_of_a_picture_the_manifest_moved(
    tmp_path: Path, models: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """After a manifest correction moved img0001 from S1 to S2, `--resume --policy` decided S1 on it
    (and recorded so); a changed declaration is refused on resume, a changed membership was used."""
    a, b, c = write_images(tmp_path / "arc", [40, 120, 220])
    man = tmp_path / "arc" / "manifest.csv"
    rows = [
        {"path": p.name, "shipment_id": s, "cargo_type": "bulk_ore"}
        for p, s in ((a, "S1"), (b, "S1"), (c, "S2"))
    ]
    write_manifest(man, rows)
    out = tmp_path / "rows.jsonl"
    argv = [
        "score",
        str(man),
        "--model",
        str(models[0]),
        "--out",
        str(out),
        "--policy",
        str(default_policy_path()),
    ]
    assert run(app, argv) == 0
    decided = out.with_suffix(".decisions.jsonl").read_bytes()
    write_manifest(man, [rows[0], {**rows[1], "shipment_id": "S2"}, rows[2]])
    assert run(app, [*argv, "--resume"]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert f"Error: {b}: scored under shipment 'S1', it is listed under shipment 'S2' now" in err
    # not decided on it; the earlier run's decisions went with the rows' completion record, as the
    # resume began: a resume killed or refused after adding rows left them beside rows they contradict
    assert not out.with_suffix(".decisions.jsonl").exists() and decided
    assert run(app, [*argv, "--overwrite"]) == 0
    images = {
        d["shipment_id"]: sorted(Path(i["path"]).name for i in d["images"])
        for d in map(json.loads, out.with_suffix(".decisions.jsonl").read_text().splitlines())
    }
    assert images == {"S1": [a.name], "S2": [b.name, c.name]}


def test_an_overwrite_run_stopped_partway_leaves_no_earlier_decisions(
    tmp_path: Path,
    models: tuple[Path, Path],
    manifest: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The earlier run's decisions file was replaced only at the end: an --overwrite run killed
    partway left it (a RELEASE, say) beside the new, partial rows."""
    import pipeline.score

    monkeypatch.setenv("CLEARSIGHT_AUDIT_SECRET", "score-cli-test-secret")
    out = tmp_path / "o.jsonl"
    argv = ["score", str(manifest), "--model", str(models[0]), "--model", str(models[1]), "--out", str(out)]
    argv += ["--policy", str(default_policy_path())]
    assert run(app, argv) == 0, capsys.readouterr().err
    decisions = out.with_suffix(".decisions.jsonl")
    assert decisions.is_file()
    real = pipeline.score.score_to_file

    class StoppedAfterOneRow:
        def __init__(self, engine: object) -> None:
            self.engine = engine

        def run(self, tasks: object, *, heatmaps: bool = False) -> object:
            for number, row in enumerate(self.engine.run(tasks, heatmaps=heatmaps)):  # type: ignore[attr-defined]
                if number == 1:
                    raise KeyboardInterrupt  # Ctrl-C, or a kill, partway
                yield row

    def stopped(tasks: object, engine: object, target: Path, **how: object) -> object:
        return real(tasks, StoppedAfterOneRow(engine), target, chunk_rows=1, **how)  # type: ignore[arg-type]

    monkeypatch.setattr(pipeline.score, "score_to_file", stopped)
    assert run(app, [*argv, "--overwrite"]) != 0
    assert len(list(iter_rows(out))) == 1
    assert not decisions.exists()


def test_a_picture_linked_under_a_second_name_is_counted_and_named(
    tmp_path: Path, models: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """A folder's second name of one file got no row and was counted nowhere: 3 files, 2 rows."""
    arc = tmp_path / "arc"
    write_images(arc / "day1", [40, 120])
    (arc / "day2").mkdir()
    (arc / "day2" / "container_77.png").symlink_to(Path("..") / "day1" / "img0000.png")
    out = tmp_path / "rows.jsonl"
    assert run(app, ["score", str(arc), "--model", str(models[0]), "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert sorted(Path(row.path).name for row in iter_rows(out)) == ["img0000.png", "img0001.png"]
    row = [line for line in captured.out.splitlines() if "duplicate inputs" in line]
    assert [cell.strip() for cell in row[0].split("│")[1:-1]] == ["duplicate inputs (scored once)", "1"]
    said = "".join(captured.err.split())  # rich folds long lines anywhere
    assert (
        f"Warning:1input(s)namedanimagegivenalready,scoredonce:{arc / 'day2' / 'container_77.png'},"
        f"forone,isthefile{arc / 'day1' / 'img0000.png'}is"
    ) in said


def test_the_progress_bar_says_which_inputs_it_counts_as_done_unscored(
    tmp_path: Path, models: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """5 inputs, 3 of them naming an image given already: the bar read 5/5 for 2 images scored."""
    first, second = write_images(tmp_path / "arc", [40, 120])
    argv = ["score", str(first), str(first), str(tmp_path / "arc"), str(second), "--model", str(models[0])]
    out = tmp_path / "rows.jsonl"
    assert run(app, [*argv, "--out", str(out)]) == 0
    said = capsys.readouterr().err.splitlines()  # stderr here is a log: lines, not a bar
    assert len(list(iter_rows(out))) == 2
    assert said[0].startswith("scoring: 0/5 (0 s")  # as it begins, not only at the end
    assert any(line.startswith("scoring: 5/5 (") for line in said)
    assert "scoring: 3 duplicate input(s), scored once" in said
    assert run(app, [*argv, "--out", str(out), "--resume"]) == 0
    said = capsys.readouterr().err.splitlines()
    assert "scoring: 3 duplicate input(s), scored once; 2 already in the output" in said
    # a link in the folder to a file given already (named first as well): not among the inputs the
    # bar counts, said beside them, so that the two add up to the table's duplicates (3)
    (tmp_path / "arc" / "again.png").symlink_to(first)
    assert run(app, [*argv, "--out", str(out), "--overwrite"]) == 0
    said = " ".join(capsys.readouterr().err.split())
    assert "scoring: 2 duplicate input(s), scored once; 1 link(s) to a file given" in said


def test_a_resume_s_reading_of_the_kept_pictures_is_a_line_of_its_own_finished_before_scoring(
    tmp_path: Path, models: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """It stayed on screen, still running, while the images were scored, under the scoring bar's
    img/s column; and was taken away after it, so what it had read was never seen."""
    write_images(tmp_path / "arc", [40, 120])
    argv = ["score", str(tmp_path / "arc"), "--model", str(models[0]), "--out", str(tmp_path / "rows.jsonl")]
    assert run(app, argv) == 0
    capsys.readouterr()
    assert run(app, [*argv, "--resume"]) == 0
    lines = capsys.readouterr().err.splitlines()  # a log: lines
    begun, checked, scoring = lines.index("checking the kept pictures' content: begun"), -1, -1
    for i, line in enumerate(lines):
        checked = i if line.startswith("checked the kept pictures' content: 2 read (") else checked
        scoring = i if line.startswith("scoring: 0/2 (") and scoring < 0 else scoring
    assert begun < checked < scoring  # read, then scored
    assert "img/s" not in lines[checked] and "/" not in lines[checked]


def test_a_terminal_gets_the_bars_of_both_stages() -> None:
    """The bars, where stderr is a terminal: the kept pictures' count read, without a rate or ETA of
    images scored, and the scoring bar saying what it counts besides new scores."""
    screen = io.StringIO()
    console = Console(file=screen, force_terminal=True, width=200, color_system=None)
    with score_progress(console, total=2, resume=True) as progress:
        assert isinstance(progress, ScoreBars)
        progress.checked()
        progress.checked()
        progress.checked_all()
        progress.scored()
        progress.scored()
        progress.counted(["1 duplicate input(s), scored once"])
    frames = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", screen.getvalue())  # the cursor's moves out
    drawn = [" ".join(line.split()) for line in re.split(r"[\r\n]", frames)]
    checked, scoring = ([line for line in drawn if line.startswith(s)][-1] for s in ("checked", "scoring"))
    assert " 2 read " in checked and "img/s" not in checked and "ETA" not in checked
    assert scoring.startswith("scoring (1 duplicate input(s), scored once) ") and " 2/2 " in scoring


def test_a_run_that_changes_the_rows_leaves_no_earlier_decisions(
    tmp_path: Path,
    models: tuple[Path, Path],
    manifest: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An earlier --policy run's decisions stayed beside rows they no longer describe: after an
    --overwrite without --policy (new rows, the old decisions), and after a --resume --policy killed
    before its own decisions (a picture added since, its row already written)."""
    import csv

    import pipeline.score

    monkeypatch.setenv("CLEARSIGHT_AUDIT_SECRET", "score-cli-test-secret")
    out = tmp_path / "o.jsonl"
    argv = ["score", str(manifest), "--model", str(models[0]), "--model", str(models[1]), "--out", str(out)]
    policy = ["--policy", str(default_policy_path())]
    decisions = out.with_suffix(".decisions.jsonl")
    assert run(app, [*argv, *policy]) == 0, capsys.readouterr().err
    assert decisions.is_file()
    assert run(app, [*argv, "--overwrite"]) == 0, capsys.readouterr().err
    assert not decisions.exists()
    # a --decisions file of this run, and OUT's own one (an earlier run's), then a picture listed since
    mine = tmp_path / "mine.jsonl"
    assert run(app, [*argv, *policy, "--overwrite", "--decisions", str(mine)]) == 0, capsys.readouterr().err
    decisions.write_text(mine.read_text())
    with manifest.open(newline="") as fh:
        listed = list(csv.DictReader(fh))
    (late,) = write_images(manifest.parent, [60], prefix="late")
    write_manifest(manifest, [*listed, {**listed[0], "path": late.name}])
    real = pipeline.score.score_to_file

    class Stopped:
        def __init__(self, engine: object) -> None:
            self.engine = engine

        def run(self, tasks: object, *, heatmaps: bool = False) -> object:
            for row in self.engine.run(tasks, heatmaps=heatmaps):  # type: ignore[attr-defined]
                yield row
                raise KeyboardInterrupt  # Ctrl-C, or a kill, once the new picture's row is out

    def stopped(tasks: object, engine: object, target: Path, **how: object) -> object:
        return real(tasks, Stopped(engine), target, chunk_rows=1, **how)  # type: ignore[arg-type]

    monkeypatch.setattr(pipeline.score, "score_to_file", stopped)
    assert run(app, [*argv, *policy, "--resume", "--decisions", str(mine)]) != 0
    assert [r.path for r in iter_rows(out)][-1] == str(late)
    # OUT's completion record vouches for mine only: a file found by its name alone may be another
    # output's (given as its --decisions), and is left, with a warning
    assert not mine.exists() and decisions.is_file()
    said = "".join(capsys.readouterr().err.split())  # rich wraps it anywhere
    assert f"{str(decisions)!r}:notwrittenfortherowsof{str(out)!r}byafinishedrun" in said


def test_a_run_that_removes_earlier_decisions_never_removes_an_input(
    tmp_path: Path, models: tuple[Path, Path], manifest: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """OUT's decisions file, removed by an --overwrite or --resume, is refused where it is an input
    (a JSON-lines manifest of that name), as an output over an input is; a name too long for one
    is no file there."""
    out = tmp_path / "o.jsonl"
    given = ["score", "--model", str(models[0]), "--model", str(models[1])]
    argv = [*given, "--out", str(out)]
    assert run(app, [*argv, str(manifest)]) == 0, capsys.readouterr().err
    listing = out.with_suffix(".decisions.jsonl")
    import csv

    with manifest.open(newline="") as fh:
        write_manifest(listing, [{**r, "path": str(manifest.parent / r["path"])} for r in csv.DictReader(fh)])
    for how in ("--overwrite", "--resume"):
        capsys.readouterr()
        assert run(app, [*argv, str(listing), how]) == 2
        assert "--out's decisions file" in capsys.readouterr().err and listing.is_file()
    long = tmp_path / ("n" * (255 - len(".jsonl")) + ".jsonl")  # OUT's decisions file: too long a name
    assert run(app, [*given, str(manifest), "--out", str(long)]) == 0, capsys.readouterr().err
    assert run(app, [*given, str(manifest), "--out", str(long), "--overwrite"]) == 0, capsys.readouterr().err


def test_each_output_has_its_own_default_decisions_file(
    tmp_path: Path,
    models: tuple[Path, Path],
    manifest: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """rows.jsonl, rows.csv and rows.parquet shared the default decisions file rows.decisions.jsonl: a
    --policy run into rows.csv was refused for rows.jsonl's decisions, and with --overwrite it replaced
    them, though rows.jsonl's rows never changed. rows.jsonl's stays rows.decisions.jsonl; another
    output's is named after its whole name (rows.csv.decisions.jsonl, rows.parquet.decisions.jsonl)."""
    monkeypatch.setenv("CLEARSIGHT_AUDIT_SECRET", "score-cli-test-secret")
    given = ["score", str(manifest), "--model", str(models[0]), "--model", str(models[1])]
    policy = ["--policy", str(default_policy_path())]
    rows = tmp_path / "rows.jsonl"
    assert run(app, [*given, "--out", str(rows), *policy]) == 0, capsys.readouterr().err
    decisions = tmp_path / "rows.decisions.jsonl"
    kept = decisions.read_bytes()
    for name in ("rows.csv", "rows.parquet"):
        out, own = tmp_path / name, tmp_path / f"{name}.decisions.jsonl"
        for how in ([], ["--overwrite"], ["--resume"]):
            assert run(app, [*given, "--out", str(out), *policy, *how]) == 0, capsys.readouterr().err
            assert own.is_file() and decisions.read_bytes() == kept, (name, how)
        # its rows change: its own decisions go (its record names them), rows.jsonl's stay, unsaid
        capsys.readouterr()
        assert run(app, [*given, "--out", str(out), "--overwrite"]) == 0
        said = "".join(capsys.readouterr().err.split())  # rich wraps it anywhere
        assert not own.exists() and decisions.read_bytes() == kept, name
        assert "decisions.jsonl" not in said, name
    # rows.jsonl's own run still removes them: its record names them
    assert run(app, [*given, "--out", str(rows), "--overwrite"]) == 0, capsys.readouterr().err
    assert not decisions.exists()


@pytest.mark.parametrize(
    ("name", "decisions"),
    [
        ("rows.jsonl", "rows.decisions.jsonl"),
        ("rows.csv", "rows.csv.decisions.jsonl"),
        ("rows.parquet", "rows.parquet.decisions.jsonl"),
        ("rows.JSONL", "rows.JSONL.decisions.jsonl"),
        ("rows.Csv", "rows.Csv.decisions.jsonl"),
        ("rows.v2.jsonl", "rows.v2.decisions.jsonl"),
        # X.jsonl where X is an output's name itself: rows.csv's file was rows.csv.jsonl's too
        ("rows.csv.jsonl", "rows.csv.jsonl.decisions.jsonl"),
        ("rows.parquet.jsonl", "rows.parquet.jsonl.decisions.jsonl"),
        ("rows.JSONL.jsonl", "rows.JSONL.jsonl.decisions.jsonl"),
        ("rows.jsonl.jsonl", "rows.jsonl.jsonl.decisions.jsonl"),
        ("rows.CSV.jsonl", "rows.CSV.jsonl.decisions.jsonl"),
    ],
)
def test_the_default_decisions_file_of_an_output(name: str, decisions: str) -> None:
    from pipeline.score import decisions_path

    assert decisions_path(Path("day") / name) == Path("day") / decisions


def test_no_two_outputs_have_one_default_decisions_file() -> None:
    """rows.csv and rows.csv.jsonl both defaulted to rows.csv.decisions.jsonl (rows.parquet and
    rows.parquet.jsonl, rows.JSONL and rows.JSONL.jsonl too), and an --overwrite into one replaced the
    other's decisions. Every name the writer takes, each suffix in several cases, stacked two deep."""
    from itertools import product

    from pipeline.score import decisions_path
    from pipeline.score.writer import output_format

    suffixes = [c for s in (".jsonl", ".csv", ".parquet") for c in (s, s.upper(), "." + s[1:].capitalize())]
    stems = ["rows", "rows.v2", "rows.decisions", *(f"rows{s}" for s in suffixes)]
    names = [Path(f"{stem}{suffix}") for stem, suffix in product(stems, suffixes)]
    assert len(set(names)) == len(names) == 12 * 9
    for name in names:
        output_format(name)  # every one an output the writer takes
    made = {decisions_path(name): name for name in names}
    assert len(made) == len(names)


def test_rows_csv_and_rows_csv_jsonl_keep_their_own_decisions(
    tmp_path: Path,
    models: tuple[Path, Path],
    manifest: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CLEARSIGHT_AUDIT_SECRET", "score-cli-test-secret")
    given = ["score", str(manifest), "--model", str(models[0]), "--model", str(models[1])]
    policy = ["--policy", str(default_policy_path())]
    first, second = tmp_path / "rows.csv", tmp_path / "rows.csv.jsonl"
    assert run(app, [*given, "--out", str(first), *policy]) == 0, capsys.readouterr().err
    kept = (tmp_path / "rows.csv.decisions.jsonl").read_bytes()
    for how in ([], ["--overwrite"], ["--overwrite"]):
        assert run(app, [*given, "--out", str(second), *policy, *how]) == 0, capsys.readouterr().err
        assert (tmp_path / "rows.csv.jsonl.decisions.jsonl").is_file()
        assert (tmp_path / "rows.csv.decisions.jsonl").read_bytes() == kept, how


@pytest.mark.parametrize("how", [[], ["--overwrite"], ["--resume"]])
def test_a_run_never_replaces_decisions_another_outputs_record_vouches_for(
    tmp_path: Path,
    models: tuple[Path, Path],
    manifest: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    how: list[str],
) -> None:
    """An older version's run into rows.csv wrote rows.decisions.jsonl, and rows.csv's record vouches
    for it; rows.jsonl's default decisions file has that name, and a --policy --overwrite run into
    rows.jsonl removed and replaced rows.csv's decisions. Refused, naming rows.csv and its record."""
    from pipeline.score.completion import completion_path

    monkeypatch.setenv("CLEARSIGHT_AUDIT_SECRET", "score-cli-test-secret")
    given = ["score", str(manifest), "--model", str(models[0]), "--model", str(models[1])]
    policy = ["--policy", str(default_policy_path())]
    other, out, shared = tmp_path / "rows.csv", tmp_path / "rows.jsonl", tmp_path / "rows.decisions.jsonl"
    # the record an older run left: the one a run given that file as --decisions writes
    assert run(app, [*given, "--out", str(other), *policy, "--decisions", str(shared)]) == 0
    kept = shared.read_bytes()
    if how == ["--resume"]:  # rows.jsonl's rows, of the same shipments under the same policy
        assert run(app, [*given, "--out", str(out)]) == 0, capsys.readouterr().err
    capsys.readouterr()
    assert run(app, [*given, "--out", str(out), *policy, *how]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert shared.read_bytes() == kept
    assert (
        f"Error: --decisions {str(shared)!r} holds the decisions of {str(other)!r}, whose completion "
        f"record {str(completion_path(other))!r} vouches for them"
    ) in err
    assert "pass --decisions PATH" in err
    # another file is written as asked
    mine = tmp_path / "mine.jsonl"
    assert run(app, [*given, "--out", str(out), *policy, *how, "--decisions", str(mine)]) == 0
    assert mine.is_file() and shared.read_bytes() == kept


def test_the_decisions_an_older_run_wrote_under_the_shared_name_still_go_with_its_rows(
    tmp_path: Path,
    models: tuple[Path, Path],
    manifest: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An older --policy run into rows.csv wrote rows.decisions.jsonl, and rows.csv's completion record
    names that file: the next run into rows.csv removes it while it holds those bytes, though rows.csv's
    default decisions file is rows.csv.decisions.jsonl now. One the record does not name is left, said."""
    monkeypatch.setenv("CLEARSIGHT_AUDIT_SECRET", "score-cli-test-secret")
    given = ["score", str(manifest), "--model", str(models[0]), "--model", str(models[1])]
    out, old = tmp_path / "rows.csv", tmp_path / "rows.decisions.jsonl"
    # the record an older run left: the one a run given that file as --decisions writes
    policy = ["--policy", str(default_policy_path()), "--decisions", str(old)]
    assert run(app, [*given, "--out", str(out), *policy]) == 0, capsys.readouterr().err
    assert old.is_file()
    assert run(app, [*given, "--out", str(out), "--overwrite"]) == 0, capsys.readouterr().err
    assert not old.exists()
    # rows.csv's own default file, not written by the run that finished it: left, with a warning
    own = tmp_path / "rows.csv.decisions.jsonl"
    own.write_text('{"shipment_id": "B", "tier": "RELEASE"}\n')
    capsys.readouterr()
    assert run(app, [*given, "--out", str(out), "--overwrite"]) == 0
    said = "".join(capsys.readouterr().err.split())  # rich wraps it anywhere
    assert own.is_file() and f"{str(own)!r}:notwrittenfortherowsof{str(out)!r}byafinishedrun" in said


@pytest.mark.parametrize("name", ["rows.csv", "rows.parquet"])
def test_decisions_an_older_version_left_under_the_shared_name_are_said(
    tmp_path: Path,
    models: tuple[Path, Path],
    manifest: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    name: str,
) -> None:
    """rows.csv's and rows.parquet's default decisions file was rows.decisions.jsonl before it was
    named after OUT's whole name. One an older version left there without a record vouching for it
    (a version before decisions were recorded, or one killed after its rename with a bare pending name,
    which tells no file as its own) stayed beside the new rows unsaid: the warning looked at
    rows.csv.decisions.jsonl only. It is left (whose it is cannot be told), and said once."""
    from pipeline.score.completion import completion_path

    monkeypatch.setenv("CLEARSIGHT_AUDIT_SECRET", "score-cli-test-secret")
    given = ["score", str(manifest), "--model", str(models[0]), "--model", str(models[1])]
    out, old = tmp_path / name, tmp_path / "rows.decisions.jsonl"
    stale = '{"shipment_id": "S1", "tier": "RELEASE"}\n'
    # before decisions were recorded: a record without them, the file beside it
    assert run(app, [*given, "--out", str(out)]) == 0, capsys.readouterr().err
    old.write_text(stale)
    capsys.readouterr()
    assert run(app, [*given, "--out", str(out), "--overwrite"]) == 0
    said = "".join(capsys.readouterr().err.split())  # rich wraps it anywhere
    assert old.read_text() == stale and said.count(f"{str(old)!r}:") == 1, said
    assert f"{str(old)!r}:thedecisionsfileanolderversionnamedafter{str(out)!r}" in said
    # killed after its rename by a version that named the file pending with no identity of it
    for decisions in (old, tmp_path / "elsewhere.jsonl"):
        policy = ["--policy", str(default_policy_path()), "--decisions", str(decisions)]
        assert run(app, [*given, "--out", str(out), "--overwrite", *policy]) == 0, capsys.readouterr().err
        record = json.loads(completion_path(out).read_text())
        del record["decisions_sha256"]
        completion_path(out).write_text(json.dumps({**record, "decisions_pending": True}))
        kept = decisions.read_bytes()
        capsys.readouterr()
        assert run(app, [*given, "--out", str(out), "--overwrite"]) == 0
        said = "".join(capsys.readouterr().err.split())
        assert decisions.read_bytes() == kept and said.count(f"{str(decisions)!r}:") == 1, said
        assert f"{str(decisions)!r}:namedaspendingbythecompletionrecord" in said


def test_a_fresh_run_after_the_rows_were_deleted_removes_their_decisions(
    tmp_path: Path,
    models: tuple[Path, Path],
    manifest: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Only --overwrite and --resume removed OUT's decisions: rows deleted by hand (rm, to start over)
    and scored again afresh without --policy left the earlier run's decisions (a RELEASE) beside new
    rows that contradict them. The completion record, which outlives the rows, names them; a decisions
    file changed since it was written is not the run's, and is left."""
    monkeypatch.setenv("CLEARSIGHT_AUDIT_SECRET", "score-cli-test-secret")
    out = tmp_path / "o.jsonl"
    argv = ["score", str(manifest), "--model", str(models[0]), "--model", str(models[1]), "--out", str(out)]
    policy = ["--policy", str(default_policy_path())]
    mine = tmp_path / "elsewhere" / "mine.jsonl"
    mine.parent.mkdir()
    for decisions, extra in ((out.with_suffix(".decisions.jsonl"), []), (mine, ["--decisions", str(mine)])):
        assert run(app, [*argv, *policy, *extra]) == 0, capsys.readouterr().err
        assert decisions.is_file()
        out.unlink()
        assert run(app, [*argv]) == 0, capsys.readouterr().err
        assert not decisions.exists()
        out.unlink()
    # changed by hand since the run wrote it: not the decisions the record vouches for
    decisions = out.with_suffix(".decisions.jsonl")
    assert run(app, [*argv, *policy]) == 0, capsys.readouterr().err
    decisions.write_text(decisions.read_text() + "\n")
    assert run(app, [*argv, "--overwrite"]) == 0, capsys.readouterr().err
    assert decisions.is_file()


def test_a_run_killed_once_its_decisions_are_in_place_leaves_them_to_the_next_run(
    tmp_path: Path,
    models: tuple[Path, Path],
    manifest: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The decisions file was renamed into place and only then named in OUT's completion record: a
    run killed between the two left OUT's own decisions (a RELEASE) unnamed, and a later --overwrite
    without --policy kept them beside the new rows, with a warning only. Named first, as pending,
    they are OUT's from the moment they exist."""
    import pipeline.score

    monkeypatch.setenv("CLEARSIGHT_AUDIT_SECRET", "score-cli-test-secret")
    out = tmp_path / "o.jsonl"
    argv = ["score", str(manifest), "--model", str(models[0]), "--model", str(models[1]), "--out", str(out)]
    real = pipeline.score.decide_output

    def killed_once_written(*args: object, **how: object) -> int:
        real(*args, **how)  # type: ignore[arg-type]
        raise KeyboardInterrupt  # a kill landing once the file is in place, before its sha256 is recorded

    monkeypatch.setattr(pipeline.score, "decide_output", killed_once_written)
    for decisions, extra in (
        (out.with_suffix(".decisions.jsonl"), []),
        (tmp_path / "elsewhere.jsonl", ["--decisions", str(tmp_path / "elsewhere.jsonl")]),
    ):
        assert run(app, [*argv, "--policy", str(default_policy_path()), "--overwrite", *extra]) != 0
        assert decisions.is_file()
        assert run(app, [*argv, "--overwrite"]) == 0, capsys.readouterr().err
        assert not decisions.exists(), extra


def test_a_run_stopped_before_its_decisions_exist_names_none(
    tmp_path: Path,
    models: tuple[Path, Path],
    manifest: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A run stopped before its decisions file existed left it named as pending in OUT's record, and
    a pending name vouched for whatever file came there later: another output's decisions written to
    the same --decisions path were removed by the next run into OUT (review repro: B's RELEASE gone)."""
    import pipeline.score

    monkeypatch.setenv("CLEARSIGHT_AUDIT_SECRET", "score-cli-test-secret")
    out = tmp_path / "o.jsonl"
    shared = tmp_path / "shared.jsonl"
    argv = ["score", str(manifest), "--model", str(models[0]), "--model", str(models[1]), "--out", str(out)]
    real = pipeline.score.decide_output

    def stopped_before_writing(*args: object, **how: object) -> int:
        raise KeyboardInterrupt  # Ctrl-C while it decides, before the file is in place

    monkeypatch.setattr(pipeline.score, "decide_output", stopped_before_writing)
    policy = ["--policy", str(default_policy_path()), "--decisions", str(shared)]
    assert run(app, [*argv, *policy]) != 0
    assert not shared.exists()
    monkeypatch.setattr(pipeline.score, "decide_output", real)
    shared.write_text('{"shipment_id": "B", "tier": "RELEASE"}\n')  # another output's, say
    assert run(app, [*argv, "--overwrite"]) == 0, capsys.readouterr().err
    assert shared.read_text() == '{"shipment_id": "B", "tier": "RELEASE"}\n'


_KILLED_AT_RENAME = """
import os, signal, sys
from pipeline.cli import app, run

target, when = sys.argv[1], sys.argv[2]
real = os.replace


def replace(src, dst, **how):
    if os.fspath(dst) == target:
        if when == "after":
            real(src, dst, **how)
        os.kill(os.getpid(), signal.SIGKILL)  # no handler runs, the staged file stays
    return real(src, dst, **how)


os.replace = replace
sys.exit(run(app, sys.argv[3:]))
"""


@pytest.mark.parametrize("when", ["before", "after"])
def test_a_run_killed_at_its_decisions_rename_vouches_for_its_own_file_only(
    tmp_path: Path,
    models: tuple[Path, Path],
    manifest: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    when: str,
) -> None:
    """A SIGKILL (no Ctrl-C handler runs) once the decisions file was named as pending in OUT's
    completion record, before the file was in place, left the pending name, which vouched for whatever
    file came there later: another output's decisions written to the same --decisions path (B's
    RELEASE) were removed by the next run into OUT. The pending name holds the staged file's identity
    (a rename keeps it): the file the run renamed into place is OUT's, another file is not."""
    import signal
    import subprocess

    monkeypatch.setenv("CLEARSIGHT_AUDIT_SECRET", "score-cli-test-secret")
    out, shared = tmp_path / "o.jsonl", tmp_path / "shared.jsonl"
    argv = ["score", str(manifest), "--model", str(models[0]), "--model", str(models[1]), "--out", str(out)]
    policy = ["--policy", str(default_policy_path()), "--decisions", str(shared)]
    killed = subprocess.run(
        [sys.executable, "-c", _KILLED_AT_RENAME, str(shared), when, *argv, *policy],
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    if when == "before":
        assert not shared.exists()
        shared.write_text('{"shipment_id": "B", "tier": "RELEASE"}\n')  # another output's, say
        assert run(app, [*argv, "--overwrite"]) == 0, capsys.readouterr().err
        assert shared.read_text() == '{"shipment_id": "B", "tier": "RELEASE"}\n'
    else:  # in place, its sha256 not yet recorded: OUT's own, removed as its rows change
        assert shared.is_file()
        assert run(app, [*argv, "--overwrite"]) == 0, capsys.readouterr().err
        assert not shared.exists()


def test_a_run_into_a_copied_folder_leaves_the_decisions_of_the_original(
    tmp_path: Path,
    models: tuple[Path, Path],
    manifest: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The completion record is named after OUT's file name only, so ``cp -a day1 day2`` copied it,
    and its --decisions path outside the folder with it: a run into day2 removed day1's decisions,
    though day1's rows never changed. The record names OUT's real path; another OUT's is left, said."""
    import shutil

    monkeypatch.setenv("CLEARSIGHT_AUDIT_SECRET", "score-cli-test-secret")
    given = ["score", str(manifest), "--model", str(models[0]), "--model", str(models[1])]
    day1 = tmp_path / "day1"
    day1.mkdir()
    decisions = tmp_path / "archive" / "day1.decisions.jsonl"
    decisions.parent.mkdir()
    policy = ["--policy", str(default_policy_path()), "--decisions", str(decisions)]
    assert run(app, [*given, "--out", str(day1 / "rows.jsonl"), *policy]) == 0, capsys.readouterr().err
    kept = decisions.read_bytes()
    shutil.copytree(day1, tmp_path / "day2", symlinks=True)  # cp -a
    capsys.readouterr()
    assert run(app, [*given, "--out", str(tmp_path / "day2" / "rows.jsonl"), "--overwrite"]) == 0
    said = "".join(capsys.readouterr().err.split())  # rich wraps it anywhere
    assert decisions.read_bytes() == kept
    assert f"{str(decisions)!r}:namedbythecompletionrecord" in said and "(copiedwithitsfolder?)" in said
    # day1's own run still removes them: its record was written for its rows
    assert run(app, [*given, "--out", str(day1 / "rows.jsonl"), "--overwrite"]) == 0, capsys.readouterr().err
    assert not decisions.exists()


def test_score_with_the_audit_secret_seals_the_completion_record_and_decide_checks_it(
    tmp_path: Path,
    models: tuple[Path, Path],
    manifest: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The completion record held the rows' byte size and plain sha256: rows edited, and the record
    computed again to match them, were decided without a word. A run with the audit secret seals it
    (the seal kept when the run's decisions are named in it), and decide refuses a forged one."""
    import hashlib

    from pipeline.score.completion import completion_path

    monkeypatch.setenv("CLEARSIGHT_AUDIT_SECRET", "score-cli-test-secret")
    out = tmp_path / "o.jsonl"
    argv = ["score", str(manifest), "--model", str(models[0]), "--model", str(models[1]), "--out", str(out)]
    assert run(app, [*argv, "--policy", str(default_policy_path())]) == 0, capsys.readouterr().err
    record = json.loads(completion_path(out).read_text())
    assert len(record["seal"]) == 64 and record["decisions_sha256"]  # the decisions named since
    decide = ["decide", "--verdicts", str(out), "--out", str(tmp_path / "d.jsonl"), "--overwrite"]
    assert run(app, decide) == 0, capsys.readouterr().err
    lines = out.read_text().splitlines(keepends=True)
    edited = [json.loads(line) for line in lines]
    edited[0]["score"] = 0.001
    out.write_text("".join(json.dumps(row) + "\n" for row in edited))
    data = out.read_bytes()
    record.update(bytes=len(data), sha256=hashlib.sha256(data).hexdigest())
    completion_path(out).write_text(json.dumps(record))
    capsys.readouterr()
    assert run(app, decide) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "carries a seal that does not verify under the audit secret" in err, err
