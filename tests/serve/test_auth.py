"""API keys, roles, session cookies, and refusing to start without keys."""

from __future__ import annotations

import json

import pytest
from serve_fakes import ADMIN_KEY, API_KEYS, OFFICER_KEY, SUBMITTER_KEY, auth, png_bytes

from datasets.errors import InputError
from serve.app import create_app
from serve.auth import Role, SessionSigner, parse_api_keys
from serve.settings import ServeSettings


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (
            "nokeyhere",
            "API key entry #1 has no role: expected role:key with role one of submitter, officer, admin",
        ),
        (
            "boss:abcdefgh1",
            "API key entry #1 has an unknown role (4 characters, not shown in case the entry is written "
            "key:role); expected role:key with role one of submitter, officer, admin",
        ),
        (  # written the wrong way round: the key must not appear in the message
            "Sup3rS3cretKey!:officer",
            "API key entry #1 has an unknown role (15 characters, not shown in case the entry is written "
            "key:role); expected role:key with role one of submitter, officer, admin",
        ),
        ("officer:short", "API key entry #1 (officer) is 5 characters; need at least 8"),
        ("officer:abcdefgh1,admin:abcdefgh1", "API key entry #2 (admin) repeats an earlier key"),
    ],
)
def test_parse_api_keys_rejects(spec: str, message: str) -> None:
    with pytest.raises(InputError) as info:
        parse_api_keys(spec)
    assert str(info.value) == message


def test_parse_api_keys_keeps_only_digests() -> None:
    ring = parse_api_keys(" submitter:abcdefgh1 , ,Officer:zyxwvuts2")
    assert len(ring) == 2
    officer = ring.authenticate("zyxwvuts2")
    assert officer is not None and officer.role is Role.OFFICER
    assert officer.name.startswith("officer:") and len(officer.fingerprint) == 12
    assert ring.authenticate("abcdefgh") is None
    assert "zyxwvuts2" not in repr(vars(ring))


def test_session_cookie_roundtrip_tamper_and_expiry() -> None:
    ring = parse_api_keys(API_KEYS)
    signer = SessionSigner(b"secret-1", ttl_s=60)
    cookie = signer.issue(OFFICER_KEY, Role.OFFICER, now=1000.0)
    checked = signer.check(cookie, ring, now=1059.0)
    assert checked is not None and checked[0].role is Role.OFFICER and len(checked[1]) == 32
    assert signer.check(cookie, ring, now=1060.0) is None  # expired
    assert SessionSigner(b"secret-2", ttl_s=60).check(cookie, ring, now=1001.0) is None  # other server secret
    body, mac = cookie.split(".")
    assert signer.check(body[:-2] + "xx." + mac, ring, now=1001.0) is None  # tampered payload
    assert signer.check(cookie, parse_api_keys(f"officer:{ADMIN_KEY}"), now=1001.0) is None  # key withdrawn


def test_refuses_to_start_without_keys(tmp_path) -> None:
    settings = ServeSettings(_env_file=None, api_keys="", data_dir=tmp_path)
    with pytest.raises(InputError, match="no API keys configured: set CLEARSIGHT_API_KEYS"):
        create_app(settings)


@pytest.mark.parametrize("secret", [None, "", "short-secret"], ids=["default", "empty", "short"])
def test_refuses_a_weak_audit_secret(tmp_path, caplog, secret: str | None) -> None:
    values = {"api_keys": API_KEYS, "data_dir": tmp_path}
    if secret is not None:
        values["audit_secret"] = secret
    with pytest.raises(
        InputError, match="^audit_secret is the public development default or shorter than 16"
    ):
        create_app(ServeSettings(_env_file=None, **values))
    create_app(ServeSettings(_env_file=None, insecure_dev=True, **values))
    assert "INSECURE: random audits use a weak audit_secret (insecure_dev is set)" in caplog.text


def test_several_workers_need_one_session_secret(tmp_path) -> None:
    values = {
        "api_keys": API_KEYS,
        "audit_secret": "a-real-audit-secret-of-the-port",
        "data_dir": tmp_path,
        "workers": 2,
    }
    with pytest.raises(InputError, match="^2 workers need a shared session_secret"):
        create_app(ServeSettings(_env_file=None, **values))
    create_app(ServeSettings(_env_file=None, session_secret="shared-by-all-workers", **values))


def test_insecure_dev_flag_serves_without_keys(make_client) -> None:
    client = make_client(api_keys="", insecure_dev=True)
    response = client.get("/v1/models")
    assert response.status_code == 200
    assert [m["cargo_type"] for m in response.json()["models"]] == ["bulk_ore", "vacuum_pack"]


DECLARATION = json.dumps({"shipment_id": "AUTH-1", "cargo_type": "bulk_ore"})


def _request(client, endpoint: str, headers: dict[str, str]):
    files = [("images", ("a.png", png_bytes(10), "image/png"))]
    if endpoint == "score":
        return client.post("/v1/score", files=files, data={"cargo_type": "bulk_ore"}, headers=headers)
    if endpoint == "submit":
        return client.post("/v1/shipments", files=files, data={"declaration": DECLARATION}, headers=headers)
    if endpoint == "get":
        return client.get("/v1/shipments/AUTH-0", headers=headers)
    if endpoint == "outcome":
        return client.post("/v1/shipments/AUTH-0/outcome", json={"found": "clean"}, headers=headers)
    if endpoint == "models":
        return client.get("/v1/models", headers=headers)
    if endpoint == "metrics":
        return client.get("/metrics", headers=headers)
    raise AssertionError(endpoint)


# Expected status per (endpoint, caller). 404: authorised, and the shipment AUTH-0 does not exist.
MATRIX = {
    "score": {"none": 401, "wrong": 401, "submitter": 403, "officer": 200, "admin": 200},
    "submit": {"none": 401, "wrong": 401, "submitter": 200, "officer": 403, "admin": 200},
    "get": {"none": 401, "wrong": 401, "submitter": 403, "officer": 404, "admin": 404},
    "outcome": {"none": 401, "wrong": 401, "submitter": 403, "officer": 404, "admin": 404},
    "models": {"none": 401, "wrong": 401, "submitter": 403, "officer": 200, "admin": 200},
    "metrics": {"none": 401, "wrong": 401, "submitter": 200, "officer": 200, "admin": 200},
}
CALLERS = {
    "none": {},
    "wrong": auth("not-a-configured-key"),
    "submitter": auth(SUBMITTER_KEY),
    "officer": {"X-API-Key": OFFICER_KEY},
    "admin": auth(ADMIN_KEY),
}


@pytest.mark.parametrize(("endpoint", "caller"), [(e, c) for e, row in MATRIX.items() for c in row])
def test_roles_matrix(make_client, endpoint: str, caller: str) -> None:
    client = make_client()
    response = _request(client, endpoint, CALLERS[caller])
    expected = MATRIX[endpoint][caller]
    assert response.status_code == expected, response.text
    if expected == 401:
        assert response.headers["www-authenticate"] == 'Bearer realm="clearsight"'
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["type"] == "https://clearsight.dev/problems/unauthenticated"
    if expected == 403:
        body = response.json()
        assert body["status"] == 403 and body["detail"].startswith(f"role {caller!r} may not do this")


def test_metrics_can_be_public(make_client) -> None:
    client = make_client(metrics_public=True)
    assert client.get("/metrics").status_code == 200
    assert client.get("/healthz").status_code == 200
