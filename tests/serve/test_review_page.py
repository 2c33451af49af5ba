"""The officer review page as its HTML says it (TestClient): what each card, notice and link shows."""

from __future__ import annotations

import html
import json
import re
from html.parser import HTMLParser
from pathlib import Path

import cv2
import numpy as np
import pytest
from serve_fakes import ADMIN_KEY, OFFICER_KEY, auth, png_bytes


def _signed_in(client) -> None:
    login = client.post("/review/login", data={"key": OFFICER_KEY}, follow_redirects=False)
    assert login.status_code == 303, login.text[:300]


def _captions(page: str) -> list[str]:
    """Each image's caption (not the heatmap legend's), its markup gone and its spaces folded."""
    return [
        " ".join(html.unescape(re.sub(r"<[^>]+>", "", c)).split())
        for c in re.findall(r'<figure class="image">.*?<figcaption>(.*?)</figcaption>', page, re.S)
    ]


def test_pictures_sent_under_one_file_name_are_told_apart(make_client) -> None:
    """Three pictures sent as ``scan.png``: every score reason named 'scan.png', and the page showed
    the held picture (0.961) under the release threshold, the first reason of that name."""
    client = make_client()
    declaration = json.dumps({"shipment_id": "SHP-DUP", "cargo_type": "bulk_ore"})
    files = [("images", ("scan.png", png_bytes(v), "image/png")) for v in (10, 150, 245)]
    sent = client.post(
        "/v1/shipments", files=files, data={"declaration": declaration}, headers=auth(ADMIN_KEY)
    )
    decision = sent.json()["decision"]
    assert decision["tier"] == "PHYSICAL_INSPECTION"
    assert [i["path"] for i in decision["images"]] == ["scan.png", "scan.png (2)", "scan.png (3)"]
    assert [(r["rule"], r["image"]) for r in decision["reasons"]] == [
        ("score.clear", "scan.png"),
        ("score.review", "scan.png (2)"),
        ("score.hold", "scan.png (3)"),
    ]
    _signed_in(client)
    captions = _captions(client.get("/review").text)
    assert [c.split(" (the policy")[0] for c in captions] == [
        "scan.png score 0.0393 < 0.500 applied",
        "scan.png (2) score 0.588 ≥ 0.500 applied",
        "scan.png (3) score 0.9608 ≥ 0.800 applied",
    ]


def test_a_decision_recorded_with_pictures_of_one_name_shows_each_its_own_threshold(
    make_client, audit_store
) -> None:
    """Decisions recorded before uploads were named apart keep their alike names: each picture's
    score is judged by the reason that judged that score."""
    from pipeline.decide import decide_shipment
    from pipeline.policy import default_policy_path, load_policy
    from pipeline.verdicts import Declaration, ImageVerdict

    images = [
        ImageVerdict(
            path="scan.png",
            sha256=f"{i:02x}" * 32,
            cargo_type="bulk_ore",
            score=score,
            threshold=0.5,
            hold_threshold=0.8,
            model_id="bulk_ore-lite0-00000000",
        )  # fmt: skip
        for i, score in enumerate((0.04, 0.96))
    ]
    decision = decide_shipment(
        load_policy(default_policy_path()),
        Declaration(shipment_id="SHP-OLD", cargo_type="bulk_ore"),
        images,
        audit_key=b"batch-audit-secret-of-the-port",
    )
    audit_store.record(decision)
    client = make_client()
    _signed_in(client)
    captions = _captions(client.get("/review").text)
    assert [c.split(" (the policy")[0] for c in captions] == [
        "scan.png score 0.0400 < 0.500 applied",
        "scan.png score 0.9600 ≥ 0.800 applied",
    ]


def test_rows_of_one_name_and_one_score_scored_by_two_models_show_each_its_own_threshold(
    make_client, audit_store
) -> None:
    """A batch's rows of one picture name and one score (0.6), scored by two ore models (0.5 / 0.8
    and 0.3 / 0.9): the page took the first reason of that name and score for both, so the second
    read '≥ 0.500 applied (the policy's thresholds: release 0.500 [model's own 0.300], hold not known
    here ...)' where 0.3 had judged it. Each image takes its own reason by position, rows whose score
    was not compared with thresholds (one failed, one missing its model's release threshold) kept
    apart: the first has no reason of its own, the second a fail-closed one."""
    from pipeline.decide import decide_rows
    from pipeline.policy import default_policy_path, load_policy
    from pipeline.verdicts import ImageVerdict

    def row(model: str, **kw: object) -> ImageVerdict:
        return ImageVerdict(
            path="scan.png", shipment_id="SHP-TWO-MODELS", cargo_type="bulk_ore",
            model_id=f"bulk_ore-lite0-0000000{model}", declaration={"cargo_type": "bulk_ore"}, **kw,
        )  # fmt: skip

    rows = [
        row("1", score=None, error="unreadable"),
        row("2", score=0.6, threshold=None, hold_threshold=0.8),
        row("3", score=0.6, threshold=0.5, hold_threshold=0.8),
        row("4", score=0.6, threshold=0.3, hold_threshold=0.9),
    ]
    (decision,) = decide_rows(
        load_policy(default_policy_path()), rows, audit_key=b"batch-audit-secret-of-the-port"
    )
    assert [(r.rule, r.threshold) for r in decision.reasons if r.image == "scan.png"] == [
        ("fail_closed.image_error", None),
        ("fail_closed.missing_threshold", None),
        ("score.review", 0.5),
        ("score.review", 0.3),
    ]
    audit_store.record(decision)
    client = make_client()
    _signed_in(client)
    captions = _captions(client.get("/review", params={"shipment": "SHP-TWO-MODELS"}).text)
    assert [c.split(" · ")[0] for c in captions] == [
        "scan.png not scored: unreadable",
        "scan.png score 0.600 not released on its score (see the reasons)",
        "scan.png score 0.600 ≥ 0.500 applied (the policy's thresholds: release 0.500, hold 0.800)",
        "scan.png score 0.600 ≥ 0.300 applied (the policy's thresholds: release 0.300, hold 0.900)",
    ]


