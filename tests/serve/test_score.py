"""POST /v1/score: success, heatmaps, and every bad input as a 4xx problem body."""

from __future__ import annotations

import base64
import io
import math

import cv2
import numpy as np
import pytest
from PIL import Image
from serve_fakes import OFFICER_KEY, auth, png_bytes

HEADERS = auth(OFFICER_KEY)


def test_score_two_images_with_heatmap(make_client) -> None:
    client = make_client()
    files = [
        ("images", ("dark.png", png_bytes(51), "image/png")),
        ("images", ("bright.png", png_bytes(204, (6, 4)), "image/png")),
    ]
    response = client.post(
        "/v1/score?heatmap=true", files=files, data={"cargo_type": "bulk_ore"}, headers=HEADERS
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["request_id"] == response.headers["x-request-id"]
    assert body["model_ids"] == ["bulk_ore-fake-0001"]
    assert body["policy_version"] == "2026.12.2-example"
    dark, bright = body["images"]
    assert (dark["filename"], dark["width"], dark["height"], dark["label"]) == ("dark.png", 8, 8, "good")
    assert dark["score"] == pytest.approx((51 * 63 + 52) / 64 / 255, abs=1e-6)
    assert dark["anomaly_type"] is None
    # what the model's signals said, for the client to see which one flagged the image
    logit = math.log(dark["score"] / (1 - dark["score"]))
    assert dark["signal_log_odds"] == {"one_class": pytest.approx(logit)}
    assert (bright["width"], bright["height"], bright["label"], bright["anomaly_type"]) == (
        6,
        4,
        "anomalous",
        "foreign_object",
    )
    assert bright["thresholds"] == {
        "release": 0.5,
        "hold": 0.8,
        "target_miss_rate": 0.01,
        "method": "fixed_for_tests",
    }
    png = base64.b64decode(bright["heatmap_png_base64"])
    overlay = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
    assert overlay.shape == (4, 6, 3)


def test_score_without_heatmap_by_default_and_form_flag(make_client) -> None:
    client = make_client()
    files = [("images", ("a.png", png_bytes(10), "image/png"))]
    plain = client.post("/v1/score", files=files, data={"cargo_type": "vacuum_pack"}, headers=HEADERS)
    assert plain.json()["images"][0]["heatmap_png_base64"] is None
    assert plain.json()["model_ids"] == ["vacuum_pack-fake-0001"]
    flagged = client.post(
        "/v1/score", files=files, data={"cargo_type": "vacuum_pack", "heatmap": "true"}, headers=HEADERS
    )
    assert flagged.json()["images"][0]["heatmap_png_base64"].startswith("iVBORw0KGgo")


def test_grayscale_16bit_upload_is_scored(make_client) -> None:
    buf = io.BytesIO()
    Image.fromarray(np.full((5, 7), 65535, dtype=np.uint16)).save(buf, format="PNG")
    response = make_client().post(
        "/v1/score",
        files=[("images", ("xray.png", buf.getvalue(), "image/png"))],
        data={"cargo_type": "bulk_ore"},
        headers=HEADERS,
    )
    assert response.status_code == 200, response.text
    image = response.json()["images"][0]
    assert (image["width"], image["height"], image["score"], image["label"]) == (7, 5, 1.0, "anomalous")


def _gif() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (4, 4)).save(buf, format="GIF")
    return buf.getvalue()


def _jpeg_of_many_scans() -> bytes:
    """A progressive JPEG with its last scan repeated to 200 scans: each one more pass of the decoder
    over the whole image (12,000 of them kept a core busy for tens of seconds)."""
    buf = io.BytesIO()
    Image.fromarray(np.full((16, 16), 128, np.uint8)).save(buf, "JPEG", progressive=True)
    data = buf.getvalue()
    last = data.rfind(b"\xff\xda")
    return data[:-2] + data[last:-2] * 194 + b"\xff\xd9"


