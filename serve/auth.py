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
import logging
import os
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from datasets.errors import InputError

log = logging.getLogger("clearsight.serve.auth")

__all__ = [
    "MAX_KEY_CHARS",
    "STRONG_KEY_CHARS",
    "KeyRing",
    "Principal",
    "Role",
    "SessionSigner",
    "parse_api_keys",
]


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

    @classmethod
    def of_key(cls, role: Role, key: str) -> Principal:
        """The principal a key of ``role`` authenticates as (its name goes in a trader register)."""
        return cls(role=role, fingerprint=_fingerprint(_digest(key)))


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8")).digest()


def _fingerprint(digest: bytes) -> str:
    """A key's name in the audit trail and the trader register: the first 12 hex digits of its digest."""
    return digest.hex()[:12]


class KeyRing:
    """The configured API keys, as (digest, role) pairs; ``short_keys`` names those shorter than
    :data:`STRONG_KEY_CHARS` (see :func:`parse_api_keys`)."""

    def __init__(self, entries: list[tuple[bytes, Role]], *, short_keys: tuple[str, ...] = ()) -> None:
        self._entries = list(entries)
        self.short_keys = short_keys

    def __len__(self) -> int:
        return len(self._entries)

    def by_digest(
        self, presented: bytes, *, derive: Callable[[bytes], bytes] | None = None
    ) -> Principal | None:
        """The principal whose key has this SHA-256 digest (or ``derive(digest)``, when given), or None.

        Every entry is compared (no early exit) so that the time taken does not depend on which
        entry matched.
        """
        found: Principal | None = None
        for digest, role in self._entries:
            expected = digest if derive is None else derive(digest)
            if hmac.compare_digest(presented, expected) and found is None:
                found = Principal(role=role, fingerprint=_fingerprint(digest))
        return found

    def authenticate(self, key: str) -> Principal | None:
        """The principal of ``key``, or None when it matches no configured key."""
        return self.by_digest(_digest(key))

    def names(self) -> list[str]:
        """Each key's name, in the order configured: what the audit trail records and the trader
        register lists, never the key."""
        return [Principal(role=role, fingerprint=_fingerprint(digest)).name for digest, role in self._entries]


STRONG_KEY_CHARS = 20
"""Keys shorter than this are accepted with a warning: the audit trail and the trader register name
each key by 48 bits of its SHA-256, against which anyone who reads them can test guesses offline."""

MAX_KEY_CHARS = 512
"""The longest key taken: at start, and by the review page's sign-in field. Without a limit at start
a longer key worked on the API and could never sign in to the review page."""


def parse_api_keys(spec: str) -> KeyRing:
    """Parse ``"role:key,role:key"`` into a :class:`KeyRing`.

    Raises:
        InputError: an entry without ``:``, an unknown role, a key that is not printable ASCII,
            shorter than 8 or longer than :data:`MAX_KEY_CHARS` characters, or the same key twice
            (the entry named by its number and role, never the key).
    """
    entries: list[tuple[bytes, Role]] = []
    seen: set[bytes] = set()
    short: list[str] = []
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
        if not all(" " <= char <= "~" for char in key):
            # a header's bytes reach the service as Latin-1: a key sent as UTF-8 never matched
            raise InputError(
                f"API key entry #{index + 1} ({role.value}) holds a character that is not printable "
                "ASCII (a letter with an accent, a control character); clients send keys in HTTP "
                "headers, where it could never match: use ASCII letters, digits and punctuation "
                "(secrets.token_urlsafe(24) gives 32)"
            )
        if len(key) < 8:
            raise InputError(
                f"API key entry #{index + 1} ({role.value}) is {len(key)} characters; need at least 8"
            )
        if len(key) > MAX_KEY_CHARS:
            raise InputError(
                f"API key entry #{index + 1} ({role.value}) is {len(key)} characters; at most "
                f"{MAX_KEY_CHARS} are taken (the review page's sign-in takes no longer key)"
            )
        digest = _digest(key)
        if digest in seen:
            raise InputError(f"API key entry #{index + 1} ({role.value}) repeats an earlier key")
        seen.add(digest)
        entries.append((digest, role))
        if len(key) < STRONG_KEY_CHARS:
            short.append(Principal(role=role, fingerprint=_fingerprint(digest)).name)
    return KeyRing(entries, short_keys=tuple(short))