def test_a_picture_without_the_models_own_thresholds_is_shown(make_client, audit_store) -> None:
    """A verdict row with no hold threshold (an empty cell), decided under a policy that fixes its
    own: the template formatted None with '%.3f' and the whole queue answered 500."""
    from pipeline.decide import decide_shipment
    from pipeline.policy import default_policy_path, load_policy
    from pipeline.verdicts import Declaration, ImageVerdict

    image = ImageVerdict(
        path="/archive/pack-7.png", sha256="cd" * 32, cargo_type="vacuum_pack", score=0.95,
        threshold=0.5, hold_threshold=None, model_id="vacuum_pack-lite0-00000001",
    )  # fmt: skip
    decision = decide_shipment(
        load_policy(default_policy_path()),
        Declaration(shipment_id="SHP-PACK-7", cargo_type="vacuum_pack"),
        [image],
        audit_key=b"batch-audit-secret-of-the-port",
    )
    assert decision.tier.value != "RELEASE"
    audit_store.record(decision)
    client = make_client()
    _signed_in(client)
    for params in ({}, {"show": "all"}, {"shipment": "SHP-PACK-7"}):
        page = client.get("/review", params=params)
        assert page.status_code == 200, page.text[:300]
        assert "pack-7.png score 0.950" in _captions(page.text)[0]
        assert (
            "≥ 0.900 applied (the policy's thresholds: release 0.500, hold 0.900 [model's own none])"
            in _captions(page.text)[0]
        )


def _pack(score: float) -> object:
    from pipeline.verdicts import ImageVerdict

    return ImageVerdict(
        path="/archive/pack-9.png", sha256="ef" * 32, cargo_type="vacuum_pack", score=score,
        threshold=0.01, hold_threshold=0.096, model_id="vacuum_pack-lite0-00000002",
    )  # fmt: skip


def test_a_score_between_the_policys_release_and_hold_shows_the_hold_the_policy_applied(
    make_client, audit_store
) -> None:
    """A pack scored 0.886 under the example policy (vacuum_pack hold 0.9): the page showed the
    model's hold (0.096) beside it and no sign of the 0.9 that kept it from a physical hold."""
    from pipeline.decide import decide_shipment
    from pipeline.policy import default_policy_path, load_policy
    from pipeline.verdicts import Declaration

    decision = decide_shipment(
        load_policy(default_policy_path()),
        Declaration(shipment_id="SHP-PACK-9", cargo_type="vacuum_pack"),
        [_pack(0.886)],
        audit_key=b"batch-audit-secret-of-the-port",
    )
    assert decision.tier.value == "REMOTE_INSPECTION"
    audit_store.record(decision)
    client = make_client()
    _signed_in(client)
    page = client.get("/review", params={"shipment": "SHP-PACK-9"})
    assert _captions(page.text)[0].startswith(
        "pack-9.png score 0.886 ≥ 0.0100 applied "
        "(the policy's thresholds: release 0.0100, hold 0.900 [model's own 0.0960])"
    )


@pytest.mark.parametrize(
    ("cargo_type", "score", "release", "hold", "caption"),
    [
        ("bulk_ore", 0.499804, 0.5, 0.8, "score 0.4998 < 0.500 applied (the policy's thresholds: release "
         "0.500, hold 0.800)"),
        ("bulk_ore", 0.799804, 0.5, 0.8, "score 0.7998 ≥ 0.500 applied (the policy's thresholds: release "
         "0.500, hold 0.800)"),
        ("vacuum_pack", 0.0096, 0.0097, 0.096, "score 0.00960 < 0.00970 applied (the policy's thresholds: "
         "release 0.00970, hold 0.900 [model's own 0.0960])"),
    ],
)  # fmt: skip
def test_a_score_near_a_threshold_is_written_apart_from_it(
    make_client, audit_store, cargo_type, score, release, hold, caption
) -> None:
    """Scores and thresholds were written with three decimals: a score of 0.499804 under a release
    cut of 0.5 read "score 0.500 < 0.500 applied", one of 0.799804 not held by a hold of 0.8 read
    "score 0.800" beside "hold 0.800", and a vacuum pack's cut of 0.0097 read "0.010 < 0.010"."""
    from pipeline.decide import decide_shipment
    from pipeline.policy import default_policy_path, load_policy
    from pipeline.verdicts import Declaration, ImageVerdict

    image = ImageVerdict(
        path="/archive/near.png", sha256="ab" * 32, cargo_type=cargo_type, score=score,
        threshold=release, hold_threshold=hold, model_id=f"{cargo_type}-lite0-00000003",
    )  # fmt: skip
    decision = decide_shipment(
        load_policy(default_policy_path()),
        Declaration(shipment_id="SHP-NEAR-1", cargo_type=cargo_type),
        [image],
        audit_key=b"batch-audit-secret-of-the-port",
    )
    audit_store.record(decision)
    client = make_client()
    _signed_in(client)
    shown = _captions(client.get("/review", params={"shipment": "SHP-NEAR-1"}).text)[0]
    assert shown.startswith(f"near.png {caption}")


def test_an_older_policys_decision_shows_only_the_threshold_it_recorded(
    make_client, audit_store, tmp_path
) -> None:
    """Decided under another policy (vacuum_pack hold 0.95), shown by a service running the example
    policy (hold 0.9): today's hold is not what decided, so it is not shown as applied."""
    from pipeline.decide import decide_shipment
    from pipeline.policy import default_policy_path, load_policy
    from pipeline.verdicts import Declaration

    text = Path(default_policy_path()).read_text(encoding="utf-8")
    older = tmp_path / "older.yaml"
    older.write_text(
        text.replace("hold_threshold: 0.9\n", "hold_threshold: 0.95\n").replace(
            'policy_version: "', 'policy_version: "older-'
        ),
        encoding="utf-8",
    )
    policy = load_policy(older)
    assert policy.cargo_types["vacuum_pack"].hold_threshold == 0.95
    for shipment, score in (("SHP-PACK-10", 0.5), ("SHP-PACK-11", 0.97)):
        decision = decide_shipment(
            policy,
            Declaration(shipment_id=shipment, cargo_type="vacuum_pack"),
            [_pack(score)],
            audit_key=b"batch-audit-secret-of-the-port",
        )
        audit_store.record(decision)
    client = make_client()
    _signed_in(client)
    below, over = (
        _captions(client.get("/review", params={"shipment": s}).text)[0]
        for s in ("SHP-PACK-10", "SHP-PACK-11")
    )
    told = f"; decided under policy {policy.version}, not the one this service runs)"
    assert below.startswith(
        "pack-9.png score 0.500 ≥ 0.0100 applied (the policy's thresholds: release 0.0100, "
        "hold not known here [model's own 0.0960]" + told
    )
    assert over.startswith(
        "pack-9.png score 0.9700 ≥ 0.9500 applied (the policy's thresholds: release not known here "
        "[model's own 0.0100], hold 0.9500 [model's own 0.0960]" + told
    )