def _jpeg_of_many_markers() -> bytes:
    """A JPEG with 10,001 empty comment segments before its scan: each one more step of the walk
    (60 MiB of them took seconds of a core, and were accepted)."""
    buf = io.BytesIO()
    Image.fromarray(np.full((16, 16), 128, np.uint8)).save(buf, "JPEG")
    data = buf.getvalue()
    scan = data.index(b"\xff\xda")
    return data[:scan] + b"\xff\xfe\x00\x02" * 10_001 + data[scan:]


BAD = [
    # (case, files, form, status, problem type, detail)
    (
        "jpeg of too many markers",
        [("images", ("markers.jpg", _jpeg_of_many_markers(), "image/jpeg"))],
        {"cargo_type": "bulk_ore"},
        422,
        "bad-image",
        "markers.jpg: JPEG with too many markers: more than 10,000 markers, segments and fill bytes",
    ),
    (
        "jpeg of too many scans",
        [("images", ("scans.jpg", _jpeg_of_many_scans(), "image/jpeg"))],
        {"cargo_type": "bulk_ore"},
        422,
        "bad-image",
        "scans.jpg: JPEG with too many scans: at least 101, where at most 100 are accepted",
    ),
    (
        "not an image",
        [("images", ("notes.txt", b"hello world, no pixels", "text/plain"))],
        {"cargo_type": "bulk_ore"},
        422,
        "bad-image",
        "notes.txt: not a recognised image: data starts with b'hello wo' (",
    ),
    (
        "truncated png",
        [("images", ("cut.png", png_bytes(10, (16, 16))[:60], "image/png"))],
        {"cargo_type": "bulk_ore"},
        422,
        "bad-image",
        "cut.png: ",
    ),
    (
        "gif refused",
        [("images", ("anim.gif", _gif(), "image/gif"))],
        {"cargo_type": "bulk_ore"},
        422,
        "bad-image",
        "anim.gif: GIF files are not accepted",
    ),
    (
        "unknown cargo type",
        [("images", ("a.png", png_bytes(10), "image/png"))],
        {"cargo_type": "crude_oil"},
        422,
        "unknown-cargo-type",
        "no model for cargo type 'crude_oil'; accepted: bulk_ore, vacuum_pack",
    ),
    (
        "two cargo types",
        [("images", ("a.png", png_bytes(10), "image/png"))],
        {"cargo_type": ["vacuum_pack", "bulk_ore"]},
        422,
        "bad-input",
        "form field 'cargo_type' was sent 2 times; send it once",
    ),
    (
        "missing cargo type",
        [("images", ("a.png", png_bytes(10), "image/png"))],
        {},
        422,
        "validation",
        "body.cargo_type: Field required",
    ),
    (  # a form without files is not multipart
        "missing images",
        [],
        {"cargo_type": "bulk_ore"},
        415,
        "unsupported-media-type",
        "content type 'application/x-www-form-urlencoded' is not accepted here; send multipart/form-data",
    ),
    (
        "too many images",
        [("images", (f"{i}.png", png_bytes(i), "image/png")) for i in range(4)],
        {"cargo_type": "bulk_ore"},
        413,
        "request-too-large",
        "4 images in one request; the limit is 3",
    ),
    (
        "too many pixels",
        [("images", ("big.png", png_bytes(10, (40, 30)), "image/png"))],
        {"cargo_type": "bulk_ore"},
        413,
        "image-too-large",
        "big.png: ",
    ),
    (
        "too many pixels in all",
        [("images", (f"{i}.png", png_bytes(10, (30, 30)), "image/png")) for i in range(3)],
        {"cargo_type": "bulk_ore"},
        413,
        "request-too-large",
        "3 images of 2,700 pixels in all; the limit is 2,000 pixels per request (max_request_pixels)",
    ),
]


