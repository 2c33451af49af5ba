"""API keys, roles, session cookies, and refusing to start without keys."""

from __future__ import annotations

import base64
import hashlib
import json
import re

import pytest
from serve_fakes import ADMIN_KEY, API_KEYS, OFFICER_KEY, SUBMITTER_KEY, FakePredictor, auth, png_bytes

from datasets.errors import InputError
from serve.app import create_app
from serve.auth import MAX_KEY_CHARS, Role, SessionSigner, parse_api_keys
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
        (  # worked on the API, and could never sign in to the review page
            f"officer:abcdefgh1,admin:{'L' * 513}",
            "API key entry #2 (admin) is 513 characters; at most 512 are taken (the review page's "
            "sign-in takes no longer key)",
        ),
        *(  # accepted, and never matched: a header's bytes are read as Latin-1
            (
                f"officer:abcdefgh1,submitter:{key}",
                "API key entry #2 (submitter) holds a character that is not printable ASCII (a letter "
                "with an accent, a control character); clients send keys in HTTP headers, where it "
                "could never match: use ASCII letters, digits and punctuation (secrets.token_urlsafe(24) "
                "gives 32)",
            )
            for key in ("clé-secrète-du-port", "key\twith-a-tab", "key-with-a-bell\x07")
        ),
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


@pytest.mark.parametrize(
    ("keys", "warned"),
    [
        ("officer:short-key-1,admin:" + "k" * 20, ["officer"]),
        ("officer:" + "o" * 20 + ",admin:" + "a" * 32, []),
    ],
    ids=["one-short", "all-long"],
)
def test_a_short_key_is_warned_about_by_its_name_never_its_text(keys: str, warned: list[str], caplog) -> None:
    """Its name (48 bits of its SHA-256) is in the audit trail: a short key can be guessed offline."""
    from serve.app import check_keys

    settings = ServeSettings(
        _env_file=None, api_keys=keys, audit_secret="a-long-enough-audit-secret-for-tests"
    )
    ring = check_keys(settings)
    said = [r.getMessage() for r in caplog.records if "shorter than 20 characters" in r.getMessage()]
    assert [name.split(":")[0] for name in ring.short_keys] == warned and bool(said) == bool(warned)
    assert all("short-key-1" not in message for message in said)
    if warned:
        assert ring.short_keys[0] in said[0]


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


@pytest.mark.parametrize(("secret", "workers"), [("", 2), ("", 1), ("fifteen-chars!!", 1)])
def test_a_session_secret_must_be_long(tmp_path, secret: str, workers: int) -> None:
    """An empty CLEARSIGHT_SESSION_SECRET passed for one (it is not None), and was used as none: each
    worker signed sessions with a random key of its own."""
    values = {
        "api_keys": API_KEYS,
        "audit_secret": "a-real-audit-secret-of-the-port",
        "data_dir": tmp_path,
        "workers": workers,
    }
    with pytest.raises(
        InputError,
        match=rf"^session_secret \(CLEARSIGHT_SESSION_SECRET\) has {len(secret)} characters; set it to 16 "
        r"or more random ones .*or unset it for a random key per start \(one worker only\)$",
    ) as raised:
        create_app(ServeSettings(_env_file=None, session_secret=secret, **values))
    assert "fifteen" not in str(raised.value)  # the secret is never said
    create_app(ServeSettings(_env_file=None, session_secret="sixteen-chars!!!", **values))


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
    "metrics": {"none": 401, "wrong": 401, "submitter": 403, "officer": 200, "admin": 200},
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


def test_a_signed_out_session_ends_on_every_worker(tmp_path) -> None:
    ring = parse_api_keys(API_KEYS)
    workers = [SessionSigner(b"shared", ttl_s=60, revoked_dir=tmp_path / "sessions") for _ in range(2)]
    cookie, other = (workers[0].issue(OFFICER_KEY, Role.OFFICER, now=1000.0) for _ in range(2))
    workers[0].revoke(cookie, now=1001.0)
    assert workers[1].check(cookie, ring, now=1002.0) is None  # signed out on the other worker too
    assert workers[1].check(other, ring, now=1002.0) is not None  # the officer's other session goes on
    alone = SessionSigner(b"alone", ttl_s=60)  # no folder: in memory
    mine = alone.issue(OFFICER_KEY, Role.OFFICER, now=1000.0)
    alone.revoke(mine, now=1001.0)
    assert alone.check(mine, ring, now=1002.0) is None
    workers[0].revoke(other, now=2000.0)  # past the first one's expiry: its id is forgotten
    assert sorted(p.name for p in (tmp_path / "sessions").iterdir()) == [_sid(other)]


