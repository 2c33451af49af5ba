"""Over HTTP, a forged audit record a decision would rest on is answered 500 audit-record-forged,
its record named in the log, not decided on: a forged 'clean' outcome does not lift the hold a picture
sent again carries, and a forged decision is not replayed to a retry. The officers' review page
shows the shipments whose records pass and names each one that fails under a banner, never its
decision, with status 200: one such record made the whole queue answer 500."""

from __future__ import annotations

import html
import json
import logging
import re
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
        # another first byte whatever the seal's is ('ab' kept a seal that began so: 1 run in 256)
        forged = "CASE WHEN SUBSTR(seal, 1, 2) = 'ab' THEN 'cd' ELSE 'ab' END || SUBSTR(seal, 3)"
        _sql(url, f"UPDATE audit_records SET seal = {forged} WHERE seq = 1")
        with caplog.at_level(logging.ERROR):
            retry = _submit(client, "SHP-R", [10])
    assert retry.status_code == 500
    assert retry.json()["type"] == "https://clearsight.dev/problems/audit-record-forged"
    assert "audit record 1 fails its seal (forged or altered" in caplog.text


BANNER = (
    "fails its seal — do not act on this shipment; tell the operator (<code>clearsight audit verify</code>)"
)


def _signed_in(client) -> None:
    login = client.post("/review/login", data={"key": OFFICER_KEY}, follow_redirects=False)
    assert login.status_code == 303, login.text[:300]


def _shown(page: str) -> list[str]:
    return re.findall(r'data-shipment="([^"]+)"', page)


def _banners(page: str) -> list[str]:
    """Each seal banner's text, its markup gone and its spaces folded."""
    return [
        " ".join(html.unescape(re.sub(r"<[^>]+>", "", b)).split())
        for b in re.findall(r'<p class="notice forged" role="alert">(.*?)</p>', page, re.S)
    ]


def _said(shipment: str, seq: int) -> str:
    return (
        f"Shipment {shipment}: audit record {seq} fails its seal — do not act on this shipment; "
        "tell the operator (clearsight audit verify)."
    )


def _no_inline_code(page: str) -> None:
    assert re.findall(r"<script[^>]*>", page) == ['<script src="/static/review.js" defer>']
    assert re.findall(r"<style|\sstyle=|\son[a-z]+=|javascript:", page) == []


def _outcome_form(client, shipment: str) -> dict[str, str]:
    """The hidden fields of the queue's outcome form for ``shipment``, as the page gives them."""
    card = client.get("/review").text.split(f'data-shipment="{shipment}"')[1]
    return {k: html.unescape(v) for k, v in re.findall(r'name="(\w+)" value="([^"]*)"', card)}


def _keyed_store(tmp_path: Path) -> tuple[str, AuditStore]:
    url = f"sqlite:///{tmp_path / 'sealed.db'}"
    return url, AuditStore.open(url, seal_key=audit_seal_key(Settings(audit_secret=SECRET)))