@pytest.mark.parametrize(("case", "files", "form", "status", "slug", "detail"), BAD, ids=[b[0] for b in BAD])
def test_bad_input_is_a_problem(make_client, case, files, form, status, slug, detail) -> None:
    client = make_client(max_images_per_request=3, max_image_pixels=1000, max_request_pixels=2000)
    response = client.post("/v1/score", files=files or None, data=form, headers=HEADERS)
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["type"] == f"https://clearsight.dev/problems/{slug}"
    assert body["status"] == status
    assert body["instance"] == "/v1/score"
    assert body["request_id"] == response.headers["x-request-id"]
    assert body["detail"].startswith(detail), body["detail"]


def test_format_allow_list(make_client) -> None:
    client = make_client(allowed_formats="png")
    ok, jpg = cv2.imencode(".jpg", np.zeros((8, 8, 3), np.uint8))
    response = client.post(
        "/v1/score",
        files=[("images", ("a.jpg", jpg.tobytes(), "image/jpeg"))],
        data={"cargo_type": "bulk_ore"},
        headers=HEADERS,
    )
    assert response.status_code == 422
    assert response.json()["detail"] == "a.jpg: format 'jpeg' is not accepted; accepted: png"


def test_client_file_name_is_only_a_label(make_client, tmp_path) -> None:
    response = make_client().post(
        "/v1/score",
        files=[("images", ("..\\..\\etc/passwd.png", png_bytes(10), "image/png"))],
        data={"cargo_type": "bulk_ore"},
        headers=HEADERS,
    )
    assert response.status_code == 200
    assert response.json()["images"][0]["filename"] == "passwd.png"


@pytest.mark.parametrize(
    ("method", "path", "status", "slug", "detail"),
    [
        ("GET", "/v1/nothing", 404, "not-found", "no resource at GET /v1/nothing"),
        ("GET", "/v1/score", 405, "method-not-allowed", "GET is not allowed on /v1/score"),
        ("DELETE", "/healthz", 405, "method-not-allowed", "DELETE is not allowed on /healthz"),
    ],
)
def test_routing_errors_are_problems(make_client, method, path, status, slug, detail) -> None:
    response = make_client().request(method, path, headers=HEADERS)
    assert response.status_code == status
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["type"] == f"https://clearsight.dev/problems/{slug}"
    assert response.json()["detail"] == detail


def test_request_id_is_echoed_or_replaced(make_client) -> None:
    client = make_client()
    assert client.get("/healthz", headers={"X-Request-ID": "abc-123"}).headers["x-request-id"] == "abc-123"
    replaced = client.get("/healthz", headers={"X-Request-ID": "bad id\twith spaces"}).headers["x-request-id"]
    assert len(replaced) == 32 and replaced != "bad id\twith spaces"


def test_a_burst_of_pixels_waits_for_the_budget(make_client) -> None:
    """The pixels of requests in flight are bounded: one over the budget gets 503, not memory."""
    from serve_fakes import FakePredictor

    client = make_client(
        predictors={"bulk_ore": FakePredictor(delay_s=0.5)},
        max_request_pixels=400,
        max_pixels_in_flight=500,
        retry_after_s=4,
        max_pixel_wait_s=0,  # no waiting in line: 503 at once
    )
    files = [("images", ("a.png", png_bytes(10, (20, 20)), "image/png"))]  # 400 pixels each

    def score(_: int):
        return client.post("/v1/score", files=files, data={"cargo_type": "bulk_ore"}, headers=HEADERS)

    import concurrent.futures

    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        responses = list(pool.map(score, range(2)))
    assert sorted(r.status_code for r in responses) == [200, 503]
    refused = next(r for r in responses if r.status_code == 503)
    assert refused.headers["retry-after"] == "4"
    assert refused.json()["detail"] == (
        "the server is holding 400 decoded pixels of its 500 (max_pixels_in_flight), 0 more waiting; "
        "this request's 400 must wait"
    )
    assert score(0).status_code == 200  # released when the first request was answered
    waiting = make_client(
        predictors={"bulk_ore": FakePredictor(delay_s=0.5)}, max_request_pixels=400, max_pixels_in_flight=500
    )  # the default: a request waits in line for room
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        answered = list(pool.map(lambda _: waiting.post(
            "/v1/score", files=files, data={"cargo_type": "bulk_ore"}, headers=HEADERS
        ), range(2)))  # fmt: skip
    assert [r.status_code for r in answered] == [200, 200]


