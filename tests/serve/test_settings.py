"""Settings of the HTTP service that are checked as they are read."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from serve.settings import ServeSettings


@pytest.mark.parametrize(
    ("value", "read"),
    [
        ("", ()),
        (" 10.0.0.5 ,, ::1", ("10.0.0.5", "::1")),
        ("10.0.0.5/24", ("10.0.0.0/24",)),  # as meant: uvicorn took a network with host bits for a name
        (["192.168.1.1", "fd00::/8"], ("192.168.1.1", "fd00::/8")),
    ],
    ids=["empty", "addresses", "network", "list"],
)
def test_trusted_proxies_are_read_as_addresses_and_networks(value, read) -> None:
    assert ServeSettings(_env_file=None, forwarded_allow_ips=value).forwarded_allow_ips == read


@pytest.mark.parametrize(
    ("value", "said"),
    [
        ("proxy.local", "'proxy.local' is not an IP address or network"),
        ("10.0.0.5,10.0.0.300", "'10.0.0.300' is not an IP address or network"),
        ("*", "'*' would trust every client's word for its address"),
    ],
    ids=["name", "bad-address", "everyone"],
)
def test_a_trusted_proxy_that_is_no_address_is_refused(value, said) -> None:
    with pytest.raises(ValidationError, match="forwarded_allow_ips") as info:
        ServeSettings(_env_file=None, forwarded_allow_ips=value)
    message = str(info.value)
    assert said in message and "(10.0.0.5, ::1) or network (10.0.0.0/24)" in message


def test_trusted_proxies_come_from_the_environment(monkeypatch) -> None:
    monkeypatch.setenv("CLEARSIGHT_FORWARDED_ALLOW_IPS", "10.0.0.5,10.0.1.0/24")
    assert ServeSettings(_env_file=None).forwarded_allow_ips == ("10.0.0.5", "10.0.1.0/24")


@pytest.mark.parametrize(
    ("value", "read"),
    [
        ("png,jpeg", ("png", "jpeg")),
        ("PNG, jpg ,tif", ("png", "jpeg", "tiff")),  # the usual names read as the decoder names them
        ("jpg,jpeg", ("jpeg",)),
        (["webp"], ("webp",)),
    ],
    ids=["names", "aliases", "alias-twice", "list"],
)
def test_image_formats_are_read_as_the_decoder_names_them(value, read) -> None:
    assert ServeSettings(_env_file=None, allowed_formats=value).allowed_formats == read


@pytest.mark.parametrize(
    ("value", "said"),
    [
        ("png,gif", "unknown image format(s) 'gif'; accepted: jpeg, png, bmp, tiff, webp"),
        (" , ", "no image format given; accepted: jpeg, png"),
    ],
    ids=["unknown", "none"],
)
def test_an_image_format_the_decoder_does_not_read_is_refused(monkeypatch, value, said) -> None:
    monkeypatch.setenv("CLEARSIGHT_ALLOWED_FORMATS", value)
    with pytest.raises(ValidationError, match="allowed_formats") as info:
        ServeSettings(_env_file=None)
    assert said in str(info.value)
