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
