"""Shipments: decisions recorded once (idempotent retries), read back, outcomes, bad ids and declarations."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import pytest
from serve_fakes import ADMIN_KEY, OFFICER_KEY, SUBMITTER_KEY, FakePredictor, auth, png_bytes

from serve.routes.shipments import idempotency_key

SUBMIT = auth(SUBMITTER_KEY)
OFFICER = auth(OFFICER_KEY)


def _submit(client, shipment_id: str, values: list[int], **declared):
    declaration = json.dumps({"shipment_id": shipment_id, "cargo_type": "bulk_ore", **declared})
    files = [("images", (f"img{i}.png", png_bytes(v), "image/png")) for i, v in enumerate(values)]
    return client.post("/v1/shipments", files=files, data={"declaration": declaration}, headers=SUBMIT)


@pytest.mark.parametrize(
    ("values", "declared", "tier", "rules"),
    [
        ([10, 20], {}, "RELEASE", []),
        ([10, 150], {}, "REMOTE_INSPECTION", ["score.review"]),
        ([10, 240], {}, "PHYSICAL_INSPECTION", ["score.hold"]),
        ([10], {"radiation_alarm": True}, "PHYSICAL_INSPECTION", ["override.radiation_alarm"]),
    ],
)
def test_decision_tiers(make_client, audit_store, tmp_path, values, declared, tier, rules) -> None:
    client = make_client(audit_secret="tiers-test")
    response = _submit(client, "SHP-1", values, **declared)
    assert response.status_code == 200, response.text
    body = response.json()
    decision = body["decision"]
    assert decision["tier"] == tier
    assert [r["rule"] for r in decision["reasons"] if r["tier"] != "RELEASE"] == rules
    assert body["seq"] == 1 and body["policy_version"] == "2026.11-example"
    assert body["model_ids"] == ["bulk_ore-fake-0001"]
    hashes = [image["sha256"] for image in decision["images"]]
    assert body["idempotency_key"] == idempotency_key("SHP-1", hashes)
    # Uploads and heatmaps are kept under the data dir, named by content hash only.
    for image in decision["images"]:
        assert image["heatmap"] == f"heatmaps/{image['sha256']}.png"
        assert (tmp_path / "data" / "images" / f"{image['sha256']}.png").is_file()
        assert (tmp_path / "data" / image["heatmap"]).is_file()
    assert audit_store.get("SHP-1").decision.tier.value == tier


def test_retry_returns_the_stored_decision(make_client, audit_store) -> None:
    client = make_client()
    first = _submit(client, "SHP-R", [200, 10])
    again = _submit(client, "SHP-R", [200, 10])
    reordered = _submit(client, "SHP-R", [10, 200])  # same images, other order: same key
    assert first.status_code == again.status_code == reordered.status_code == 200
    assert first.json()["seq"] == again.json()["seq"] == reordered.json()["seq"] == 1
    assert again.json()["decision"] == first.json()["decision"]
    other = _submit(client, "SHP-R", [200, 11])  # different images: a new decision supersedes
    assert other.json()["seq"] == 2
    assert audit_store.verify().ok
    metrics = client.get("/metrics", headers=auth(ADMIN_KEY)).text
    assert 'clearsight_decisions_total{tier="REMOTE_INSPECTION"} 2.0' in metrics


def test_get_and_record_outcome(make_client, audit_store) -> None:
    client = make_client()
    _submit(client, "SHP-O", [150])
    got = client.get("/v1/shipments/SHP-O", headers=OFFICER)
    assert got.status_code == 200 and got.json()["outcome"] is None
    recorded = client.post(
        "/v1/shipments/SHP-O/outcome", json={"found": "foreign_object", "notes": "cable"}, headers=OFFICER
    )
    assert recorded.status_code == 200, recorded.text
    outcome = recorded.json()["outcome"]
    assert (outcome["found"], outcome["notes"], outcome["decision_seq"]) == ("foreign_object", "cable", 1)
    assert outcome["officer"].startswith("officer:")
    clean = client.post("/v1/shipments/SHP-O/outcome", json={"found": "clean"}, headers=OFFICER)
    assert clean.json()["outcome"]["found"] is None
    assert audit_store.verify().ok


BAD = [
    ("declaration not json", "{not json", 422, "bad-input", "declaration is not valid: "),
    (
        "declaration missing cargo type",
        json.dumps({"shipment_id": "S"}),
        422,
        "bad-input",
        "declaration is not valid: cargo_type: Field required (1 error(s))",
    ),
    (
        "declaration unknown field",
        json.dumps({"shipment_id": "S", "cargo_type": "bulk_ore", "colour": "red"}),
        422,
        "bad-input",
        "declaration is not valid: colour: Extra inputs are not permitted",
    ),
    (
        "bad shipment id",
        json.dumps({"shipment_id": "../etc", "cargo_type": "bulk_ore"}),
        422,
        "bad-input",
        "shipment_id '../etc' is not accepted; use 1-128 letters, digits,",
    ),
    (
        "unknown cargo type",
        json.dumps({"shipment_id": "S", "cargo_type": "crude_oil"}),
        422,
        "unknown-cargo-type",
        "no model for cargo type 'crude_oil'; accepted: bulk_ore, vacuum_pack",
    ),
]


@pytest.mark.parametrize(("case", "declaration", "status", "slug", "detail"), BAD, ids=[b[0] for b in BAD])
def test_bad_submissions(make_client, audit_store, case, declaration, status, slug, detail) -> None:
    response = make_client().post(
        "/v1/shipments",
        files=[("images", ("a.png", png_bytes(10), "image/png"))],
        data={"declaration": declaration},
        headers=SUBMIT,
    )
    assert response.status_code == status, response.text
    assert response.json()["type"] == f"https://clearsight.dev/problems/{slug}"
    assert response.json()["detail"].startswith(detail), response.json()["detail"]
    assert audit_store.list() == []  # nothing recorded


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "detail"),
    [
        ("GET", "/v1/shipments/NOPE-1", None, 404, "no decision recorded for shipment 'NOPE-1'"),
        (
            "POST",
            "/v1/shipments/NOPE-1/outcome",
            {"found": "clean"},
            404,
            "no decision recorded for shipment 'NOPE-1'",
        ),
        ("GET", "/v1/shipments/-bad", None, 422, "path.shipment_id: String should match pattern"),
        (
            "POST",
            "/v1/shipments/SHP-1/outcome",
            {"found": "Foreign Object"},
            422,
            "body.found: String should match",
        ),
        ("POST", "/v1/shipments/SHP-1/outcome", {"found": "clean", "by": "me"}, 422, "body.by: Extra inputs"),
        ("POST", "/v1/shipments/SHP-1/outcome", None, 422, "body: Field required"),
    ],
)
def test_shipment_lookup_errors(make_client, method, path, body, status, detail) -> None:
    response = make_client().request(method, path, json=body, headers=OFFICER)
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["detail"].startswith(detail), response.json()["detail"]


def test_model_failure_fails_closed(make_client, audit_store) -> None:
    client = make_client(predictors={"bulk_ore": FakePredictor(fail=True)})
    response = _submit(client, "SHP-F", [10])
    assert response.status_code == 200, response.text
    decision = response.json()["decision"]
    assert decision["tier"] != "RELEASE"
    assert decision["images"][0]["error"].startswith(
        "model bulk_ore-fake-0001 failed on a batch of 1: RuntimeError"
    )
    scored = client.post(
        "/v1/score",
        files=[("images", ("a.png", png_bytes(10), "image/png"))],
        data={"cargo_type": "bulk_ore"},
        headers=SUBMIT,
    )
    assert (
        scored.status_code == 500 and scored.json()["type"] == "https://clearsight.dev/problems/model-error"
    )


def test_concurrent_submissions_keep_the_chain_valid(make_client, audit_store) -> None:
    client = make_client()

    def submit(i: int) -> int:
        return _submit(client, f"SHP-C{i % 6}", [i, 100 + i]).status_code

    with ThreadPoolExecutor(max_workers=8) as pool:
        statuses = list(pool.map(submit, range(24)))
    assert statuses == [200] * 24
    report = audit_store.verify()
    assert report.ok, report.message
    assert report.head_seq == 24
    assert len(audit_store.list(limit=100)) == 6


def test_an_image_off_the_training_scale_is_not_released(make_client, audit_store) -> None:
    client = make_client(predictors={"bulk_ore": FakePredictor(trained_side=8)})
    declaration = json.dumps({"shipment_id": "SHP-S", "cargo_type": "bulk_ore"})
    files = [
        ("images", ("same.png", png_bytes(10), "image/png")),  # 8 px, as trained
        ("images", ("large.png", png_bytes(10, (64, 48)), "image/png")),  # an eighth of the scale
    ]
    response = client.post("/v1/shipments", files=files, data={"declaration": declaration}, headers=SUBMIT)
    assert response.status_code == 200, response.text
    decision = response.json()["decision"]
    assert [image["scale_vs_training"] for image in decision["images"]] == [1.0, 0.125]
    assert all(set(image["signal_log_odds"]) == {"one_class"} for image in decision["images"])
    assert decision["tier"] == "REMOTE_INSPECTION"
    held = [r for r in decision["reasons"] if r["tier"] != "RELEASE"]
    assert [(r["rule"], r["image"]) for r in held] == [("fail_closed.off_training_scale", "large.png")]
    scored = client.post(
        "/v1/score", files=files[1:], data={"cargo_type": "bulk_ore"}, headers=SUBMIT
    ).json()["images"][0]
    assert (scored["width"], scored["height"], scored["scale_vs_training"]) == (64, 48, 0.125)
