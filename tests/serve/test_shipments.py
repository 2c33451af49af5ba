"""Shipments: decisions recorded once (idempotent retries), read back, outcomes, bad ids and declarations."""

from __future__ import annotations

import hashlib
import json
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import pytest
from serve_fakes import (
    ADMIN_KEY,
    API_KEYS,
    OFFICER_KEY,
    SUBMITTER_KEY,
    FakePredictor,
    auth,
    batch_hold,
    png_bytes,
)

from datasets.errors import ArtifactError, AuditError, EngineError, SchemaVersionError
from pipeline.audit import AuditStore
from pipeline.verdicts import Declaration
from serve.auth import Principal, Role
from serve.routes.shipments import idempotency_key
from serve.storage import heatmap_key

SUBMIT = auth(SUBMITTER_KEY)
OFFICER = auth(OFFICER_KEY)
ADMIN = auth(ADMIN_KEY)


def _submit(client, shipment_id: str, values: list[int], *, headers=ADMIN, **declared):
    """Submitted by an admin, who is answered with the whole decision (a submitter gets a receipt)."""
    declaration = json.dumps({"shipment_id": shipment_id, "cargo_type": "bulk_ore", **declared})
    files = [("images", (f"img{i}.png", png_bytes(v), "image/png")) for i, v in enumerate(values)]
    return client.post("/v1/shipments", files=files, data={"declaration": declaration}, headers=headers)


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
    client = make_client(audit_secret="tiers-test-audit-secret")
    response = _submit(client, "SHP-1", values, **declared)
    assert response.status_code == 200, response.text
    body = response.json()
    decision = body["decision"]
    assert decision["tier"] == tier
    assert [r["rule"] for r in decision["reasons"] if r["tier"] != "RELEASE"] == rules
    assert body["seq"] == 1 and body["policy_version"] == "2026.12.2-example"
    assert body["model_ids"] == ["bulk_ore-fake-0001"]
    hashes = [image["sha256"] for image in decision["images"]]
    declaration = Declaration(shipment_id="SHP-1", cargo_type="bulk_ore", **declared)
    assert body["idempotency_key"] == idempotency_key(declaration, hashes)
    # Uploads are kept under the data dir named by content hash; heatmaps by image and model.
    for image in decision["images"]:
        assert image["heatmap"] == f"heatmaps/{heatmap_key(image['sha256'], 'bulk_ore-fake-0001')}.png"
        assert (tmp_path / "data" / "images" / f"{image['sha256']}.png").is_file()
        assert (tmp_path / "data" / image["heatmap"]).is_file()
    assert audit_store.get("SHP-1").decision.tier.value == tier


def test_retry_returns_the_stored_decision(make_client, audit_store) -> None:
    predictor = FakePredictor()
    client = make_client(predictors={"bulk_ore": predictor})
    first = _submit(client, "SHP-R", [200, 10])
    again = _submit(client, "SHP-R", [200, 10])
    reordered = _submit(client, "SHP-R", [10, 200])  # same images, other order: same key
    assert first.status_code == again.status_code == reordered.status_code == 200
    assert first.json()["seq"] == again.json()["seq"] == reordered.json()["seq"] == 1
    assert again.json()["decision"] == first.json()["decision"]
    assert sum(predictor.batch_sizes) == 2  # the retries were answered from the record, not scored
    assert audit_store.verify().ok
    metrics = client.get("/metrics", headers=auth(ADMIN_KEY)).text
    assert 'clearsight_decisions_total{tier="REMOTE_INSPECTION"} 1.0' in metrics


@pytest.mark.parametrize(
    ("values", "declared", "why"),
    [
        ([10, 20], {}, "clean pictures of a held shipment"),
        ([200, 10, 30], {}, "one more picture"),
        ([200, 10], {"trader_id": "T-9"}, "a declaration that changed"),
    ],
)
def test_a_decided_shipment_is_not_decided_again(make_client, audit_store, values, declared, why) -> None:
    client = make_client()
    first = _submit(client, "SHP-H", [200, 10])
    assert first.status_code == 200 and first.json()["decision"]["tier"] == "REMOTE_INSPECTION"
    again = _submit(client, "SHP-H", values, **declared)
    assert again.status_code == 409, why
    problem = again.json()
    assert problem["type"] == "https://clearsight.dev/problems/conflict"
    assert problem["detail"].startswith(
        "shipment 'SHP-H' was already decided (audit record 1) on other images"
    )
    # Nothing recorded: the hold stands, in the record and in the officers' queue.
    got = client.get("/v1/shipments/SHP-H", headers=OFFICER).json()
    assert (got["seq"], got["decision"]["tier"]) == (1, "REMOTE_INSPECTION")
    assert [r.seq for r in audit_store.list(limit=10)] == [1]


def test_a_decided_shipment_sent_again_is_refused_alike_whatever_its_pictures(
    make_client, audit_store
) -> None:
    """A released shipment sent again with a candidate picture answered 409 where the picture would
    be released (nothing recorded, the picture indexed nowhere) and recorded a hold otherwise: a
    pass/fail oracle leaving no trace. Now refused before any scoring, whatever the pictures; only
    a flag the declaration raises decides it again."""
    predictor = FakePredictor()
    client = make_client(predictors={"bulk_ore": predictor})
    assert _submit(client, "SHP-T", [10], headers=SUBMIT).json()["tier"] == "RELEASE"
    scored = sum(predictor.batch_sizes)
    clean = _submit(client, "SHP-T", [12], headers=SUBMIT)
    hot = _submit(client, "SHP-T", [240], headers=SUBMIT)
    assert clean.status_code == hot.status_code == 409, hot.text
    assert clean.json() | {"request_id": None} == hot.json() | {"request_id": None}
    assert sum(predictor.batch_sizes) == scored  # neither picture was scored
    assert [r.seq for r in audit_store.list(limit=10)] == [1]
    alarm = _submit(client, "SHP-T", [12], headers=SUBMIT, radiation_alarm=True)
    assert (alarm.status_code, alarm.json()["tier"], alarm.json()["seq"]) == (200, "PHYSICAL_INSPECTION", 2)


@pytest.mark.parametrize("headers", [SUBMIT, ADMIN], ids=["submitter", "admin"])
def test_a_hot_rescan_of_a_released_shipment_holds_it_when_an_admin_sends_it(
    make_client, audit_store, headers
) -> None:
    """The flags-only rule keeps a submitter from reading a picture's verdict off a 409; an admin sees
    every verdict (and /v1/score scores any picture), so its stricter re-scan is recorded, as the
    README says: it got 409 under that rule too, and the release stood."""
    predictor = FakePredictor()
    client = make_client(predictors={"bulk_ore": predictor})
    assert _submit(client, "SHP-RS", [10], headers=SUBMIT).json()["tier"] == "RELEASE"
    scored = sum(predictor.batch_sizes)
    hot = _submit(client, "SHP-RS", [240], headers=headers)
    if headers is ADMIN:
        assert hot.status_code == 200, hot.text
        assert (hot.json()["seq"], hot.json()["decision"]["tier"]) == (2, "PHYSICAL_INSPECTION")
        assert sum(predictor.batch_sizes) == scored + 1
    else:  # refused before scoring, as a clean picture would be
        assert hot.status_code == 409, hot.text
        assert "decided anew only where its declaration raises a flag" in hot.json()["detail"]
        assert sum(predictor.batch_sizes) == scored
    # a re-scan no stricter than the decision standing is refused for both
    clean = _submit(client, "SHP-RS", [12], headers=headers)
    assert clean.status_code == 409, clean.text
    assert clean.json()["type"] == "https://clearsight.dev/problems/conflict"
    standing = "PHYSICAL_INSPECTION" if headers is ADMIN else "RELEASE"
    assert audit_store.get("SHP-RS").decision.tier.value == standing
    assert [r.seq for r in audit_store.iter_records()] == ([1, 2] if headers is ADMIN else [1])


@pytest.mark.parametrize(
    ("extra", "detail"),
    [
        (  # written as one key (each half became U+FFFD), the first value lost
            '{"x_ref\\ud800": "first", "x_ref\\udc80": "second"}',
            "declaration is not valid: key 'x_ref\\ud800': '\\ud800' is half a character",
        ),
        (  # refused only where the decision was written, after the pictures were scored
            '{"x_note": "a\\udc80"}',
            "declaration is not valid: the value of key 'x_note': '\\udc80' is half a character",
        ),
    ],
)
def test_half_a_character_in_a_declaration_is_refused_before_scoring(
    make_client, audit_store, extra, detail
) -> None:
    """pydantic's parser, which read declarations before loads_strict, refused a lone surrogate."""
    predictor = FakePredictor()
    client = make_client(predictors={"bulk_ore": predictor})
    declaration = '{"shipment_id": "SHP-U", "cargo_type": "bulk_ore", "extra": ' + extra + "}"
    response = client.post(
        "/v1/shipments",
        files=[("images", ("a.png", png_bytes(10), "image/png"))],
        data={"declaration": declaration},
        headers=SUBMIT,
    )
    assert response.status_code == 422, response.text
    assert response.json()["type"] == "https://clearsight.dev/problems/bad-input"
    assert response.json()["detail"].startswith(detail), response.json()["detail"]
    assert predictor.batch_sizes == [] and audit_store.list() == []


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
    # a second finding for the same decision is refused unless it says it corrects the first
    again = client.post("/v1/shipments/SHP-O/outcome", json={"found": "clean"}, headers=OFFICER)
    assert again.status_code == 409
    assert again.json()["detail"].startswith(
        "shipment 'SHP-O' already has an outcome (foreign_object, recorded by"
    )
    clean = client.post(
        "/v1/shipments/SHP-O/outcome", json={"found": "clean", "amend": True}, headers=OFFICER
    )
    assert clean.status_code == 200 and clean.json()["outcome"]["found"] == "clean"  # as sent, not null
    assert client.get("/v1/shipments/SHP-O", headers=OFFICER).json()["outcome"]["found"] == "clean"
    assert audit_store.get("SHP-O").outcome.found is None  # the trail keeps clean as before
    schemas = make_client(api_docs=True).get("/openapi.json").json()["components"]["schemas"]
    assert schemas["ShipmentResponse"]["properties"]["outcome"]["anyOf"] == [
        {"$ref": "#/components/schemas/OutcomeOut"},
        {"type": "null"},
    ]
    assert set(schemas["OutcomeOut"]["required"]) >= {"found", "officer", "decision_seq", "seq"}
    assert audit_store.verify().ok


@pytest.mark.parametrize(
    ("outcome", "status"),
    [
        ({"found": "foreign_object"}, 200),  # its images were scored against it
        ({"found": "unknown"}, 200),
        ({"found": "clean"}, 200),
        ({"found": "foriegn_object"}, 422),  # a typo, kept in the audit trail for good
        ({"found": "puncture"}, 422),  # another cargo type's
        ({"found": "foriegn_object", "new_type": True}, 200),  # the officer says it is a new kind
    ],
)
def test_an_outcome_names_a_type_the_shipment_was_scored_against(
    make_client, audit_store, outcome, status
) -> None:
    """The CLI refused such a finding unless --new-type; the API took any name and kept it for good."""
    client = make_client()
    _submit(client, "SHP-T", [150])
    answer = client.post("/v1/shipments/SHP-T/outcome", json=outcome, headers=OFFICER)
    assert answer.status_code == status, answer.text
    if status == 422:
        assert answer.json()["detail"] == (
            f"found {outcome['found']!r} is not a type the bulk_ore pictures of shipment 'SHP-T' were "
            "scored against, nor one its bulk_ore model knows (accepted: clean, foreign_object, unknown); "
            'send "new_type": true if inspection found a kind of anomaly its model does not know'
        )
        assert audit_store.get("SHP-T").outcome is None
    else:
        found = audit_store.get("SHP-T").outcome.found
        assert found == (None if outcome["found"] == "clean" else outcome["found"])


@pytest.mark.parametrize("path", ["/v1/shipments/SHP-T/outcome", "/v1/outcomes"], ids=["by-path", "in-body"])
def test_an_outcome_never_names_a_synthetic_class_even_as_a_new_type(make_client, audit_store, path) -> None:
    """new_type skipped every check of the name: synthetic_rubber, a name training keeps for the
    pseudo-anomaly classes it makes (which `audit outcome --new-type` refuses), was kept in the trail."""
    client = make_client()
    _submit(client, "SHP-T", [150])
    named = {"shipment_id": "SHP-T"} if path == "/v1/outcomes" else {}
    sent = {**named, "found": "synthetic_rubber", "new_type": True}
    answer = client.post(path, json=sent, headers=OFFICER)
    assert answer.status_code == 422, answer.text
    assert answer.json()["type"] == "https://clearsight.dev/problems/validation"
    assert [error["loc"] for error in answer.json()["errors"]] == ["body.found"]
    assert answer.json()["detail"].startswith(
        "body.found: Value error, found 'synthetic_rubber' is not a type name: lower-case letters, "
        "digits and _, starting with a letter, at most 64 characters (e.g. foreign_object), not starting "
        "with synthetic_ (kept for the synthetic classes training makes)"
    ), answer.text
    assert audit_store.get("SHP-T").outcome is None
    taken = client.post(path, json={**sent, "found": "rubber_strip"}, headers=OFFICER)
    assert taken.status_code == 200, taken.text
    assert audit_store.get("SHP-T").outcome.found == "rubber_strip"


