"""The officer review page in Debian's chromium (Playwright) against a real uvicorn server."""

from __future__ import annotations

import html
import json
import re
import zlib
from pathlib import Path

import cv2
import httpx
import numpy as np
import pytest
from serve_fakes import MEDIA_TYPES, OFFICER_KEY, PICTURES, SUBMITTER_KEY, auth, batch_hold, png_bytes

ROOT = Path(__file__).resolve().parents[2]


def _ore_png(value: int, seed: int) -> bytes:
    """A noisy grey 'ore' photo of mean brightness ~``value`` with one bright lump (hot in the heatmap),
    placed by ``seed``: photos of other cargo, not near-copies of one another."""
    rng = np.random.default_rng(seed)
    image = np.clip(rng.normal(value, 18, (64, 96, 3)), 0, 255).astype(np.uint8)
    top, left = rng.integers(0, 64 - 14), rng.integers(0, 96 - 16)
    image[top : top + 14, left : left + 16] = 255
    ok, buf = cv2.imencode(".png", image)
    assert ok
    return buf.tobytes()


def _submit(url: str, shipment_id: str, values: list[int], **declared) -> dict:
    declaration = json.dumps({"shipment_id": shipment_id, "cargo_type": "bulk_ore", **declared})
    seed = zlib.crc32(shipment_id.encode())
    files = [("images", (f"hold{i}.png", _ore_png(v, seed + i), "image/png")) for i, v in enumerate(values)]
    response = httpx.post(
        f"{url}/v1/shipments", files=files, data={"declaration": declaration}, headers=auth(SUBMITTER_KEY)
    )
    assert response.status_code == 200, response.text
    return response.json()


@pytest.mark.browser
@pytest.mark.slow
def test_officer_reviews_a_held_shipment(live_server, audit_store, chromium) -> None:
    from playwright.sync_api import expect

    server = live_server()
    held = _submit(server.url, "SHP-HOLD-7", [60, 235], trader_id="CN-TRADER-42")
    _submit(server.url, "SHP-CLEAN-1", [20])  # released: not in the queue
    _submit(server.url, "SHP-REVIEW-2", [140])
    assert held["tier"] == "PHYSICAL_INSPECTION"

    page = chromium.new_page(viewport={"width": 1366, "height": 900})
    page.goto(f"{server.url}/review")
    page.fill("#key", "wrong-key-123")
    page.click("#login-form button")
    assert page.locator("p.error").inner_text() == "Unknown key."
    page.fill("#key", OFFICER_KEY)
    page.click("#login-form button")

    cards = page.locator("article.shipment")
    # count() does not wait: the queue page may still be loading after the login click
    expect(cards).to_have_count(2)  # newest first; the released shipment is not queued
    assert [cards.nth(i).get_attribute("data-shipment") for i in range(2)] == [
        "SHP-REVIEW-2",
        "SHP-HOLD-7",
    ]
    card = page.locator("#shipment-SHP-HOLD-7")
    assert card.locator(".tier").inner_text() == "PHYSICAL INSPECTION"
    assert "score.hold" in card.locator(".reasons").inner_text()
    heatmaps = card.locator("img.heatmap")
    assert heatmaps.count() == 2
    # evaluate() does not wait for the image: on a loaded machine it may still be arriving
    heatmaps.nth(1).evaluate(
        "img => img.complete || new Promise(done => ['load', 'error'].forEach("
        "e => img.addEventListener(e, done, {once: true})))"
    )
    # The heatmap really loaded (a decoded image has a natural width), not a broken link.
    assert heatmaps.nth(1).evaluate("img => img.complete && img.naturalWidth") == 96
    caption = card.locator("figcaption").nth(1).inner_text()
    # the threshold the policy applied, then the model's own
    assert "\u2265 0.800 applied (the policy's thresholds: release 0.500, hold 0.800)" in caption
    assert "hold1.png: score " in card.locator(".reasons").inner_text()
    # the fake's one signal, its log-odds the logit of the score: positive for this bright image
    assert "model evidence: unlike the clean cargo it learned +" in caption

    cookie = next(c for c in page.context.cookies() if c["name"] == "clearsight_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert OFFICER_KEY not in cookie["value"]

    shots = ROOT / "tests" / "artifacts"
    shots.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(shots / "review_page.png"), full_page=True)

    card.locator("select[name=found]").select_option("foreign_object")
    card.locator("input[name=notes]").fill("scrap cable, bay 3")
    card.locator("button[type=submit]").click()
    page.wait_for_url("**/review?recorded=SHP-HOLD-7")
    assert "Outcome recorded for shipment SHP-HOLD-7" in page.locator("p.notice").inner_text()
    expect(page.locator("article.shipment")).to_have_count(1)  # only the other one is still pending

    outcome = audit_store.get("SHP-HOLD-7").outcome
    assert (outcome.found, outcome.notes) == ("foreign_object", "scrap cable, bay 3")
    assert outcome.officer.startswith("officer:")
    assert audit_store.verify().ok


