"""API keys, roles and the review page's signed session cookie.

Keys come from settings as ``role:key`` pairs and are kept only as SHA-256 digests; a presented key
is hashed and compared to every stored digest in constant time (``hmac.compare_digest``), so that
neither the keys nor the timing of a comparison leak. Roles:

- ``submitter``: score images and submit shipments;
- ``officer``: read decisions, record outcomes, use the review page;
- ``admin``: everything.
"""

from __future__ import annotations

import base64
import enum
import hashlib
import hmac
import json
import time
from dataclasses import dataclass

from datasets.errors import InputError

__all__ = ["KeyRing", "Principal", "Role", "SessionSigner", "parse_api_keys"]


class Role(enum.StrEnum):
    SUBMITTER = "submitter"
    OFFICER = "officer"
    ADMIN = "admin"


@dataclass(frozen=True)
class Principal:
    """Who made a request: the key's role and a short fingerprint (first 12 hex of its digest)."""

    role: Role
    fingerprint: str

    @property
    def name(self) -> str:
        """Name recorded in the audit trail, e.g. ``officer:3f2a9c1b0d4e``."""
        return f"{self.role.value}:{self.fingerprint}"


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8")).digest()


class KeyRing:
    """The configured API keys, as (digest, role) pairs."""

    def __init__(self, entries: list[tuple[bytes, Role]]) -> None:
        self._entries = list(entries)

    def __len__(self) -> int:
        return len(self._entries)

    def by_digest(self, presented: bytes) -> Principal | None:
        """The principal whose key has this SHA-256 digest, or None.

        Every entry is compared (no early exit) so that the time taken does not depend on which
        entry matched.
        """
        found: Principal | None = None
        for digest, role in self._entries:
            if hmac.compare_digest(presented, digest) and found is None:
                found = Principal(role=role, fingerprint=digest.hex()[:12])
        return found

    def authenticate(self, key: str) -> Principal | None:
        """The principal of ``key``, or None when it matches no configured key."""
        return self.by_digest(_digest(key))


def parse_api_keys(spec: str) -> KeyRing:
    """Parse ``"role:key,role:key"`` into a :class:`KeyRing`.

    Raises:
        InputError: an entry without ``:``, an unknown role, a key shorter than 8 characters, or the
            same key twice.
    """
    entries: list[tuple[bytes, Role]] = []
    seen: set[bytes] = set()
    roles = ", ".join(r.value for r in Role)
    for index, raw in enumerate(spec.split(",")):
        item = raw.strip()
        if not item:
            continue
        role_name, sep, key = item.partition(":")
        if not sep:
            raise InputError(
                f"API key entry #{index + 1} has no role: expected role:key with role one of {roles}"
            )
        try:
            role = Role(role_name.strip().lower())
        except ValueError:
            # not echoed: an entry written key:role would print the key
            raise InputError(
                f"API key entry #{index + 1} has an unknown role ({len(role_name.strip())} characters, not "
                f"shown in case the entry is written key:role); expected role:key with role one of {roles}"
            ) from None
        key = key.strip()
        if len(key) < 8:
            raise InputError(
                f"API key entry #{index + 1} ({role.value}) is {len(key)} characters; need at least 8"
            )
        digest = _digest(key)
        if digest in seen:
            raise InputError(f"API key entry #{index + 1} ({role.value}) repeats an earlier key")
        seen.add(digest)
        entries.append((digest, role))
    return KeyRing(entries)


class SessionSigner:
    """Signs and checks the review page's session cookie: ``base64(payload).base64(hmac)``.

    The payload holds the key's digest (never the key), the role, an expiry and a CSRF token; the
    cookie is useless without the server's secret, and a key removed from settings ends its sessions.
    """

    def __init__(self, secret: bytes, *, ttl_s: int) -> None:
        self._secret = secret
        self._ttl_s = ttl_s

    def _mac(self, body: bytes) -> bytes:
        return hmac.new(self._secret, body, hashlib.sha256).digest()

    def issue(self, key: str, role: Role, *, now: float | None = None) -> str:
        now = time.time() if now is None else now
        payload = {
            "k": _digest(key).hex(),
            "r": role.value,
            "exp": int(now) + self._ttl_s,
            "csrf": hashlib.sha256(self._secret + _digest(key) + str(now).encode()).hexdigest()[:32],
        }
        body = base64.urlsafe_b64encode(json.dumps(payload, separators=(",", ":")).encode())
        return f"{body.decode()}.{base64.urlsafe_b64encode(self._mac(body)).decode()}"

    def check(self, cookie: str, keys: KeyRing, *, now: float | None = None) -> tuple[Principal, str] | None:
        """The (principal, csrf token) of a valid, unexpired cookie whose key is still configured."""
        now = time.time() if now is None else now
        body, sep, mac = cookie.partition(".")
        if not sep:
            return None
        try:
            expected = base64.urlsafe_b64decode(mac.encode())
            if not hmac.compare_digest(expected, self._mac(body.encode())):
                return None
            payload = json.loads(base64.urlsafe_b64decode(body.encode()))
            digest = bytes.fromhex(payload["k"])
            role = Role(payload["r"])
            exp = int(payload["exp"])
            csrf = str(payload["csrf"])
        except (ValueError, KeyError, TypeError):
            return None
        if now >= exp:
            return None
        principal = keys.by_digest(digest)
        if principal is None or principal.role is not role:
            return None
        return principal, csrf