def test_an_outcome_for_an_earlier_decision_is_refused_as_decided_again_whatever_it_found(
    make_client,
) -> None:
    """The found type was judged against the latest decision first: an outcome for an earlier one
    was told to send new_type instead of that the shipment had been decided again."""
    client = make_client()
    _submit(client, "SHP-D", [150])
    assert _submit(client, "SHP-D", [150], radiation_alarm=True).json()["seq"] == 2
    for found in ("foreign_object", "foriegn_object"):
        answer = client.post(
            "/v1/shipments/SHP-D/outcome", json={"found": found, "decision_seq": 1}, headers=OFFICER
        )
        problem = answer.json()
        assert (answer.status_code, problem["type"]) == (409, "https://clearsight.dev/problems/decided-again")


def test_an_outcome_for_a_decision_that_was_replaced_is_refused(make_client, audit_store) -> None:
    client = make_client()
    _submit(client, "SHP-Q", [10])
    assert _submit(client, "SHP-Q", [10], radiation_alarm=True).json()["seq"] == 2  # decided again, stricter
    stale = client.post(
        "/v1/shipments/SHP-Q/outcome", json={"found": "clean", "decision_seq": 1}, headers=OFFICER
    )
    assert stale.status_code == 409
    assert "was decided again since decision 1: its latest decision is 2" in stale.json()["detail"]
    unknown = client.post(
        "/v1/shipments/SHP-Q/outcome", json={"found": "clean", "decision_seq": 7}, headers=OFFICER
    )
    assert (unknown.status_code, unknown.json()["type"], unknown.json()["detail"]) == (
        422,
        "https://clearsight.dev/problems/bad-input",
        "shipment 'SHP-Q' has no decision 7: its latest decision is 2; judge that one",
    )
    current = client.post(
        "/v1/shipments/SHP-Q/outcome", json={"found": "clean", "decision_seq": 2}, headers=OFFICER
    )
    assert current.status_code == 200 and current.json()["outcome"]["decision_seq"] == 2


@pytest.mark.parametrize("path", ["/v1/shipments/SHP-C/outcome", "/v1/outcomes"], ids=["by-path", "in-body"])
def test_the_outcome_of_a_decision_since_superseded_is_corrected_with_amend(
    make_client, audit_store, path
) -> None:
    """A finding recorded on SHP-C's decision 1 by mistake; a radiation alarm decided it again
    (decision 3). Every outcome naming decision 1 was refused as decided again, amend or not, so the
    finding held its pictures whenever sent again. With amend it is corrected on decision 1, judged
    against that decision's types, and answered with it; without amend, or on a superseded decision
    without an outcome (SHP-E's 4), it is refused as before."""
    client = make_client()

    def send(shipment: str, **outcome):
        named = {"shipment_id": shipment} if path == "/v1/outcomes" else {}
        return client.post(path.replace("SHP-C", shipment), json={**named, **outcome}, headers=OFFICER)

    _submit(client, "SHP-C", [150])
    assert send("SHP-C", found="foreign_object").json()["outcome"]["seq"] == 2
    assert _submit(client, "SHP-C", [150], radiation_alarm=True).json()["seq"] == 3
    assert _submit(client, "SHP-E", [160]).json()["seq"] == 4
    assert _submit(client, "SHP-E", [160], radiation_alarm=True).json()["seq"] == 5
    refused = [
        ("SHP-C", {"found": "clean", "decision_seq": 1}, 409, "decided-again",
         "shipment 'SHP-C' was decided again since decision 1: its latest decision is 3; judge that one, "
         "or correct the outcome recorded on decision 1 (record 2) with amend (the API's amend: true, "
         "the CLI's --amend)"),
        ("SHP-E", {"found": "clean", "decision_seq": 4, "amend": True}, 409, "decided-again",
         "shipment 'SHP-E' was decided again since decision 4: its latest decision is 5; amend corrects "
         "an outcome already recorded, and decision 4 has none: judge the latest"),
        ("SHP-C", {"found": "foriegn_object", "decision_seq": 1, "amend": True}, 422, "bad-input",
         "found 'foriegn_object' is not a type the bulk_ore pictures of shipment 'SHP-C' were scored "
         "against, nor one its bulk_ore model knows (accepted: clean, foreign_object, unknown); "
         'send "new_type": true if inspection found a kind of anomaly its model does not know'),
    ]  # fmt: skip
    for shipment, outcome, status, slug, detail in refused:
        answer = send(shipment, **outcome)
        assert (answer.status_code, answer.json()["type"], answer.json()["detail"]) == (
            status,
            f"https://clearsight.dev/problems/{slug}",
            detail,
        )
    corrected = send("SHP-C", found="clean", notes="misread", decision_seq=1, amend=True)
    assert corrected.status_code == 200, corrected.text
    body = corrected.json()
    assert (body["seq"], body["decision"]["tier"], body["outcome"]["found"]) == (
        1,
        "REMOTE_INSPECTION",
        "clean",
    )
    assert (body["outcome"]["decision_seq"], body["outcome"]["seq"]) == (1, 6)
    # the answer names the decision the shipment stands at: a client refreshing from it showed decision
    # 1's tier with no word of a later one
    assert body["superseded_by"] == {"seq": 3, "tier": "PHYSICAL_INSPECTION"}
    latest = client.get("/v1/shipments/SHP-C", headers=OFFICER).json()
    assert (latest["seq"], latest["outcome"]) == (3, None)  # the later decision stands, to be inspected
    assert latest["superseded_by"] is None
    assert audit_store.decisions_of(["SHP-C"])[0].outcome.found is None
    assert audit_store.verify().ok


def _released_again(store: AuditStore, shipment: str) -> int:
    """The shipment decided again at RELEASE, as a batch records a re-scan once a clean outcome
    lifted its hold; returns the decision's seq."""
    from pipeline.verdicts import Tier

    held = store.get(shipment)
    assert held is not None
    released = held.decision.model_copy(update={"tier": Tier.RELEASE, "reasons": []})
    return store.record(released, idempotency_key=f"batch:{shipment}").seq


def test_a_clean_outcome_of_a_decision_since_superseded_is_not_corrected_into_a_finding(
    make_client, either_audit_store
) -> None:
    """SHP-R was inspected clean on decision 1 and released by a batch since (decision 3). A
    correction of decision 1's outcome into a finding was taken (200, answered with decision 1)
    while SHP-R stood released with no outcome: nobody was told the cargo with a finding was
    released. It is refused as decided again, naming decision 3 and its tier, before any type check
    against decision 1; the finding is taken on decision 3."""
    client = make_client(audit=either_audit_store)
    assert _submit(client, "SHP-R", [150]).json()["seq"] == 1
    clean = client.post("/v1/shipments/SHP-R/outcome", json={"found": "clean"}, headers=OFFICER)
    first = clean.json()["outcome"]
    assert first["seq"] == 2
    assert _released_again(either_audit_store, "SHP-R") == 3
    detail = (
        "shipment 'SHP-R' was decided again since decision 1: its latest decision is 3 (RELEASE); amend "
        f"corrects a finding recorded by mistake, and decision 1's outcome is clean (record 2, by "
        f"{first['officer']} at {first['created_at']}): record a finding on decision 3, the one the "
        "shipment stands at"
    )
    for found in ("foreign_object", "foriegn_object"):
        answer = client.post(
            "/v1/shipments/SHP-R/outcome",
            json={"found": found, "decision_seq": 1, "amend": True},
            headers=OFFICER,
        )
        assert (answer.status_code, answer.json()["type"], answer.json()["detail"]) == (
            409,
            "https://clearsight.dev/problems/decided-again",
            detail,
        )
    assert either_audit_store.verify().records_checked == 3
    held = client.post(
        "/v1/shipments/SHP-R/outcome", json={"found": "foreign_object", "decision_seq": 3}, headers=OFFICER
    )
    assert held.status_code == 200, held.text
    assert (held.json()["seq"], held.json()["outcome"]["found"], held.json()["superseded_by"]) == (
        3,
        "foreign_object",
        None,
    )


class _AnotherOfficerAfter:
    """The audit store, but each outcome recorded is corrected at once by another officer (clean,
    notes "B's"), as one landing between a write and the route's read-back of it is."""

    def __init__(self, store: object) -> None:
        self._store = store

    def record_outcome(self, shipment_id: str, **kwargs: object) -> object:
        recorded = self._store.record_outcome(shipment_id, **kwargs)
        self._store.record_outcome(
            shipment_id,
            found=None,
            officer="officer-B",
            notes="B's",
            decision_seq=recorded.decision_seq,
            amend=True,
        )
        return recorded

    def __getattr__(self, name: str) -> object:
        return getattr(self._store, name)


@pytest.mark.parametrize(
    ("decision_seq", "amend", "seqs", "superseded_by"),
    [(3, False, (3, 4), None), (1, True, (1, 4), {"seq": 3, "tier": "PHYSICAL_INSPECTION"})],
    ids=["latest", "superseded"],
)
def test_an_outcome_is_answered_as_recorded_not_as_corrected_since(
    make_client, audit_store, decision_seq, amend, seqs, superseded_by
) -> None:
    """Another officer corrected the decision between this outcome's write and the route's read of
    it: the answer showed the other officer's outcome as this one's. It is answered with the outcome
    this request recorded, on the decision as read after it (``superseded_by`` too)."""
    client = make_client(audit=_AnotherOfficerAfter(audit_store))
    _submit(client, "SHP-C", [150])  # 1
    audit_store.record_outcome("SHP-C", found="foreign_object", officer="o-1", amend=False)  # 2
    _submit(client, "SHP-C", [150], radiation_alarm=True)  # 3
    sent = {"found": "unknown", "notes": "A's", "decision_seq": decision_seq, "amend": amend}
    answer = client.post("/v1/shipments/SHP-C/outcome", json=sent, headers=OFFICER)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    mine = body["outcome"]
    assert (body["seq"], mine["seq"], body["superseded_by"]) == (*seqs, superseded_by)
    assert (mine["decision_seq"], mine["found"], mine["notes"]) == (decision_seq, "unknown", "A's")
    assert mine["officer"].startswith("officer:")
    judged = next(r for r in audit_store.decisions_of(["SHP-C"]) if r.seq == decision_seq)
    assert (judged.outcome.seq, judged.outcome.officer, judged.outcome.notes) == (5, "officer-B", "B's")


@pytest.mark.parametrize("path", ["/v1/shipments/SHP-N/outcome", "/v1/outcomes"], ids=["by-path", "in-body"])
def test_an_outcome_naming_no_decision_is_refused_once_the_shipment_was_decided_again(
    make_client, either_audit_store, path
) -> None:
    """The officer read decision 1 (a remote inspection); meanwhile a radiation alarm recorded
    decision 2. An outcome "clean" without decision_seq judged decision 2, lifting a hold nobody
    had inspected for, and the review queue was empty."""
    store = either_audit_store
    client = make_client(audit=store)
    named = {"shipment_id": "SHP-N"} if path == "/v1/outcomes" else {}
    _submit(client, "SHP-N", [150])
    assert client.get("/v1/shipments/SHP-N", headers=OFFICER).json()["seq"] == 1  # what the officer saw
    alarm = _submit(client, "SHP-N", [150], radiation_alarm=True).json()
    assert (alarm["seq"], alarm["decision"]["tier"]) == (2, "PHYSICAL_INSPECTION")
    unnamed = client.post(path, json={**named, "found": "clean"}, headers=OFFICER)
    assert (unnamed.status_code, unnamed.json()["type"]) == (
        409,
        "https://clearsight.dev/problems/decision-unnamed",
    )
    assert unnamed.json()["detail"] == (
        "shipment 'SHP-N' was decided more than once (decisions 1, 2 (the latest 2)): an outcome must "
        "name the decision the officer inspected (decision_seq), so that it judges no decision "
        "recorded since; read the shipment and send the audit record of the one inspected"
    )
    assert store.get("SHP-N").outcome is None
    assert [r.decision.shipment_id for r in store.list(pending_outcome=True)] == ["SHP-N"]
    seen = client.post(path, json={**named, "found": "clean", "decision_seq": 1}, headers=OFFICER)
    assert seen.json()["type"] == "https://clearsight.dev/problems/decided-again"
    current = client.post(path, json={**named, "found": "clean", "decision_seq": 2}, headers=OFFICER)
    assert current.status_code == 200 and current.json()["outcome"]["decision_seq"] == 2
    # decided once, a shipment takes an outcome without it, as before
    _submit(client, "SHP-1", [150])
    once = {"shipment_id": "SHP-1"} if path == "/v1/outcomes" else {}
    alone = client.post(path.replace("SHP-N", "SHP-1"), json={**once, "found": "clean"}, headers=OFFICER)
    assert alone.status_code == 200 and alone.json()["outcome"]["decision_seq"] == 4


