"""Runtime settings, read once at an entry point (CLI main, server lifespan) and passed down.

``datasets``, ``models`` and ``pipeline`` code never reads the environment itself: it takes what it
needs as arguments. Every field can be set as ``CLEARSIGHT_<FIELD>`` in the environment or a
``.env`` file.
"""

from __future__ import annotations

import enum
from typing import Any, Self

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from datasets.errors import InputError
from pipeline.audit.image_indexes import MAX_NEAR_COPY_BITS
from pipeline.audit.seal import SealKey

__all__ = [
    "DEVELOPMENT_AUDIT_SECRET",
    "MAX_OUTCOME_NOTES_CHARS",
    "MIN_AUDIT_SECRET_CHARS",
    "RuntimeName",
    "Settings",
    "audit_key",
    "audit_seal_key",
    "completion_seal_key",
    "row_seal_key",
    "decode_limits",
    "previous_audit_seal_key",
    "weak_audit_secret",
]

DEVELOPMENT_AUDIT_SECRET = "clearsight-development-secret"
"""The public default of ``Settings.audit_secret``: anyone who reads this source can compute which
shipments it picks for random audits, so decisions are not recorded, nor served, under it (or any
secret shorter than :data:`MIN_AUDIT_SECRET_CHARS`) unless a trial says so."""
MIN_AUDIT_SECRET_CHARS = 16
"""Shortest audit secret accepted for recorded decisions: an empty or short key is guessable."""
MAX_OUTCOME_NOTES_CHARS = 2000
"""Longest notes an officer's outcome takes, from the CLI, the API and the review page alike: an
outcome stays in the audit chain for good, and every export and verification reads it again."""


class RuntimeName(enum.StrEnum):
    """What runs a loaded model's scoring graph; the same names as ``models.runtime.RUNTIMES``."""

    onnxruntime = "onnxruntime"
    torch = "torch"


class Settings(BaseSettings):
    """Settings shared by the CLI and the server."""

    model_config = SettingsConfigDict(env_prefix="CLEARSIGHT_", env_file=".env", extra="ignore")

    @classmethod
    def load(cls, **values: Any) -> Self:
        """The settings from ``values``, the environment and ``.env``, as the commands read them.

        Raises:
            InputError: ``.env`` cannot be read (not UTF-8: a file saved as UTF-16, as PowerShell 5's
                ``echo X=1 > .env`` writes one, was an "unexpected UnicodeDecodeError", exit 1).
        """
        try:
            return cls(**values)
        except (UnicodeDecodeError, OSError) as exc:  # only reading the env file raises these here
            why = exc.reason if isinstance(exc, UnicodeDecodeError) else exc.strerror or exc
            raise InputError(
                f"the settings file {str(cls.model_config.get('env_file'))!r} in the working folder cannot "
                f"be read ({why}); save it as UTF-8 text, or remove it"
            ) from exc

    audit_db: str = Field(
        default="sqlite:///clearsight.db",
        description="SQLAlchemy URL of the audit store (sqlite:///FILE or postgresql+psycopg://...).",
    )
    audit_secret: SecretStr = Field(
        default=SecretStr(DEVELOPMENT_AUDIT_SECRET),
        description="Key of the HMAC that picks random compliance audits, and from which the key that "
        "seals audit records is derived. Set a real secret in production, and keep it: records sealed "
        "under another fail verification.",
    )
    previous_audit_secret: SecretStr | None = Field(
        default=None,
        description="Read by `clearsight audit seal --rotate` only: the secret the audit records were "
        "sealed under, whose seals are checked before every record is sealed again under audit_secret.",
    )
    max_image_bytes: int = Field(default=64 * 1024 * 1024, gt=0, description="Largest image file accepted.")
    max_image_pixels: int = Field(
        default=50_000_000, gt=0, description="Largest width x height accepted (decompression-bomb guard)."
    )
    near_copy_bits: int = Field(
        default=32,
        ge=0,
        le=MAX_NEAR_COPY_BITS,
        description=(
            "A picture whose fine perceptual hash lies at most this many of 256 bits from one decided "
            "in another shipment (re-encoded, resized, retouched) counts as a near-copy, in the service and "
            "in batch decisions recorded in the audit store; 0 catches the same bytes only."
        ),
    )
    debug: bool = Field(default=False, description="Show tracebacks for errors.")
    allow_development_audit_secret: bool = Field(
        default=False,
        description="A trial only: record decisions whose random audits were picked with the public "
        "development audit_secret (or one shorter than 16 characters).",
    )
    runtime: RuntimeName = Field(
        default=RuntimeName.onnxruntime,
        description="What runs a loaded model's scoring graph (models.runtime.RUNTIMES): ONNX Runtime, "
        "traced on load and checked against PyTorch, or PyTorch itself.",
    )


