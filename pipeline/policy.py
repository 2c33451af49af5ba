"""The versioned decision policy: thresholds, hard overrides, trusted traders and random audits.

A policy is a YAML file validated eagerly by pydantic models that forbid unknown keys. Anything that
does not validate is refused with a :class:`~datasets.errors.PolicyError` naming the key path, the
value and what would be accepted. The bundled example (``pipeline/policies/example.yaml``, see
:func:`default_policy_path`) explains every rule in comments.

Two invariants are enforced by the schema itself rather than left to whoever writes the YAML:

* no rule that is meant to hold cargo (overrides, fail-closed cases, random audits, score tiers)
  can be configured to ``RELEASE``;
* trusted-trader tiers only carry a threshold offset; there is no key that exempts them from
  overrides or random audits.

``Policy.sha256`` hashes the *validated* content as canonical JSON, so comments and formatting do
not change it but any change in meaning does; every decision records it.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    model_validator,
)

from datasets.errors import PolicyError
from pipeline.verdicts import Tier

__all__ = [
    "CargoPolicy",
    "FailClosedTiers",
    "ImageTiers",
    "MAX_MODEL_ID",
    "OverrideTiers",
    "Policy",
    "RandomAudit",
    "TrustedTrader",
    "default_policy_path",
    "load_policy",
    "model_cargo_type",
    "parse_policy",
]

_INSPECTION_TIERS = (Tier.REMOTE_INSPECTION.value, Tier.PHYSICAL_INSPECTION.value)


def _inspection_tier(value: Any) -> Tier:
    """Accept only the two inspection tiers: a rule that exists to hold cargo can never release it."""
    if isinstance(value, Tier) and value is not Tier.RELEASE:
        return value
    if isinstance(value, str) and value in _INSPECTION_TIERS:
        return Tier(value)
    raise ValueError(f"must be one of {', '.join(_INSPECTION_TIERS)}")


_EXPONENT = re.compile(r"[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+")


def _exponent(value: Any) -> Any:
    """A number written with an exponent (``1e-2``, ``2.5E-1``) as the number: YAML 1.1, which
    PyYAML reads, takes it for text (it wants a dot and a signed exponent), and a threshold written
    so was refused as "not a number". Only in number fields: a version or a name stays as written."""
    if isinstance(value, str) and _EXPONENT.fullmatch(value.strip()):
        return float(value.strip().replace("_", ""))
    return value


def _threshold(value: Any) -> float | Literal["model"]:
    """``"model"`` (use the model's own operating point) or a number in [0, 1]."""
    if value == "model":
        return "model"
    value = _exponent(value)
    # bool is an int subclass: ``true`` in YAML is a typo, not a threshold of 1.
    if isinstance(value, int | float) and not isinstance(value, bool) and 0.0 <= float(value) <= 1.0:
        return float(value)
    raise ValueError('must be "model" or a number in [0, 1]')


def _rate(value: Any) -> float:
    """A number in [0, 1]: YAML's ``yes`` (a bool) or ``"0.03"`` (a string) is a typo, not a rate."""
    value = _exponent(value)
    if isinstance(value, int | float) and not isinstance(value, bool) and 0.0 <= float(value) <= 1.0:
        return float(value)  # NaN fails both comparisons
    raise ValueError("must be a number in [0, 1]")


def _odds_factor(value: Any) -> float:
    """A number from 1 to 4: YAML's ``true`` (a bool) or ``"2"`` (a string) is a typo, not a factor."""
    value = _exponent(value)
    if isinstance(value, int | float) and not isinstance(value, bool) and 1.0 <= float(value) <= 4.0:
        return float(value)  # NaN fails both comparisons
    raise ValueError("must be a number from 1 to 4")


MAX_MODEL_ID = 200
"""The longest model id a policy may name (a cargo type, a backbone name and 16 hex digits)."""

_MODEL_ID = re.compile(r"\S(?:.*\S)?-[0-9a-f]{16}")
_OWN_ID = re.compile(r"[A-Za-z0-9_.]+-[0-9a-f]{16}")
"""What follows ``<cargo type>-`` in a model id: a backbone's name (no hyphen) and 16 hex digits."""
_SHORT_ID = re.compile(r"\S(?:.*\S)?-[0-9a-f]{8}")
"""The id of a model of artifact format 5 or 6 (``models.artifact``): 8 hex digits, 32 bits of its
content hash, which a forged model folder (a raised release threshold, a free-text field searched)
can be made to match in minutes of CPU; a policy approves models by id alone, so it lists none."""


_CARGO_OF_ID = re.compile(r"(.+)-[A-Za-z0-9_.]+-(?:[0-9a-f]{16}|[0-9a-f]{8})")
"""A model id as training names it: ``<cargo type>-<backbone>-<16 hex>`` (8 hex: artifact format 5
or 6, which still scores); the backbone's name holds no hyphen, so the cargo type is all before it."""


@functools.lru_cache(maxsize=1024)  # a few models score a run's many rows, each looked up often
def model_cargo_type(model_id: str | None) -> str | None:
    """The cargo type ``model_id`` names (``<cargo type>-<backbone>-<hex>``, :data:`_CARGO_OF_ID`), or
    None for an id of another form (or none): the model's card fixes it, and its id says it."""
    if not model_id or len(model_id) > MAX_MODEL_ID:
        return None
    found = _CARGO_OF_ID.fullmatch(model_id)
    return found.group(1) if found is not None else None


def _of_cargo(model_id: str, cargo: str) -> bool:
    """Whether ``model_id`` is ``<cargo>-<backbone>-<16 hex>``."""
    return model_id.startswith(f"{cargo}-") and _OWN_ID.fullmatch(model_id[len(cargo) + 1 :]) is not None


def _model_ids(value: Any) -> tuple[str, ...]:
    """A non-empty list of distinct model ids, each ``<cargo type>-<backbone>-<16 hex>`` as a model
    card, ``clearsight train`` and every verdict name it: a bare string is a typo for a list of one,
    and an empty list would approve no model (set ``release_threshold: 0`` to release nothing). An
    id of 8 hex digits (:data:`_SHORT_ID`) is refused, saying why."""
    if not isinstance(value, list | tuple) or not value:
        raise ValueError(
            "must be a non-empty list of model ids (as model.json's model_id names them, "
            "e.g. [bulk_ore-lite0-3f2a9c1b0d4e5f6a]); leave the key out to take any model's scores"
        )
    for entry in value:
        if isinstance(entry, str) and len(entry) <= MAX_MODEL_ID and _SHORT_ID.fullmatch(entry):
            raise ValueError(
                f"{entry!r} is a model id of 8 hex digits, from a model trained before this version, "
                "which a forged model folder can be made to match in minutes of CPU; train the model "
                "again, and list the id of 16 hex digits that `clearsight train` prints"
            )
        if not (isinstance(entry, str) and len(entry) <= MAX_MODEL_ID and _MODEL_ID.fullmatch(entry)):
            raise ValueError(
                f"{entry!r} is not a model id: <cargo type>-<backbone>-<16 hex digits> of at most "
                f"{MAX_MODEL_ID} characters, as model.json's model_id names it"
            )
    if len(set(value)) != len(value):
        twice = next(entry for entry in value if value.count(entry) > 1)
        raise ValueError(f"{twice!r} is listed twice; list each model once")
    return tuple(value)


InspectionTier = Annotated[Tier, BeforeValidator(_inspection_tier)]
Threshold = Annotated[float | Literal["model"], BeforeValidator(_threshold)]
ModelIds = Annotated[tuple[str, ...], BeforeValidator(_model_ids)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CargoPolicy(_Strict):
    """Thresholds for one cargo type; ``"model"`` means the scoring model's own operating point.

    ``models``, where given, lists the models approved to score this cargo: a score from any other
    fails closed (``fail_closed.unapproved_model``), and a service or ``clearsight score --policy``
    refuses to start with one. A model id covers the model's weights and thresholds, so that a model
    swapped under a policy of ``"model"`` thresholds changes the policy's hash too, not only the
    cut-offs. Left out, any model's scores are taken (the policy's hash is then what it was before
    the key existed).
    """

    release_threshold: Threshold = "model"
    hold_threshold: Threshold = "model"
    models: ModelIds | None = None

    @model_validator(mode="after")
    def _hold_not_below_release(self) -> CargoPolicy:
        r, h = self.release_threshold, self.hold_threshold
        if isinstance(r, float) and isinstance(h, float) and h < r:
            raise ValueError(f"hold_threshold {h} is below release_threshold {r}; it must be >= it")
        return self


class OverrideTiers(_Strict):
    """Declaration flags that force an inspection whatever the image scores say (default: hold), and
    a picture, or a near-copy of one, that was decided before in another shipment (default: remote
    inspection).

    A radiation alarm is always a physical hold: a camera or a video call cannot clear it.
    """

    radiation_alarm: InspectionTier = Tier.PHYSICAL_INSPECTION
    suspected_solid_waste: InspectionTier = Tier.PHYSICAL_INSPECTION
    document_mismatch: InspectionTier = Tier.PHYSICAL_INSPECTION
    declared_foreign_inclusions: InspectionTier = Tier.PHYSICAL_INSPECTION
    # RELEASE records the rule without holding: one scan may show several consignments of one container
    image_reused: Tier = Tier.REMOTE_INSPECTION
    # a near-copy (re-encoded, resized, retouched: datasets.perceptual_hash); a tier of its own, since
    # a site whose pictures vary little may see look-alikes that are no copies
    image_near_copy: Tier = Tier.REMOTE_INSPECTION

    @model_validator(mode="after")
    def _radiation_is_held(self) -> OverrideTiers:
        if self.radiation_alarm is not Tier.PHYSICAL_INSPECTION:
            raise ValueError(
                f"radiation_alarm = {self.radiation_alarm.value}: a radiation alarm must be "
                "PHYSICAL_INSPECTION (no remote inspection can clear it)"
            )
        return self


class FailClosedTiers(_Strict):
    """Where a shipment goes when it cannot be judged; never ``RELEASE``."""

    no_image: InspectionTier = Tier.REMOTE_INSPECTION
    image_error: InspectionTier = Tier.REMOTE_INSPECTION
    unknown_cargo_type: InspectionTier = Tier.REMOTE_INSPECTION
    mixed_cargo_types: InspectionTier = Tier.REMOTE_INSPECTION
    missing_score: InspectionTier = Tier.REMOTE_INSPECTION
    invalid_score: InspectionTier = Tier.REMOTE_INSPECTION
    missing_model_id: InspectionTier = Tier.REMOTE_INSPECTION
    unapproved_model: InspectionTier = Tier.REMOTE_INSPECTION
    missing_threshold: InspectionTier = Tier.REMOTE_INSPECTION
    off_training_scale: InspectionTier = Tier.REMOTE_INSPECTION


class ImageTiers(_Strict):
    """How one image's score maps to a tier; the shipment takes the most severe of its images."""

    at_or_above_hold: InspectionTier = Tier.PHYSICAL_INSPECTION
    at_or_above_release: InspectionTier = Tier.REMOTE_INSPECTION

    @model_validator(mode="after")
    def _hold_at_least_as_severe(self) -> ImageTiers:
        if self.at_or_above_hold.severity < self.at_or_above_release.severity:
            raise ValueError(
                f"at_or_above_hold = {self.at_or_above_hold.value} is milder than at_or_above_release = "
                f"{self.at_or_above_release.value}; a higher score must never get a milder tier"
            )
        return self


class TrustedTrader(_Strict):
    """An AEO tier: the odds of its release threshold are multiplied by ``release_odds_factor``
    (never above hold; a release threshold of 0 stays 0). ``t`` becomes ``f t / (1 - t + f t)``:
    about ``f`` times a small threshold, whatever the model's scale, where an offset in score points
    moved a model's cut of 0.01 six times and one of 0.5 a tenth."""

    release_odds_factor: Annotated[float, BeforeValidator(_odds_factor)]

    @model_validator(mode="before")
    @classmethod
    def _no_offset(cls, data: Any) -> Any:
        if isinstance(data, dict) and "threshold_offset" in data:
            raise ValueError(
                "threshold_offset (score points) is replaced by release_odds_factor (1 to 4): an offset "
                "of 0.05 moved a release threshold of 0.01 to 0.06, six times over; a factor of 1.5 "
                "moves it to 0.015"
            )
        return data

    def raised(self, release: float, hold: float) -> float:
        """The release threshold for this tier: its odds times the factor, never above ``hold``."""
        if not 0.0 < release < 1.0 or self.release_odds_factor == 1.0:
            return release
        odds = self.release_odds_factor * release / (1.0 - release)
        return min(odds / (1.0 + odds), max(hold, release))


class RandomAudit(_Strict):
    """Random compliance audits (WTO TFA Art. 7.4): a share ``rate`` of all shipments, drawn
    whatever their images say, is inspected at least at ``tier`` (a floor: a shipment held more
    strictly stays so). So ``rate`` of the would-be-released shipments are inspected anyway, and a
    physical audit tier never lets a suspect picture soften a picked shipment to a remote one."""

    rate: Annotated[float, BeforeValidator(_rate)]
    tier: InspectionTier = Tier.REMOTE_INSPECTION


class Policy(_Strict):
    """A validated decision policy. Build it with :func:`load_policy` or :func:`parse_policy`."""

    policy_version: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:+-]*$")
    cargo_types: dict[Annotated[str, Field(min_length=1, max_length=64)], CargoPolicy] = Field(min_length=1)
    overrides: OverrideTiers = OverrideTiers()
    trusted_traders: dict[Annotated[str, Field(min_length=1, max_length=32)], TrustedTrader] = Field(
        default_factory=dict
    )
    random_audit: RandomAudit = RandomAudit(rate=0.0)
    image_tiers: ImageTiers = ImageTiers()
    fail_closed: FailClosedTiers = FailClosedTiers()

    _sha256: str = PrivateAttr(default="")

    @model_validator(mode="after")
    def _models_of_their_cargo(self) -> Policy:
        for cargo, rules in self.cargo_types.items():
            other = next((m for m in rules.models or () if not _of_cargo(m, cargo)), None)
            if other is not None:
                raise ValueError(
                    f"cargo_types.{cargo}.models: {other!r} is not a {cargo} model id "
                    f"({cargo}-<backbone>-<16 hex digits>: a model id starts with the cargo type it was "
                    "trained for, and a model scores only its own cargo)"
                )
        return self

    def model_post_init(self, context: Any, /) -> None:
        content = self.model_dump(mode="json")
        # Keys added after policies were in use are left out where they cannot change a decision,
        # so that an unchanged policy keeps the hash its audit records name: no list of approved
        # models, and the fail-closed tier for an unapproved one, which then never applies.
        for rules in content["cargo_types"].values():
            if rules["models"] is None:
                del rules["models"]
        if not self.approves_models:
            del content["fail_closed"]["unapproved_model"]
        canonical = json.dumps(content, sort_keys=True, separators=(",", ":"))
        self._sha256 = hashlib.sha256(canonical.encode("utf-8")).hexdigest()

    @property
    def approves_models(self) -> bool:
        """Whether any cargo type lists the models approved to score it."""
        return any(rules.models is not None for rules in self.cargo_types.values())

    def unapproved(self, cargo_type: str, model_id: str) -> tuple[str, ...] | None:
        """The models approved for ``cargo_type`` where ``model_id`` is not among them, else None
        (approved, or the policy lists no models, or no rules, for that cargo type)."""
        rules = self.cargo_types.get(cargo_type)
        if rules is None or rules.models is None or model_id in rules.models:
            return None
        return rules.models

    def check_models(self, models: Mapping[str, str]) -> None:
        """Refuse to start scoring with a model the policy does not approve for its cargo type.

        Args:
            models: the loaded models' ids by their cargo type.

        Raises:
            PolicyError: naming each unapproved model, its cargo type and the approved ids.
        """
        refused = [
            (cargo_type, model_id, approved)
            for cargo_type, model_id in sorted(models.items())
            if (approved := self.unapproved(cargo_type, model_id)) is not None
        ]
        if refused:
            problems = [f"{m} for {cargo} (approved: {', '.join(ids)})" for cargo, m, ids in refused]
            # a policy refuses to list such an id (_SHORT_ID): listing it is no way out
            short = [m for _, m, _ in refused if _SHORT_ID.fullmatch(m)]
            retrain = (
                f" ({', '.join(short)}: a model id of 8 hex digits, from a model trained before this "
                "version, cannot be listed; train the model again)"
                if short
                else ""
            )
            raise PolicyError(
                f"policy {self.policy_version} does not approve the model{'s' if len(problems) > 1 else ''} "
                f"loaded: {'; '.join(problems)}. Its scores would never release cargo; load an approved "
                f"model, or list this one under cargo_types.<cargo type>.models in a new policy_version"
                f"{retrain}"
            )

    @property
    def version(self) -> str:
        """The policy's declared version string (``policy_version``)."""
        return self.policy_version

    @property
    def sha256(self) -> str:
        """SHA-256 of the validated content as canonical JSON (comments and layout do not count)."""
        return self._sha256

    def model_warnings(self, models: Mapping[str, str]) -> list[str]:
        """What deciding with ``models`` (the loaded models' ids by their cargo type) would do that
        its operator would not want unsaid: a cargo type the policy has no rules for is held for
        good, every shipment of it, whatever its pictures score."""
        return [
            f"the policy has no rules for cargo type {cargo!r} of model {model_id}: its shipments are "
            "never released (fail_closed.unknown_cargo_type)"
            for cargo, model_id in sorted(models.items())
            if cargo not in self.cargo_types
        ]

    def warnings(self) -> list[str]:
        """What a valid policy leaves undone that the domain asks for; said by whoever loads it."""
        found = []
        if self.random_audit.rate == 0.0:
            # TFA Art. 7.4: random selection measures compliance and keeps selection from being gamed
            found.append(
                f"policy {self.policy_version} picks no shipment for a random audit (random_audit.rate "
                "is 0 or not given): released cargo is never checked, so compliance cannot be measured "
                "and a trader who learns the thresholds is never caught; set random_audit.rate "
                "(e.g. 0.02)"
            )
        return found


def default_policy_path() -> Path:
    """The bundled example policy, ``pipeline/policies/example.yaml``."""
    return Path(__file__).resolve().parent / "policies" / "example.yaml"


class _UniqueKeyLoader(yaml.SafeLoader):
    """Safe YAML loader that refuses duplicate keys: with PyYAML the last one silently wins, which
    would let a second ``release_threshold`` hide below the one a reviewer reads. A value YAML
    takes that Python cannot make (an integer of more than 4,300 digits, a date in a 13th month)
    is a YAML error too, at its line, not a ValueError."""

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep=deep)
        except ValueError as exc:
            text = str(node.value) if isinstance(node, yaml.ScalarNode) else ""
            shown = repr(text) if len(text) <= 40 else f"{text[:20]!r}... ({len(text):,} characters)"
            why = str(exc)
            if node.tag == "tag:yaml.org,2002:int" and "digits" in why:  # not Python's advice to raise it
                why = f"an integer of more than {sys.get_int_max_str_digits():,} digits"
            raise yaml.constructor.ConstructorError(
                None, None, f"the value {shown} cannot be read: {why}", node.start_mark
            ) from exc