@pytest.mark.browser
@pytest.mark.slow
def test_notes_refused_by_the_character_rule_come_back_in_the_page_not_a_url(
    live_server, audit_store, chromium
) -> None:
    """A zero-width space pasted into the notes: the post is answered with the shipment's page (422),
    naming it, the notes without it in the box; no URL the browser asks for or keeps holds them."""
    from playwright.sync_api import expect

    server = live_server()
    assert _submit(server.url, "SHP-ZW-1", [140])["tier"] == "REMOTE_INSPECTION"
    page = chromium.new_page(viewport={"width": 1366, "height": 900})
    asked: list[str] = []
    page.on("request", lambda request: asked.append(request.url))
    _sign_in(page, server.url)
    card = page.locator("#shipment-SHP-ZW-1")
    card.locator("select[name=found]").select_option("clean")
    card.locator("input[name=notes]").fill("seal\u200b 4471 intact")
    card.locator("button[type=submit]").click()
    expect(page.locator("p.notice.stale")).to_contain_text("U+200B (ZERO WIDTH SPACE) at character 5")
    assert page.url == f"{server.url}/review/outcome"
    assert [url for url in asked if "4471" in url] == []
    assert audit_store.get("SHP-ZW-1").outcome is None
    card = page.locator("#shipment-SHP-ZW-1")
    assert card.locator("input[name=notes]").input_value() == "seal 4471 intact"
    card.locator("select[name=found]").select_option("clean")
    card.locator("button[type=submit]").click()
    page.wait_for_url("**/review?recorded=SHP-ZW-1")  # back to the queue it was posted from
    assert audit_store.get("SHP-ZW-1").outcome.notes == "seal 4471 intact"


@pytest.mark.browser
@pytest.mark.slow
def test_a_form_posted_after_its_shipment_was_decided_again_comes_back_as_typed(
    live_server, audit_store, chromium
) -> None:
    """A decision landed between the page's load and the post: the officer was sent to the shipment
    by a redirect, the finding chosen and the notes typed lost. The post is answered with the
    shipment's page (409), its form on the new decision holding both; no URL holds the notes."""
    from playwright.sync_api import expect

    server = live_server()
    assert _submit(server.url, "SHP-ST-1", [140])["tier"] == "REMOTE_INSPECTION"
    page = chromium.new_page(viewport={"width": 1366, "height": 900})
    asked: list[str] = []
    page.on("request", lambda request: asked.append(request.url))
    _sign_in(page, server.url)
    card = page.locator("#shipment-SHP-ST-1")
    card.locator("select[name=found]").select_option("clean")
    typed = "seal 4471 intact, bay 2"
    card.locator("input[name=notes]").fill(typed)
    first = audit_store.get("SHP-ST-1")
    again = audit_store.record(first.decision.model_copy(update={"policy_version": "p2"}))
    assert again.seq > first.seq  # decided again meanwhile
    card.locator("button[type=submit]").click()
    expect(page.locator("p.notice.stale")).to_contain_text("SHP-ST-1 changed after this page was loaded")
    assert page.url == f"{server.url}/review/outcome"
    assert [url for url in asked if "4471" in url] == []
    assert audit_store.get("SHP-ST-1").outcome is None
    card = page.locator("#shipment-SHP-ST-1")
    assert card.locator("input[name=decision_seq]").get_attribute("value") == str(again.seq)
    assert card.locator("input[name=notes]").input_value() == typed
    assert card.locator("select[name=found]").input_value() == "clean"
    card.locator("button[type=submit]").click()
    page.wait_for_url("**/review?recorded=SHP-ST-1")  # back to the queue it was posted from
    outcome = audit_store.get("SHP-ST-1").outcome  # clean
    assert (outcome.found, outcome.notes, outcome.decision_seq) == (None, typed, again.seq)