@pytest.mark.parametrize(
    ("path", "named"),
    [("/v1/shipments/SHP-BIG/outcome", {}), ("/v1/outcomes", {"shipment_id": "SHP-BIG"})],
    ids=["by-path", "in-body"],
)
def test_a_decision_seq_past_a_database_integer_is_refused_by_name(
    make_client, audit_store, path, named
) -> None:
    """2**63 went on to the audit store, whose SQLite driver failed on it with OverflowError: a 500."""
    client = make_client()
    _submit(client, "SHP-BIG", [10])
    past = client.post(path, json={**named, "found": "clean", "decision_seq": 2**63}, headers=OFFICER)
    assert (past.status_code, past.json()["type"]) == (422, "https://clearsight.dev/problems/validation")
    assert [error["loc"] for error in past.json()["errors"]] == ["body.decision_seq"]
    assert f"less than or equal to {2**63 - 1}" in past.json()["detail"]
    largest = client.post(path, json={**named, "found": "clean", "decision_seq": 2**63 - 1}, headers=OFFICER)
    assert largest.json()["detail"] == (
        f"shipment 'SHP-BIG' has no decision {2**63 - 1}: its latest decision is 1; judge that one"
    )
    assert audit_store.get("SHP-BIG").outcome is None


@pytest.mark.parametrize(
    ("path", "content_type", "body"),
    [
        ("/v1/outcomes", "application/x-www-form-urlencoded", "shipment_id=SHP-J&found=clean"),
        ("/v1/outcomes", "text/plain", '{"shipment_id": "SHP-J", "found": "clean"}'),
        ("/v1/shipments/SHP-J/outcome", "text/plain", '{"found": "clean"}'),
        ("/v1/shipments/SHP-J/outcome", None, '{"found": "clean"}'),
    ],
)
def test_an_outcome_not_sent_as_json_is_refused_as_such(
    make_client, audit_store, path, content_type, body
) -> None:
    """A form, or JSON labelled text/plain: 415 naming the type, as the upload routes answer, not a
    422 saying the body is not a dictionary."""
    client = make_client()
    _submit(client, "SHP-J", [10])
    headers = {**OFFICER, "content-type": content_type} if content_type else OFFICER
    response = client.post(path, content=body, headers=headers)
    assert response.status_code == 415, response.text
    assert response.json()["detail"] == (
        f"content type {content_type or 'none'!r} is not accepted here; send JSON as application/json "
        """(curl --json '{"found": "clean"}' ...)"""
    )
    assert audit_store.get("SHP-J").outcome is None