def test_one_record_failing_its_seal_leaves_the_review_queue_to_the_others(
    make_client, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """One held decision's seal cleared made GET /review, the 'all' view and the redirect after an
    outcome answer 500 problem+json to every officer. The page lists the others, and names the one
    that fails by its record and shipment, nothing of its decision, in a banner that says not to
    act on it."""
    url, store = _keyed_store(tmp_path)
    with store:
        client = make_client(audit=store)
        for i, value in enumerate([240, 241, 242, 243]):  # records 1 to 4, all held
            assert _submit(client, f"SHP-{i}", [value]).json()["decision"]["tier"] == "PHYSICAL_INSPECTION"
        _signed_in(client)
        _sql(url, "UPDATE audit_records SET seal = NULL WHERE shipment_id = 'SHP-1'")
        with caplog.at_level(logging.ERROR):
            for params in ({}, {"show": "all"}):
                page = client.get("/review", params=params)
                assert page.status_code == 200, page.text[:300]
                assert page.headers["content-type"].startswith("text/html")
                assert _shown(page.text) == ["SHP-3", "SHP-2", "SHP-0"]
                assert _banners(page.text) == [_said("SHP-1", 2)]
                assert BANNER in page.text
                assert "SHP-1.png" not in page.text and 'value="SHP-1"' not in page.text  # nothing of it
                assert "4 shipments, newest first" in page.text
                _no_inline_code(page.text)
        assert "audit record 2 fails its seal (carries no seal" in caplog.text  # for the operator
        # the redirect after an outcome, or anyone's link, naming the shipment that fails
        page = client.get("/review", params={"shipment": "SHP-2", "recorded": "SHP-1"})
        assert page.status_code == 200, page.text[:300]
        assert _shown(page.text) == ["SHP-2"] and _banners(page.text) == []
        assert "Outcome recorded" not in page.text
        # the shipment searched for itself: the banner, not 'no decision recorded'
        page = client.get("/review", params={"shipment": "SHP-1", "stale": "SHP-1"})
        assert page.status_code == 200, page.text[:300]
        assert (_shown(page.text), _banners(page.text)) == ([], [_said("SHP-1", 2)])
        assert "No decision recorded" not in page.text and "Not recorded" not in page.text
        assert 'value="SHP-1"' in page.text  # the search box keeps the id searched for
        _no_inline_code(page.text)


def test_a_forged_outcome_is_not_shown_as_an_inspection(make_client, tmp_path: Path) -> None:
    """A forged 'clean' outcome on a held shipment, in the 'all' view: a banner, not 'Outcome: clean'."""
    url, store = _keyed_store(tmp_path)
    with store:
        client = make_client(audit=store)
        _submit(client, "SHP-A", [240])
        _submit(client, "SHP-B", [241])
        recorded = client.post(
            "/v1/shipments/SHP-B/outcome", json={"found": "clean"}, headers=auth(OFFICER_KEY)
        )
        assert recorded.status_code == 200, recorded.text
        _sql(url, "UPDATE audit_records SET seal = NULL WHERE kind = 'outcome'")  # record 3
        _signed_in(client)
        page = client.get("/review", params={"show": "all"})
        assert page.status_code == 200, page.text[:300]
        assert (_shown(page.text), _banners(page.text)) == (["SHP-A"], [_said("SHP-B", 3)])
        assert "Outcome: <strong>" not in page.text
        pending = client.get("/review")  # its outcome takes it out of the pending queue, as before
        assert (_shown(pending.text), _banners(pending.text)) == (["SHP-A"], [])


def test_an_outcome_form_of_a_shipment_whose_record_fails_comes_back_to_the_banner(
    make_client, tmp_path: Path
) -> None:
    """A form loaded before the record was forged: posted, it answered 500 problem+json."""
    url, store = _keyed_store(tmp_path)
    with store:
        client = make_client(audit=store)
        _submit(client, "SHP-F", [240])
        _signed_in(client)
        form = _outcome_form(client, "SHP-F")
        _sql(url, "UPDATE audit_records SET seal = NULL WHERE seq = 1")
        posted = client.post(
            "/review/outcome", data={**form, "found": "clean", "notes": ""}, follow_redirects=False
        )
        assert (posted.status_code, posted.headers["location"]) == (
            303,
            "/review?stale=SHP-F&shipment=SHP-F",
        )
        landed = client.get(posted.headers["location"])
        assert (landed.status_code, _banners(landed.text)) == (200, [_said("SHP-F", 1)])
    assert _rows(url) == [(1, "decision")]  # nothing recorded


def test_an_outcome_the_trail_cannot_take_says_so_and_to_tell_the_operator(
    make_client, tmp_path: Path
) -> None:
    """A writer without the key appended after the service opened (or the secret was rotated under
    it): the head is not the service's to extend. The officer's form came back 'changed after this
    page was loaded', and posting it again got the same, with nothing recorded."""
    from serve_fakes import batch_hold

    url, store = _keyed_store(tmp_path)
    with store:
        client = make_client(audit=store)
        _submit(client, "SHP-G", [240])
        _signed_in(client)
        form = _outcome_form(client, "SHP-G")
        with AuditStore.open(url) as keyless:  # record 2, no seal
            keyless.record(batch_hold("SHP-Z"))
        posted = client.post(
            "/review/outcome", data={**form, "found": "clean", "notes": ""}, follow_redirects=False
        )
        assert (posted.status_code, posted.headers["location"]) == (
            303,
            "/review?unrecorded=SHP-G&shipment=SHP-G",
        )
        landed = client.get(posted.headers["location"])
        assert landed.status_code == 200
        assert _banners(landed.text) == [
            "Not recorded: the audit trail takes no new record for shipment SHP-G or any other (its last "
            "record does not carry this service's seal: the audit secret was rotated, or the record is "
            "forged). Tell the operator (clearsight audit verify)."
        ]
        assert "changed after this page was loaded" not in landed.text
    assert _rows(url) == [(1, "decision"), (2, "decision")]  # nothing recorded


def test_a_page_cut_by_a_record_that_fails_goes_on_below_it(make_client, tmp_path: Path) -> None:
    """The next page starts below the last decision of this one, a failing one too: none is
    skipped, none shown twice."""
    from serve_fakes import batch_hold

    url, store = _keyed_store(tmp_path)
    with store:
        for i in range(1, 53):
            store.record(batch_hold(f"SHP-{i:03d}"))
        client = make_client(audit=store)
        _signed_in(client)
        _sql(url, "UPDATE audit_records SET seal = NULL WHERE seq = 3")  # the last of the first page
        first = client.get("/review").text
        assert len(_shown(first)) == 49 and _banners(first) == [_said("SHP-003", 3)]
        assert "50 shipments, newest first" in first
        older = html.unescape(re.search(r'<a href="([^"]+)">Older shipments', first).group(1))
        assert older == "/review?show=pending&before=3"
        second = client.get(older).text
        assert (_shown(second), _banners(second)) == (["SHP-002", "SHP-001"], [])


def _rows(url: str) -> list[tuple[int, str]]:
    engine = create_engine(url)
    with engine.connect() as conn:
        rows = [
            (r.seq, r.kind) for r in conn.execute(text("SELECT seq, kind FROM audit_records ORDER BY seq"))
        ]
    engine.dispose()
    return rows


def test_the_service_refuses_to_start_with_a_secret_that_does_not_seal_the_stores_head(
    tmp_path: Path,
) -> None:
    """Started with another CLEARSIGHT_AUDIT_SECRET than the store's, the service said ready, then
    answered every decision 500 audit-record-forged."""
    from serve_fakes import API_KEYS, batch_hold

    from datasets.errors import InputError
    from serve.app import preflight
    from serve.settings import ServeSettings

    url = f"sqlite:///{tmp_path / 'sealed.db'}"
    with AuditStore.open(url, seal_key=audit_seal_key(Settings(audit_secret=SECRET))) as store:
        store.record(batch_hold("SHP-1"))
    values = {"api_keys": API_KEYS, "audit_db": url, "data_dir": tmp_path / "data"}
    wrong = ServeSettings(_env_file=None, **values, audit_secret="another-long-secret-not-the-stores")
    with pytest.raises(
        InputError, match=r"its head, record 1, does not carry the seal of this CLEARSIGHT_AUDIT_SECRET"
    ):
        preflight(wrong)
    assert preflight(ServeSettings(_env_file=None, **values, audit_secret=SECRET)) == {}


def test_the_service_refuses_to_start_with_a_policy_version_the_trail_holds_under_other_rules(
    tmp_path: Path,
) -> None:
    """The policy edited, its version left as it was: the service started, and answered its first
    decision 500 policy-error (the trail would hold one version under two rule sets)."""
    from serve_fakes import API_KEYS, batch_hold

    from datasets.errors import PolicyError
    from pipeline.policy import default_policy_path, load_policy
    from serve.app import preflight
    from serve.settings import ServeSettings

    policy = load_policy(default_policy_path())
    url = f"sqlite:///{tmp_path / 'audit.db'}"
    earlier = batch_hold("SHP-1").model_copy(update={"policy_version": policy.version})
    with AuditStore.open(url, seal_key=audit_seal_key(Settings(audit_secret=SECRET))) as store:
        store.record(earlier)
    values = {"api_keys": API_KEYS, "audit_db": url, "data_dir": tmp_path / "data", "audit_secret": SECRET}
    with pytest.raises(PolicyError, match=rf"policy_version {policy.version!r} is recorded .* \(record 1\)"):
        preflight(ServeSettings(_env_file=None, **values))


def test_readiness_fails_once_the_secret_is_rotated_under_a_running_service(
    make_client, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A service left running through `audit seal --rotate` appends nothing (its seal is not the head's):
    a load balancer must stop sending it work, not get 500s."""
    from serve_fakes import batch_hold

    from pipeline.settings import previous_audit_seal_key

    url, store = _keyed_store(tmp_path)
    with store:
        store.record(batch_hold("SHP-1"))
        client = make_client(audit=store)
        assert client.get("/readyz").status_code == 200
        head = (1, store.hash_at(1))
        new = Settings(audit_secret="the-new-secret-after-the-rotation", previous_audit_secret=SECRET)
        with AuditStore.open(url, create=False, seal_key=audit_seal_key(new)) as rotating:
            rotating.rotate_seals(expect=head, head=head, previous=previous_audit_seal_key(new))
        with caplog.at_level(logging.ERROR):
            ready = client.get("/readyz")
    assert (ready.status_code, ready.headers["retry-after"]) == (503, "2")
    assert ready.json()["detail"] == (
        "the audit store's head does not carry this server's seal: CLEARSIGHT_AUDIT_SECRET is not the "
        "store's, or the head was forged (the service's log says more)"
    )
    assert "its head, record 1, does not carry the seal of this CLEARSIGHT_AUDIT_SECRET" in caplog.text


def test_readiness_names_a_head_a_writer_without_the_key_appended_as_unsealed(
    make_client, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A writer not given the key appended the head: /readyz said CLEARSIGHT_AUDIT_SECRET was not the
    store's, sending the operator after a secret no one changed, where the head carries no seal."""
    from serve_fakes import batch_hold

    url, store = _keyed_store(tmp_path)
    with store:
        store.record(batch_hold("SHP-1"))
        client = make_client(audit=store)
        assert client.get("/readyz").status_code == 200
        with AuditStore.open(url, create=False) as writer:  # a writer not given the key
            writer.record(batch_hold("SHP-2"))
        with caplog.at_level(logging.ERROR):
            ready = client.get("/readyz")
    assert ready.status_code == 503
    assert ready.json()["detail"] == (
        "the audit store's head carries no seal: a writer not given the server's key appended it, or its "
        "seal was cleared; check it, then `clearsight audit seal --expect SEQ:HASH` (the service's log "
        "says more)"
    )
    assert "its head, record 2, carries no seal" in caplog.text