def test_a_decision_older_code_judged_otherwise_under_this_policy_shows_only_its_recorded_threshold(
    make_client, audit_store
) -> None:
    """Same policy (same sha256), older decision code: before 28bcc9f an ore picture (ore model
    0.3 / 0.6) in a shipment declared as packs met only the packs' rules (hold 0.9), and 0.8 was
    recorded as a score.review over 0.3. Today's code holds it at the ore model's 0.6: the recorded
    release 0.3 was found again, and the page said 'hold 0.600' applied to a decision whose hold was
    0.9. The record is made today and its score reason set to what the older code wrote."""
    from pipeline.decide import decide_shipment
    from pipeline.policy import default_policy_path, load_policy
    from pipeline.verdicts import Declaration, ImageVerdict, Tier

    policy = load_policy(default_policy_path())
    ore = ImageVerdict(
        path="ore-1.png", sha256="ab" * 32, cargo_type="bulk_ore", score=0.8,
        threshold=0.3, hold_threshold=0.6, model_id="bulk_ore-lite0-00000000",
    )  # fmt: skip
    today = decide_shipment(
        policy,
        Declaration(shipment_id="SHP-OLD-ORE", cargo_type="vacuum_pack"),
        [ore],
        audit_key=b"batch-audit-secret-of-the-port",
    )
    assert [(r.rule, r.threshold) for r in today.reasons if r.rule.startswith("score.")] == [
        ("score.hold", 0.6)
    ]
    older = [
        r.model_copy(
            update={
                "rule": "score.review",
                "tier": Tier.REMOTE_INSPECTION,
                "threshold": 0.3,
                "message": "score 0.8000 >= release threshold 0.3000",
            }
        )
        if r.rule.startswith("score.")
        else r
        for r in today.reasons
    ]
    audit_store.record(today.model_copy(update={"tier": Tier.REMOTE_INSPECTION, "reasons": older}))
    client = make_client()
    _signed_in(client)
    caption = _captions(client.get("/review", params={"shipment": "SHP-OLD-ORE"}).text)[0]
    assert caption.startswith(
        "ore-1.png score 0.800 ≥ 0.300 applied (the policy's thresholds: release 0.300, "
        "hold not known here [model's own 0.600])"
    )


def _shown(page: str) -> list[str]:
    return re.findall(r'data-shipment="([^"]+)"', page)


def _older(page: str) -> str:
    return html.unescape(re.search(r'<a href="([^"]+)">Older shipments', page).group(1))


def test_paging_the_pending_queue_skips_none_while_outcomes_are_recorded(
    make_client, either_audit_store
) -> None:
    """The next page was the next 50 past the first by offset: an outcome recorded meanwhile took
    a shipment off the first page, and as many on the second moved up out of sight."""
    from serve_fakes import batch_hold

    store = either_audit_store
    for i in range(1, 56):
        store.record(batch_hold(f"SHP-{i:03d}"))
    client = make_client(audit=store)
    _signed_in(client)
    first = client.get("/review").text
    seen = _shown(first)
    assert len(seen) == 50 and seen[0] == "SHP-055"
    for shipment in seen[:5]:  # another officer, meanwhile
        store.record_outcome(
            shipment, found=None, officer="officer:bbbbbbbbbbbb", decision_seq=store.get(shipment).seq
        )
    second = client.get(_older(first)).text
    assert _shown(second) == ["SHP-005", "SHP-004", "SHP-003", "SHP-002", "SHP-001"]
    assert "5 shipments decided before record 6, newest first" in second
    assert (
        "Older shipments" not in second
        and '<a href="/review?show=pending">&larr; Newest shipments</a>' in second
    )
    everything = client.get("/review", params={"show": "all"}).text
    assert _older(everything) == "/review?show=all&before=6"
    past = client.get("/review", params={"before": 1}).text
    assert "No more shipments decided before record 1." in past


def _unread(page: str) -> list[str]:
    return [
        html.unescape(n)
        for n in re.findall(r'<p class="notice stale" role="alert">(Not understood: .*?)</p>', page)
    ]


_NO_BOUND = "(accepted: a record number from 1 to 9223372036854775807); the newest shipments are shown."
_NO_ID = "(accepted: an id of at most 128 characters, without control characters); the queue is shown."


@pytest.mark.parametrize(
    ("query", "said"),
    [
        ({"before": "0"}, f"before='0' {_NO_BOUND}"),
        ({"before": "-3"}, f"before='-3' {_NO_BOUND}"),
        ({"before": "x"}, f"before='x' {_NO_BOUND}"),
        ({"before": "9223372036854775808"}, f"before='9223372036854775808' {_NO_BOUND}"),
        ({"show": "held"}, "show='held' (accepted: pending, all); the pending queue is shown."),
        ({"shipment": "S" * 129}, f"shipment='{'S' * 40}'… {_NO_ID}"),
        ({"shipment": "a\x00b"}, f"shipment='a\\x00b' {_NO_ID}"),  # PostgreSQL holds no NUL
    ],
)
def test_a_query_value_not_understood_is_named_on_the_page(make_client, audit_store, query, said) -> None:
    """A link or a bookmark with ?before=0 or ?show=held was answered with a raw problem+json 422
    an officer cannot read: the page is shown, the value named in a notice and left out."""
    from serve_fakes import batch_hold

    audit_store.record(batch_hold("SHP-QUEUED"))
    client = make_client()
    _signed_in(client)
    page = client.get("/review", params=query)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert _unread(page.text) == [f"Not understood: {said}"]
    assert 'data-shipment="SHP-QUEUED"' in page.text  # the queue, as without the value
    assert _unread(client.get("/review", params={"before": "", "show": ""}).text) == []  # none given


@pytest.mark.parametrize("typed", ["SHP-1\t", "\tSHP-1", " SHP-1\n"])
def test_a_search_with_a_pasted_tab_or_line_break_finds_the_shipment(make_client, audit_store, typed) -> None:
    """A shipment id pasted with a tab or line break at its end was refused (422 problem+json) by the
    query's pattern, before the search took the edge spaces off."""
    from serve_fakes import batch_hold

    audit_store.record(batch_hold("SHP-1"))
    client = make_client()
    _signed_in(client)
    page = client.get("/review", params={"shipment": typed})
    assert page.status_code == 200, page.text[:300]
    assert 'data-shipment="SHP-1"' in page.text and _unread(page.text) == []
    assert "Shipment <strong><bdi>SHP-1</bdi></strong>, its latest decision" in page.text