def test_each_refusal_has_its_own_problem_type(make_client) -> None:
    """A client tells refusals apart by the problem's type, not by parsing its detail: a role, an id
    another trader sent, a tier declared; a shipment decided already, an outcome recorded already,
    a decision replaced since."""
    stranger = "submitter-key-0004"
    client = make_client(api_keys=f"{API_KEYS},submitter:{stranger}")
    assert _submit(client, "SHP-T", [10], headers=SUBMIT).status_code == 200
    cases = {
        "forbidden": client.post(
            "/v1/score",
            files=[("images", ("a.png", png_bytes(10)))],
            data={"cargo_type": "bulk_ore"},
            headers=SUBMIT,
        ),
        "shipment-taken": _submit(client, "SHP-T", [10], headers=auth(stranger)),
        "aeo-tier-not-allowed": _submit(client, "SHP-U", [10], headers=SUBMIT, aeo_tier="AEOF"),
        "conflict": _submit(client, "SHP-T", [11], headers=SUBMIT),
    }
    assert (
        client.post("/v1/shipments/SHP-T/outcome", json={"found": "clean"}, headers=OFFICER).status_code
        == 200
    )
    cases["outcome-exists"] = client.post(
        "/v1/shipments/SHP-T/outcome", json={"found": "clean"}, headers=OFFICER
    )
    assert _submit(client, "SHP-T", [10], radiation_alarm=True).json()["seq"] == 3  # stricter: decided again
    cases["decided-again"] = client.post(  # with amend, a correction of decision 1's outcome
        "/v1/shipments/SHP-T/outcome", json={"found": "clean", "decision_seq": 1}, headers=OFFICER
    )
    cases["decision-unnamed"] = client.post(
        "/v1/shipments/SHP-T/outcome", json={"found": "clean", "amend": True}, headers=OFFICER
    )
    statuses = {"forbidden": 403, "shipment-taken": 403, "aeo-tier-not-allowed": 403}
    for slug, response in cases.items():
        assert response.status_code == statuses.get(slug, 409), (slug, response.text)
        assert response.json()["type"] == f"https://clearsight.dev/problems/{slug}", slug


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
        "flag under extra",
        json.dumps({"shipment_id": "S", "cargo_type": "bulk_ore", "extra": {"Radiation-Alarm": True}}),
        422,
        "bad-input",
        "declaration is not valid: extra: Value error, extra key 'Radiation-Alarm' is the field "
        "'radiation_alarm'",
    ),
    (
        "flag under extra, run together",
        json.dumps({"shipment_id": "S", "cargo_type": "bulk_ore", "extra": {"RadiationAlarm": True}}),
        422,
        "bad-input",
        "declaration is not valid: extra key 'RadiationAlarm' is the field 'radiation_alarm'",
    ),
    (
        "bad shipment id",
        json.dumps({"shipment_id": "../etc", "cargo_type": "bulk_ore"}),
        422,
        "bad-input",
        "shipment_id '../etc' is not accepted; use 1-128 letters, digits,",
    ),
    (
        "declaration too long",
        json.dumps({"shipment_id": "S", "cargo_type": "bulk_ore", "extra": {"note": "x" * 16_400}}),
        413,
        "request-too-large",
        "declaration is 16,469 characters; at most 16,384 are accepted",
    ),
    (
        "too many extra fields",
        json.dumps({"shipment_id": "S", "cargo_type": "bulk_ore", "extra": {f"x{i}": i for i in range(65)}}),
        422,
        "bad-input",
        "declaration extra has 65 fields; at most 64 are accepted",
    ),
    (
        "nested extra",
        json.dumps({"shipment_id": "S", "cargo_type": "bulk_ore", "extra": {"origin": {"port": "X"}}}),
        422,
        "bad-input",
        "declaration extra field 'origin' is a dict; accepted: text, a number, true/false or null",
    ),
    (
        "long extra text",
        json.dumps({"shipment_id": "S", "cargo_type": "bulk_ore", "extra": {"goods": "y" * 1001}}),
        422,
        "bad-input",
        "declaration extra field 'goods' is too long: names up to 64 characters, text up to 1,000",
    ),
    (
        "unknown cargo type",
        json.dumps({"shipment_id": "S", "cargo_type": "crude_oil"}),
        422,
        "unknown-cargo-type",
        "no model for cargo type 'crude_oil'; accepted: bulk_ore, vacuum_pack",
    ),
    (  # json keeps the last copy: released without the alarm, recorded as no alarm
        "a key given twice",
        '{"shipment_id": "S", "cargo_type": "bulk_ore", "radiation_alarm": true, "radiation_alarm": false}',
        422,
        "bad-input",
        "declaration is not valid: key 'radiation_alarm' appears twice in one object",
    ),
    (
        "a key given twice inside extra",
        '{"shipment_id": "S", "cargo_type": "bulk_ore", "extra": {"hs_code": "7601", "hs_code": "2601"}}',
        422,
        "bad-input",
        "declaration is not valid: key 'hs_code' appears twice in one object",
    ),
    (  # recorded as null: the record said nothing was declared
        "NaN in extra",
        '{"shipment_id": "S", "cargo_type": "bulk_ore", "extra": {"declared_weight_t": NaN}}',
        422,
        "bad-input",
        "declaration is not valid: key 'declared_weight_t' holds NaN, which is no JSON number",
    ),
    (
        "a number past a float's range in extra",
        '{"shipment_id": "S", "cargo_type": "bulk_ore", "extra": {"declared_weight_t": 1e400}}',
        422,
        "bad-input",
        "declaration is not valid: key 'declared_weight_t' holds Infinity or a number past a float's range",
    ),
    (  # Python's own message came back: "Exceeds the limit (4300 digits) ... sys.set_int_max_str_digits()"
        "a 5000-digit integer in extra",
        '{"shipment_id": "S", "cargo_type": "bulk_ore", "extra": {"a": %s}}' % ("9" * 5000),
        422,
        "bad-input",
        "declaration is not valid: key 'a' holds a number of more than 308 digits; send at most 308, or "
        "the number as text",
    ),
    (  # read as no alarm, silently: released
        "a flag given as text",
        json.dumps({"shipment_id": "S", "cargo_type": "bulk_ore", "radiation_alarm": "false"}),
        422,
        "bad-input",
        "declaration is not valid: radiation_alarm: Input should be a valid boolean (sent 'false')",
    ),
    (
        "a flag given as a number",
        json.dumps({"shipment_id": "S", "cargo_type": "bulk_ore", "suspected_solid_waste": 0}),
        422,
        "bad-input",
        "declaration is not valid: suspected_solid_waste: Input should be a valid boolean (sent 0)",
    ),
    (  # shown as 'T-42' on the review page
        "a bidi control in trader_id",
        json.dumps({"shipment_id": "S", "cargo_type": "bulk_ore", "trader_id": "\u202e24-T"}),
        422,
        "bad-input",
        "declaration is not valid: trader_id: Value error, trader_id holds U+202E (RIGHT-TO-LEFT "
        "OVERRIDE): control and format characters and line or paragraph separators are not accepted",
    ),
    (  # shown as 'S-42'; refused by the character rule before the id's pattern, and named
        "a bidi control in shipment_id",
        json.dumps({"shipment_id": "\u202e24-S", "cargo_type": "bulk_ore"}),
        422,
        "bad-input",
        "declaration is not valid: shipment_id: Value error, shipment_id holds U+202E (RIGHT-TO-LEFT "
        "OVERRIDE): control and format characters and line or paragraph separators are not accepted",
    ),
    (  # was refused as a cargo type with no model, the character unnamed
        "a bidi control in cargo_type",
        json.dumps({"shipment_id": "S", "cargo_type": "\u202ebulk_ore"}),
        422,
        "bad-input",
        "declaration is not valid: cargo_type: Value error, cargo_type holds U+202E (RIGHT-TO-LEFT "
        "OVERRIDE): control and format characters and line or paragraph separators are not accepted",
    ),
    (
        "a line separator in trader_id",
        json.dumps({"shipment_id": "S", "cargo_type": "bulk_ore", "trader_id": "T-\u20281"}),
        422,
        "bad-input",
        "declaration is not valid: trader_id: Value error, trader_id holds U+2028 (LINE SEPARATOR)",
    ),
    (
        "a bidi isolate in extra text",
        json.dumps({"shipment_id": "S", "cargo_type": "bulk_ore", "extra": {"origin": "\u2067CN"}}),
        422,
        "bad-input",
        "declaration is not valid: extra: Value error, extra['origin'] holds U+2067 (RIGHT-TO-LEFT ISOLATE)",
    ),
    (  # taken as written from an earlier score run's rows (clearsight decide), never from a client
        "a soft hyphen in trader_id",
        json.dumps({"shipment_id": "S", "cargo_type": "bulk_ore", "trader_id": "T\u00ad42"}),
        422,
        "bad-input",
        "declaration is not valid: trader_id: Value error, trader_id holds U+00AD (SOFT HYPHEN)",
    ),
    (
        "a byte order mark in extra text",
        json.dumps({"shipment_id": "S", "cargo_type": "bulk_ore", "extra": {"origin": "\ufeffCN"}}),
        422,
        "bad-input",
        "declaration is not valid: extra: Value error, extra['origin'] holds U+FEFF (ZERO WIDTH NO-BREAK",
    ),
    (
        "a terminal escape in an extra key",
        json.dumps({"shipment_id": "S", "cargo_type": "bulk_ore", "extra": {"x_\u001b[2J": "y"}}),
        422,
        "bad-input",
        "declaration is not valid: extra: Value error, extra key 'x_\\x1b[2J' holds U+001B: control",
    ),
    (  # the second part used to replace the first, silently: released without the alarm
        "two declarations",
        [
            json.dumps({"shipment_id": "S", "cargo_type": "bulk_ore", "radiation_alarm": True}),
            json.dumps({"shipment_id": "S", "cargo_type": "bulk_ore", "radiation_alarm": False}),
        ],
        422,
        "bad-input",
        "form field 'declaration' was sent 2 times; send it once",
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


def test_the_service_never_takes_a_declaration_as_an_earlier_score_run_wrote_it() -> None:
    """``declarations_as_scored`` turns the character check off for ``clearsight decide``'s rows of an
    earlier run; a client's declaration is new input, held to the check (the cases above)."""
    serve = Path(__file__).resolve().parents[2] / "serve"
    naming = [p for p in serve.rglob("*.py") if "declarations_as_scored" in p.read_text(encoding="utf-8")]
    assert naming == []


@pytest.mark.parametrize("path", ["/v1/shipments/SHP-D/outcome", "/v1/outcomes"])
def test_an_outcome_naming_a_key_twice_is_refused(make_client, audit_store, path) -> None:
    """FastAPI's reader kept the last copy: a foreign object found, then "clean", was recorded clean."""
    client = make_client()
    assert _submit(client, "SHP-D", [240]).json()["decision"]["tier"] == "PHYSICAL_INSPECTION"
    named = '"shipment_id": "SHP-D", ' if path == "/v1/outcomes" else ""
    body = "{" + named + '"found": "foreign_object", "notes": "scrap cable", "found": "clean"}'
    response = client.post(path, content=body, headers={**OFFICER, "content-type": "application/json"})
    assert response.status_code == 422, response.text
    assert response.json()["type"] == "https://clearsight.dev/problems/bad-input"
    assert response.json()["detail"] == "body is not valid: key 'found' appears twice in one object"
    assert audit_store.get("SHP-D").outcome is None


@pytest.mark.parametrize(
    ("notes", "char"),
    [
        ("wiped \x1b[2J", "U+001B"),  # rewrote the terminal that printed the trail
        ("cable in hold \u202e3 dloh", "U+202E (RIGHT-TO-LEFT OVERRIDE)"),
        ("cable\u2028hold 3", "U+2028 (LINE SEPARATOR)"),
    ],
)
@pytest.mark.parametrize("path", ["/v1/shipments/SHP-N/outcome", "/v1/outcomes"])
def test_an_outcome_s_notes_are_held_to_the_character_rule(
    make_client, audit_store, path, notes, char
) -> None:
    """Notes took any character but half a one: an ESC or a bidi override was kept in the trail for
    good. They are free text, held to the rule as a declaration's extra is: refused by name; tabs, line
    breaks and the joiners taken."""
    client = make_client()
    assert _submit(client, "SHP-N", [240]).json()["seq"] == 1
    named = {"shipment_id": "SHP-N"} if path == "/v1/outcomes" else {}
    response = client.post(path, json={**named, "found": "clean", "notes": notes}, headers=OFFICER)
    assert response.status_code == 422, response.text
    assert response.json()["type"] == "https://clearsight.dev/problems/validation"
    assert [error["loc"] for error in response.json()["errors"]] == ["body.notes"]
    assert response.json()["detail"].startswith(f"body.notes: Value error, notes holds {char}: "), (
        response.text
    )
    assert audit_store.get("SHP-N").outcome is None
    free = "scrap cable\nin hold 3\tport side, \u0645\u06cc\u200c\u0634\u0648\u062f"
    taken = client.post(path, json={**named, "found": "clean", "notes": free}, headers=OFFICER)
    assert taken.status_code == 200, taken.text
    assert audit_store.get("SHP-N").outcome.notes == free


@pytest.mark.parametrize(
    ("sent", "shown"),
    [
        ({"decision_seq": True}, "true"),  # was recorded as judging decision 1
        ({"decision_seq": "1"}, "'1'"),  # was read as 1
        ({"amend": "true"}, "'true'"),
        ({"new_type": 1}, "1"),
    ],
)
@pytest.mark.parametrize("path", ["/v1/shipments/SHP-S/outcome", "/v1/outcomes"])
def test_an_outcome_s_seq_and_flags_are_taken_as_sent_only(
    make_client, audit_store, path, sent, shown
) -> None:
    """``true`` was coerced to decision 1, ``"7"`` to 7, ``"true"`` and ``1`` to flags: an outcome
    recorded against a decision the officer never named."""
    client = make_client()
    assert _submit(client, "SHP-S", [240]).json()["seq"] == 1
    named = {"shipment_id": "SHP-S"} if path == "/v1/outcomes" else {}
    (field,) = sent
    response = client.post(path, json={**named, "found": "clean", **sent}, headers=OFFICER)
    assert response.status_code == 422, response.text
    assert response.json()["type"] == "https://clearsight.dev/problems/validation"
    assert [error["loc"] for error in response.json()["errors"]] == [f"body.{field}"]
    assert response.json()["detail"].endswith(f"(sent {shown})"), response.json()["detail"]
    assert audit_store.get("SHP-S").outcome is None


@pytest.mark.parametrize(
    ("method", "path", "body", "detail"),
    [
        (
            "POST",
            "/v1/shipments/SHP-1/outcome",
            {"found": "Foreign Object"},
            "body.found: String should match pattern '^[a-z][a-z0-9_]{0,63}$' (sent 'Foreign Object')",
        ),
        (
            "GET",
            "/v1/shipments/SHP%200001",
            None,
            "path.shipment_id: String should match pattern '^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$' "
            "(sent 'SHP 0001')",
        ),
        (  # shortened, and a control or format character escaped, never sent back as it came
            "POST",
            "/v1/shipments/SHP-1/outcome",
            {"found": "\u202e\x1b[2J" + "x" * 200},
            "body.found: String should have at most 64 characters (sent '\\u202e\\x1b[2J" + "x" * 43 + "...)",
        ),
        (
            "POST",
            "/v1/shipments/SHP-1/outcome",
            {"found": "clean", "notes": None},
            "body.notes: Input should be a valid string (sent null)",
        ),
        (
            "POST",
            "/v1/shipments/SHP-1/outcome",
            {"found": 7},
            "body.found: Input should be a valid string (sent 7)",
        ),
        (  # a missing field's input is the object around it: nothing to show
            "POST",
            "/v1/shipments/SHP-1/outcome",
            {"notes": "x"},
            "body.found: Field required",
        ),
    ],
    ids=["pattern", "path", "shortened", "null", "number", "missing"],
)
def test_a_validation_problem_names_the_value_sent(make_client, method, path, body, detail) -> None:
    """Only the field and the pattern were named: a client sending several values had to guess which."""
    response = make_client().request(method, path, json=body, headers=OFFICER)
    assert response.status_code == 422, response.text
    (error,) = response.json()["errors"]
    assert response.json()["detail"] == detail
    assert f"{error['loc']}: {error['msg']}" == detail


def test_a_validation_problem_never_repeats_a_form_token(make_client) -> None:
    response = make_client().post("/review/logout", data={"csrf": "SECRET" * 100})
    assert response.status_code == 422, response.text
    assert response.json()["detail"] == "body.csrf: String should have at most 128 characters"
    assert "SECRET" not in response.text


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


def test_a_batch_shipment_whose_id_a_path_cannot_carry_is_read_and_closed_through_the_api(
    make_client, audit_store
) -> None:
    """A batch records ids the service's own pattern refuses: 'SHP/2026/1' had no route and
    'SHP 0002' got 422, so officers could close those holds on the review page alone."""
    client = make_client()
    for shipment in ("SHP/2026/1", "SHP 0002", "SHP%201?#"):
        audit_store.record(batch_hold(shipment))
        got = client.get("/v1/shipments", params={"shipment_id": shipment}, headers=OFFICER)
        assert got.status_code == 200 and got.json()["decision"]["shipment_id"] == shipment
        body = {"shipment_id": shipment, "found": "clean", "decision_seq": got.json()["seq"]}
        done = client.post("/v1/outcomes", json=body, headers=OFFICER)
        assert done.status_code == 200 and done.json()["outcome"]["officer"].startswith("officer:")
        assert audit_store.get(shipment).outcome.notes == ""
    again = client.post("/v1/outcomes", json={"shipment_id": "SHP 0002", "found": "clean"}, headers=OFFICER)
    assert again.status_code == 409  # as on the path route: amend to correct it
    for params, status in [({"shipment_id": "NOPE"}, 404), ({"shipment_id": "a\x01b"}, 422), ({}, 422)]:
        assert client.get("/v1/shipments", params=params, headers=OFFICER).status_code == status
    assert client.get("/v1/shipments", params={"shipment_id": "SHP 0002"}, headers=SUBMIT).status_code == 403
    sent = client.post("/v1/outcomes", json={"shipment_id": "SHP 0002", "found": "clean"}, headers=SUBMIT)
    assert sent.status_code == 403
    extra = client.post(
        "/v1/outcomes", json={"shipment_id": "X", "found": "clean", "by": "me"}, headers=OFFICER
    )
    assert extra.status_code == 422 and "body.by: Extra inputs" in extra.json()["detail"]
    # reads of /v1/shipments are timed apart from its uploads
    assert _submit(client, "SHP-UP", [10]).status_code == 200
    metrics = client.get("/metrics", headers=OFFICER).text
    for method in ("GET", "POST"):
        series = f'endpoint="/v1/shipments",method="{method}",status="200"'
        assert f"clearsight_http_request_duration_seconds_count{{{series}}}" in metrics, method


def test_model_failure_fails_closed(make_client, audit_store) -> None:
    client = make_client(predictors={"bulk_ore": FakePredictor(fail=True)})
    response = _submit(client, "SHP-F", [10])
    assert response.status_code == 200, response.text
    decision = response.json()["decision"]
    assert decision["tier"] != "RELEASE"
    assert decision["images"][0]["error"].startswith(
        "model bulk_ore-fake-0001 failed on this image: RuntimeError"
    )
    scored = client.post(
        "/v1/score",
        files=[("images", ("a.png", png_bytes(10), "image/png"))],
        data={"cargo_type": "bulk_ore"},
        headers=OFFICER,
    )
    problem = scored.json()
    assert scored.status_code == 500 and problem["type"] == "https://clearsight.dev/problems/model-error"
    # the model's own message stays in the server's log
    assert problem["detail"] == (
        f"model failed; quote request id {problem['request_id']} to the service's operators"
    )


def test_concurrent_submissions_keep_the_chain_valid(make_client, audit_store) -> None:
    client = make_client()

    def submit(i: int) -> tuple[int, int]:
        # Per shipment: two retries of one submission and two rival ones, all at once.
        shipment = i % 6
        images = [shipment, 100 + shipment] if i < 12 else [shipment, 100 + i]
        return shipment, _submit(client, f"SHP-C{shipment}", images).status_code

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(submit, range(24)))
    for shipment in range(6):
        statuses = sorted(status for s, status in results if s == shipment)
        # whichever submission came first is decided; its retry reads it back; rivals are refused
        assert statuses in ([200, 200, 409, 409], [200, 409, 409, 409]), (shipment, statuses)
    report = audit_store.verify()
    assert report.ok, report.message
    assert report.head_seq == 6
    assert len(audit_store.list(limit=100)) == 6


def test_an_image_off_the_training_scale_is_not_released(make_client, audit_store) -> None:
    client = make_client(predictors={"bulk_ore": FakePredictor(trained_side=8)})
    declaration = json.dumps({"shipment_id": "SHP-S", "cargo_type": "bulk_ore"})
    files = [
        ("images", ("same.png", png_bytes(10), "image/png")),  # 8 px, as trained
        ("images", ("large.png", png_bytes(10, (64, 48)), "image/png")),  # an eighth of the scale
    ]
    response = client.post("/v1/shipments", files=files, data={"declaration": declaration}, headers=ADMIN)
    assert response.status_code == 200, response.text
    decision = response.json()["decision"]
    assert [image["scale_vs_training"] for image in decision["images"]] == [1.0, 0.125]
    assert all(set(image["signal_log_odds"]) == {"one_class"} for image in decision["images"])
    assert decision["tier"] == "REMOTE_INSPECTION"
    # SHP-S is picked for a random audit (drawn whatever the images say, a remote inspection's floor)
    held = [r for r in decision["reasons"] if r["tier"] != "RELEASE" and r["rule"] != "random_audit"]
    assert [(r["rule"], r["image"]) for r in held] == [("fail_closed.off_training_scale", "large.png")]
    scored = client.post(
        "/v1/score", files=files[1:], data={"cargo_type": "bulk_ore"}, headers=OFFICER
    ).json()["images"][0]
    assert (scored["width"], scored["height"], scored["scale_vs_training"]) == (64, 48, 0.125)


