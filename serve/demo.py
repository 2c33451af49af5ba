"""``clearsight demo``: the main job end to end on the embedded defaults.

Synthetic data -> preview sheet -> one model per cargo type -> evaluation reports -> batch scoring of
the inspection archive with heatmaps -> shipment decisions under the bundled policy -> audit trail on
SQLite, verified -> one real HTTP round trip against the service -> a summary an officer can read.

Every step is the same CLI command a user would type (printed before it runs), so the demo doubles as a
tour. It lives in ``serve`` because its last steps need the HTTP layer.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import secrets
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from datasets.errors import ClearsightError
from pipeline.cli import app, run
from pipeline.report import number, percent
from pipeline.settings import Settings, weak_audit_secret

__all__ = ["register"]

CARGO_TYPES = ("bulk_ore", "vacuum_pack")
_TIER_WORDS = {
    "RELEASE": "released before inspection",
    "REMOTE_INSPECTION": "sent to remote (video) inspection",
    "PHYSICAL_INSPECTION": "held for physical inspection",
}


def _step(console: Console, number: int, total: int, title: str, argv: Sequence[str]) -> None:
    console.rule(f"[bold]Step {number}/{total}: {title}")
    console.print("$ clearsight " + " ".join(argv), style="cyan", highlight=False, soft_wrap=True)
    started = time.perf_counter()
    code = run(app, list(argv))
    if code != 0:
        raise ClearsightError(f"step {number} ({title}) failed with exit code {code}; see the error above")
    console.print(f"[dim]({time.perf_counter() - started:.1f} s)[/dim]")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _http_round_trip(
    console: Console, out: Path, models: list[Path], audit_url: str, run_settings: Settings
) -> dict[str, Any]:
    """Start the real service on 127.0.0.1, submit one shipment, read it back, stop the service."""
    import httpx
    import uvicorn

    from datasets.manifest import iter_manifest
    from serve.app import create_app
    from serve.auth import Principal, Role
    from serve.settings import ServeSettings

    submitter, officer = secrets.token_urlsafe(16), secrets.token_urlsafe(16)
    port = _free_port()
    rows = list(iter_manifest(out / "data" / "manifest.csv"))
    # The synthetic traders' AEO tiers, as the authority's register: the service decides under the
    # registered tier, and a submitter declares none.
    register = out / "trader_register.csv"
    with register.open("w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["trader_id", "aeo_tier", "submitters"])
        tiers = {(r.declaration.get("trader_id"), r.declaration.get("aeo_tier")) for r in rows}
        # the run's submitter key sends every trader's shipments: it gets their registered tiers
        sender = Principal.of_key(Role.SUBMITTER, submitter).name
        writer.writerows(sorted((trader, tier, sender) for trader, tier in tiers if trader and tier))
    settings = ServeSettings.load(
        models=models,
        trader_register=register,
        audit_db=audit_url,
        data_dir=out / "serve",
        port=port,
        api_keys=f"submitter:{submitter},officer:{officer}",
        # the run's audit secret, which the steps before recorded under: the service seals its record
        # with the key derived from it, and the last step checks every seal with that key. A trial
        # serves under the public one as a trial (its random audits and seals are no secret)
        audit_secret=run_settings.audit_secret,
        **({"insecure_dev": True} if weak_audit_secret(run_settings) else {}),
    )
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, name="clearsight-demo-server", daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        else:
            raise ClearsightError(f"the service on {base} did not become ready within 120 s")

        # The first held shipment of the archive, resubmitted under a new id as a port system would.
        rows = [r for r in rows if r.cargo_type == "bulk_ore"]
        anomalous = next((r.shipment_id for r in rows if r.label == "anomalous"), rows[0].shipment_id)
        images = [r for r in rows if r.shipment_id == anomalous]
        declaration = {k: v for k, v in images[0].declaration.items() if k in _DECLARATION_FIELDS}
        declaration.update(shipment_id=f"HTTP-{anomalous}", cargo_type="bulk_ore")
        files = [("images", (r.path.name, r.path.read_bytes(), "image/png")) for r in images]
        headers = {"Authorization": f"Bearer {submitter}"}
        console.print(
            f"$ curl -H 'Authorization: Bearer ...' -F declaration='{json.dumps(declaration)}' "
            + " ".join(f"-F images=@{r.path.name}" for r in images)
            + f" {base}/v1/shipments",
            style="cyan",
            highlight=False,
            soft_wrap=True,
        )
        response = httpx.post(
            f"{base}/v1/shipments",
            data={"declaration": json.dumps(declaration)},
            files=files,
            headers=headers,
            timeout=120,
        )
        if response.status_code != 200:
            detail = response.text[:500]
            raise ClearsightError(f"POST /v1/shipments answered {response.status_code}: {detail}")
        receipt = response.json()  # a submitter learns the tier and the record, nothing to tune against
        again = httpx.get(
            f"{base}/v1/shipments/{declaration['shipment_id']}",
            headers={"Authorization": f"Bearer {officer}"},
            timeout=30,
        )
        if again.status_code != 200:
            raise ClearsightError(f"GET /v1/shipments answered {again.status_code}: {again.text[:500]}")
        record = again.json()  # what an officer reads: the whole decision
        if (record["seq"], record["decision"]["tier"]) != (receipt["seq"], receipt["tier"]):
            raise ClearsightError(
                f"the receipt {receipt} does not match the recorded decision {record['seq']}"
            )
        (out / "http_decision.json").write_text(
            json.dumps({"receipt": receipt, "record": record}, indent=2), encoding="utf-8"
        )
        return dict(record["decision"])
    finally:
        server.should_exit = True
        thread.join(timeout=30)


_DECLARATION_FIELDS = (  # what a port system sends; the trader's AEO tier comes from the register
    "trader_id",
    "radiation_alarm",
    "suspected_solid_waste",
    "document_mismatch",
    "declared_foreign_inclusions",
)


def _summary(console: Console, out: Path, http_decision: dict[str, Any]) -> None:
    decisions = [
        json.loads(line) for line in (out / "scores.decisions.jsonl").read_text().splitlines() if line
    ]
    tiers = Counter(d["tier"] for d in decisions)
    reasons = Counter(
        r["rule"] for d in decisions if d["tier"] != "RELEASE" for r in d["reasons"] if r["tier"] != "RELEASE"
    )
    console.rule("[bold]Summary")
    table = Table(title=f"{len(decisions)} shipments decided under the bundled example policy")
    table.add_column("decision")
    table.add_column("shipments", justify="right")
    table.add_column("share", justify="right")
    for tier, words in _TIER_WORDS.items():
        table.add_row(words, str(tiers[tier]), f"{tiers[tier] / max(len(decisions), 1):.0%}")
    console.print(table)
    if reasons:
        console.print(
            "Top reasons for holding cargo: "
            + ", ".join(f"{rule} ({n})" for rule, n in reasons.most_common(5))
        )
    for cargo in CARGO_TYPES:
        metrics_file = out / "reports" / cargo / "metrics.json"
        if metrics_file.is_file():
            m = json.loads(metrics_file.read_text())
            console.print(
                f"{cargo}: image AUROC {number(m.get('image_auroc'))}, clean cargo released at the model's "
                f"threshold {percent(m.get('release_rate'))}, anomalous cargo released "
                f"{percent(m.get('miss_rate'))} "
                f"(report: {out / 'reports' / cargo / 'report.html'})"
            )
    console.print(
        f"HTTP round trip: shipment {http_decision.get('shipment_id')} -> {http_decision.get('tier')} "
        f"(recorded in the audit trail; {out / 'http_decision.json'})"
    )
    console.print(
        f"Files: preview {out / 'preview.png'}, scores {out / 'scores.jsonl'}, decisions "
        f"{out / 'scores.decisions.jsonl'}, heatmaps {out / 'heatmaps'}/, audit {out / 'audit.db'}"
    )


def demo(
    out: Annotated[Path, typer.Option("--out", help="Folder for everything the demo writes.")] = Path(
        "runs/demo"
    ),
    size: Annotated[int, typer.Option("--size", help="Image side of the synthetic data.", min=64)] = 128,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the synthetic data.")] = 7,
    train_good: Annotated[
        int, typer.Option("--train-good", help="Normal training images per cargo type.")
    ] = 80,
) -> None:
    """Run the main job end to end on the embedded defaults (synthetic data, SQLite), then summarise it."""
    console = Console()
    settings = Settings.load()
    # The demo records its decisions on the embedded defaults: a trial, not operative decisions.
    trial = weak_audit_secret(settings) and not settings.allow_development_audit_secret
    if trial:
        console.print(
            "[dim]This trial's random audits use the public development audit_secret; set "
            "CLEARSIGHT_AUDIT_SECRET for decisions that count.[/dim]"
        )
    with _development_secret_allowed(trial):
        _run_steps(console, settings, out=out, size=size, seed=seed, train_good=train_good)


@contextlib.contextmanager
def _development_secret_allowed(allowed: bool) -> Iterator[None]:
    """The steps run in this process read their settings from its environment: the development
    secret is allowed there for the demo's steps only, not for what the process runs after."""
    if not allowed:
        yield
        return
    before = os.environ.get(_ALLOW)
    os.environ[_ALLOW] = "1"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(_ALLOW, None)
        else:
            os.environ[_ALLOW] = before