def _form(page: str, shipment: str) -> dict[str, str]:
    card = re.search(rf'data-shipment="{re.escape(shipment)}">(.*?)</article>', page, re.S).group(1)
    return {k: html.unescape(v) for k, v in re.findall(r'name="(\w+)" value="([^"]*)"', card)}


@pytest.mark.parametrize(
    "shipment",
    [
        "SHP-1",
        "SHP/2026/1",  # as a batch names one
        "SHP 9 ",  # edge spaces, as a batch row may have
    ],
)
def test_a_form_not_recorded_comes_back_to_its_shipment(make_client, audit_store, shipment) -> None:
    """A form posted twice (the back button, or two officers on one shipment) said 'Look at it again
    below' on the pending queue, which no longer lists a shipment with an outcome: the officer saw
    neither the shipment nor the outcome recorded. The post is answered with the shipment's page."""
    from serve_fakes import batch_hold

    audit_store.record(batch_hold(shipment))
    client = make_client()
    _signed_in(client)
    form = {**_form(client.get("/review").text, shipment), "found": "clean", "notes": "ok"}
    first = client.post("/review/outcome", data=form, follow_redirects=False)
    assert first.headers["location"].startswith("/review?recorded=")
    again = client.post("/review/outcome", data=form, follow_redirects=False)
    assert (again.status_code, "location" in again.headers) == (409, False)
    assert f"Not recorded: shipment <strong><bdi>{html.escape(shipment)}</bdi></strong> changed" in again.text
    assert (
        f'data-shipment="{html.escape(shipment)}"' in again.text
        and "Outcome: <strong><bdi>clean</bdi></strong>" in again.text
    )


def _chosen(page: str, shipment: str) -> list[str]:
    """The findings preselected in a shipment's form."""
    card = re.search(rf'data-shipment="{re.escape(shipment)}">(.*?)</article>', page, re.S).group(1)
    return re.findall(r'<option value="([^"]*)" selected>', card)


@pytest.mark.parametrize("path", ["/review/outcome", "/review/shipments/SHP-A/outcome"])
def test_a_finding_made_on_a_decision_since_superseded_is_not_offered_as_an_amendment(
    make_client, audit_store, path: str
) -> None:
    """The form was for decision 1; decision 2 was recorded and another officer judged it clean. The
    page offered the late finding as an amendment of decision 2, which nobody with that finding had
    looked at: following it records an outcome on a decision nobody inspected."""
    from serve_fakes import batch_hold

    audit_store.record(batch_hold("SHP-A"))
    client = make_client()
    _signed_in(client)
    form = _form(client.get("/review").text, "SHP-A")
    assert form["decision_seq"] == "1"
    audit_store.record(batch_hold("SHP-A").model_copy(update={"policy_version": "p2"}))
    audit_store.record_outcome("SHP-A", found=None, officer="officer:other", decision_seq=2)
    late = client.post(path, data={**form, "found": "unknown", "notes": "knife, bag 3"})
    assert late.status_code == 409, late.text[:300]
    shown = " ".join(late.text.split())
    assert (
        "Yours, not recorded: found <strong><bdi>unknown</bdi></strong> &mdash; <bdi>knife, bag 3</bdi>"
        in shown
    )
    assert "Your form was for decision 1; the shipment was decided again since (decision 2)" in shown
    assert "amendment" not in shown and "--amend" not in shown
    assert audit_store.get("SHP-A").outcome.found is None


@pytest.mark.parametrize("path", ["/review/outcome", "/review/shipments/SHP-S/outcome"])
def test_a_form_posted_after_its_shipment_changed_comes_back_with_what_was_typed(
    make_client, audit_store, path
) -> None:
    """A decision landed between the page's load and the post: the form was redirected to
    ``/review?stale=...`` and the finding chosen and the notes typed were lost, to type again. The
    post is answered with the shipment's page itself (409), its notice as before, and the shipment's
    form as it is now (its latest decision's) holding them; never through a URL. Nothing recorded.
    Where another officer's outcome came first there is no form: the notes are shown, not recorded."""
    from serve_fakes import batch_hold

    audit_store.record(batch_hold("SHP-S"))
    client = make_client()
    _signed_in(client)
    typed = "knife in the third bag, photographed; seal 4471"
    form = {**_form(client.get("/review").text, "SHP-S"), "found": "unknown", "notes": typed}
    assert form["decision_seq"] == "1"
    decided = audit_store.record(batch_hold("SHP-S").model_copy(update={"policy_version": "p2"}))
    assert decided.seq == 2  # decided again meanwhile, under another policy
    response = client.post(path, data=form)  # redirects followed, as a browser does
    sent = [str(r.request.url) for r in (*response.history, response)]
    assert [url for url in sent if "4471" in url] == [], sent
    assert (response.status_code, "location" in response.headers) == (409, False), response.text[:300]
    assert audit_store.get("SHP-S").outcome is None
    (notice,) = re.findall(r'<p class="notice stale" role="alert">(.*?)</p>', response.text, re.S)
    assert notice.startswith(
        "Not recorded: shipment <strong><bdi>SHP-S</bdi></strong> changed after this page"
    )
    again = _form(response.text, "SHP-S")
    assert (again["decision_seq"], again["notes"]) == ("2", typed)
    assert "searched" not in again  # posted from the queue: it goes back there once recorded
    assert _chosen(response.text, "SHP-S") == ["unknown"]
    recorded = client.post("/review/outcome", data={**again, "found": "unknown"}, follow_redirects=False)
    assert recorded.headers["location"].startswith("/review?recorded=SHP-S"), recorded.text[:300]
    outcome = audit_store.get("SHP-S").outcome
    assert (outcome.found, outcome.notes, outcome.decision_seq) == ("unknown", typed, 2)
    # a second tab's form, another officer's outcome first: the outcome shown, the notes with it
    late = client.post(path, data={**again, "found": "clean", "notes": "nothing, seal 4471 intact"})
    assert (
        late.status_code == 409
        and "Not recorded: shipment <strong><bdi>SHP-S</bdi></strong> changed" in late.text
    )
    assert "Outcome: <strong><bdi>unknown</bdi></strong>" in late.text
    shown = " ".join(late.text.split())
    # the finding chosen is shown with the notes (only the notes were: an officer who found something
    # saw no sign of it under another's outcome), and where it differs, how to correct the one recorded
    assert (
        "Yours, not recorded: found <strong><bdi>clean</bdi></strong> &mdash; <bdi>nothing, seal 4471 "
        "intact</bdi>"
    ) in shown
    assert (
        "It differs from the outcome recorded: to correct it, record yours as an amendment of decision 2"
        in shown
    )
    assert audit_store.get("SHP-S").outcome.notes == typed