@pytest.mark.browser
@pytest.mark.slow
def test_the_review_page_works_within_its_content_security_policy(live_server, chromium) -> None:
    """The policy allows the page's own script, stylesheet and images, nothing inline: the page must
    break none of it (the heatmap legend came with a style attribute)."""
    from playwright.sync_api import expect

    server = live_server()
    assert _submit(server.url, "SHP-CSP-1", [60, 235])["tier"] == "PHYSICAL_INSPECTION"
    page = chromium.new_page(viewport={"width": 1366, "height": 900})
    errors: list[str] = []
    asked: list[str] = []
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    page.on("dialog", lambda dialog: (asked.append(dialog.message), dialog.dismiss()))
    # injected by the browser's debugging protocol, outside the page's policy
    page.add_init_script(
        "document.addEventListener('securitypolicyviolation', e => (window.violations ||= [])"
        ".push(e.violatedDirective + ' ' + e.blockedURI))"
    )
    _sign_in(page, server.url)
    card = page.locator("#shipment-SHP-CSP-1")
    expect(card).to_have_count(1)
    for img in card.locator("img").all():  # the pictures and heatmaps, from this server
        img.evaluate(
            "img => img.complete || new Promise(done => ['load', 'error'].forEach("
            "e => img.addEventListener(e, done, {once: true})))"
        )
        assert img.evaluate("img => img.naturalWidth") == 96
    legend = page.locator("svg.heatmap-legend")
    assert legend.evaluate("svg => getComputedStyle(svg).width") == "420px"  # review.css applied
    card.locator("select[name=found]").select_option("clean")
    card.locator("button[type=submit]").click()  # review.js asks first, and is told no
    assert asked == ["Record this held shipment as clean?"]
    assert page.evaluate("window.violations || []") == []
    assert [e for e in errors if "Content Security Policy" in e] == []


_DRAWN = """img => new Promise(done => img.complete ? done()
    : ['load', 'error'].forEach(e => img.addEventListener(e, done, {once: true})))
  .then(() => {
    if (!img.naturalWidth) return null;
    const canvas = document.createElement('canvas');
    [canvas.width, canvas.height] = [img.naturalWidth, img.naturalHeight];
    const g = canvas.getContext('2d');
    g.drawImage(img, 0, 0);
    return [canvas.width, canvas.height, Array.from(g.getImageData(0, 0, canvas.width, canvas.height).data)];
  })"""
"""A picture as the browser draws it, read back through a canvas once loaded: [width, height, RGBA
values...], or null for a broken image."""


@pytest.mark.browser
@pytest.mark.slow
def test_every_accepted_picture_shows_upright_as_scored_and_downloads_as_received(
    live_server, chromium
) -> None:
    """A TIFF showed as a broken 0x0 image, a 12-bit X-ray in a 16-bit PNG nearly black, a WebP's
    EXIF orientation on its side: each picture now shows at its upright size with the pixels its
    heatmap is drawn over, and the upload as received is a download."""
    from datasets.decode import decode_image
    from pipeline.heatmap import display_png

    server = live_server()
    declaration = json.dumps({"shipment_id": "SHP-KINDS", "cargo_type": "bulk_ore"})
    files = [("images", (n, data, MEDIA_TYPES[n.rsplit(".", 1)[1]])) for n, data in PICTURES.items()]
    files.append(("images", ("bright.png", png_bytes(250), "image/png")))  # holds the shipment
    sent = httpx.post(
        f"{server.url}/v1/shipments",
        files=files,
        data={"declaration": declaration},
        headers=auth(SUBMITTER_KEY),
    )
    assert sent.json()["tier"] == "PHYSICAL_INSPECTION", sent.text
    page = chromium.new_page(viewport={"width": 1366, "height": 900})
    _sign_in(page, server.url)
    card = page.locator("#shipment-SHP-KINDS")
    for name, data in PICTURES.items():
        img = card.locator(f'img[alt="image {name}"]')
        img.scroll_into_view_if_needed()  # loading="lazy"
        shown = img.evaluate(_DRAWN)
        assert shown is not None, f"{name} shows as a broken image"
        width, height, rgba = shown
        scored = decode_image(data).pixels  # upright, as scored and as its heatmap is drawn
        assert (height, width) == scored.shape[:2], name
        expected = decode_image(display_png(scored)).pixels  # the heatmap's own stretch
        drawn = np.array(rgba, np.uint8).reshape(height, width, 4)[:, :, :3].astype(int)
        assert np.abs(drawn - expected.astype(int)).mean() < 1.0, name
        with page.expect_download() as download:
            card.locator(f'a.original[download="{name}"]').click()
        assert Path(download.value.path()).read_bytes() == data, name
    shots = ROOT / "tests" / "artifacts"
    shots.mkdir(parents=True, exist_ok=True)
    card.screenshot(path=str(shots / "review_pictures.png"))