@pytest.mark.parametrize("shared", [True, False], ids=["folder", "in-memory"])
def test_a_session_unused_for_idle_s_ends(tmp_path, shared: bool) -> None:
    ring = parse_api_keys(API_KEYS)
    folder = tmp_path / "sessions" if shared else None
    workers = [SessionSigner(b"shared", ttl_s=600, idle_s=60, revoked_dir=folder) for _ in range(2)]
    if not shared:
        workers[1] = workers[0]  # in memory, a session lives in the worker that issued it
    cookie = workers[0].issue(OFFICER_KEY, Role.OFFICER, now=1000.0)
    assert workers[1].check(cookie, ring, now=1059.0) is not None  # each use starts the wait again
    assert workers[0].check(cookie, ring, now=1118.0) is not None
    assert workers[1].check(cookie, ring, now=1178.0) is None  # 60 s unused
    assert workers[0].check(cookie, ring, now=1179.0) is None  # and it does not come back
    fresh = workers[0].issue(OFFICER_KEY, Role.OFFICER, now=1200.0)  # signing in again works
    assert workers[1].check(fresh, ring, now=1201.0) is not None
    if shared:  # the idle session's record was swept when the next one was issued
        assert sorted(p.name for p in folder.iterdir()) == [f"{_sid(fresh)}.seen"]


def test_a_sessions_folder_that_cannot_be_written_ends_sessions_without_an_error(tmp_path, caplog) -> None:
    (tmp_path / "not-a-folder").write_text("x")
    signer = SessionSigner(b"s", ttl_s=600, idle_s=60, revoked_dir=tmp_path / "not-a-folder" / "sessions")
    cookie = signer.issue(OFFICER_KEY, Role.OFFICER, now=1000.0)
    assert signer.check(cookie, parse_api_keys(API_KEYS), now=1001.0) is None  # the safe side, no 500
    assert "session last use not recorded" in caplog.text


def test_an_idle_review_page_asks_to_sign_in_again(make_client, tmp_path) -> None:
    import os
    import time

    client = make_client(session_idle_s=60)
    assert client.post("/review/login", data={"key": OFFICER_KEY}, follow_redirects=False).status_code == 303
    assert "Sign out" in client.get("/review").text
    (seen,) = (tmp_path / "data" / "sessions").glob("*.seen")
    last_use = time.time() - 61  # as if the workstation had been left for a minute
    os.utime(seen, (last_use, last_use))
    page = client.get("/review")
    assert "Sign out" not in page.text and 'id="login-form"' in page.text


def _sid(cookie: str) -> str:
    return json.loads(base64.urlsafe_b64decode(cookie.split(".")[0]))["sid"]


def test_the_cookie_gives_nothing_to_test_guessed_keys_against() -> None:
    cookie = SessionSigner(b"secret-1", ttl_s=60).issue(OFFICER_KEY, Role.OFFICER)
    payload = base64.urlsafe_b64decode(cookie.split(".")[0]).decode()
    assert hashlib.sha256(OFFICER_KEY.encode()).hexdigest() not in payload
    assert hashlib.sha256(OFFICER_KEY.encode()).hexdigest()[:12] not in payload


def test_signing_out_of_the_review_page_ends_the_session(make_client) -> None:
    client = make_client()
    signed_in = client.post("/review/login", data={"key": OFFICER_KEY}, follow_redirects=False)
    assert signed_in.status_code == 303
    cookie = client.cookies.get("clearsight_session")
    page = client.get("/review")
    assert "Sign out" in page.text
    csrf = re.search(r'name="csrf" value="([0-9a-f]+)"', page.text).group(1)
    assert client.post("/review/logout", data={"csrf": csrf}, follow_redirects=False).status_code == 303
    client.cookies.set("clearsight_session", cookie, path="/review")  # a copy kept after signing out
    again = client.get("/review")
    assert "Sign out" not in again.text and 'name="key"' in again.text  # the sign-in page
    assert client.post("/review/logout", data={"csrf": "x"}, follow_redirects=False).status_code == 303