def test_an_unknown_cargo_type_stores_nothing(make_client, tmp_path) -> None:
    client = make_client()
    declaration = json.dumps({"shipment_id": "SHP-U", "cargo_type": "crude_oil"})
    files = [("images", ("a.png", png_bytes(10), "image/png"))]
    response = client.post("/v1/shipments", files=files, data={"declaration": declaration}, headers=SUBMIT)
    assert response.status_code == 422 and response.json()["type"].endswith("/unknown-cargo-type")
    assert list((tmp_path / "data" / "images").iterdir()) == []


def test_a_cargo_type_spelt_with_a_joiner_is_scored_by_its_model(make_client, audit_store) -> None:
    """Persian "pipes" holds a zero-width non-joiner: a model card took it as its cargo type, while a
    declaration refused it as an id, so the model could score nothing. A cargo type is a name
    (datasets.shown_text): the joiners taken, a bidi control refused (see the table above)."""
    pipes = "\u0644\u0648\u0644\u0647\u200c\u0647\u0627"
    predictor = FakePredictor(pipes)
    client = make_client(predictors={pipes: predictor})
    response = _submit(client, "SHP-P1", [40], cargo_type=pipes)
    assert response.status_code == 200, response.text
    assert response.json()["decision"]["cargo_type"] == pipes
    assert predictor.batch_sizes == [1]
    assert audit_store.get("SHP-P1").decision.cargo_type == pipes  # type: ignore[union-attr]


def test_a_shipment_id_with_a_trailing_newline_is_refused(make_client) -> None:
    response = _submit(make_client(), "SHP-4\n", [10])
    assert response.status_code == 422
    # the character rule of declared text names it before the id's pattern does
    assert response.json()["detail"].startswith(
        "declaration is not valid: shipment_id: Value error, shipment_id holds U+000A: control and format"
    )


def test_each_model_keeps_its_own_heatmap_of_an_image(make_client, tmp_path) -> None:
    client = make_client()
    image = [("images", ("same.png", png_bytes(90), "image/png"))]
    heatmaps = []
    for shipment, cargo in (("SHP-M1", "bulk_ore"), ("SHP-M2", "vacuum_pack")):
        declaration = json.dumps({"shipment_id": shipment, "cargo_type": cargo})
        response = client.post("/v1/shipments", files=image, data={"declaration": declaration}, headers=ADMIN)
        heatmaps.append(response.json()["decision"]["images"][0]["heatmap"])
    assert heatmaps[0] != heatmaps[1]
    assert all((tmp_path / "data" / path).is_file() for path in heatmaps)


def test_a_stricter_decision_is_added_to_a_decided_shipment(make_client, audit_store) -> None:
    """An alarm raised after the release is recorded: the shipment is held from then on."""
    client = make_client()
    assert _submit(client, "SHP-E", [10]).json()["decision"]["tier"] == "RELEASE"
    alarm = _submit(client, "SHP-E", [10], radiation_alarm=True)
    assert alarm.status_code == 200 and alarm.json()["seq"] == 2
    got = client.get("/v1/shipments/SHP-E", headers=OFFICER).json()
    assert (got["seq"], got["decision"]["tier"]) == (2, "PHYSICAL_INSPECTION")
    retry = _submit(client, "SHP-E", [10]).json()  # the first submission again: the hold, not the release
    assert (retry["seq"], retry["decision"]["tier"]) == (2, "PHYSICAL_INSPECTION")
    assert _submit(client, "SHP-E", [10, 12]).status_code == 409  # no stricter than the hold
    assert audit_store.verify().ok


def test_a_retry_with_its_fields_in_another_order_reads_the_decision_back(make_client) -> None:
    client = make_client()
    files = [("images", ("a.png", png_bytes(10), "image/png"))]
    for text in (
        '{"shipment_id": "SHP-K", "cargo_type": "bulk_ore", "trader_id": "T1", "extra": {"a": 1, "b": 2}}',
        '{"extra": {"b": 2, "a": 1}, "trader_id": "T1", "cargo_type": "bulk_ore", "shipment_id": "SHP-K"}',
    ):
        response = client.post("/v1/shipments", files=files, data={"declaration": text}, headers=SUBMIT)
        assert response.status_code == 200 and response.json()["seq"] == 1


def test_a_submitter_gets_a_receipt_and_nothing_an_officer_decides_with(make_client) -> None:
    """Scores, thresholds, reasons, a random audit's pick and the officer's finding stay with officers:
    a submitter could tune pictures against them or resubmit what an audit chose."""
    client = make_client()
    first = _submit(client, "SHP-RC", [10, 150], headers=SUBMIT)
    assert first.status_code == 200, first.text
    receipt = first.json()
    assert set(receipt) == {
        "request_id", "shipment_id", "tier", "seq", "record_hash", "decided_at", "policy_version"
    }  # fmt: skip
    assert (receipt["shipment_id"], receipt["tier"], receipt["seq"]) == ("SHP-RC", "REMOTE_INSPECTION", 1)
    found = {"found": "foreign_object", "notes": "tip from an informant"}
    assert client.post("/v1/shipments/SHP-RC/outcome", json=found, headers=OFFICER).status_code == 200
    again = _submit(client, "SHP-RC", [10, 150], headers=SUBMIT)  # a retry, after the outcome
    assert again.status_code == 200 and set(again.json()) == set(receipt)
    for leak in ("score", "threshold", "informant", "foreign_object", "random_audit", "reasons"):
        assert leak not in first.text and leak not in again.text, leak


MINE = Principal.of_key(Role.SUBMITTER, SUBMITTER_KEY).name
REGISTER = (
    "trader_id,aeo_tier,name,submitters\n"
    f"T-7,AEOF,Ore Traders Ltd,{MINE}\n"
    "T-42,AEOS,,submitter:000000000000\n"  # another key sends this trader's shipments
)
REFUSED = "aeo_tier may not be declared by a submitter: a trader's tier comes from the service's register"


@pytest.mark.parametrize(
    ("register", "key", "declared", "status", "applied", "source"),
    [
        (None, SUBMITTER_KEY, {"trader_id": "T-7"}, 200, None, "none"),
        (None, SUBMITTER_KEY, {"trader_id": "T-7", "aeo_tier": "AEOF"}, 403, None, None),
        (None, ADMIN_KEY, {"trader_id": "T-42", "aeo_tier": "AEOF"}, 200, "AEOF", "declared_unverified"),
        (REGISTER, SUBMITTER_KEY, {"trader_id": "T-7"}, 200, "AEOF", "register"),
        (REGISTER, SUBMITTER_KEY, {"trader_id": "T-7", "aeo_tier": "AEOF"}, 403, None, None),
        (REGISTER, SUBMITTER_KEY, {"trader_id": "T-42"}, 200, None, "register"),
        (REGISTER, SUBMITTER_KEY, {"trader_id": "T-9"}, 200, None, "register"),
        (REGISTER, ADMIN_KEY, {"trader_id": "T-42"}, 200, "AEOS", "register"),
        (REGISTER, ADMIN_KEY, {"trader_id": "T-42", "aeo_tier": "AEOF"}, 200, "AEOF", "declared_unverified"),
    ],
    ids=[
        "no-register", "no-register-tier-claimed", "admin-trusted", "filled-for-its-own-submitter",
        "submitter-claims-even-the-right-tier", "another-keys-trader", "unregistered", "admin-filled",
        "admin-declared-over-the-register",
    ],
)  # fmt: skip
def test_the_aeo_tier_comes_from_the_register(
    make_client, audit_store, tmp_path, register, key, declared, status, applied, source
) -> None:
    """A trusted trader's tier raises the release threshold, so a submitter can neither grant itself
    one nor borrow a trusted trader's by naming it; every refusal reads the same."""
    overrides = {}
    if register is not None:
        (tmp_path / "register.csv").write_text(register, encoding="utf-8")
        overrides["trader_register"] = tmp_path / "register.csv"
    client = make_client(**overrides)
    response = _submit(client, "SHP-AEO", [135], headers=auth(key), **declared)  # 0.529: over 0.5
    assert response.status_code == status, response.text
    if status == 403:
        assert response.json()["detail"].startswith(REFUSED)
        assert audit_store.get("SHP-AEO") is None
        return
    decision = audit_store.get("SHP-AEO").decision
    assert decision.declaration.aeo_tier == applied
    assert decision.aeo_tier_source == source  # recorded: an auditor tells a registered tier apart
    # the tier decides: AEOS (+0.03) and AEOF (+0.05) lift the 0.5 cut over 0.529 (a random audit
    # may still pick the shipment, so the rules are compared, not the tier)
    rules = {reason.rule for reason in decision.reasons}
    assert ("trusted_trader.odds" in rules, "score.review" in rules) == (
        applied is not None,
        applied is None,
    )


def test_a_change_to_the_register_takes_effect_without_a_restart(
    make_client, audit_store, tmp_path, caplog
) -> None:
    """The register was read at start: a tier the authority withdrew held until the service was
    restarted. A change that does not read gives no shipment a tier until it is corrected."""
    register = tmp_path / "register.csv"
    register.write_text("trader_id,aeo_tier,submitters\nT-7,AEOF,\n", encoding="utf-8")
    client = make_client(trader_register=register)

    def tier(shipment: str, value: int) -> str | None:
        assert _submit(client, shipment, [value], headers=SUBMIT, trader_id="T-7").status_code == 200
        return audit_store.get(shipment).decision.declaration.aeo_tier

    assert tier("SHP-R1", 11) is None  # the key is not listed for T-7
    register.write_text(f"trader_id,aeo_tier,submitters\nT-7,AEOF,{MINE}\n", encoding="utf-8")
    assert tier("SHP-R2", 12) == "AEOF"  # a key added
    register.write_text(f"trader_id,aeo_tier,submitters\nT-7,AEOX,{MINE}\n", encoding="utf-8")
    assert tier("SHP-R3", 13) is None  # a tier the policy does not know: none for anyone
    assert "the trader register changed and does not read" in caplog.text and "'AEOX'" in caplog.text
    register.write_text(f"trader_id,aeo_tier,submitters\nT-7,AEOS,{MINE}\n", encoding="utf-8")
    assert tier("SHP-R4", 14) == "AEOS"  # corrected, and the tier changed
    register.unlink()
    assert tier("SHP-R5", 15) is None  # gone: no tier, the service still answers


def test_a_retry_is_answered_from_its_record_whatever_the_register_did_since(
    make_client, audit_store, tmp_path
) -> None:
    """A submission is keyed by the declaration as sent, not as the register filled it in: the very
    same request sent again after the trader was given a tier (or had it withdrawn) got 409."""
    register = tmp_path / "register.csv"
    register.write_text("trader_id,aeo_tier,submitters\nT-OTHER,AEOS,\n", encoding="utf-8")
    client = make_client(trader_register=register)
    first = _submit(client, "SHP-REG", [140], headers=SUBMIT, trader_id="T-7")
    assert first.status_code == 200 and audit_store.get("SHP-REG").decision.declaration.aeo_tier is None
    register.write_text(f"trader_id,aeo_tier,submitters\nT-7,AEOF,{MINE}\n", encoding="utf-8")
    again = _submit(client, "SHP-REG", [140], headers=SUBMIT, trader_id="T-7")  # tier given meanwhile
    assert again.status_code == 200, again.text
    assert again.json() == {**first.json(), "request_id": again.json()["request_id"]}
    assert _submit(client, "SHP-NEW", [141], headers=SUBMIT, trader_id="T-7").status_code == 200
    assert audit_store.get("SHP-NEW").decision.declaration.aeo_tier == "AEOF"  # the register still counts
    register.write_text("trader_id,aeo_tier,submitters\n", encoding="utf-8")  # withdrawn
    assert _submit(client, "SHP-NEW", [141], headers=SUBMIT, trader_id="T-7").json()["seq"] == 2


def test_a_retry_finds_a_record_keyed_as_earlier_releases_keyed_it(
    make_client, audit_store, tmp_path
) -> None:
    """Before keys were taken as sent, a decision was keyed by its declaration with the register's
    tier filled in: a retry sent across the upgrade still finds it, and appends nothing."""
    register = tmp_path / "register.csv"
    register.write_text(f"trader_id,aeo_tier,submitters\nT-7,AEOF,{MINE}\n", encoding="utf-8")
    elsewhere = AuditStore.open(f"sqlite:///{tmp_path / 'elsewhere.db'}")
    try:
        made = make_client(trader_register=register, audit=elsewhere)
        assert _submit(made, "SHP-OLD", [140], headers=SUBMIT, trader_id="T-7").status_code == 200
        decision = elsewhere.get("SHP-OLD").decision
    finally:
        elsewhere.close()
    assert decision.declaration.aeo_tier == "AEOF"
    old_key = idempotency_key(decision.declaration, [image.sha256 for image in decision.images])
    recorded = audit_store.record(decision, idempotency_key=old_key, exclusive=True)
    client = make_client(trader_register=register)
    again = _submit(client, "SHP-OLD", [140], headers=SUBMIT, trader_id="T-7")
    assert again.status_code == 200, again.text
    assert (again.json()["seq"], again.json()["record_hash"]) == (recorded.seq, recorded.record_hash)
    assert [r.seq for r in audit_store.list(limit=10)] == [recorded.seq]