def _sign_in(page, url: str) -> None:
    """The review page opened and signed in to with the officer's key."""
    page.goto(f"{url}/review")
    page.fill("#key", OFFICER_KEY)
    page.click("#login-form button")


def _real_photo(name: str) -> np.ndarray:
    photo = cv2.imread(str(ROOT / "tests" / "fixtures" / "real_ore" / "full_ore" / name))
    return (cv2.resize(photo, (192, 128), interpolation=cv2.INTER_AREA) // 3).astype(np.uint8)


@pytest.mark.browser
@pytest.mark.slow
def test_officer_sees_a_near_copy_beside_the_picture_it_copies(live_server, chromium) -> None:
    """A photograph decided before, sent again as JPEG under another shipment id: the officer
    compares the two pictures on the card."""
    server = live_server()
    picture = _real_photo("images0003.png")
    png = cv2.imencode(".png", picture)[1].tobytes()
    jpeg = cv2.imencode(".jpg", picture, [cv2.IMWRITE_JPEG_QUALITY, 60])[1].tobytes()
    for shipment_id, name, data, kind in (
        ("SHP-ORIGINAL", "a.png", png, "image/png"),
        ("SHP-AGAIN", "b.jpg", jpeg, "image/jpeg"),
    ):
        declaration = json.dumps({"shipment_id": shipment_id, "cargo_type": "bulk_ore"})
        answer = httpx.post(
            f"{server.url}/v1/shipments",
            files=[("images", (name, data, kind))],
            data={"declaration": declaration},
            headers=auth(SUBMITTER_KEY),
        )
        assert answer.status_code == 200, answer.text

    page = chromium.new_page(viewport={"width": 1200, "height": 800})
    _sign_in(page, server.url)
    card = page.locator("#shipment-SHP-AGAIN")
    card.wait_for()
    assert (
        "a near-copy of a picture decided before in shipment SHP-ORIGINAL"
        in card.locator(".reasons").inner_text()
    )
    earlier = card.locator(".earlier img")
    earlier.evaluate(
        "img => img.complete || new Promise(done => ['load', 'error'].forEach("
        "e => img.addEventListener(e, done, {once: true})))"
    )
    assert earlier.evaluate("img => img.complete && img.naturalWidth") == 192  # the original, loaded
    assert "b.jpg is a near-copy of this picture, decided before in shipment SHP-ORIGINAL" in (
        card.locator(".earlier").inner_text()
    )
    shots = ROOT / "tests" / "artifacts"
    shots.mkdir(parents=True, exist_ok=True)
    card.screenshot(path=str(shots / "near_copy.png"))


def test_review_forms_need_session_and_csrf(make_client, audit_store) -> None:
    client = make_client()
    files = [("images", ("a.png", png_bytes(240), "image/png"))]
    declaration = json.dumps({"shipment_id": "SHP-X", "cargo_type": "bulk_ore"})
    client.post("/v1/shipments", files=files, data={"declaration": declaration}, headers=auth(SUBMITTER_KEY))
    form = {"found": "clean", "decision_seq": "1"}
    no_session = client.post("/review/shipments/SHP-X/outcome", data={**form, "csrf": "x"})
    assert no_session.status_code == 401
    assert "Your session has ended: sign in again" in no_session.text  # a page, not JSON
    assert client.post("/review/login", data={"key": SUBMITTER_KEY}).status_code == 403
    login = client.post("/review/login", data={"key": OFFICER_KEY}, follow_redirects=False)
    assert (login.status_code, login.headers["location"]) == (303, "/review")
    set_cookie = login.headers["set-cookie"]
    assert "HttpOnly" in set_cookie and "SameSite=strict" in set_cookie and "Path=/review" in set_cookie
    forged = client.post("/review/shipments/SHP-X/outcome", data={**form, "csrf": "forged"})
    assert forged.status_code == 403
    assert "This form is out of date" in forged.text
    assert audit_store.get("SHP-X").outcome is None
    page = client.get("/review")
    assert page.status_code == 200 and 'id="shipment-SHP-X"' in page.text
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)
    # a form from a page loaded before the shipment changed is not recorded over the change
    stale = client.post("/review/shipments/SHP-X/outcome", data={**form, "csrf": csrf, "decision_seq": "7"})
    assert (
        "Not recorded: shipment <strong><bdi>SHP-X</bdi></strong> changed after this page was loaded"
        in stale.text
    )
    assert audit_store.get("SHP-X").outcome is None
    done = client.post(  # the form as the page now posts it; the path above, as pages loaded before
        "/review/outcome", data={**form, "shipment_id": "SHP-X", "csrf": csrf, "found": "foreign_object"}
    )
    assert "Outcome recorded for shipment <strong><bdi>SHP-X</bdi></strong>" in done.text
    again = client.post("/review/shipments/SHP-X/outcome", data={**form, "csrf": csrf})  # a second tab
    assert "Not recorded: shipment <strong><bdi>SHP-X</bdi></strong> changed" in again.text
    assert audit_store.get("SHP-X").outcome.found == "foreign_object"
    beyond = client.get("/review?show=all&before=1").text
    assert "No more shipments decided before record 1." in beyond and "&larr; Newest shipments" in beyond
    shown = client.get("/review?show=all").text
    assert "1 shipment, newest first" in shown and "Newest shipments" not in shown
    assert "Outcome: <strong><bdi>foreign_object</bdi></strong> by <bdi>officer:" in shown and " UTC" in shown
    assert "model <bdi>bulk_ore-fake-0001</bdi>" in shown
    missing = client.get("/review/files/images/" + "0" * 64)
    assert missing.status_code == 404
    assert client.get("/review/files/../../etc/passwd").status_code == 404