def decode_limits(settings: Settings) -> Any:
    """The image decoder's bounds (``datasets.decode.DecodeLimits``) these settings set."""
    from datasets.decode import DecodeLimits  # Pillow and OpenCV load only where images are read

    return DecodeLimits(max_bytes=settings.max_image_bytes, max_pixels=settings.max_image_pixels)


def weak_audit_secret(settings: Settings) -> bool:
    """The public development default, or a secret shorter than :data:`MIN_AUDIT_SECRET_CHARS`."""
    return _weak(settings.audit_secret.get_secret_value())


def _weak(secret: str) -> bool:
    return secret == DEVELOPMENT_AUDIT_SECRET or len(secret) < MIN_AUDIT_SECRET_CHARS


def audit_seal_key(settings: Settings) -> SealKey:
    """The key that seals audit records and checks their seals, derived from ``audit_secret`` under
    its own label (:meth:`~pipeline.audit.seal.SealKey.derive`), so that it is never the key of the
    random-audit draws; ``weak`` where the secret is (:func:`weak_audit_secret`): anyone could seal."""
    return SealKey.derive(settings.audit_secret.get_secret_value(), weak=weak_audit_secret(settings))


def completion_seal_key(settings: Settings) -> bytes | None:
    """The key that seals score outputs' completion records and checks their seals, derived from
    ``audit_secret`` under its own label (:func:`pipeline.score.completion.completion_seal_key`),
    never the audit chain's seal key nor the random-audit draws' key; None where the secret is weak
    (:func:`weak_audit_secret`): a seal anyone could compute vouches for nothing."""
    if weak_audit_secret(settings):
        return None
    from pipeline.score.completion import completion_seal_key as derive  # its own label lives there

    return derive(settings.audit_secret.get_secret_value())


def row_seal_key(settings: Settings) -> bytes | None:
    """The key that seals each row of a score output and checks it, derived from ``audit_secret``
    under its own label (:func:`pipeline.row_seal.row_seal_key`), no other key's; None where the
    secret is weak (:func:`weak_audit_secret`), as for :func:`completion_seal_key`."""
    if weak_audit_secret(settings):
        return None
    from pipeline.row_seal import row_seal_key as derive  # its own label lives there

    return derive(settings.audit_secret.get_secret_value())


def previous_audit_seal_key(settings: Settings) -> SealKey | None:
    """The seal key of ``previous_audit_secret`` (None: not set), ``weak`` as :func:`weak_audit_secret`
    judges a secret: a rotation away from the public development secret checks seals anyone could
    have made."""
    if settings.previous_audit_secret is None:
        return None
    secret = settings.previous_audit_secret.get_secret_value()
    return SealKey.derive(secret, weak=_weak(secret))


def audit_key(settings: Settings, *, recording: bool) -> tuple[bytes, str | None]:
    """The random-audit key, and a warning to print when it is weak (:func:`weak_audit_secret`).

    Args:
        settings: the run's settings.
        recording: the decisions go into an audit store (they are operative), not only a file.

    Raises:
        InputError: a weak secret while ``recording``, without ``allow_development_audit_secret``:
            anyone who reads the source, or guesses a short key, could compute which shipments
            random audits pick.
    """
    from datasets.errors import InputError

    secret = settings.audit_secret.get_secret_value()
    if not weak_audit_secret(settings):
        return secret.encode("utf-8"), None
    if recording and not settings.allow_development_audit_secret:
        raise InputError(
            "audit_secret is the public development default or shorter than "
            f"{MIN_AUDIT_SECRET_CHARS} characters, so anyone could compute which shipments random audits "
            "pick: set CLEARSIGHT_AUDIT_SECRET to a long random secret before recording decisions (or "
            "CLEARSIGHT_ALLOW_DEVELOPMENT_AUDIT_SECRET=1 for a trial)"
        )
    return secret.encode("utf-8"), (
        "random audits were picked with a weak audit_secret (the public development default, or "
        f"under {MIN_AUDIT_SECRET_CHARS} characters); set CLEARSIGHT_AUDIT_SECRET before these "
        "decisions are used"
    )