def test_a_16_bit_picture_counts_twice_against_the_pixel_limits(make_client) -> None:
    """It holds twice the bytes decoded: 20 x 20 at 16 bits counts as 800 pixels."""
    import cv2
    import numpy as np

    client = make_client(max_request_pixels=600, max_pixels_in_flight=600)
    for dtype, status in ((np.uint8, 200), (np.uint16, 413)):
        ok, buf = cv2.imencode(".png", np.full((20, 20, 3), 10, dtype))
        files = [("images", ("a.png", buf.tobytes(), "image/png"))]
        answer = client.post("/v1/score", files=files, data={"cargo_type": "bulk_ore"}, headers=HEADERS)
        assert answer.status_code == status, answer.text
    assert answer.json()["detail"].startswith("1 images of 800 pixels in all (a 16-bit pixel counted twice)")


def test_pixel_budget_must_fit_a_request() -> None:
    from pydantic import ValidationError

    from serve.settings import ServeSettings

    with pytest.raises(
        ValidationError, match=r"max_pixels_in_flight \(100\) must be at least max_request_pixels"
    ):
        ServeSettings(_env_file=None, max_request_pixels=200, max_pixels_in_flight=100)
    # a request of the most images accepted was told to retry for ever, on an idle server
    with pytest.raises(
        ValidationError, match=r"queue_size \(4\) must be at least max_images_per_request \(32\)"
    ):
        ServeSettings(_env_file=None, queue_size=4, max_images_per_request=32)


def test_uploads_are_never_sniffed_and_the_models_show_no_server_paths(make_client) -> None:
    client = make_client()
    models = client.get("/v1/models", headers=HEADERS)
    assert models.headers["x-content-type-options"] == "nosniff"
    cards = models.json()["models"]
    assert [card["training"] for card in cards] == [{"data_root": "ore-2026", "images": 3}] * 2


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ("/srv/customs/ore-2026", "ore-2026"),
        ("C:\\data\\ore-2026", "ore-2026"),
        ("file:/srv/weights/resnet18.pth", "file:resnet18.pth"),  # a weights source: was shown whole
        ("file:C:\\weights\\resnet18.pth", "file:resnet18.pth"),
        ("file:~/weights/resnet18.pth", "file:resnet18.pth"),
        ("file:<unset>", "file:<unset>"),
        ("timm:efficientnet_lite0", "timm:efficientnet_lite0"),
        ("ore-2026", "ore-2026"),
    ],
)
def test_a_model_cards_server_paths_are_cut_to_their_names(value: str, shown: str) -> None:
    from serve.routes.models import public_card

    assert public_card({"weights": {"source": value}, "paths": [value]}) == {
        "weights": {"source": shown},
        "paths": [shown],
    }


def test_invented_methods_share_one_metrics_label(make_client) -> None:
    from serve_fakes import ADMIN_KEY

    client = make_client()
    for method in ("ZZ0RANDOM", "ZZ1RANDOM"):
        client.request(method, "/v1/models", headers=HEADERS)
    metrics = client.get("/metrics", headers=auth(ADMIN_KEY)).text
    assert "ZZ0RANDOM" not in metrics and "ZZ1RANDOM" not in metrics
    assert 'clearsight_http_requests_total{endpoint="/v1/models",method="OTHER",status="405"} 2.0' in metrics


def test_a_json_body_is_told_to_send_multipart(make_client) -> None:
    client = make_client()
    response = client.post("/v1/score", json={"cargo_type": "bulk_ore", "images": []}, headers=HEADERS)
    assert response.status_code == 415
    assert response.json()["detail"].startswith("content type 'application/json' is not accepted here")