def test_pictures_sent_again_under_another_shipment_id_go_to_an_officer(make_client, audit_store) -> None:
    """Resubmitting a shipment under a new id (to shake off a random audit) or photographing other
    cargo both send pictures decided before: the decision says so and an officer looks."""
    client = make_client()
    assert _submit(client, "SHP-FIRST", [10, 20], headers=SUBMIT).json()["tier"] == "RELEASE"
    again = _submit(client, "SHP-SECOND", [20, 30], headers=SUBMIT)  # img1 (20) is the same picture
    assert again.status_code == 200 and again.json()["tier"] == "REMOTE_INSPECTION"
    decision = audit_store.get("SHP-SECOND").decision
    reused = [r for r in decision.reasons if r.rule == "override.image_reused"]
    assert [(r.image, r.message) for r in reused] == [
        ("img0.png", "the same picture was decided before in shipment SHP-FIRST")
    ]
    assert [image.seen_in for image in decision.images] == [["SHP-FIRST"], None]
    # its own retry is no reuse
    assert _submit(client, "SHP-FIRST", [10, 20], headers=SUBMIT).json()["seq"] == 1


def _photo(name: str) -> np.ndarray:
    """A real ore photograph, small and dark (the fake model releases it): a picture with a texture
    of its own, unlike the flat test images."""
    photo = cv2.imread(str(Path(__file__).parents[1] / "fixtures" / "real_ore" / "full_ore" / name))
    return (cv2.resize(photo, (128, 96), interpolation=cv2.INTER_AREA) // 3).astype(np.uint8)


def _send(client, shipment_id: str, name: str, data: bytes, kind: str):
    declaration = json.dumps({"shipment_id": shipment_id, "cargo_type": "bulk_ore"})
    files = [("images", (name, data, kind))]
    return client.post("/v1/shipments", files=files, data={"declaration": declaration}, headers=ADMIN)


@pytest.mark.parametrize(("bits", "caught"), [(32, True), (0, False)], ids=["default", "near-copies-off"])
def test_a_near_copy_of_a_picture_decided_before_goes_to_an_officer(
    make_client, audit_store, bits: int, caught: bool
) -> None:
    """The same photograph saved again as JPEG has other bytes: its perceptual hash finds it."""
    client = make_client(near_copy_bits=bits)
    picture = _photo("images0003.png")
    png = cv2.imencode(".png", picture)[1].tobytes()
    jpeg = cv2.imencode(".jpg", picture, [cv2.IMWRITE_JPEG_QUALITY, 70])[1].tobytes()
    assert _send(client, "SHP-ORIGINAL", "a.png", png, "image/png").json()["decision"]["tier"] == "RELEASE"
    copy = _send(client, "SHP-COPY", "b.jpg", jpeg, "image/jpeg").json()["decision"]
    other = _send(
        client, "SHP-OTHER", "c.png", cv2.imencode(".png", _photo("images0005.png"))[1].tobytes(), "image/png"
    )
    assert other.json()["decision"]["tier"] == "RELEASE"  # another picture of the same kind is no copy
    image = copy["images"][0]
    assert image["seen_in"] is None and image["phash"] is not None
    if not caught:
        assert (copy["tier"], image["similar_in"]) == ("RELEASE", None)
        return
    assert copy["tier"] == "REMOTE_INSPECTION"
    assert image["similar_in"] == ["SHP-ORIGINAL"] and 0 <= image["similar_bits"] <= 32
    reused = [r["message"] for r in copy["reasons"] if r["rule"].startswith("override.image_")]
    assert reused == [
        "a near-copy of a picture decided before in shipment SHP-ORIGINAL "
        f"(perceptual hashes {image['similar_bits']} of 256 bits apart)"
    ]
    assert audit_store.get("SHP-COPY").decision.images[0].similar_in == ["SHP-ORIGINAL"]
    # the officer sees the earlier picture beside it
    assert client.post("/review/login", data={"key": OFFICER_KEY}, follow_redirects=False).status_code == 303
    page = client.get("/review").text
    original = hashlib.sha256(png).hexdigest()
    assert f'<img src="/review/files/display/{original}" alt="earlier picture from SHP-ORIGINAL"' in page
    assert client.get(f"/review/files/images/{original}").status_code == 200


@pytest.mark.parametrize(
    ("turn", "named"),
    [
        (lambda img: img[:, ::-1], "mirrored left to right"),
        (lambda img: np.rot90(img, -1), "turned a quarter turn clockwise"),
    ],
    ids=["mirrored", "quarter-turn"],
)
def test_a_mirrored_or_turned_copy_goes_to_an_officer_who_sees_the_earlier_picture(
    make_client, audit_store, tmp_path, turn, named: str
) -> None:
    """Flipped or turned, then saved as JPEG: the lookup brings the new picture's turned hashes, the
    reason says how it is turned, and the review page finds the earlier picture by turning the held
    one (the decision keeps its own hash only)."""
    client = make_client()
    picture = _photo("images0003.png")
    png = cv2.imencode(".png", picture)[1].tobytes()
    jpeg = cv2.imencode(".jpg", np.ascontiguousarray(turn(picture)), [cv2.IMWRITE_JPEG_QUALITY, 70])[
        1
    ].tobytes()
    assert _send(client, "SHP-ORIGINAL", "a.png", png, "image/png").json()["decision"]["tier"] == "RELEASE"
    copy = _send(client, "SHP-COPY", "b.jpg", jpeg, "image/jpeg").json()["decision"]
    image = copy["images"][0]
    assert copy["tier"] == "REMOTE_INSPECTION"
    assert (image["similar_in"], image["similar_turn"]) == (["SHP-ORIGINAL"], named)
    assert "phash_turns" not in image  # looked up with, never answered or recorded
    assert [r["message"] for r in copy["reasons"] if r["rule"] == "override.image_near_copy"] == [
        "a near-copy of a picture decided before in shipment SHP-ORIGINAL "
        f"(perceptual hashes {image['similar_bits']} of 256 bits apart, {named})"
    ]
    recorded = audit_store.get("SHP-COPY").decision.images[0]
    assert recorded.similar_turn == named and recorded.turned_phash is not None
    # the page compares the hash that matched, kept in the decision: it never decodes the held picture
    (tmp_path / "data" / "images" / f"{hashlib.sha256(jpeg).hexdigest()}.jpg").unlink()
    assert client.post("/review/login", data={"key": OFFICER_KEY}, follow_redirects=False).status_code == 303
    page = client.get("/review").text
    assert f"<bdi>b.jpg</bdi> is a near-copy of this picture, {named}, decided before in shipment" in page
    assert f'<img src="/review/files/display/{hashlib.sha256(png).hexdigest()}" alt="earlier picture' in page


def test_the_review_page_finds_the_earlier_picture_in_the_shipment_that_holds_it_so_turned(
    make_client, audit_store
) -> None:
    """Turned clockwise, then anticlockwise: the second copy names the original and the first copy,
    and is nearest the first (half a turn from it). The page shows the first copy's picture, the
    one the recorded turn describes, not nothing for want of a match in the original."""
    client = make_client()
    picture = _photo("images0003.png")
    png = cv2.imencode(".png", picture)[1].tobytes()
    clockwise = cv2.imencode(".png", np.ascontiguousarray(np.rot90(picture, -1)))[1].tobytes()
    anticlockwise = cv2.imencode(".png", np.ascontiguousarray(np.rot90(picture, 1)))[1].tobytes()
    assert _send(client, "SHP-ORIGINAL", "a.png", png, "image/png").status_code == 200
    assert _send(client, "SHP-CW", "b.png", clockwise, "image/png").status_code == 200
    copy = _send(client, "SHP-ACW", "c.png", anticlockwise, "image/png").json()["decision"]["images"][0]
    # both hold it 0 bits away (lossless turns); on the tie the half turn is named
    assert (copy["similar_in"], copy["similar_bits"]) == (["SHP-ORIGINAL", "SHP-CW"], 0)
    assert copy["similar_turn"] == "turned half a turn"
    assert client.post("/review/login", data={"key": OFFICER_KEY}, follow_redirects=False).status_code == 303
    page = client.get("/review").text
    assert (
        "<bdi>c.png</bdi> is a near-copy of this picture, turned half a turn, decided before in shipment"
        in page
    )
    assert f'src="/review/files/display/{hashlib.sha256(clockwise).hexdigest()}" alt="earlier picture' in page


def test_a_model_failure_still_records_where_the_pictures_were_seen(make_client, audit_store) -> None:
    """The lookup runs beside the model: when the model fails, the held decision still says the
    picture was decided before."""
    assert _submit(make_client(), "SHP-FIRST", [10]).json()["decision"]["tier"] == "RELEASE"  # one store
    broken = make_client(predictors={"bulk_ore": FakePredictor(fail=True)})
    answer = _submit(broken, "SHP-AGAIN", [10])
    assert answer.status_code == 200 and answer.json()["decision"]["tier"] != "RELEASE"
    image = audit_store.get("SHP-AGAIN").decision.images[0]
    assert image.error is not None and image.seen_in == ["SHP-FIRST"]


def test_a_submission_that_times_out_while_its_pictures_are_looked_up_records_nothing(
    make_client, audit_store
) -> None:
    client = make_client(predictors={"bulk_ore": FakePredictor(delay_s=0.5)}, request_timeout_s=0.05)
    answer = _submit(client, "SHP-SLOW", [10])
    assert answer.status_code == 504 and audit_store.get("SHP-SLOW") is None
    fast = make_client()
    assert _submit(fast, "SHP-SLOW", [10]).json()["decision"]["tier"] == "RELEASE"  # sent again: decided


def test_a_lookup_that_fails_while_the_model_scores_records_nothing(make_client, audit_store) -> None:
    class Unreadable:
        """The audit store, but its image lookup fails."""

        def sightings(self, *args, **kwargs):
            raise AuditError("cannot reach the audit store's image index")

        def __getattr__(self, name):
            return getattr(audit_store, name)

    client = make_client(audit=Unreadable())
    answer = _submit(client, "SHP-LOST", [10])
    assert answer.status_code == 503 and audit_store.get("SHP-LOST") is None


@pytest.mark.parametrize(
    ("error", "slug", "wait"),
    [
        (AuditError("database is locked: waited 30 s for the write lock"), "audit-unavailable", "5"),
        (EngineError("onnxruntime session lost"), "engine-unavailable", "5"),
        # an operator must act: told to retry every 5 s, a client would for ever
        (ArtifactError("model file gone"), "model-unavailable", None),
        (SchemaVersionError("schema version 3, this role may not upgrade it"), "audit-unavailable", None),
    ],
)
def test_a_503_says_when_to_retry_where_a_retry_may_mend_it(
    make_client, audit_store, error, slug, wait
) -> None:
    """A 503 a retry may mend (a shipment's retry is answered from its record once it is recorded)
    says when, as the queue's does, after the service's retry_after_s; one an operator must mend
    says nothing of retrying."""

    class Failing:
        def record(self, *args, **kwargs):
            raise error

        def __getattr__(self, name):
            return getattr(audit_store, name)

    client = make_client(audit=Failing(), retry_after_s=5)
    answer = _submit(client, "SHP-503", [10])
    assert answer.status_code == 503
    assert answer.json()["type"] == f"https://clearsight.dev/problems/{slug}"
    assert answer.headers.get("retry-after") == wait


def test_the_review_page_shows_the_picture_copied_not_one_decided_since(make_client) -> None:
    """The shipment a near-copy names may be decided again, stricter, on other pictures: the page
    shows the picture the copy was made from, never the other shipment's latest one."""
    client = make_client()
    picture = _photo("images0003.png")
    png = cv2.imencode(".png", picture)[1].tobytes()
    jpeg = cv2.imencode(".jpg", picture, [cv2.IMWRITE_JPEG_QUALITY, 70])[1].tobytes()
    other = cv2.imencode(".png", _photo("images0005.png"))[1].tobytes()
    assert _send(client, "SHP-ORIGINAL", "a.png", png, "image/png").status_code == 200
    assert _send(client, "SHP-COPY", "b.jpg", jpeg, "image/jpeg").json()["decision"]["tier"] != "RELEASE"
    declaration = json.dumps(
        {"shipment_id": "SHP-ORIGINAL", "cargo_type": "bulk_ore", "radiation_alarm": True}
    )
    again = client.post(
        "/v1/shipments",
        files=[("images", ("c.png", other, "image/png"))],
        data={"declaration": declaration},
        headers=ADMIN,
    )
    assert again.status_code == 200 and again.json()["seq"] == 3  # decided again, stricter
    assert client.post("/review/login", data={"key": OFFICER_KEY}, follow_redirects=False).status_code == 303
    page = client.get("/review").text
    assert f'src="/review/files/display/{hashlib.sha256(png).hexdigest()}" alt="earlier picture' in page
    assert f'src="/review/files/display/{hashlib.sha256(other).hexdigest()}" alt="earlier picture' not in page


def test_the_decision_and_the_access_log_say_who_sent_it(make_client, audit_store, caplog) -> None:
    import logging

    client = make_client()
    with caplog.at_level(logging.INFO, logger="clearsight.serve.access"):
        assert _submit(client, "SHP-WHO", [240], headers=SUBMIT).status_code == 200  # held: on the page
    sender = audit_store.get("SHP-WHO").decision.submitted_by
    assert sender is not None and sender.startswith("submitter:")
    logged = [r for r in caplog.records if getattr(r, "path", None) == "/v1/shipments"]
    assert [getattr(r, "principal", None) for r in logged] == [sender]
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="clearsight.serve.access"):  # refused before its body
        assert _submit(client, "SHP-WHO-2", [240], headers=auth(OFFICER_KEY)).status_code == 403
    officer = Principal.of_key(Role.OFFICER, OFFICER_KEY).name
    assert [getattr(r, "principal", None) for r in caplog.records if r.status == 403] == [officer]
    login = client.post("/review/login", data={"key": OFFICER_KEY}, follow_redirects=False)
    page = client.get("/review").text
    assert login.status_code == 303 and f"sent by <bdi>{sender}</bdi>" in page
    assert 'aria-label="Heatmap colour scale' in page  # the heatmaps' colours explained above the queue