def test_a_declared_value_cannot_reorder_the_review_page_even_in_a_record_from_before(
    make_client, audit_store
) -> None:
    """A trader id "\\u202e24-T" read as T-42, a trusted trader's: such text is refused now, but a
    record decided before keeps it (and stays readable), and the page isolates every declared value."""
    from serve_fakes import batch_hold

    from pipeline.verdicts import Declaration

    declared = Declaration.model_construct(
        shipment_id="SHP-RLO", cargo_type="bulk_ore", trader_id="\u202e24-T", extra={"origin": "\u202eNC"}
    )  # as a version that took any character recorded it
    audit_store.record(batch_hold("SHP-RLO").model_copy(update={"declaration": declared}))
    assert audit_store.get("SHP-RLO").decision.declaration.trader_id == "\u202e24-T"
    client = make_client()
    _signed_in(client)
    page = client.get("/review", params={"shipment": "SHP-RLO"}).text
    (listed,) = re.findall(r"<dl>(.*?)</dl>", page, re.S)
    values = re.findall(r"<dd>(.*?)</dd>", listed, re.S)
    assert "<dd><bdi>\u202e24-T</bdi></dd>" in listed
    assert values and all(v.startswith("<bdi>") and v.endswith("</bdi>") for v in values), values
    assert "<h2><bdi>SHP-RLO</bdi></h2>" in page


def test_a_cargo_type_recorded_before_the_character_rule_cannot_reorder_the_meta_line(
    make_client, audit_store
) -> None:
    """The header's meta line printed the cargo type bare: "\\u202ebulk_ore", recorded before the
    rule, reversed the decided date and seq after it. The cargo type, policy version, model ids and
    submitter are each isolated, as the declared values are."""
    from serve_fakes import batch_hold

    recorded = batch_hold("SHP-RLO").model_copy(
        update={
            "cargo_type": "\u202ebulk_ore",
            "policy_version": "p\u202e1",
            "model_ids": ["\u202eore-m1", "ore-m2"],
            "submitted_by": "submitter:\u202ex",
        }
    )  # as a version that took any character recorded it
    audit_store.record(recorded)
    client = make_client()
    _signed_in(client)
    page = client.get("/review", params={"shipment": "SHP-RLO"}).text
    (meta,) = re.findall(r'<span class="meta">(.*?)</span>', page, re.S)
    assert meta.startswith("<bdi>\u202ebulk_ore</bdi> &middot; decided "), meta
    assert "policy <bdi>p\u202e1</bdi> &middot; model <bdi>\u202eore-m1</bdi>, <bdi>ore-m2</bdi>" in meta
    assert "sent by <bdi>submitter:\u202ex</bdi>" in meta
    assert re.sub(r"<bdi>.*?</bdi>", "", meta).count("\u202e") == 0


def test_an_outcome_recorded_before_the_character_rule_cannot_reorder_the_review_page(
    make_client, audit_store, monkeypatch
) -> None:
    """The recorded outcome's finding, officer and notes were shown bare: notes "\\u202e3 dloh" recorded
    before the rule reversed the rest of the line. Each is isolated, as the declared values are."""
    from serve_fakes import batch_hold

    import pipeline.audit.store as store_module

    audit_store.record(batch_hold("SHP-RLO"))
    with monkeypatch.context() as before:  # as a version without the outcome's rule recorded it
        before.setattr(store_module, "check_outcome", lambda *args: None)
        audit_store.record_outcome(
            "SHP-RLO", found="wet_\u202epatch", officer="o-\u202e1", notes="\u202e3 dloh"
        )
    client = make_client()
    _signed_in(client)
    page = client.get("/review", params={"shipment": "SHP-RLO"}).text
    (recorded,) = re.findall(r'<p class="recorded">(.*?)</p>', page, re.S)
    assert recorded.startswith("Outcome: <strong><bdi>wet_\u202epatch</bdi></strong> by <bdi>o-\u202e1</bdi>")
    assert recorded.rstrip().endswith("&mdash; <bdi>\u202e3 dloh</bdi>"), recorded
    assert re.sub(r"<bdi>.*?</bdi>", "", recorded).count("\u202e") == 0


class _TextNodes(HTMLParser):
    """Each text of a page with the element it lies in, innermost last."""

    def __init__(self) -> None:
        super().__init__()
        self.open: list[str] = []
        self.texts: list[tuple[tuple[str, ...], str]] = []

    def handle_starttag(self, tag: str, attrs: object) -> None:
        if tag not in ("img", "input", "br", "meta", "link"):  # void elements close themselves
            self.open.append(tag)

    def handle_endtag(self, tag: str) -> None:
        while self.open and self.open.pop() != tag:
            pass

    def handle_data(self, data: str) -> None:
        self.texts.append((tuple(self.open), data))