class SessionSigner:
    """Signs and checks the review page's session cookie: ``base64(payload).base64(hmac)``.

    The payload holds a random session id, the key's id (an HMAC of the key's digest under the
    server's secret: a cookie seen in transit gives nothing to test guessed keys against), the role,
    an expiry and a CSRF token. The cookie is useless without the secret; a key removed from settings
    ends its sessions, and signing out ends one (its id is kept among the revoked until it expires,
    in ``revoked_dir`` where every worker sees it, or in memory without one).

    A session also ends after ``idle_s`` without a request (a workstation left signed in): each
    session's last use is kept beside the revoked ids, as the time of a ``<id>.seen`` file.
    """

    def __init__(
        self, secret: bytes, *, ttl_s: int, idle_s: int | None = None, revoked_dir: Path | None = None
    ) -> None:
        self._secret = secret
        self._ttl_s = ttl_s
        self._idle_s = ttl_s if idle_s is None else idle_s
        self._revoked_dir = revoked_dir
        self._revoked: dict[str, int] = {}
        self._seen: dict[str, float] = {}

    def _mac(self, body: bytes) -> bytes:
        return hmac.new(self._secret, body, hashlib.sha256).digest()

    def _key_id(self, digest: bytes) -> bytes:
        return self._mac(b"session-key:" + digest)

    def issue(self, key: str, role: Role, *, now: float | None = None) -> str:
        now = time.time() if now is None else now
        sid = secrets.token_hex(16)
        payload = {
            "sid": sid,
            "k": self._key_id(_digest(key)).hex(),
            "r": role.value,
            "exp": int(now) + self._ttl_s,
            "csrf": self._mac(b"csrf:" + sid.encode()).hex()[:32],
        }
        self._forget_idle(now)
        self._mark_seen(sid, now)
        body = base64.urlsafe_b64encode(json.dumps(payload, separators=(",", ":")).encode())
        return f"{body.decode()}.{base64.urlsafe_b64encode(self._mac(body)).decode()}"

    def _payload(self, cookie: str) -> tuple[str, bytes, Role, int, str] | None:
        """(session id, key id, role, expiry, csrf) of a cookie this server signed, or None."""
        body, sep, mac = cookie.partition(".")
        if not sep:
            return None
        try:
            expected = base64.urlsafe_b64decode(mac.encode())
            if not hmac.compare_digest(expected, self._mac(body.encode())):
                return None
            payload = json.loads(base64.urlsafe_b64decode(body.encode()))
            sid = str(payload["sid"])
            if not _SESSION_ID.fullmatch(sid):
                return None
            return (
                sid,
                bytes.fromhex(payload["k"]),
                Role(payload["r"]),
                int(payload["exp"]),
                str(payload["csrf"]),
            )
        except (ValueError, KeyError, TypeError):
            return None

    def check(self, cookie: str, keys: KeyRing, *, now: float | None = None) -> tuple[Principal, str] | None:
        """The (principal, csrf token) of a valid, unexpired, not signed-out, recently used cookie whose
        key is still configured; a valid one counts as used now."""
        now = time.time() if now is None else now
        parsed = self._payload(cookie)
        if parsed is None:
            return None
        sid, key_id, role, exp, csrf = parsed
        if now >= exp or self._is_revoked(sid):
            return None
        seen = self._last_seen(sid)
        if seen is None or now - seen >= self._idle_s:
            return None
        principal = keys.by_digest(key_id, derive=self._key_id)
        if principal is None or principal.role is not role:
            return None
        self._mark_seen(sid, now)
        return principal, csrf

    def revoke(self, cookie: str, *, now: float | None = None) -> None:
        """End the session of ``cookie`` (signing out) on every worker; an unsigned cookie is ignored."""
        now = time.time() if now is None else now
        parsed = self._payload(cookie)
        if parsed is None:
            return
        sid, _, _, exp, _ = parsed
        if self._revoked_dir is None:
            self._revoked = {s: e for s, e in self._revoked.items() if e > now}
            self._revoked[sid] = exp
            self._seen.pop(sid, None)
            return
        self._revoked_dir.mkdir(parents=True, exist_ok=True)
        for old in self._revoked_dir.iterdir():  # forget the ids of sessions that have expired anyway
            if old.suffix == ".seen":
                continue
            try:
                if int(old.read_text(encoding="ascii")) <= now:
                    old.unlink()
            except (OSError, ValueError):
                continue
        (self._revoked_dir / sid).write_text(str(exp), encoding="ascii")
        self._seen_file(sid).unlink(missing_ok=True)

    def _is_revoked(self, sid: str) -> bool:
        if self._revoked_dir is None:
            return sid in self._revoked
        return (self._revoked_dir / sid).exists()

    def _seen_file(self, sid: str) -> Path:
        assert self._revoked_dir is not None
        return self._revoked_dir / f"{sid}.seen"

    def _mark_seen(self, sid: str, now: float) -> None:
        if self._revoked_dir is None:
            self._seen[sid] = now
            return
        path = self._seen_file(sid)
        try:
            try:
                os.utime(path, (now, now))
            except FileNotFoundError:
                self._revoked_dir.mkdir(parents=True, exist_ok=True)
                path.touch()
                os.utime(path, (now, now))
        except OSError as exc:  # the session then ends at its last recorded use: the safe side
            log.warning("session last use not recorded in %s: %s", self._revoked_dir, exc)

    def _last_seen(self, sid: str) -> float | None:
        """When the session was last used, on any worker; None for one never seen (issued by a server
        that kept no such record, or forgotten once idle)."""
        if self._revoked_dir is None:
            return self._seen.get(sid)
        try:
            return self._seen_file(sid).stat().st_mtime
        except FileNotFoundError:  # never recorded, or forgotten once idle
            return None
        except OSError as exc:  # the safe side: the session has ended
            log.warning("session last use not read in %s: %s", self._revoked_dir, exc)
            return None

    def _forget_idle(self, now: float) -> None:
        """Drop the last-use records of sessions idle past their end (they cannot come back)."""
        if self._revoked_dir is None:
            self._seen = {s: t for s, t in self._seen.items() if now - t < self._idle_s}
            return
        for path in self._revoked_dir.glob("*.seen") if self._revoked_dir.is_dir() else ():
            try:
                if now - path.stat().st_mtime >= self._idle_s:
                    path.unlink()
            except OSError:  # gone already, or not ours to remove: tidying only
                continue


_SESSION_ID = re.compile(r"[0-9a-f]{32}")
