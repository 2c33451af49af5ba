"""How ``clearsight serve`` configures uvicorn: whose X-Forwarded-For is believed, and the protocol
that bounds request heads and connections per client, and what its log says at start-up."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import httpx
import pytest
from serve_fakes import API_KEYS, OFFICER_KEY, FakePredictor, auth

from pipeline.cli import app, run
from serve.cli import uvicorn_options
from serve.connection_limits import ConnectionLimits
from serve.settings import ServeSettings


@pytest.mark.parametrize(
    ("proxies", "proxy_headers", "trusted"),
    [
        ("", False, []),
        ("10.0.0.5", True, ["10.0.0.5"]),
        ("10.0.0.5, 10.1.0.0/16", True, ["10.0.0.5", "10.1.0.0/16"]),
    ],
    ids=["none", "one", "address-and-network"],
)
def test_proxy_headers_are_read_only_from_named_proxies(proxies, proxy_headers, trusted) -> None:
    options = uvicorn_options(ServeSettings(_env_file=None, forwarded_allow_ips=proxies))
    assert options["proxy_headers"] is proxy_headers
    assert options["forwarded_allow_ips"] == trusted


def _wrong_keys_until_held(url: str, forwarded_for: list[str]) -> list[int]:
    """The statuses of one wrong key per X-Forwarded-For value, each over its own connection."""
    statuses = []
    for address in forwarded_for:
        headers = {**auth(f"wrong-key-{address}"), "X-Forwarded-For": address}
        statuses.append(httpx.get(f"{url}/v1/models", headers=headers).status_code)
    return statuses


def test_a_client_cannot_pick_its_address_for_the_lockout(live_server) -> None:
    """Every connection here comes from 127.0.0.1, which uvicorn trusted by default: a new
    X-Forwarded-For per request dodged the lockout for ever, and one naming someone else's
    address locked that address out."""
    server = live_server(auth_failures_per_minute=2)
    assert _wrong_keys_until_held(server.url, ["10.9.8.1", "10.9.8.2", "10.9.8.3"]) == [401, 401, 429]
    # the lockout is 127.0.0.1's, whatever address the header names
    claimed = {**auth(OFFICER_KEY), "X-Forwarded-For": "198.51.100.9"}
    assert httpx.get(f"{server.url}/v1/models", headers=claimed).status_code == 429


def test_a_named_proxy_says_who_the_client_is(live_server) -> None:
    server = live_server(auth_failures_per_minute=2, forwarded_allow_ips="127.0.0.1")
    assert _wrong_keys_until_held(server.url, ["203.0.113.7"] * 3) == [401, 401, 429]
    # another client behind the same proxy is not held; a proxy appending to the client's own
    # header is read from the right, so a client cannot name a locked-out address either
    for forwarded in ("198.51.100.9", "203.0.113.7, 198.51.100.9"):
        headers = {**auth(OFFICER_KEY), "X-Forwarded-For": forwarded}
        assert httpx.get(f"{server.url}/v1/models", headers=headers).status_code == 200


def test_clients_behind_a_named_proxy_are_counted_by_their_ipv6_slash_64(live_server) -> None:
    """A client with one /64 sent 20 wrong keys from each of its addresses and was never held."""
    server = live_server(auth_failures_per_minute=3, forwarded_allow_ips="127.0.0.1")
    one_block = [f"2001:db8:1:3::{n:x}" for n in range(1, 5)]
    assert _wrong_keys_until_held(server.url, one_block) == [401, 401, 401, 429]
    # a client of another /64, or of IPv4, is not held
    assert _wrong_keys_until_held(server.url, ["2001:db8:1:4::1", "203.0.113.7"]) == [401, 401]


def test_clients_behind_a_named_proxy_are_counted_by_their_ipv6_slash_48_too(live_server) -> None:
    """A client holding a /56 sent the limit's wrong keys from each of its 256 /64s, and was never
    held: a /48 may send ten times the limit."""
    server = live_server(auth_failures_per_minute=2, forwarded_allow_ips="127.0.0.1")
    rotated = [f"2001:db8:ab00:{n // 2:x}::{n % 2 + 1:x}" for n in range(20)]  # 2 from each of 10 /64s
    assert _wrong_keys_until_held(server.url, rotated) == [401] * 20
    assert _wrong_keys_until_held(server.url, ["2001:db8:ab00:ff::1"]) == [429]
    # the right key from another /64 of the /48 waits too; another /48 is another's
    held = httpx.get(
        f"{server.url}/v1/models", headers={**auth(OFFICER_KEY), "X-Forwarded-For": "2001:db8:ab00:fe::1"}
    )
    assert held.status_code == 429 and "this address's /48" in held.json()["detail"]
    other = {**auth(OFFICER_KEY), "X-Forwarded-For": "2001:db8:ab01::1"}
    assert httpx.get(f"{server.url}/v1/models", headers=other).status_code == 200


def test_the_protocol_bounds_request_heads_and_connections_per_client_in_every_worker() -> None:
    """The protocol is uvicorn's option ``http``: with --workers N uvicorn pickles the options for
    each worker process, so it must survive that with its settings."""
    settings = ServeSettings(
        _env_file=None, header_timeout_s=3.5, max_connections_per_client=7, forwarded_allow_ips="10.0.0.5"
    )
    limits = pickle.loads(pickle.dumps(uvicorn_options(settings)["http"]))
    assert isinstance(limits, ConnectionLimits)
    assert (limits.header_timeout_s, limits.max_connections_per_client) == (3.5, 7)
    assert limits.capped_key("10.0.0.5") is None and limits.capped_key("10.0.0.6") == "10.0.0.6"


@pytest.mark.parametrize("workers", [1, 2])
def test_serve_says_its_start_up_warnings_once_as_json_log_lines(
    tmp_path, monkeypatch, capsys, caplog, logging_restored, workers: int
) -> None:
    """The keys were checked by the command and again by the app it built: each warning twice, as plain
    text before uvicorn's JSON lines. Workers check again, without saying it once more each."""
    import uvicorn

    import serve.app
    import serve.cli

    monkeypatch.setenv("CLEARSIGHT_API_KEYS", API_KEYS)  # 16 characters each: short
    monkeypatch.setenv("CLEARSIGHT_AUDIT_SECRET", "a-long-enough-audit-secret-for-tests")
    monkeypatch.setenv("CLEARSIGHT_SESSION_SECRET", "a-session-secret-the-workers-share")
    monkeypatch.setattr(serve.app, "preflight", lambda settings: {"bulk_ore": FakePredictor("bulk_ore")})
    started: list[object] = []
    monkeypatch.setattr(uvicorn, "run", lambda target, **options: started.append(target))
    monkeypatch.setattr(serve.cli, "_run_workers", lambda settings: started.append(settings.workers))
    handed_on = {  # what the command hands its workers: set here, so that the test's end takes it back
        "CLEARSIGHT_MODELS": str(tmp_path / "model"),
        "CLEARSIGHT_AUDIT_DB": f"sqlite:///{tmp_path}/audit.db",
        "CLEARSIGHT_DATA_DIR": str(tmp_path / "data"),
        "CLEARSIGHT_INSECURE_DEV": "False",
    }
    for name, value in handed_on.items():
        monkeypatch.setenv(name, value)
    options = {"--model": "MODELS", "--audit-db": "AUDIT_DB", "--data-dir": "DATA_DIR"}
    argv = [part for flag, name in options.items() for part in (flag, handed_on[f"CLEARSIGHT_{name}"])]
    assert run(app, ["serve", *argv, "--workers", str(workers)]) == 0
    if workers > 1:  # a worker builds its app from the environment the command handed on
        assert started == [workers]
        serve.app.create_app_from_env()
    lines = capsys.readouterr().err.splitlines()
    entries = [json.loads(line) for line in lines]  # every line a JSON object
    said = [e for e in entries if "shorter than 20 characters" in e["msg"]]
    assert len(said) == 1 and said[0]["logger"] == "clearsight.serve" and said[0]["level"] == "warning"
    assert not [r for r in caplog.records if "shorter than 20 characters" in r.getMessage()]


