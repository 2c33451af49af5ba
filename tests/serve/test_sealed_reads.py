"""Over HTTP, a forged audit record a decision would rest on is answered 500 audit-record-forged,
its record named in the log, not decided on: a forged 'clean' outcome does not lift the hold a picture
sent again carries, and a forged decision is not replayed to a retry."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from serve_fakes import ADMIN_KEY, OFFICER_KEY, auth, png_bytes
from sqlalchemy import create_engine, text

from pipeline.audit import AuditStore, SealBrokenError
from pipeline.settings import Settings, audit_seal_key
from serve.problems import problem_for

SECRET = "service-tests-audit-secret"  # conftest's BASE_SETTINGS: the app's own
ADMIN = auth(ADMIN_KEY)


def _submit(client, shipment_id: str, values: list[int]):
    declaration = json.dumps({"shipment_id": shipment_id, "cargo_type": "bulk_ore"})
    files = [("images", (f"img{i}.png", png_bytes(v), "image/png")) for i, v in enumerate(values)]
    return client.post("/v1/shipments", files=files, data={"declaration": declaration}, headers=ADMIN)


def _sql(url: str, statement: str) -> None:
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text(statement))
    engine.dispose()


def test_the_error_maps_to_a_500_of_its_own() -> None:
    assert problem_for(SealBrokenError(6, "carries no seal")) == (
        500,
        "audit-record-forged",
        "Audit record fails its seal",
    )


@pytest.mark.parametrize("keyed", [True, False], ids=["sealed", "no-key"])
def test_a_forged_outcome_does_not_lift_the_hold_a_picture_sent_again_carries(
    make_client, tmp_path: Path, caplog: pytest.LogCaptureFixture, keyed: bool
) -> None:
    url = f"sqlite:///{tmp_path / 'sealed.db'}"
    key = audit_seal_key(Settings(audit_secret=SECRET)) if keyed else None
    with AuditStore.open(url, seal_key=key) as store:
        client = make_client(audit=store)
        held = _submit(client, "SHP-HELD", [240])
        assert held.json()["decision"]["tier"] == "PHYSICAL_INSPECTION"
        recorded = client.post(
            "/v1/shipments/SHP-HELD/outcome", json={"found": "clean"}, headers=auth(OFFICER_KEY)
        )
        assert recorded.status_code == 200, recorded.text
        # as a forger's own outcome would be stored: without a seal (here the officer's, its seal cleared)
        _sql(url, "UPDATE audit_records SET seal = NULL WHERE kind = 'outcome'")
        with caplog.at_level(logging.ERROR):
            again = _submit(client, "SHP-AGAIN", [240])  # the same picture, under a new id
    if not keyed:
        assert again.status_code == 200  # as before: nothing to check the outcome with
        return
    assert again.status_code == 500
    problem = again.json()
    assert problem["type"] == "https://clearsight.dev/problems/audit-record-forged"
    assert "record 2" not in problem["detail"]  # the record is the operators' to read, in the log
    assert "audit record 2 fails its seal (carries no seal" in caplog.text


def test_a_retry_is_not_answered_from_a_forged_decision(
    make_client, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    url = f"sqlite:///{tmp_path / 'sealed.db'}"
    with AuditStore.open(url, seal_key=audit_seal_key(Settings(audit_secret=SECRET))) as store:
        client = make_client(audit=store)
        assert _submit(client, "SHP-R", [10]).status_code == 200
        _sql(url, "UPDATE audit_records SET seal = 'ab' || SUBSTR(seal, 3) WHERE seq = 1")
        with caplog.at_level(logging.ERROR):
            retry = _submit(client, "SHP-R", [10])
    assert retry.status_code == 500
    assert retry.json()["type"] == "https://clearsight.dev/problems/audit-record-forged"
    assert "audit record 1 fails its seal (forged or altered" in caplog.text