def test_a_refused_submission_stores_nothing(make_client, tmp_path) -> None:
    client = make_client()
    assert _submit(client, "SHP-KEEP", [240]).status_code == 200  # held
    refused = _submit(client, "SHP-KEEP", [11, 12])  # rival clean pictures: no stricter, refused
    assert refused.status_code == 409
    stored = {p.name.split(".")[0] for p in (tmp_path / "data" / "images").iterdir()}
    assert stored == {hashlib.sha256(png_bytes(240)).hexdigest()}
    assert len(list((tmp_path / "data" / "heatmaps").iterdir())) == 1


class _BothLookFirst:
    """The audit store, but each lookup of pictures waits until the other submission has looked too:
    both find nothing, as two submissions of the same pictures at once can."""

    def __init__(self, store: object) -> None:
        self._store = store
        self._both = threading.Barrier(2, timeout=10)
        self._lock = threading.Lock()
        self._waited = 0

    def sightings(self, *args: object, **kwargs: object) -> object:
        found = self._store.sightings(*args, **kwargs)
        with self._lock:
            first = self._waited < 2
            self._waited += 1
        if first:  # the second submission looks again once it is told, and finds the first
            self._both.wait()
        return found

    def __getattr__(self, name: str) -> object:
        return getattr(self._store, name)


def _photo_files(shipment_id: str) -> list[tuple[str, tuple[str, bytes, str]]]:
    """One photograph: as PNG for the first shipment, saved again as JPEG for the other."""
    picture = _photo("images0003.png")
    if shipment_id.endswith("1"):
        return [("images", ("a.png", cv2.imencode(".png", picture)[1].tobytes(), "image/png"))]
    jpeg = cv2.imencode(".jpg", picture, [cv2.IMWRITE_JPEG_QUALITY, 80])[1].tobytes()
    return [("images", ("a.jpg", jpeg, "image/jpeg"))]


@pytest.mark.parametrize(
    ("files", "rule", "per_shipment"),
    [
        (lambda _: [("images", (f"img{i}.png", png_bytes(v), "image/png")) for i, v in enumerate([10, 20])],
         "override.image_reused", 2),
        (_photo_files, "override.image_near_copy", 1),
    ],
    ids=["same-bytes", "near-copy"],
)  # fmt: skip
def test_the_same_pictures_under_two_ids_at_once_are_not_both_new(
    live_server, audit_store, files, rule: str, per_shipment: int
) -> None:
    """Each lookup runs before the other is recorded; the store checks again where it writes."""
    import httpx

    server = live_server(audit=_BothLookFirst(audit_store))

    def send(shipment_id: str) -> int:
        declaration = json.dumps({"shipment_id": shipment_id, "cargo_type": "bulk_ore"})
        answer = httpx.post(
            f"{server.url}/v1/shipments",
            files=files(shipment_id),
            data={"declaration": declaration},
            headers=SUBMIT,
            timeout=30,
        )
        return answer.status_code

    with ThreadPoolExecutor(2) as pool:
        assert list(pool.map(send, ["SHP-T1", "SHP-T2"])) == [200, 200]
    reused = {
        sid: [r.rule for r in audit_store.get(sid).decision.reasons].count(rule)
        for sid in ("SHP-T1", "SHP-T2")
    }
    assert sorted(reused.values()) == [0, per_shipment]  # the one recorded second knows they were seen


def test_a_retry_keeps_the_pictures_a_failed_first_attempt_lost(make_client, tmp_path) -> None:
    """The decision is recorded before its pictures are kept: if keeping them failed, the retry,
    answered from the record, keeps them, and makes their heatmaps again."""
    client = make_client()
    assert _submit(client, "SHP-LOST", [240]).status_code == 200
    stored = tmp_path / "data" / "images" / f"{hashlib.sha256(png_bytes(240)).hexdigest()}.png"
    (heatmap,) = (tmp_path / "data" / "heatmaps").iterdir()
    first = heatmap.read_bytes()
    stored.unlink()  # as if the disk had been full just then
    heatmap.unlink()
    again = _submit(client, "SHP-LOST", [240])
    assert again.status_code == 200 and again.json()["seq"] == 1 and stored.is_file()
    assert heatmap.read_bytes() == first  # the same model's map, under the name the decision gives


def test_a_retry_under_another_model_runs_no_model(make_client, tmp_path) -> None:
    """Its map would not be the one behind the decision: nothing is scored, nothing kept."""
    assert _submit(make_client(), "SHP-LOST", [240]).status_code == 200
    (heatmap,) = (tmp_path / "data" / "heatmaps").iterdir()
    heatmap.unlink()
    retrained = FakePredictor("bulk_ore", model_id="ore-retrained")
    other = make_client(predictors={"bulk_ore": retrained})
    for _ in range(3):
        assert _submit(other, "SHP-LOST", [240]).json()["seq"] == 1  # answered from the record
    assert (retrained.batch_sizes, list((tmp_path / "data" / "heatmaps").iterdir())) == ([], [])


def test_a_retry_of_a_decision_from_before_maps_were_keyed_by_model_runs_no_model(
    make_client, audit_store, tmp_path
) -> None:
    """Its page reads the map under the image's own hash: one made under the model's key would
    never be shown, so none is made."""
    from pipeline.decide import decide_shipment
    from pipeline.verdicts import ImageVerdict

    predictor = FakePredictor("bulk_ore")
    client = make_client(predictors={"bulk_ore": predictor, "vacuum_pack": FakePredictor("vacuum_pack")})
    data = png_bytes(240)
    sha = hashlib.sha256(data).hexdigest()
    declaration = Declaration(shipment_id="SHP-OLD", cargo_type="bulk_ore")
    verdict = ImageVerdict(
        path="img0.png", sha256=sha, score=0.94, threshold=0.5, hold_threshold=0.8,
        model_id=predictor.model_id, cargo_type="bulk_ore", heatmap=f"heatmaps/{sha}.png",
    )  # fmt: skip
    decision = decide_shipment(client.app.state.services.policy, declaration, [verdict], audit_key=b"k")
    audit_store.record(decision, idempotency_key=idempotency_key(declaration, [sha]))
    assert _submit(client, "SHP-OLD", [240]).json()["seq"] == 1  # answered from the record
    assert predictor.batch_sizes == [] and list((tmp_path / "data" / "heatmaps").iterdir()) == []


def test_heatmaps_made_again_are_not_counted_as_scores_again(make_client) -> None:
    client = make_client()
    assert _submit(client, "SHP-ONCE", [240]).status_code == 200
    for heatmap in (client.app.state.services.store.root / "heatmaps").iterdir():
        heatmap.unlink()
    assert _submit(client, "SHP-ONCE", [240]).json()["seq"] == 1
    metrics = client.get("/metrics", headers=ADMIN).text
    assert 'clearsight_image_score_count{cargo_type="bulk_ore"} 1.0' in metrics


def test_a_submitter_may_not_send_another_submitters_shipment(make_client, audit_store) -> None:
    """Any submitter key could add a hold to another trader's shipment (an alarm, hot pictures), and
    read off 409s whether and how strictly it had been decided (the record number too)."""
    other = "submitter-key-0002"
    client = make_client(api_keys=f"{API_KEYS},submitter:{other}")
    assert _submit(client, "SHP-A1", [10], headers=SUBMIT).json()["tier"] == "RELEASE"
    for declared in ({}, {"radiation_alarm": True}):
        refused = _submit(client, "SHP-A1", [20], headers=auth(other), **declared)
        assert refused.status_code == 403, refused.text
        assert refused.json()["detail"] == (
            "shipment 'SHP-A1' was first sent under another key; only that key, or another key of the "
            "same trader, may send it again (an admin may record a stricter decision)"
        )
    assert audit_store.get("SHP-A1").seq == 1  # nothing recorded for the other key
    assert (
        _submit(client, "SHP-A1", [10], headers=SUBMIT, radiation_alarm=True).status_code == 200
    )  # its sender
    admin = _submit(client, "SHP-A1", [240], headers=ADMIN, radiation_alarm=True)
    assert admin.status_code == 409, admin.text  # an admin is held to "stricter only", not to the sender
    assert _submit(client, "SHP-B1", [10], headers=auth(other)).status_code == 200  # a new id is anyone's


def test_a_shipment_decided_by_a_batch_is_sent_again_by_an_admin_only(make_client, audit_store) -> None:
    from pipeline.decide import decide_shipment
    from pipeline.verdicts import ImageVerdict

    client = make_client()
    verdict = ImageVerdict(path="a.png", sha256="ab" * 32, score=0.1, threshold=0.5, hold_threshold=0.8,
                           model_id="bulk_ore-fake-0001", cargo_type="bulk_ore")  # fmt: skip
    declaration = Declaration(shipment_id="SHP-BATCH", cargo_type="bulk_ore")
    audit_store.record(
        decide_shipment(client.app.state.services.policy, declaration, [verdict], audit_key=b"k")
    )
    # sent again with an alarm, the one thing that decides a shipment again
    assert _submit(client, "SHP-BATCH", [240], headers=SUBMIT, radiation_alarm=True).status_code == 403
    assert _submit(client, "SHP-BATCH", [240], headers=ADMIN, radiation_alarm=True).status_code == 200


def test_a_held_shipments_pictures_sent_again_under_a_new_id_carry_the_hold(make_client, audit_store) -> None:
    """Held for a radiation alarm, then sent again without it under a new id: image_reused's remote
    inspection only, until an officer found the cargo clean."""
    client = make_client()
    assert _submit(client, "SHP-HOT", [10], radiation_alarm=True).json()["decision"]["tier"] == (
        "PHYSICAL_INSPECTION"
    )
    again = _submit(client, "SHP-COLD", [10]).json()["decision"]
    assert again["tier"] == "PHYSICAL_INSPECTION"
    carried = [r for r in again["reasons"] if r["rule"] == "override.image_held_before"]
    assert [(r["tier"], r["image"], r["message"]) for r in carried] == [
        (
            "PHYSICAL_INSPECTION",
            "img0.png",
            "the same picture was decided in shipment SHP-HOT, held at PHYSICAL_INSPECTION "
            "(override.radiation_alarm; audit record 1) with no officer's outcome clearing it: the hold "
            "carries over to its pictures sent again",
        )
    ]
    audit_store.record_outcome("SHP-HOT", found=None, officer="officer:1")  # inspected: clean
    # SHP-COLD's physical hold was only SHP-HOT's carried over: cleared with it; its own reuse stands
    later = _submit(client, "SHP-LATER", [10]).json()["decision"]
    carried = [r["message"] for r in later["reasons"] if r["rule"] == "override.image_held_before"]
    assert later["tier"] == "REMOTE_INSPECTION" and len(carried) == 1
    assert "shipment SHP-COLD, held at REMOTE_INSPECTION (override.image_reused;" in carried[0]
    audit_store.record_outcome("SHP-COLD", found=None, officer="officer:1")
    audit_store.record_outcome("SHP-LATER", found=None, officer="officer:1")
    cleared = _submit(client, "SHP-LAST", [10]).json()["decision"]
    assert cleared["tier"] == "REMOTE_INSPECTION"  # image_reused's tier, no hold to carry
    assert "override.image_held_before" not in [r["rule"] for r in cleared["reasons"]]