_ALLOW = "CLEARSIGHT_ALLOW_DEVELOPMENT_AUDIT_SECRET"


def _run_steps(
    console: Console, settings: Settings, *, out: Path, size: int, seed: int, train_good: int
) -> None:
    _check_audit_db_is_the_demos(out)
    out.mkdir(parents=True, exist_ok=True)
    data = out / "data"
    audit_url = f"sqlite:///{out / 'audit.db'}"
    models = [out / "models" / cargo for cargo in CARGO_TYPES]
    total = 11
    _step(
        console,
        1,
        total,
        "render synthetic inspection data",
        [
            "data",
            "synth",
            "--out",
            str(data),
            "--cargo",
            "all",
            "--seed",
            str(seed),
            "--size",
            str(size),
            "--train-good",
            str(train_good),
            "--train-anomalous",
            "6",
            "--test-good",
            "40",
            "--test-anomalous",
            "10",
            "--overwrite",
        ],
    )
    _step(
        console,
        2,
        total,
        "preview it",
        ["data", "preview", str(data), "--out", str(out / "preview.png"), "--overwrite"],
    )
    for i, cargo in enumerate(CARGO_TYPES):
        _step(
            console,
            3 + i,
            total,
            f"train the {cargo} model",
            [
                "train",
                "--data",
                str(data / cargo),
                "--out",
                str(out / "models" / cargo),
                "--image-size",
                str(size),
                "--overwrite",
            ],
        )
    for i, cargo in enumerate(CARGO_TYPES):
        _step(
            console,
            5 + i,
            total,
            f"evaluate the {cargo} model",
            [
                "evaluate",
                "--model",
                str(out / "models" / cargo),
                "--data",
                str(data / cargo),
                "--out",
                str(out / "reports" / cargo),
                "--overwrite",
            ],
        )
    _replace_the_demos_audit_db(out)  # only now: a step refused before it leaves the last run's trail
    _step(
        console,
        7,
        total,
        "score the archive and decide every shipment",
        [
            "score",
            str(data / "manifest.csv"),
            *[a for m in models for a in ("--model", str(m))],
            "--out",
            str(out / "scores.jsonl"),
            "--heatmaps",
            str(out / "heatmaps"),
            "--policy",
            str(_bundled_policy()),
            "--audit-db",
            audit_url,
            "--overwrite",
        ],
    )
    console.rule(f"[bold]Step 8/{total}: one real HTTP round trip")
    http_decision = _http_round_trip(console, out, models, audit_url, settings)
    console.print(
        f"Service answered: {http_decision.get('tier')} "
        f"with {len(http_decision.get('reasons', []))} reason(s)"
    )
    _step(console, 9, total, "verify the audit trail", ["audit", "verify", "--db", audit_url])
    console.rule(f"[bold]Step 10/{total}: officers record what the inspections found")
    inspected = _simulated_outcomes(console, out, audit_url)
    _step(
        console,
        11,
        total,
        "the field report: what the inspections say of the models",
        ["audit", "report", "--db", audit_url, "--out", str(out / "field"), "--overwrite"],
    )
    _summary(console, out, http_decision)
    console.print(
        f"Field report: {inspected} inspections recorded (simulated from the synthetic ground truth), "
        f"{out / 'field' / 'field_report.html'}"
    )