@pytest.mark.parametrize(
    ("log_odds", "expected"),
    [
        (
            {"one_class": -0.44, "patch_head": 2.1},
            [
                ("a spot like the labelled defects", "+2.1"),
                ("unlike the clean cargo it learned", "\u22120.4"),
            ],
        ),
        ({"type_head": 0.04}, [("like a labelled anomaly type", "+0.0")]),
        ({}, []),
        (None, []),  # a verdict recorded before the signals were kept
    ],
)
def test_model_evidence_strongest_first(
    log_odds: dict[str, float] | None, expected: list[tuple[str, str]]
) -> None:
    from serve.routes.review import model_evidence

    assert model_evidence(log_odds) == expected


def test_a_batch_decided_shipment_says_its_images_are_elsewhere(make_client, audit_store) -> None:
    """Images scored by `clearsight score` are not in the service's store: say so, never a broken image."""
    from pipeline.decide import decide_shipment
    from pipeline.policy import default_policy_path, load_policy
    from pipeline.verdicts import Declaration, ImageVerdict

    image = ImageVerdict(
        path="/srv/archive/2026/ore/SHP-B/000012.png",
        sha256="ab" * 32,
        cargo_type="bulk_ore",
        score=0.95,
        threshold=0.5,
        hold_threshold=0.8,
        model_id="bulk_ore-lite0-00000000",
        heatmap="/srv/runs/heatmaps/1f2e.png",
    )
    decision = decide_shipment(
        load_policy(default_policy_path()),
        Declaration(shipment_id="SHP-B", cargo_type="bulk_ore"),
        [image],
        audit_key=b"batch-audit-secret-of-the-port",
    )
    audit_store.record(decision)
    client = make_client()
    client.post("/review/login", data={"key": OFFICER_KEY})
    page = client.get("/review").text
    assert (
        "Image not on this server (decided from a batch run): open <bdi>000012.png</bdi> where it was scored."
        in page
    )
    assert "/srv/archive" not in page and "/review/files/images/" + "ab" * 32 not in page


@pytest.mark.parametrize(
    ("action", "named"),
    [("/review/outcome", {"shipment_id": "SHP-X"}), ("/review/shipments/SHP-X/outcome", {})],
    ids=["form", "by-path"],
)
def test_a_form_decision_seq_past_a_database_integer_is_refused_by_name(
    make_client, audit_store, action, named
) -> None:
    """The API's outcome routes failed on such a seq with a 500; the form takes the same bound."""
    client = make_client()
    audit_store.record(batch_hold("SHP-X"))
    client.post("/review/login", data={"key": OFFICER_KEY}, follow_redirects=False)
    csrf = re.search(r'name="csrf" value="([^"]+)"', client.get("/review").text).group(1)
    form = {**named, "found": "clean", "csrf": csrf, "decision_seq": str(2**63)}
    refused = client.post(action, data=form, follow_redirects=False)
    assert (refused.status_code, [e["loc"] for e in refused.json()["errors"]]) == (422, ["body.decision_seq"])
    assert audit_store.get("SHP-X").outcome is None