def test_a_picture_name_recorded_by_a_batch_cannot_reorder_the_review_page(make_client, audit_store) -> None:
    """A batch run records its rows' file names as they are: "\\u202egnp.1-nacs" printed bare in the
    reasons, the caption, the download link and the near-copy label reversed the score, the reason
    and the words after it; a batch's shipment id likewise in the notices. Each is isolated (<bdi>),
    as the declared values are."""
    rng = np.random.default_rng(3)
    photo = cv2.GaussianBlur(rng.integers(0, 255, (64, 96, 3)).astype(np.uint8), (9, 9), 0)
    client = make_client()
    for shipment, name, data, kind in (
        ("SHP-FIRST", "a.png", cv2.imencode(".png", photo)[1].tobytes(), "image/png"),
        ("SHP-AGAIN", "b.jpg", cv2.imencode(".jpg", photo, [cv2.IMWRITE_JPEG_QUALITY, 60])[1].tobytes(),
         "image/jpeg"),
    ):  # fmt: skip
        declaration = json.dumps({"shipment_id": shipment, "cargo_type": "bulk_ore"})
        sent = client.post(
            "/v1/shipments", files=[("images", (name, data, kind))], data={"declaration": declaration},
            headers=auth(ADMIN_KEY),
        )  # fmt: skip
        assert sent.status_code == 200, sent.text
    again = audit_store.get("SHP-AGAIN").decision
    assert again.images[0].similar_in == ["SHP-FIRST"]
    named = "/batch/\u202egnp.1-nacs"
    audit_store.record(
        again.model_copy(
            update={
                "shipment_id": "\u202eSHP-RLO",
                "images": [i.model_copy(update={"path": named}) for i in again.images],
                "reasons": [
                    r.model_copy(update={"image": named if r.image else None}) for r in again.reasons
                ],
            }
        )
    )  # as a batch run records a row's file name
    _signed_in(client)
    parser = _TextNodes()
    parser.feed(client.get("/review", params={"shipment": "\u202eSHP-RLO"}).text)
    shown = [(where, text) for where, text in parser.texts if "\u202e" in text]
    assert all(where[-1] == "bdi" for where, _ in shown), shown
    # two reasons (its score, the near-copy), the download link, the caption, the near-copy label;
    # the shipment's id (a batch's may hold any character) in the heading and the search's notice
    assert sorted(text for _, text in shown) == ["\u202eSHP-RLO"] * 2 + ["\u202egnp.1-nacs"] * 5


@pytest.mark.parametrize(
    ("path", "repeated"),
    [
        ("/review/outcome", {"found": ["foreign_object", "clean"]}),
        ("/review/outcome", {"notes": ["scrap cable", ""]}),
        ("/review/outcome", {"shipment_id": ["SHP-F", "SHP-G"]}),
        ("/review/shipments/SHP-F/outcome", {"found": ["foreign_object", "clean"]}),
    ],
)
def test_an_outcome_form_giving_a_field_twice_is_refused(make_client, audit_store, path, repeated) -> None:
    """FastAPI read the last copy: found=foreign_object&found=clean was recorded clean, lifting the
    hold, where the JSON routes refuse a key given twice."""
    client = make_client()
    declaration = json.dumps({"shipment_id": "SHP-F", "cargo_type": "bulk_ore"})
    files = [("images", ("hot.png", png_bytes(245), "image/png"))]
    client.post("/v1/shipments", files=files, data={"declaration": declaration}, headers=auth(ADMIN_KEY))
    assert audit_store.get("SHP-F").decision.tier.value == "PHYSICAL_INSPECTION"
    _signed_in(client)
    form = {**_form(client.get("/review").text, "SHP-F"), "found": "foreign_object", **repeated}
    response = client.post(path, data=form, follow_redirects=False)
    assert response.status_code == 422, response.text[:300]
    name, copies = next(iter(repeated.items()))
    assert response.json()["type"] == "https://clearsight.dev/problems/bad-input"
    assert response.json()["detail"] == f"form field {name!r} was sent {len(copies)} times; send it once"
    assert audit_store.get("SHP-F").outcome is None  # the hold stands
    once = {k: v[0] if isinstance(v, list) else v for k, v in form.items()}
    assert client.post(path, data=once, follow_redirects=False).status_code == 303
    assert audit_store.get("SHP-F").outcome.found == "foreign_object"


@pytest.mark.parametrize("path", ["/review/outcome", "/review/shipments/SHP-F/outcome"])
def test_an_outcome_form_never_records_a_synthetic_class(make_client, audit_store, path) -> None:
    """The outcome's schema refuses a name training keeps for its synthetic classes: the form's field
    refuses it too (a 422 naming it), not a server error where the form is turned into an outcome."""
    client = make_client()
    declaration = json.dumps({"shipment_id": "SHP-F", "cargo_type": "bulk_ore"})
    files = [("images", ("hot.png", png_bytes(245), "image/png"))]
    client.post("/v1/shipments", files=files, data={"declaration": declaration}, headers=auth(ADMIN_KEY))
    _signed_in(client)
    form = {**_form(client.get("/review").text, "SHP-F"), "found": "synthetic_noise"}
    response = client.post(path, data=form, follow_redirects=False)
    assert response.status_code == 422, response.text[:300]
    assert [error["loc"] for error in response.json()["errors"]] == ["body.found"]
    assert "found 'synthetic_noise' is not a type name" in response.json()["detail"]
    assert audit_store.get("SHP-F").outcome is None


@pytest.mark.parametrize("path", ["/review/outcome", "/review/shipments/SHP-F/outcome"])
def test_an_outcome_form_s_notes_are_held_to_the_character_rule(
    make_client, audit_store, path, caplog
) -> None:
    """The form's notes took any character but half a one: a bidi override was recorded for good.
    Refused, then, as a field: the officer got a bare problem+json page, lost the notes typed and
    could not see the character (a zero-width space pasted with them). Then the form was sent back
    to the shipment by a redirect whose URL carried the notes: inspection notes in every log and
    proxy that writes request lines, in the browser's history, and lost past 12,000 encoded
    characters. Now the post is answered with the shipment's page itself (422), whose notice names
    the character and where it is, with the notes without it in the form to record again; nothing
    is recorded and no URL holds the notes. A line break, free text's, and the joiners are taken."""
    import logging

    from serve_fakes import batch_hold

    audit_store.record(batch_hold("SHP-F"))
    client = make_client()
    _signed_in(client)
    typed = "scrap cable in bay 3, seal\u200b 4471 broken \u202e3 dloh"
    form = {**_form(client.get("/review").text, "SHP-F"), "found": "clean", "notes": typed}
    with caplog.at_level(logging.INFO, logger="clearsight.serve.access"):
        response = client.post(path, data=form)  # redirects followed, as a browser does
    # every request line the browser sent (what uvicorn's or a proxy's access log writes, what the
    # history keeps) and every line the app logged: none holds a word of the notes
    sent = [str(r.request.url) for r in (*response.history, response)]
    assert [url for url in sent if "4471" in url] == [], sent
    assert "location" not in response.headers
    logged = [json.dumps(vars(r), default=str) for r in caplog.records]
    assert logged and [line for line in logged if "4471" in line] == []
    assert response.status_code == 422, response.text[:300]
    assert audit_store.get("SHP-F").outcome is None  # the hold stands
    (notice,) = re.findall(r'<p class="notice stale" role="alert">(.*?)</p>', response.text, re.S)
    assert notice == (
        "Not recorded: the notes for shipment <strong><bdi>SHP-F</bdi></strong> hold U+200B (ZERO WIDTH "
        "SPACE) at character 27, which does not show as itself (pasted text often brings one along). "
        "It and 1 other such character have been removed from the notes below: check them, and record "
        "the outcome again."
    )
    kept = "scrap cable in bay 3, seal 4471 broken 3 dloh"
    again = _form(response.text, "SHP-F")
    assert again["notes"] == kept and "searched" not in again  # posted from the queue, back there
    assert _chosen(response.text, "SHP-F") == ["clean"]  # the finding chosen with them
    # notes past what a URL could carry come back too
    long_notes = "\u4e2d" * 1999 + "\u200b"
    refused = client.post(path, data={**form, "notes": long_notes}, follow_redirects=False)
    assert refused.status_code == 422 and _form(refused.text, "SHP-F")["notes"] == "\u4e2d" * 1999
    assert audit_store.get("SHP-F").outcome is None
    persian = "\u0633\u06cc\u0645 \u0645\u06cc\u200c\u0634\u0648\u062f"  # a joiner: taken
    taken = client.post(path, data={**again, "found": "clean", "notes": persian}, follow_redirects=False)
    assert taken.headers["location"].startswith("/review?recorded=SHP-F"), taken.headers["location"]
    assert audit_store.get("SHP-F").outcome.notes == persian