def _construct_mapping(
    loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False
) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        try:
            hash(key)
        except TypeError as exc:  # a list or a mapping as a key: "unexpected TypeError" in a set
            raise yaml.constructor.ConstructorError(
                "while constructing a mapping", node.start_mark, "found unhashable key", key_node.start_mark
            ) from exc
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}; each key may appear once", key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _model_at(loc: tuple[int | str, ...]) -> type[BaseModel] | None:
    """The pydantic model that owns the last key of ``loc`` (to list the keys it accepts)."""
    model: type[BaseModel] = Policy
    parts = list(loc[:-1])
    while parts:
        name = parts.pop(0)
        field = model.model_fields.get(str(name))
        if field is None:
            return None
        annotation = field.annotation
        args = getattr(annotation, "__args__", ())
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            model = annotation
        elif args and isinstance(args[-1], type) and issubclass(args[-1], BaseModel):
            model = args[-1]  # dict[str, Model]: the next part is the free-form key
            if not parts:
                return None
            parts.pop(0)
        else:
            return None
    return model


def _format_error(error: Any) -> str:
    """One pydantic error as ``key.path = value: what is accepted``."""
    loc = tuple(error["loc"])
    path = ".".join(str(p) for p in loc) or "<top level>"
    kind = error["type"]
    if kind == "extra_forbidden":
        owner = _model_at(loc)
        accepted = ", ".join(owner.model_fields) if owner is not None else "none"
        return f"{path}: unknown key; accepted keys: {accepted}"
    if kind == "missing":
        return f"{path}: required key is missing"
    message = str(error["ctx"]["error"]) if kind == "value_error" else str(error["msg"])
    if not loc and kind == "value_error":
        return message  # a check across keys (Policy's own validator) names its key paths itself
    value = error.get("input")
    if isinstance(value, dict | list):
        return f"{path}: {message}"
    return f"{path} = {value!r}: {message}"


def parse_policy(data: Any, *, source: str = "<policy>") -> Policy:
    """Validate already-parsed YAML/JSON content into a :class:`Policy`.

    Raises:
        PolicyError: naming ``source``, every bad key path, its value and what is accepted.
    """
    if not isinstance(data, dict):
        raise PolicyError(f"{source}: a policy must be a mapping of keys, got {type(data).__name__}")
    try:
        return Policy.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(_format_error(e) for e in exc.errors())
        raise PolicyError(f"{source}: invalid policy: {problems}") from exc


def load_policy(path: str | Path) -> Policy:
    """Read and validate a policy YAML file.

    Raises:
        PolicyError: the file is missing or unreadable, is not valid YAML (duplicate keys, values
            Python cannot hold and values nested too deeply included), or does not validate.
    """
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PolicyError(f"{source}: cannot read the policy file ({exc.__class__.__name__}: {exc})") from exc
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise PolicyError(f"{source}: not valid YAML: {exc}") from exc
    except RecursionError as exc:
        raise PolicyError(f"{source}: not valid YAML: a value is nested too deeply") from exc
    return parse_policy(data, source=source)