_DEMO_MARK = ".clearsight-demo"
"""The file the demo leaves in its ``--out`` before it makes ``audit.db`` there: an ``audit.db``
beside it is the demo's own, which the next run replaces. Any other ``audit.db`` may be a real audit
trail: the demo refuses the folder rather than delete it."""


def _check_audit_db_is_the_demos(out: Path) -> None:
    """Refuse, before any step, an ``--out`` holding an ``audit.db`` the demo did not write there
    (no :data:`_DEMO_MARK` beside it): deleting it, as the demo once did first thing, lost an audit
    trail even where a later check then refused the folder.

    Raises:
        ClearsightError: naming the file and what to do instead.
    """
    db = out / "audit.db"
    if (db.exists() or db.is_symlink()) and not (out / _DEMO_MARK).is_file():
        raise ClearsightError(
            f"--out {str(out)!r} holds {str(db)!r}, which this demo did not write (no {_DEMO_MARK} file "
            "beside it): it may be an audit trail, and the demo would replace it; give another --out, "
            "or remove that file yourself if it is not needed"
        )


def _replace_the_demos_audit_db(out: Path) -> None:
    """Mark ``out``'s ``audit.db`` as the demo's (:data:`_DEMO_MARK`) and remove the last run's, with
    SQLite's files beside it (``-wal``, ``-shm``, ``-journal``), so that this run records afresh.
    Checked again here: the folder may have changed during the slow steps before."""
    _check_audit_db_is_the_demos(out)
    (out / _DEMO_MARK).write_text(
        "The audit.db beside this file was written by `clearsight demo`, and the next demo run into this\n"
        "folder replaces it. Remove this file to keep that audit.db: the demo then refuses the folder.\n",
        encoding="utf-8",
    )
    for name in ("audit.db", "audit.db-wal", "audit.db-shm", "audit.db-journal"):
        (out / name).unlink(missing_ok=True)


