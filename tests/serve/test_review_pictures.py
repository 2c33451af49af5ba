"""The pictures the review page shows (TestClient): each upload as a PNG of its decoded, upright pixels,
whatever its format, the upload as received a download link; the PNG made within scoring's bounds,
once."""

from __future__ import annotations

import hashlib
import json
import re

import numpy as np
import pytest
from serve_fakes import MEDIA_TYPES, OFFICER_KEY, PICTURES, SUBMITTER_KEY, auth

from datasets.decode import decode_image
from pipeline.heatmap import display_png


def _submit(client, shipment_id: str, names: list[str]) -> None:
    declaration = json.dumps({"shipment_id": shipment_id, "cargo_type": "bulk_ore"})
    files = [("images", (n, PICTURES[n], MEDIA_TYPES[n.rsplit(".", 1)[1]])) for n in names]
    sent = client.post(
        "/v1/shipments", files=files, data={"declaration": declaration}, headers=auth(SUBMITTER_KEY)
    )
    assert sent.status_code == 200, sent.text


def _signed_in(client) -> None:
    assert client.post("/review/login", data={"key": OFFICER_KEY}, follow_redirects=False).status_code == 303


def _sha(name: str) -> str:
    return hashlib.sha256(PICTURES[name]).hexdigest()


def test_each_picture_is_shown_as_its_decoded_pixels_and_the_upload_is_a_download_as_received(
    make_client,
) -> None:
    """Every format, those a browser draws too: one sent as it came was drawn with other pixels than
    scored (transparency, a gAMA chunk, an XMP orientation after the pixel data)."""
    client = make_client()
    _submit(client, "SHP-PICTURES", list(PICTURES))
    _signed_in(client)
    page = client.get("/review?shipment=SHP-PICTURES").text
    for name, data in PICTURES.items():
        shown = re.search(
            rf'<img src="(/review/files/[a-z]+/[0-9a-f]{{64}})" alt="image {re.escape(name)}"', page
        )
        assert shown is not None, name
        assert shown.group(1) == f"/review/files/display/{_sha(name)}", name
        answer = client.get(shown.group(1))
        assert answer.status_code == 200, (name, answer.text)
        assert answer.headers["cache-control"] == "no-store"
        assert answer.headers["content-security-policy"] == "default-src 'none'; sandbox"
        upright = decode_image(data).pixels
        # the picture under its heatmap: drawn by the heatmap's own function, 8-bit, upright
        assert answer.headers["content-type"] == "image/png", name
        assert answer.content == display_png(upright), name
        shown_pixels = decode_image(answer.content).pixels
        assert (shown_pixels.dtype, shown_pixels.shape[:2]) == (np.uint8, upright.shape[:2]), name
        download = f'<a class="original" href="/review/files/images/{_sha(name)}" download="{name}">'
        assert download in page, name
        original = client.get(f"/review/files/images/{_sha(name)}")
        assert original.content == data, name
    # the 12-bit X-ray stretched as its heatmap is: not the near-black of its top 8 bits
    xray = decode_image(client.get(f"/review/files/display/{_sha('xray12.tif')}").content).pixels
    assert xray.mean() > 4 * (decode_image(PICTURES["xray12.tif"]).pixels / 257).mean()


def _png_chunks(png: bytes) -> list[bytes]:
    kinds, at = [], 8
    while at < len(png):
        kinds.append(png[at + 4 : at + 8])
        at += 12 + int.from_bytes(png[at : at + 4], "big")
    return kinds