def test_an_outcome_is_recorded_from_the_page_for_a_batch_shipment_id(make_client, audit_store) -> None:
    """A batch decides ids the API's path pattern refuses ('SHP/2026/1', 'SHP 0002'): their forms
    posted to /review/shipments/<id>/outcome and got a 404 or a 422, so the hold stayed."""
    client = make_client()
    ids = ["SHP/2026/1", "SHP 0002", "<b>&amp;"]
    for shipment in ids:
        audit_store.record(batch_hold(shipment))
    client.post("/review/login", data={"key": OFFICER_KEY}, follow_redirects=False)
    page = client.get("/review").text
    forms = re.findall(r'<form method="post" action="([^"]+)" class="outcome-form">(.*?)</form>', page, re.S)
    assert len(forms) == 3
    for action, body in forms:
        fields = dict(re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)">', body))
        fields = {k: html.unescape(v) for k, v in fields.items()}
        done = client.post(action, data={**fields, "found": "clean", "notes": ""})
        assert done.status_code == 200 and "Outcome recorded for shipment" in done.text, done.text[:300]
    assert [r.decision.shipment_id for r in audit_store.list(pending_outcome=True)] == []
    assert all(audit_store.get(s).outcome.officer.startswith("officer:") for s in ids)


def test_a_finding_no_longer_offered_is_answered_with_the_page(make_client, audit_store) -> None:
    """The form posted a finding the service no longer accepts (it restarted with another model
    since the page was loaded): the officer got the API's problem+json telling them to send a field
    the form has not. Then a redirect to the page, which lost the notes typed: the post is answered
    with the page itself (409), the notes in the form, no finding chosen (the one posted is gone)."""
    client = make_client()
    audit_store.record(batch_hold("SHP-R"))
    client.post("/review/login", data={"key": OFFICER_KEY}, follow_redirects=False)
    page = client.get("/review").text
    form = re.search(
        r'<form method="post" action="/review/outcome" class="outcome-form">(.*?)</form>', page, re.S
    )
    fields = {k: html.unescape(v) for k, v in re.findall(r'name="(\w+)" value="([^"]*)"', form.group(1))}
    done = client.post("/review/outcome", data={**fields, "found": "crack", "notes": "hairline, bay 2"})
    assert done.status_code == 409 and done.headers["content-type"].startswith("text/html")
    assert (
        "Not recorded: what may be found in shipment <strong><bdi>SHP-R</bdi></strong> changed" in done.text
    )
    assert audit_store.get("SHP-R").outcome is None
    form = re.search(
        r'<form method="post" action="/review/outcome" class="outcome-form">(.*?)</form>', done.text, re.S
    ).group(1)
    assert 'name="notes" value="hairline, bay 2"' in form
    assert re.findall(r"<option [^>]*\bselected\b[^>]*>", form) == ['<option value="" selected disabled>']