def _simulated_outcomes(console: Console, out: Path, audit_url: str) -> int:
    """Record, as officers would, what inspecting each held or audited shipment of the batch found,
    taken from the synthetic data's ground truth (each picture's folder names its anomaly type):
    the outcomes the field report reads. Returns how many were recorded."""
    decisions = [
        json.loads(line) for line in (out / "scores.decisions.jsonl").read_text().splitlines() if line
    ]
    commands = []
    for decision in decisions:
        if decision["tier"] == "RELEASE":
            continue  # released cargo is not inspected: only the random audits see it
        found = None
        for image in decision["images"]:
            truth = Path(image["path"]).parent.name
            if truth != "good":
                known = truth in (image.get("type_probabilities") or {})
                found = truth if known else "unknown"  # a held-out type the model never saw
                break
        finding = ["--clean"] if found is None else ["--found", found]
        commands.append(
            [
                "audit",
                "outcome",
                decision["shipment_id"],
                "--officer",
                "demo-officer",
                *finding,
                "--db",
                audit_url,
            ]
        )
    if commands:
        console.print("$ clearsight " + " ".join(commands[0]), style="cyan", highlight=False, soft_wrap=True)
    started = time.perf_counter()
    for argv in commands:
        with contextlib.redirect_stdout(io.StringIO()):
            code = run(app, argv)
        if code != 0:
            raise ClearsightError(
                f"step 10 (recording the outcome of {argv[2]}) failed with exit code {code}"
            )
    console.print(
        f"{len(commands)} held or audited shipments inspected, each finding taken from the synthetic "
        f"ground truth [dim]({time.perf_counter() - started:.1f} s)[/dim]"
    )
    return len(commands)


def _bundled_policy() -> Path:
    from pipeline.policy import default_policy_path

    return Path(default_policy_path())


def register(root: typer.Typer) -> None:
    """Add ``clearsight demo`` to the root app."""
    root.command("demo")(demo)