def test_a_finding_is_carried_by_the_picture_it_was_made_on_not_by_one_sent_beside_a_near_copy(
    make_client, audit_store, tmp_path
) -> None:
    """Under ``image_near_copy: RELEASE``: SHP-F released on one picture, inspection found an anomaly
    on it; re-scanned on another (a radiation alarm), inspected clean. That second picture sent again
    beside a near-copy of itself was held at physical inspection, "the same picture" said to be held
    by the finding on the first, which it never was in: the near-copy pooled the finding onto the
    shipment. It is image_reused's remote inspection, as it is sent alone."""
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        "policy_version: t-1\ncargo_types:\n  bulk_ore: {}\nrandom_audit:\n  rate: 0.0\n"
        "overrides:\n  image_near_copy: RELEASE\n"
    )
    client = make_client(policy=policy)
    seized = cv2.imencode(".png", _photo("images0005.png"))[1].tobytes()
    picture = _photo("images0003.png")
    rescan = cv2.imencode(".png", picture)[1].tobytes()
    picture[0, 0] = (picture[0, 0].astype(int) + 7) % 256
    near = cv2.imencode(".png", picture)[1].tobytes()
    assert _send(client, "SHP-F", "a.png", seized, "image/png").json()["decision"]["tier"] == "RELEASE"
    audit_store.record_outcome("SHP-F", found="unknown", officer="officer:1")
    declaration = json.dumps({"shipment_id": "SHP-F", "cargo_type": "bulk_ore", "radiation_alarm": True})
    hot = client.post(
        "/v1/shipments",
        files=[("images", ("g.png", rescan, "image/png"))],
        data={"declaration": declaration},
        headers=ADMIN,
    )
    assert hot.json()["decision"]["tier"] == "PHYSICAL_INSPECTION", hot.text
    audit_store.record_outcome("SHP-F", found=None, officer="officer:1", decision_seq=hot.json()["seq"])
    declaration = json.dumps({"shipment_id": "SHP-H", "cargo_type": "bulk_ore"})
    files = [("images", ("g.png", rescan, "image/png")), ("images", ("n.png", near, "image/png"))]
    both = client.post("/v1/shipments", files=files, data={"declaration": declaration}, headers=ADMIN)
    decision = both.json()["decision"]
    assert decision["images"][1]["similar_in"] == ["SHP-F"], both.text
    assert decision["tier"] == "REMOTE_INSPECTION"
    assert "override.image_held_before" not in [r["rule"] for r in decision["reasons"]]


def test_a_hold_carries_over_however_many_shipments_sent_the_picture_first(make_client, audit_store) -> None:
    """Sent in five shipments before it was held: the lookup names those five only, and the held
    shipment's picture sent again had image_reused's remote inspection only."""
    client = make_client()
    for n in range(5):
        assert _submit(client, f"SHP-E{n}", [10]).status_code == 200
    assert _submit(client, "SHP-HOT", [10], radiation_alarm=True).json()["decision"]["tier"] == (
        "PHYSICAL_INSPECTION"
    )
    again = _submit(client, "SHP-COLD", [10]).json()["decision"]
    assert again["tier"] == "PHYSICAL_INSPECTION"
    assert again["images"][0]["seen_in"] == [*(f"SHP-E{n}" for n in range(5)), "SHP-HOT"]
    carried = [r["message"] for r in again["reasons"] if r["tier"] == "PHYSICAL_INSPECTION"]
    assert len(carried) == 1, carried
    assert "shipment SHP-HOT, held at PHYSICAL_INSPECTION (override.radiation_alarm;" in carried[0]


def test_a_retry_of_a_submission_that_carried_a_hold_gets_its_record_back(make_client, audit_store) -> None:
    """The service keys a submission by its declaration and pictures: a retry of the very same request
    is answered from its record, the hold it carried included, even once that hold was cleared."""
    client = make_client()
    _submit(client, "SHP-HOT", [10], radiation_alarm=True)
    first = _submit(client, "SHP-COLD", [10]).json()
    assert (first["seq"], first["decision"]["tier"]) == (2, "PHYSICAL_INSPECTION")
    again = _submit(client, "SHP-COLD", [10])
    assert again.status_code == 200 and again.json()["seq"] == 2
    assert again.json()["idempotency_key"] == first["idempotency_key"]
    audit_store.record_outcome("SHP-HOT", found=None, officer="officer:1")  # inspected: clean
    later = _submit(client, "SHP-COLD", [10])
    assert later.status_code == 200, later.text
    assert (later.json()["seq"], later.json()["decision"]["tier"]) == (2, "PHYSICAL_INSPECTION")
    assert [r.seq for r in audit_store.list(limit=10) if r.decision.shipment_id == "SHP-COLD"] == [2]


def test_a_traders_other_key_sends_its_shipment_again(make_client, tmp_path) -> None:
    """A key rotated, or a second office: the register names both keys for the trader, and either
    sends the trader's shipments again; a key of another trader still may not."""
    rotated, stranger = "submitter-key-0003", "submitter-key-0004"
    names = [Principal.of_key(Role.SUBMITTER, key).name for key in (SUBMITTER_KEY, rotated)]
    (tmp_path / "register.csv").write_text(f"trader_id,aeo_tier,submitters\nT-A,AEOF,{' '.join(names)}\n")
    client = make_client(
        api_keys=f"{API_KEYS},submitter:{rotated},submitter:{stranger}",
        trader_register=tmp_path / "register.csv",
    )
    assert _submit(client, "SHP-R1", [10], headers=SUBMIT, trader_id="T-A").json()["tier"] == "RELEASE"
    again = _submit(client, "SHP-R1", [10], headers=auth(rotated), trader_id="T-A", radiation_alarm=True)
    assert again.status_code == 200 and again.json()["tier"] == "PHYSICAL_INSPECTION"
    assert _submit(client, "SHP-R1", [240], headers=auth(stranger), trader_id="T-A").status_code == 403
    # first sent naming no trader, or the trader's id with a space: still the trader's
    # (pictures of their own: SHP-R1's is held, and a picture of a held shipment carries its hold)
    for shipment, named, value in (("SHP-R3", None, 11), ("SHP-R4", " T-A ", 12)):
        first = {"trader_id": named} if named else {}
        assert _submit(client, shipment, [value], headers=SUBMIT, **first).json()["tier"] == "RELEASE"
        held = _submit(
            client, shipment, [value], headers=auth(rotated), trader_id="T-A", radiation_alarm=True
        )
        assert held.status_code == 200 and held.json()["tier"] == "PHYSICAL_INSPECTION", shipment
    # a declaration names a trader for the trader's keys only where its sender is the trader's:
    # a stranger naming T-A neither gives T-A's keys its shipment, nor (naming T-B falsely) T-B's
    assert _submit(client, "SHP-R2", [10], headers=auth(stranger), trader_id="T-A").status_code == 200
    assert (
        _submit(
            client, "SHP-R2", [10], headers=auth(rotated), trader_id="T-A", radiation_alarm=True
        ).status_code
        == 403
    )


def test_a_brokers_key_makes_no_trader_the_keeper_of_anothers_shipments(make_client, tmp_path) -> None:
    """A key listed for two traders (a broker's) put each trader's own key among the other's: T1's
    key added a hold to the shipment the broker sent for T2."""
    t1, broker, t2 = "submitter-key-0005", "submitter-key-0006", "submitter-key-0007"
    name = {key: Principal.of_key(Role.SUBMITTER, key).name for key in (t1, broker, t2)}
    (tmp_path / "register.csv").write_text(
        f"trader_id,aeo_tier,submitters\nT1,AEOF,{name[t1]} {name[broker]}\n"
        f"T2,AEOF,{name[t2]} {name[broker]}\n"
    )
    keys = ",".join(f"submitter:{key}" for key in (t1, broker, t2))
    client = make_client(api_keys=f"{API_KEYS},{keys}", trader_register=tmp_path / "register.csv")
    assert _submit(client, "SHP-T2", [10], headers=auth(broker), trader_id="T2").status_code == 200
    assert (
        _submit(client, "SHP-T2", [10], headers=auth(t1), trader_id="T1", radiation_alarm=True).status_code
        == 403
    )
    # nor T2's own key: what the broker sent, the broker (or an admin) sends again
    assert (
        _submit(client, "SHP-T2", [10], headers=auth(t2), trader_id="T2", radiation_alarm=True).status_code
        == 403
    )
    assert (
        _submit(
            client, "SHP-T2", [10], headers=auth(broker), trader_id="T2", radiation_alarm=True
        ).status_code
        == 200
    )
    # T1's key naming T2 (a slip, or a lie) gives T2's keys nothing of T1's shipment
    assert _submit(client, "SHP-F", [10], headers=auth(t1), trader_id="T2").status_code == 200
    refused = _submit(client, "SHP-F", [10], headers=auth(t2), trader_id="T2", radiation_alarm=True)
    assert refused.status_code == 403


@pytest.mark.parametrize(
    ("sender", "named", "may"),
    [
        (
            None,
            "T-A",
            False,
        ),  # a batch's, or an older version's: it filled in a named trader's tier for anyone
        ("admin:0123456789ab", "T-A", True),  # customs' own, for the trader
        ("admin:0123456789ab", "T-B", False),
        ("submitter:0123456789ab", "T-A", False),  # a key the register lists for no trader
    ],
)
def test_who_may_send_a_shipment_again_by_its_first_record(
    make_client, audit_store, tmp_path, sender, named, may
) -> None:
    """Records decided before the sender rule, by other means, or stored as an older version wrote
    them, are judged as safely as new ones: an unknown sender is nobody's to follow."""
    from pipeline.decide import decide_shipment
    from pipeline.verdicts import ImageVerdict

    (tmp_path / "register.csv").write_text(
        f"trader_id,aeo_tier,submitters\nT-A,AEOF,{Principal.of_key(Role.SUBMITTER, SUBMITTER_KEY).name}\n"
    )
    client = make_client(trader_register=tmp_path / "register.csv")
    verdict = ImageVerdict(path="a.png", sha256="ab" * 32, score=0.1, threshold=0.5, hold_threshold=0.8,
                           model_id="bulk_ore-fake-0001", cargo_type="bulk_ore")  # fmt: skip
    declaration = Declaration(shipment_id="SHP-OLD", cargo_type="bulk_ore", trader_id="T-A")
    decided = decide_shipment(client.app.state.services.policy, declaration, [verdict], audit_key=b"k")
    named_so = decided.declaration.model_copy(update={"trader_id": named})
    audit_store.record(decided.model_copy(update={"submitted_by": sender, "declaration": named_so}))
    sent = _submit(client, "SHP-OLD", [240], headers=SUBMIT, trader_id="T-A", radiation_alarm=True)
    assert sent.status_code == (200 if may else 403), sent.text


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        (
            b"{",
            "body is not valid: not JSON (Expecting property name enclosed in double quotes at position 1)",
        ),
        (
            b'{"found": "clean", "notes": "\xe9"}',
            "body is not valid: not UTF-8 (byte 0xe9 at position 29); send JSON as UTF-8",
        ),
        (b"[" * 3000 + b"]" * 3000, "body is not valid: a value is nested too deeply"),
        (
            b'{"found": "clean", "decision_seq": %s}' % (b"9" * 5000),
            "body is not valid: a number of more than 308 digits; send at most 308, or the number as text",
        ),
        (  # within Python's 4,300 digits: refused by the service's own reader, as it says
            b'{"found": "clean", "decision_seq": %s}' % (b"9" * 400),
            "body is not valid: key 'decision_seq' holds a number of more than 308 digits",
        ),
    ],
    ids=["truncated", "latin-1", "deep", "digits", "digits-within-python"],
)
@pytest.mark.parametrize("path", ["/v1/shipments/SHP-1/outcome", "/v1/outcomes"])
def test_a_malformed_outcome_body_is_one_422_saying_why(make_client, path, body, detail) -> None:
    """'{' was answered 422 "JSON decode error", a Latin-1 byte, a 3000-deep array or a 5000-digit
    number 400 "There was an error parsing the body": how a body was malformed decided the status."""
    headers = {**OFFICER, "content-type": "application/json"}
    response = make_client().post(path, content=body, headers=headers)
    assert response.status_code == 422, response.text
    assert response.json()["type"] == "https://clearsight.dev/problems/bad-input"
    assert response.json()["detail"].startswith(detail), response.json()["detail"]