def test_a_shipment_is_found_on_the_page_by_its_id_whatever_its_tier(make_client, audit_store) -> None:
    """The page listed held shipments only, newest first, 50 a page: a tip-off about one shipment,
    or a finding after a released one cleared, meant paging through the queue or the CLI."""
    from pipeline.verdicts import Tier

    client = make_client()
    audit_store.record(batch_hold("SHP-HELD"))
    released = batch_hold("SHP-GONE")
    audit_store.record(released.model_copy(update={"tier": Tier.RELEASE, "reasons": []}))
    client.post("/review/login", data={"key": OFFICER_KEY}, follow_redirects=False)
    queue = client.get("/review").text
    assert 'data-shipment="SHP-HELD"' in queue and 'data-shipment="SHP-GONE"' not in queue
    found = client.get("/review", params={"shipment": " SHP-GONE "}).text
    assert 'data-shipment="SHP-GONE"' in found and 'data-shipment="SHP-HELD"' not in found
    assert "its latest decision (released: an outcome here records what was found after clearance)" in found
    form = re.search(
        r'<form method="post" action="/review/outcome" class="outcome-form">(.*?)</form>', found, re.S
    )
    fields = {k: html.unescape(v) for k, v in re.findall(r'name="(\w+)" value="([^"]*)"', form.group(1))}
    # what the page offers (its batch's model is not loaded here and scored no types)
    assert re.findall(r'<option value="(\w+)">', form.group(1)) == ["clean", "unknown"]
    done = client.post("/review/outcome", data={**fields, "found": "unknown", "notes": "post-clearance"})
    assert "Outcome recorded for shipment <strong><bdi>SHP-GONE</bdi></strong>" in done.text
    assert audit_store.get("SHP-GONE").outcome.found == "unknown"
    # back to the shipment searched for, not to the held queue, where a released one is not
    assert (
        'data-shipment="SHP-GONE"' in done.text
        and "Outcome: <strong><bdi>unknown</bdi></strong>" in done.text
    )
    stale = client.post("/review/outcome", data={**fields, "found": "clean"})
    assert "Not recorded: shipment <strong><bdi>SHP-GONE</bdi></strong> changed" in stale.text
    assert 'data-shipment="SHP-GONE"' in stale.text
    missing = client.get("/review", params={"shipment": "<b>x</b>"}).text
    assert "No decision recorded for shipment <strong><bdi>&lt;b&gt;x&lt;/b&gt;</bdi></strong>" in missing
    # named in a notice (tests/serve/test_review_page.py), never searched for: PostgreSQL holds no NUL
    for refused in ("S" * 129, "a\x00b"):
        page = client.get("/review", params={"shipment": refused}).text
        assert "Not understood: shipment=" in page and "No decision recorded" not in page


@pytest.mark.browser
@pytest.mark.slow
def test_a_long_shipment_id_and_file_name_stay_within_the_card(live_server, chromium) -> None:
    """An id of 128 characters and a file name of 124, neither with a place to break: both ran out
    of the card, and the page scrolled sideways."""
    from playwright.sync_api import expect

    server = live_server()
    shipment = "SHP-" + "9" * 124
    declaration = json.dumps({"shipment_id": shipment, "cargo_type": "bulk_ore"})
    name = "N" * 120 + ".png"
    sent = httpx.post(
        f"{server.url}/v1/shipments",
        files=[("images", (name, _ore_png(235, 7), "image/png"))],
        data={"declaration": declaration},
        headers=auth(SUBMITTER_KEY),
    )
    assert sent.status_code == 200, sent.text
    page = chromium.new_page(viewport={"width": 1024, "height": 800})
    _sign_in(page, server.url)
    card = page.locator("article.shipment")
    expect(card).to_have_count(1)
    assert page.evaluate("document.documentElement.scrollWidth") <= 1024
    right = card.evaluate("c => c.getBoundingClientRect().right")
    for shown in ("h2", ".reason .which", "figcaption > strong", ".image .original"):
        assert card.locator(shown).evaluate("e => e.getBoundingClientRect().right") <= right, shown
    page.goto(f"{server.url}/review?shipment={shipment}")  # its id in the search's notice too
    expect(page.locator("article.shipment")).to_have_count(1)
    assert page.evaluate("document.documentElement.scrollWidth") <= 1024


@pytest.mark.browser
@pytest.mark.slow
def test_the_review_page_asks_for_nothing_the_server_does_not_hold(live_server, chromium) -> None:
    """With no icon named, the browser asked for /favicon.ico on every load, and each 404 stood in
    its console as an error. The page names its own (an SVG, which the policy's img-src 'self'
    allows)."""
    from playwright.sync_api import expect

    server = live_server()
    assert _submit(server.url, "SHP-ICON-1", [235])["tier"] == "PHYSICAL_INSPECTION"
    page = chromium.new_page(viewport={"width": 1366, "height": 900})
    errors: list[str] = []
    answered: dict[str, int] = {}
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    page.on("response", lambda response: answered.__setitem__(response.url, response.status))
    _sign_in(page, server.url)
    expect(page.locator("#shipment-SHP-ICON-1")).to_have_count(1)
    page.wait_for_load_state("networkidle")
    # the browser's own request for the icon is not the page's: its 404 shows in the console only
    assert errors == []
    assert {url: status for url, status in answered.items() if status >= 400} == {}
    icon = httpx.get(server.url + page.locator("link[rel=icon]").get_attribute("href"))
    assert (icon.status_code, icon.headers["content-type"]) == (200, "image/svg+xml")