def _notice_texts(page: str) -> list[str]:
    """Each notice of the page, its markup gone and its spaces folded."""
    found = re.findall(r'<p class="notice[^"]*" role="(?:status|alert)">(.*?)</p>', page, re.S)
    return [" ".join(html.unescape(re.sub(r"<[^>]+>", "", n)).split()) for n in found]


@pytest.mark.parametrize("path", ["/review/outcome", "/review/shipments/SHP-R/outcome"])
def test_refused_notes_on_a_shipment_changed_meanwhile_are_answered_as_stale(
    make_client, audit_store, path
) -> None:
    """The notes' characters were checked before the shipment: a form for decision 1 holding a
    zero-width space, posted after the shipment was decided again, was answered 422 with decision
    2's form, no word of the change, and the notes typed for decision 1 in it, so that posting it
    again recorded an outcome on decision 2, which nobody inspected. After another officer's outcome
    the notice said the character was "removed from the notes below", with no form below. The
    shipment is checked first: a changed one is answered 409 with the stale notice, and the refused
    character is named only where the shipment's form is there to take the notes again."""
    from serve_fakes import batch_hold

    audit_store.record(batch_hold("SHP-R"))
    client = make_client()
    _signed_in(client)
    form = {**_form(client.get("/review").text, "SHP-R"), "found": "clean"}
    assert form["decision_seq"] == "1"
    audit_store.record(batch_hold("SHP-R").model_copy(update={"policy_version": "p2"}))
    response = client.post(path, data={**form, "notes": "seal\u200b ok, bay 3"}, follow_redirects=False)
    assert (response.status_code, "location" in response.headers) == (409, False), response.text[:300]
    notices = _notice_texts(response.text)
    changed = [k for k, n in enumerate(notices) if n.startswith("Not recorded: shipment SHP-R changed")]
    named = [k for k, n in enumerate(notices) if "U+200B (ZERO WIDTH SPACE) at character 5" in n]
    assert len(changed) == len(named) == 1 and changed < named, notices  # the change said first
    again = _form(response.text, "SHP-R")
    assert (again["decision_seq"], again["notes"]) == ("2", "seal ok, bay 3")
    assert audit_store.get("SHP-R").outcome is None
    # another officer's outcome on decision 2 first: no form, so no word of notes "below" to fix
    audit_store.record_outcome("SHP-R", found=None, officer="officer:other", decision_seq=2)
    typed = {**again, "found": "clean", "notes": "cable in hold 3\u200b, photo 12"}
    late = client.post(path, data=typed, follow_redirects=False)
    assert late.status_code == 409, late.text[:300]
    notices = _notice_texts(late.text)
    assert [n for n in notices if n.startswith("Not recorded: shipment SHP-R changed")], notices
    assert [n for n in notices if "U+200B" in n] == [], notices
    shown = " ".join(late.text.split())
    assert "outcome-form" not in late.text and "&mdash; <bdi>cable in hold 3" in shown
    assert "Yours, not recorded: found <strong><bdi>clean</bdi></strong>" in shown
    assert "It differs from the outcome recorded" not in shown  # clean, as the outcome recorded
    assert audit_store.get("SHP-R").outcome.officer == "officer:other"


def test_a_form_not_recorded_keeps_the_queue_page_it_was_posted_from(make_client, audit_store) -> None:
    """A form answered with its shipment's page (refused notes, 422; its shipment changed, 409) came
    back as if the shipment had been searched for: posted from the second page of "All held", its
    form then carried ``searched``, and once recorded the officer landed on that shipment alone, the
    queue page lost. The form carries where it came from (``show``, ``before``), the answer keeps
    it, and recording goes back to that page, as the "Back to the queue" link does."""
    from serve_fakes import batch_hold

    for i in range(55):
        audit_store.record(batch_hold(f"SHP-{i:03d}"))
    client = make_client()
    _signed_in(client)
    first = client.get("/review", params={"show": "all"}).text
    older = html.unescape(re.search(r'href="(/review\?show=all&amp;before=\d+)"', first).group(1))
    before = older.rsplit("=", 1)[1]
    form = {**_form(client.get(older).text, "SHP-002"), "found": "clean"}
    assert (form["show"], form["before"], "searched" in form) == ("all", before, False)
    refused = client.post("/review/outcome", data={**form, "notes": "x\u200b"}, follow_redirects=False)
    assert refused.status_code == 422, refused.text[:300]
    again = _form(refused.text, "SHP-002")
    assert (again["show"], again["before"], "searched" in again) == ("all", before, False)
    assert f'<a href="/review?show=all&amp;before={before}">Back to the queue</a>' in refused.text
    # another shipment decided again meanwhile: the 409 keeps the queue page too
    other = {**_form(client.get(older).text, "SHP-003"), "found": "clean", "notes": "seal ok"}
    audit_store.record(batch_hold("SHP-003").model_copy(update={"policy_version": "p2"}))
    changed = client.post("/review/outcome", data=other, follow_redirects=False)
    assert changed.status_code == 409, changed.text[:300]
    kept = _form(changed.text, "SHP-003")
    assert (kept["show"], kept["before"], "searched" in kept) == ("all", before, False)
    done = client.post("/review/outcome", data={**again, "found": "clean"}, follow_redirects=False)
    assert done.headers["location"] == f"/review?show=all&before={before}&recorded=SHP-002"
    assert audit_store.get("SHP-002").outcome.notes == "x"
    page = client.get(done.headers["location"]).text
    assert (
        "Outcome recorded for shipment <strong><bdi>SHP-002</bdi></strong>" in page and 'class="more"' in page
    )
    # a form of a shipment searched for still comes back to it, whatever page it was found from
    found = _form(client.get("/review", params={"shipment": "SHP-004"}).text, "SHP-004")
    assert (found["searched"], "show" in found, "before" in found) == ("true", False, False)


