"""Settings of the HTTP service: the shared :class:`~pipeline.settings.Settings` plus server-only ones.

Built once at the entry point (``clearsight serve`` or the uvicorn factory) and handed to
:func:`serve.app.create_app`; nothing below reads the environment. Every field can be set as
``CLEARSIGHT_<FIELD>``, e.g. ``CLEARSIGHT_API_KEYS="officer:s3cret,submitter:k3y"``.
"""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path
from typing import Annotated

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import NoDecode

from datasets.decode import ACCEPTED_FORMATS
from pipeline.settings import Settings

__all__ = ["DEFAULT_FORMATS", "ServeSettings"]

DEFAULT_FORMATS = ("png", "jpeg", "tiff", "bmp", "webp")
_FORMAT_ALIASES = {"jpg": "jpeg", "tif": "tiff"}


class ServeSettings(Settings):
    """Everything ``clearsight serve`` needs, validated eagerly."""

    models: Annotated[list[Path], NoDecode] = Field(
        default_factory=list,
        description="Model directories to load at start-up (one per cargo type); in the env, "
        "comma-separated or a JSON list of strings (for a folder name holding a comma).",
    )
    policy: Path | None = Field(
        default=None, description="Decision policy YAML; the packaged default if unset."
    )
    trader_register: Path | None = Field(
        default=None,
        description="CSV of trusted traders (trader_id, aeo_tier, submitters) as the customs authority "
        "keeps it: the AEO tier a shipment is decided under. Submitters never declare a tier, register "
        "or not; a submitter's shipments get a trader's tier only where the register names its key "
        "among that trader's submitters. Unset: no shipment of a submitter's gets a tier.",
    )
    data_dir: Path = Field(
        default=Path("runs/serve"), description="Where uploaded images and heatmaps are kept for review."
    )
    host: str = Field(default="127.0.0.1", description="Interface to bind.")
    port: int = Field(default=8000, ge=0, le=65535, description="TCP port (0 picks a free one).")
    workers: int = Field(default=1, ge=1, le=64, description="uvicorn worker processes.")

    api_keys: SecretStr = Field(
        default=SecretStr(""),
        description="Comma-separated role:key pairs; roles are submitter, officer and admin.",
    )
    insecure_dev: bool = Field(
        default=False,
        description="Development only: start WITHOUT authentication when no API keys are set, and with "
        "a weak audit_secret (random audits predictable).",
    )
    metrics_public: bool = Field(default=False, description="Serve /metrics without an API key.")
    api_docs: bool = Field(
        default=False,
        description="Serve the OpenAPI schema (/openapi.json) and its pages (/docs, /redoc) to anyone; "
        "the pages load their scripts from a public CDN.",
    )
    session_secret: SecretStr | None = Field(
        default=None,
        description="Key that signs review-page session cookies, 16 characters or more; random per "
        "start if unset.",
    )
    session_ttl_s: int = Field(default=8 * 3600, gt=0, description="Lifetime of a review-page session.")
    session_idle_s: int = Field(
        default=30 * 60, gt=0, description="A review-page session unused this long ends (sign in again)."
    )
    auth_failures_per_minute: int = Field(
        default=20,
        ge=0,
        description="Wrong API keys one client address (an IPv6 address's /64) may send per minute "
        "before it must wait (429); an IPv6 address's /48 may send 10 times as many, all its /64s "
        "together, before every one of them waits. "
        "0 turns the lockout off. Behind a reverse proxy all clients share its address, unless "
        "forwarded_allow_ips names it.",
    )
    forwarded_allow_ips: Annotated[tuple[str, ...], NoDecode] = Field(
        default=(),
        description="Addresses or networks (10.0.0.5, 10.0.0.0/24; comma-separated in the env) of "
        "reverse proxies whose X-Forwarded-For says who the client is. Empty: no proxy is trusted, "
        "and a client is the address its connection comes from, whatever its headers say. A proxy "
        "named here must set X-Forwarded-For itself (overwrite it, or append the address it was "
        "connected from), never pass a client's on alone.",
    )
    cookie_secure: bool = Field(default=False, description="Mark the session cookie Secure (behind HTTPS).")

    max_request_bytes: int = Field(
        default=64 * 1024 * 1024, gt=0, description="Largest request body accepted."
    )
    body_timeout_s: float = Field(
        default=30.0,
        gt=0,
        description="A request body may go this long without a byte, and take this long beyond one "
        "second per body_min_bytes_per_s bytes it sends, before 408 (time the service spends not "
        "reading it does not count): a client trickling a body holds a connection no longer.",
    )
    body_min_bytes_per_s: int = Field(
        default=500,
        gt=0,
        description="The slowest a request body may arrive on average, after its first body_timeout_s.",
    )
    limit_concurrency: int = Field(
        default=500,
        gt=0,
        description="Most connections one worker holds open at once; a request past it is answered "
        "503 at once by uvicorn (plain text). Below the usual limit of 1,024 open files a process. "
        "Half of it (at least 1) may wait for a request head at once, whatever their clients: one "
        "more closes the one that has waited longest (503 where part of a head came), so a request "
        "sent promptly always finds room.",
    )
    header_timeout_s: float = Field(
        default=10.0,
        gt=0,
        description="A request head (request line and headers) must arrive whole this long after its "
        "connection opened or the answer before it ended, or the connection is closed (408): uvicorn "
        "times no head, so connections trickling one held limit_concurrency full for good.",
    )
    max_connections_per_client: int = Field(
        default=50,
        ge=0,
        description="Most connections one client address (an IPv6 address's /64) holds open in a "
        "worker at once; more are answered 503 and closed at once. The proxies in forwarded_allow_ips "
        "are not capped; behind a proxy not named there, all clients share its cap. 0: no cap.",
    )
    max_images_per_request: int = Field(default=32, gt=0, description="Most images in one request.")
    max_request_pixels: int = Field(
        default=400_000_000,
        gt=0,
        description="Most pixels (width x height, summed over the images, a 16-bit pixel counted "
        "twice) in one request, read from the headers before anything is decoded.",
    )
    max_pixels_in_flight: int = Field(
        default=1_000_000_000,
        gt=0,
        description="Most decoded pixels all requests in flight may hold at once (then 503 with "
        "Retry-After), a 16-bit pixel counted twice; at least max_request_pixels.",
    )
    max_pixel_wait_s: float = Field(
        default=5.0,
        ge=0,
        description="How long a request waits in line for room in max_pixels_in_flight before 503 "
        "(first come, first served; 0: answer 503 at once).",
    )
    allowed_formats: Annotated[tuple[str, ...], NoDecode] = Field(
        default=DEFAULT_FORMATS, description="Image formats accepted (comma-separated in the env)."
    )

    max_batch_size: int = Field(default=16, gt=0, description="Most images the batcher scores in one call.")
    max_wait_ms: float = Field(
        default=10.0, ge=0, description="How long the batcher waits for more images before scoring a batch."
    )
    queue_size: int = Field(default=256, gt=0, description="Images waiting per cargo type before 503.")
    request_timeout_s: float = Field(
        default=30.0, gt=0, description="Per-request scoring deadline (then 504)."
    )
    retry_after_s: int = Field(
        default=2,
        gt=0,
        description="Retry-After of a 503: the queue full, the audit store, a model or the engine "
        "unavailable.",
    )

    @field_validator("models", mode="before")
    @classmethod
    def _split_models(cls, value: object) -> object:
        if isinstance(value, str) and value.lstrip().startswith("["):
            # what `clearsight serve` hands its workers: folder names kept whole, commas and all
            try:
                parts = json.loads(value)
            except ValueError:
                raise ValueError(
                    f"{value[:80]!r} starts as a JSON list but is not one; give a JSON list of "
                    'folder names (["a", "b"]) or comma-separated names'
                ) from None
            if not isinstance(parts, list) or not all(isinstance(part, str) for part in parts):
                raise ValueError(f"{value[:80]!r} is not a JSON list of folder names")
            return parts
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("allowed_formats", mode="before")
    @classmethod
    def _split_formats(cls, value: object) -> object:
        if isinstance(value, str):
            value = list(value.split(","))
        if not isinstance(value, list | tuple):
            return value
        named = [str(part).strip().lower() for part in value if str(part).strip()]
        # the decoder names formats by their own name: "jpg" left as written would refuse every JPEG
        formats = tuple(dict.fromkeys(_FORMAT_ALIASES.get(name, name) for name in named))
        unknown = [name for name in formats if name not in ACCEPTED_FORMATS]
        if unknown:
            raise ValueError(
                f"unknown image format(s) {', '.join(map(repr, unknown))}; accepted: "
                f"{', '.join(ACCEPTED_FORMATS)} (jpg and tif read as jpeg and tiff)"
            )
        if not formats:
            raise ValueError(f"no image format given; accepted: {', '.join(ACCEPTED_FORMATS)}")
        return formats

    @field_validator("forwarded_allow_ips", mode="before")
    @classmethod
    def _split_proxies(cls, value: object) -> object:
        if isinstance(value, str):
            value = value.split(",")
        if not isinstance(value, list | tuple):
            return value
        proxies = []
        for part in (str(part).strip() for part in value):
            if not part:
                continue
            try:
                # uvicorn takes an entry it cannot parse for a literal host name and never matches a
                # proxy's address against it: a typo would silently trust no one
                proxy = (
                    ipaddress.ip_network(part, strict=False) if "/" in part else ipaddress.ip_address(part)
                )
            except ValueError:
                wrong = "is not an IP address or network"
                if part == "*":
                    wrong = "would trust every client's word for its address"
                raise ValueError(
                    f"{part!r} {wrong}; name each trusted proxy by its address (10.0.0.5, ::1) or "
                    "network (10.0.0.0/24)"
                ) from None
            proxies.append(str(proxy))
        return tuple(proxies)

    @model_validator(mode="after")
    def _budgets_fit_a_request(self) -> ServeSettings:
        if self.max_pixels_in_flight < self.max_request_pixels:
            raise ValueError(
                f"max_pixels_in_flight ({self.max_pixels_in_flight:,}) must be at least "
                f"max_request_pixels ({self.max_request_pixels:,}), or no request of the largest "
                "accepted size could ever be scored"
            )
        if self.queue_size < self.max_images_per_request:
            # a request enqueues all its images at once: it would be told to retry, for ever
            raise ValueError(
                f"queue_size ({self.queue_size}) must be at least max_images_per_request "
                f"({self.max_images_per_request}), or a request of the most images accepted could "
                "never be queued"
            )
        return self