def test_review_pages_are_never_cached_or_framed(make_client) -> None:
    client = make_client()
    for response in (client.get("/review"), client.post("/review/login", data={"key": "wrong-key-1"})):
        assert response.headers["cache-control"] == "no-store"
        assert response.headers["x-frame-options"] == "DENY"
        assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
    assert "x-frame-options" not in client.get("/healthz").headers


DB = "sqlite:///{tmp}/a.db"


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["--audit-db", "notaurl"],
         "Error: audit store URL 'notaurl' is not a SQLAlchemy URL (--audit-db or CLEARSIGHT_AUDIT_DB; "
         "accepted: sqlite:///FILE, postgresql+psycopg://USER@HOST:PORT/DB)"),
        (["--audit-db", DB], "Error: model directory 'nope' does not exist"),
        (["--audit-db", DB, "--trader-register", "{tmp}/no.csv"], "Error: cannot read the trader register"),
        (["--audit-db", DB, "--trader-register", "{tmp}/aeof.csv"],
         "Error: trader register {tmp}/aeof.csv gives tier(s) 'aeof' that policy 2026.12.2-example does not "
         "know (it lists AEOF, AEOS)"),
        (["--audit-db", DB, "--host", "192.0.2.1"],  # TEST-NET-1: no machine's address
         "Error: --host '192.0.2.1' (CLEARSIGHT_HOST) cannot be bound here ("),
        (["--audit-db", DB, "--host", "x" * 64 + ".example"],  # a label too long: refused unlooked-up
         f"Error: --host '{'x' * 64}.example' (CLEARSIGHT_HOST) does not resolve ("),
        (["--audit-db", DB, "--port", "99999"],
         "Error: port (--port or CLEARSIGHT_PORT): Input should be less than or equal to 65535"),
        (["--audit-db", DB, "--data-dir", "{tmp}/aeof.csv/data"],
         "Error: data folder {tmp}/aeof.csv/data/images cannot be written (NotADirectoryError"),
    ],
    ids=["audit-url", "model", "register", "register-tier", "host-elsewhere", "host-unresolved", "port",
         "data-dir"],
)  # fmt: skip
def test_serve_names_what_is_wrong_before_starting(
    tmp_path, monkeypatch, capsys, logging_restored, args, said
) -> None:
    from serve.cli import app, run  # the pipeline's CLI with `serve` added

    monkeypatch.setenv("CLEARSIGHT_API_KEYS", API_KEYS)
    monkeypatch.setenv("CLEARSIGHT_AUDIT_SECRET", "a-long-enough-audit-secret-for-tests")
    (tmp_path / "aeof.csv").write_text("trader_id,aeo_tier\nT-7,aeof\n", encoding="utf-8")
    argv = ["serve", "--model", "nope", *(a.format(tmp=tmp_path) for a in args)]
    assert run(app, argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    # after the log's JSON lines (these keys are short) the error, as every command says one
    said_after_log = [line for line in err.splitlines() if not line.startswith("{")]
    assert said_after_log[0].startswith(said.format(tmp=tmp_path))
    assert not (tmp_path / "a.db").exists()  # a start that fails leaves no new audit store


def test_a_policy_that_audits_nothing_at_random_is_warned_about_at_start(
    make_client, tmp_path, caplog
) -> None:
    """WTO TFA Art. 7.4: without random audits compliance cannot be measured; the service started
    under such a policy without a word."""
    policy = tmp_path / "no-audits.yaml"
    policy.write_text("policy_version: t\ncargo_types:\n  bulk_ore: {}\n  vacuum_pack: {}\n")
    make_client(policy=policy)
    assert "policy t picks no shipment for a random audit" in caplog.text
    caplog.clear()
    make_client()  # the bundled example audits 3 %
    assert "random audit" not in caplog.text


def test_a_model_whose_cargo_type_the_policy_has_no_rules_for_is_warned_about_at_start(
    make_client, tmp_path, caplog
) -> None:
    """Every shipment of such a model is held (fail_closed.unknown_cargo_type): `policy check
    --model` said so, the service started without a word."""
    policy = tmp_path / "ore-only.yaml"
    policy.write_text("policy_version: t\nrandom_audit: {rate: 0.02}\ncargo_types:\n  bulk_ore: {}\n")
    make_client(policy=policy)
    said = [r.getMessage() for r in caplog.records if "no rules for cargo type" in r.getMessage()]
    assert said == [
        "the policy has no rules for cargo type 'vacuum_pack' of model vacuum_pack-fake-0001: its shipments "
        "are never released (fail_closed.unknown_cargo_type)"
    ]
    caplog.clear()
    make_client()  # the bundled example has rules for both
    assert "no rules for cargo type" not in caplog.text


def test_a_model_the_policy_does_not_approve_is_refused_at_start(make_client, tmp_path) -> None:
    """A policy that lists the models approved for a cargo type: a service loaded with another
    would send every such shipment to inspection on a fail-closed rule; it does not start."""
    from datasets.errors import PolicyError

    policy = tmp_path / "approving.yaml"
    policy.write_text(
        "policy_version: t\nrandom_audit: {rate: 0.02}\ncargo_types:\n"
        "  bulk_ore: {models: [bulk_ore-lite0-000000000000000a]}\n  vacuum_pack: {}\n"
    )
    with pytest.raises(PolicyError, match=r"not approve the model loaded: bulk_ore-fake-0001 for bulk_ore"):
        make_client(policy=policy)
    approved = {"bulk_ore": FakePredictor("bulk_ore", model_id="bulk_ore-lite0-000000000000000a")}
    assert make_client(policy=policy, predictors=approved).get("/healthz").status_code == 200


def test_keys_prints_the_names_a_trader_register_lists_never_the_keys(monkeypatch, capsys) -> None:
    from serve.auth import Principal, Role
    from serve.cli import app, run

    monkeypatch.setenv("CLEARSIGHT_API_KEYS", API_KEYS)
    assert run(app, ["keys"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines() == [
        Principal.of_key(Role.SUBMITTER, SUBMITTER_KEY).name,
        Principal.of_key(Role.OFFICER, OFFICER_KEY).name,
        Principal.of_key(Role.ADMIN, ADMIN_KEY).name,
    ]
    assert SUBMITTER_KEY not in out and out.startswith("submitter:")
    monkeypatch.setenv("CLEARSIGHT_API_KEYS", "")
    assert run(app, ["keys"]) == 2
    assert capsys.readouterr().err.startswith("Error: CLEARSIGHT_API_KEYS holds no keys")


@pytest.mark.parametrize("path", ["/v1/outcomes", "/v1/shipments/SHP-1/outcome"])
@pytest.mark.parametrize(
    ("key", "status"), [(None, 401), ("wrong-key-0001", 401), (SUBMITTER_KEY, 403), (OFFICER_KEY, 422)]
)
def test_an_outcome_body_is_read_only_after_its_key_is_checked(make_client, path, key, status) -> None:
    """A body that was not JSON got 422 whatever the key: FastAPI parsed it before the route's own
    dependency checked the key, so no key, a wrong one or a submitter's were told about the body."""
    client = make_client()
    headers = {"content-type": "application/json", **(auth(key) if key else {})}
    response = client.post(path, content=b"{bad", headers=headers)
    assert response.status_code == status, response.text


def test_a_wrong_key_with_an_outcome_body_counts_towards_the_lockout(make_client) -> None:
    client = make_client(auth_failures_per_minute=2)
    headers = {"content-type": "application/json", **auth("wrong-key-0001")}
    for _ in range(2):
        assert client.post("/v1/outcomes", content=b"{bad", headers=headers).status_code == 401
    held = client.post("/v1/shipments/SHP-1/outcome", json={"found": "clean"}, headers=auth(OFFICER_KEY))
    assert held.status_code == 429, held.text


def test_the_longest_key_taken_signs_in_to_the_review_page(make_client) -> None:
    longest = "L" * MAX_KEY_CHARS
    client = make_client(api_keys=f"officer:{longest}")
    assert client.get("/v1/models", headers={"X-API-Key": longest}).status_code == 200
    assert client.post("/review/login", data={"key": longest}, follow_redirects=False).status_code == 303


@pytest.mark.parametrize(
    ("form", "words"),
    [
        ({"key": "S" * 513}, "This key is 513 characters; a key is at most 512."),
        ({"key": ""}, "Enter your API key."),
        ({}, "Enter your API key."),
    ],
)
def test_a_sign_in_key_not_taken_is_answered_with_the_sign_in_page(make_client, form, words) -> None:
    """A browser was answered with problem+json it cannot show."""
    page = make_client().post("/review/login", data=form)
    assert page.status_code == 422 and page.headers["content-type"].startswith("text/html")
    assert words in page.text and "SSSS" not in page.text