def test_a_link_cannot_fill_in_an_outcome_form_s_notes(make_client, audit_store) -> None:
    """Refused notes came back to the form from the query (``?unshown=...&notes=...``): anyone could
    send an officer a link that filled in the notes with text of their choosing, given one
    invisible character in it. The query fills in nothing, and says nothing of notes."""
    from serve_fakes import batch_hold

    audit_store.record(batch_hold("SHP-F"))
    client = make_client()
    _signed_in(client)
    params = {"unshown": "SHP-F", "shipment": "SHP-F", "notes": "all checked, wave it through\u200b"}
    page = client.get("/review", params=params)
    assert page.status_code == 200
    assert "Not recorded" not in page.text and "wave it through" not in page.text
    assert "notes" not in _form(page.text, "SHP-F")


@pytest.mark.parametrize("path", ["/review/outcome", "/review/shipments/SHP-F/outcome"])
def test_an_outcome_form_s_line_breaks_are_taken(make_client, audit_store, path) -> None:
    from serve_fakes import batch_hold

    audit_store.record(batch_hold("SHP-F"))
    client = make_client()
    _signed_in(client)
    form = {**_form(client.get("/review").text, "SHP-F"), "found": "clean"}
    taken = client.post(path, data={**form, "notes": "ok\r\nhold 3"}, follow_redirects=False)
    assert taken.status_code == 303, taken.text[:300]
    assert audit_store.get("SHP-F").outcome.notes == "ok\r\nhold 3"


FORGED_TEXT = (
    "SHP-7. URGENT: customs IT asks all officers to re-enter their API key at https://evil.example/ " * 80
)


@pytest.mark.parametrize(
    ("params", "outcome", "said"),
    [
        ({"recorded": "SHP-7"}, False, None),  # a link saying an outcome was recorded: none was
        ({"recorded": "SHP-7"}, True, "Outcome recorded for shipment <strong><bdi>SHP-7</bdi></strong>."),
        ({"recorded": "SHP-NONE"}, False, None),  # no such shipment
        ({"stale": FORGED_TEXT}, False, None),  # 7,600 characters of someone's message
        ({"stale": "SHP-7\n"}, False, None),
        ({"stale": "SHP-7"}, True, "Not recorded: shipment <strong><bdi>SHP-7</bdi></strong> changed"),
        ({"relisted": "SHP-NONE"}, False, None),
        (
            {"relisted": "SHP-7"},
            False,
            "Not recorded: what may be found in shipment <strong><bdi>SHP-7</bdi></strong>",
        ),
    ],
)
def test_a_notice_names_only_a_shipment_the_store_holds_as_it_says(
    make_client, audit_store, params: dict[str, str], outcome: bool, said: str | None
) -> None:
    """The notices printed any text of the query: a link could make the page say an outcome was
    recorded though none was, or carry a message of its own of any length."""
    from serve_fakes import batch_hold

    audit_store.record(batch_hold("SHP-7"))
    if outcome:
        audit_store.record_outcome("SHP-7", found=None, officer="officer:bbbbbbbbbbbb", decision_seq=1)
    client = make_client()
    _signed_in(client)
    page = client.get("/review", params=params)
    assert page.status_code == 200
    notices = re.findall(r'<p class="notice[^"]*" role="(?:status|alert)">(.*?)</p>', page.text, re.S)
    assert notices == ([] if said is None else [notices[0]])
    if said is not None:
        assert said in notices[0]
    assert "evil.example" not in page.text


def test_a_review_page_runs_only_its_own_script_and_stylesheet(make_client) -> None:
    """Its Content-Security-Policy named frames, base and forms only: any script or style that ever
    got into a page would have run. Nothing on the page is inline, so the policy allows none."""
    client = make_client()
    declaration = json.dumps({"shipment_id": "SHP-CSP", "cargo_type": "bulk_ore"})
    files = [("images", ("hot.png", png_bytes(245), "image/png"))]
    client.post("/v1/shipments", files=files, data={"declaration": declaration}, headers=auth(ADMIN_KEY))
    login_page = client.get("/review")
    _signed_in(client)
    page = client.get("/review")
    for response in (login_page, page):
        policy = dict(
            part.strip().split(" ", 1) for part in response.headers["content-security-policy"].split(";")
        )
        assert policy == {
            "default-src": "'none'",
            "script-src": "'self'",
            "style-src": "'self'",
            "img-src": "'self'",
            "frame-ancestors": "'none'",
            "base-uri": "'none'",
            "form-action": "'self'",
        }
    assert 'class="heatmap-legend"' in page.text and 'class="heatmap"' in page.text
    assert re.findall(r"<script[^>]*>", page.text) == ['<script src="/static/review.js" defer>']
    assert re.findall(r"<style|\sstyle=|\son[a-z]+=|javascript:", page.text) == []


@pytest.mark.parametrize("path", ["/review/outcome", "/review/shipments/SHP-1/outcome"])
def test_an_outcome_form_without_a_session_is_sent_to_sign_in_before_its_fields_are_read(
    make_client, path
) -> None:
    """A form with a field out of bounds and no session got 422 about the field: the session is
    checked first now, as the page says when it has ended."""
    client = make_client()
    form = {"shipment_id": "SHP-1", "found": "clean", "csrf": "x", "decision_seq": "abc"}
    response = client.post(path, data=form)
    assert response.status_code == 401, response.text[:300]
    assert "Your session has ended" in response.text