@pytest.mark.parametrize(
    "name",
    [
        "alpha.png",  # Chromium drew the page through its transparent half, scoring the colours under it
        "alpha.webp",
        "transparent-index.png",  # black scored, the white page shown
        "gamma.png",  # its grey 100 drawn 168
        "late-xmp.png",  # drawn on its side beside its upright heatmap
        "late-turned.png",
        "plain.png",
        "plain.jpg",
    ],
)
def test_a_picture_a_browser_would_draw_otherwise_is_shown_as_the_pixels_scored(make_client, name) -> None:
    """Pictures the page sent as they came, checked in Chromium, whose pixels differ from those
    scored: shown as the heatmap's picture of the scored pixels, a PNG with nothing in it for a
    browser to draw otherwise (8-bit grey or RGB, no alpha, no gamma, no orientation)."""
    client = make_client()
    _submit(client, "SHP-ONE", [name])
    _signed_in(client)
    shown = client.get(f"/review/files/display/{_sha(name)}")
    scored = decode_image(PICTURES[name]).pixels
    assert (shown.headers["content-type"], shown.content) == ("image/png", display_png(scored))
    assert [kind for kind in _png_chunks(shown.content) if kind != b"IDAT"] == [b"IHDR", b"IEND"]
    assert (shown.content[24], shown.content[25]) in ((8, 0), (8, 2))  # bit depth, grey or RGB colour
    assert np.array_equal(decode_image(shown.content).pixels, scored)


@pytest.mark.parametrize(
    ("lowered", "status", "problem"),
    [
        ({"max_image_pixels": 900}, 413, "image-too-large"),  # 40 x 24 = 960
        ({"max_image_bytes": 1000}, 413, "image-too-large"),
        ({"max_request_pixels": 1900}, 413, "request-too-large"),  # 960, at 16 bits twice
        ({"allowed_formats": "png,jpeg"}, 422, "bad-image"),
    ],
)
def test_a_picture_is_decoded_for_the_page_only_within_scoring_s_bounds(
    make_client, tmp_path, lowered, status, problem
) -> None:
    """Limits lowered since the TIFF was stored: it is not decoded, nothing is kept, and the upload
    as received is still there to download."""
    _submit(make_client(), "SHP-TIFF", ["xray12.tif"])
    client = make_client(**lowered)
    _signed_in(client)
    answer = client.get(f"/review/files/display/{_sha('xray12.tif')}")
    assert (answer.status_code, answer.json()["type"].rsplit("/", 1)[-1]) == (status, problem), answer.text
    assert str(tmp_path) not in answer.text  # the server's folders are not the client's business
    assert list((tmp_path / "data" / "display").iterdir()) == []
    assert client.get(f"/review/files/images/{_sha('xray12.tif')}").content == PICTURES["xray12.tif"]


def test_a_display_png_is_made_once_and_kept(make_client, tmp_path) -> None:
    """Viewed again, it is the kept file: shown even where decoding a TIFF is no longer allowed,
    where one never viewed is not decoded."""
    first = make_client()
    _submit(first, "SHP-TIFFS", ["xray12.tif", "colour.tif"])
    _signed_in(first)
    made = first.get(f"/review/files/display/{_sha('xray12.tif')}")
    assert made.status_code == 200
    kept = tmp_path / "data" / "display" / f"{_sha('xray12.tif')}.png"
    assert kept.read_bytes() == made.content
    assert first.app.state.services.pixels.held == 0  # the decode's pixels given back
    later = make_client(allowed_formats="png")
    _signed_in(later)
    again = later.get(f"/review/files/display/{_sha('xray12.tif')}")
    assert (again.status_code, again.content) == (200, made.content)
    assert later.get(f"/review/files/display/{_sha('colour.tif')}").status_code == 422


@pytest.mark.parametrize(
    ("path", "signed_in", "status"),
    [
        ("/review/files/display/{sha}", False, 401),
        ("/review/files/display/" + "0" * 64, True, 404),  # no such upload
        ("/review/files/display/{sha}..", True, 404),
        ("/review/files/display/{sha}", True, 200),
    ],
)
def test_only_a_signed_in_reviewer_sees_only_stored_uploads(make_client, path, signed_in, status) -> None:
    client = make_client()
    _submit(client, "SHP-ONE", ["xray12.tif"])
    if signed_in:
        _signed_in(client)
    assert client.get(path.format(sha=_sha("xray12.tif"))).status_code == status