def _serve_started(monkeypatch, tmp_path, argv: list[str]) -> tuple[int, list[tuple[object, dict]]]:
    """Run ``clearsight serve`` up to uvicorn (its models and store faked): the exit code, and what
    uvicorn.run was given."""
    import uvicorn

    import serve.app
    import serve.cli

    monkeypatch.setenv("CLEARSIGHT_API_KEYS", API_KEYS)
    monkeypatch.setenv("CLEARSIGHT_AUDIT_SECRET", "a-long-enough-audit-secret-for-tests")
    monkeypatch.setenv("CLEARSIGHT_SESSION_SECRET", "a-session-secret-the-workers-share")
    # what the command hands its workers through the environment: set here, so that the test's end
    # takes it back
    monkeypatch.setenv("CLEARSIGHT_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("CLEARSIGHT_AUDIT_DB", f"sqlite:///{tmp_path}/audit.db")
    monkeypatch.setenv("CLEARSIGHT_INSECURE_DEV", "False")
    monkeypatch.setenv("CLEARSIGHT_MODELS", os.environ.get("CLEARSIGHT_MODELS", ""))
    monkeypatch.setattr(serve.app, "preflight", lambda settings: {"bulk_ore": FakePredictor("bulk_ore")})
    started: list[tuple[object, dict]] = []
    monkeypatch.setattr(uvicorn, "run", lambda target, **options: started.append((target, options)))

    def workers(settings: ServeSettings) -> None:
        started.append(("workers", {**uvicorn_options(settings), "workers": settings.workers}))

    monkeypatch.setattr(serve.cli, "_run_workers", workers)
    return run(app, ["serve", "--audit-db", f"sqlite:///{tmp_path}/audit.db", *argv]), started


def test_serve_takes_host_port_workers_and_models_from_the_environment(
    tmp_path, monkeypatch, logging_restored
) -> None:
    """CLEARSIGHT_HOST, _PORT and _WORKERS were ignored (typer's defaults always passed on), and
    --model was required whatever CLEARSIGHT_MODELS said."""
    monkeypatch.setenv("CLEARSIGHT_MODELS", str(tmp_path / "model"))
    monkeypatch.setenv("CLEARSIGHT_HOST", "0.0.0.0")
    monkeypatch.setenv("CLEARSIGHT_PORT", "8123")
    monkeypatch.setenv("CLEARSIGHT_WORKERS", "2")
    code, started = _serve_started(monkeypatch, tmp_path, [])
    assert code == 0
    ((target, options),) = started
    assert (target, options["host"], options["port"], options["workers"]) == ("workers", "0.0.0.0", 8123, 2)
    # the options still win over the environment
    code, started = _serve_started(
        monkeypatch, tmp_path, ["--host", "127.0.0.1", "--port", "9000", "--workers", "1"]
    )
    assert code == 0 and (started[0][1]["host"], started[0][1]["port"]) == ("127.0.0.1", 9000)
    assert "workers" not in started[0][1]


def test_serve_without_a_model_names_both_ways_to_give_one(
    tmp_path, monkeypatch, capsys, logging_restored
) -> None:
    monkeypatch.delenv("CLEARSIGHT_MODELS", raising=False)
    code, started = _serve_started(monkeypatch, tmp_path, [])
    assert (code, started) == (2, [])
    assert (
        "no model to serve: pass --model MODEL_DIR (repeat: one per cargo type), or set CLEARSIGHT_MODELS"
        in (capsys.readouterr().err)
    )


def test_the_workers_are_handed_model_folders_whose_names_hold_a_comma(
    tmp_path, monkeypatch, logging_restored
) -> None:
    """The command joined the folders with commas into CLEARSIGHT_MODELS, and the workers split them
    there: 'ore,2026' became two folders that do not exist, and no worker started."""
    folders = [str(tmp_path / "ore,2026"), str(tmp_path / "pack")]
    code, started = _serve_started(
        monkeypatch, tmp_path, ["--model", folders[0], "--model", folders[1], "--workers", "2"]
    )
    assert code == 0 and started[0][0] == "workers"
    # what each worker reads (ServeSettings.load() in create_app_from_env)
    assert [str(p) for p in ServeSettings(_env_file=None).models] == folders
    # written by hand, comma-separated, as before
    assert ServeSettings(_env_file=None, models="a, b").models == [Path("a"), Path("b")]


@pytest.mark.slow  # two real worker processes, each importing the service
def test_a_worker_that_fails_to_start_stops_the_service_with_a_failure(
    tmp_path, monkeypatch, logging_restored
) -> None:
    """uvicorn's supervisor stops when a worker fails to start, and uvicorn.run returned as after
    Ctrl-C: the command exited 0. Real workers here, each failing on a model folder that is not one."""
    import serve.app
    import serve.cli

    # the supervisor notices a worker gone only once a health check has waited this long
    monkeypatch.setattr(serve.cli, "WORKER_HEALTHCHECK_S", 5.0)

    monkeypatch.setenv("CLEARSIGHT_API_KEYS", API_KEYS)
    monkeypatch.setenv("CLEARSIGHT_AUDIT_SECRET", "a-long-enough-audit-secret-for-tests")
    monkeypatch.setenv("CLEARSIGHT_SESSION_SECRET", "a-session-secret-the-workers-share")
    for name, value in {
        "CLEARSIGHT_MODELS": "",
        "CLEARSIGHT_AUDIT_DB": f"sqlite:///{tmp_path}/audit.db",
        "CLEARSIGHT_DATA_DIR": str(tmp_path / "data"),
        "CLEARSIGHT_INSECURE_DEV": "False",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(serve.app, "preflight", lambda settings: {"bulk_ore": FakePredictor("bulk_ore")})
    argv = ["serve", "--model", str(tmp_path / "no-model"), "--workers", "2", "--port", "0"]
    assert run(app, [*argv, "--audit-db", f"sqlite:///{tmp_path}/audit.db"]) == 3


def test_workers_have_a_minute_to_answer_their_first_health_check() -> None:
    """uvicorn's 5 s killed workers still importing on a loaded machine ("Child process died")."""
    assert uvicorn_options(ServeSettings(_env_file=None))["timeout_worker_healthcheck"] == 60.0


def test_the_trader_register_help_never_says_submitters_may_declare_a_tier() -> None:
    """'Without it, submitters may not declare a tier' read as if they might with one: a submitter's
    declared aeo_tier is refused (403) register or not."""
    import typer

    serve = typer.main.get_command(app).commands["serve"]  # type: ignore[attr-defined]
    (option,) = [p for p in serve.params if p.name == "trader_register"]
    for said in (option.help, ServeSettings.model_fields["trader_register"].description):
        assert "Submitters never declare a tier" in said and "may not declare" not in said
        assert "among that trader's submitters" in said
