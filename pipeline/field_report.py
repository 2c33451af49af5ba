"""What the audit trail says of the models in the field: how much cargo they release, and how much
anomalous cargo the released share carries, as officers' inspections find it.

A model is validated at an operating point (at most a target share of anomalous images released);
the field is where that promise is kept or broken. Released cargo is not inspected, so its anomalous
share is seen only through the **random audits**: a shipment the policy would have released, picked
at random and inspected (its decision carries ``random_audit`` and every reason but the audit's says
RELEASE). Those inspections are a fair sample of the released cargo, unlike any other. Holds are
inspected anyway; their outcomes tell how many held shipments were clean (the cost side).

The unit is the shipment, counted once: by its random audit of a would-be release within the window,
found anomalous where any inspection from the audit on found an anomaly (clean where one found it
clean since); else, held and found anomalous by any inspection within the window (the latest
outcome of each decision: a correction with amend replaces what it corrects), by the latest such
decision, whatever was decided or inspected since (a re-scan inspected clean, the cargo released);
else by its latest decision within the window that has an outcome; else by its latest. What an
inspection found stays counted when the shipment is decided again (a batch run again, a re-send);
one found from an audit before the window on is that audit's, and counts for no hold within it.
Per cargo type (and for all), the report gives:

* the shipments decided, per tier, and the **released share** R (what the policy would have
  released, the audited would-be releases among them);
* the audits of would-be releases with an outcome, the anomalies they found, and the **anomalous
  share among released cargo** p_r, with its exact (Clopper-Pearson) 95 % interval;
* the holds with an outcome, the anomalies found, and the share of held cargo found anomalous p_h,
  each tier's share weighed by its holds (unknown while a tier held at has no outcome);
* the **estimated miss rate in the field**, the share of anomalous cargo released,
  ``m = p_r R / (p_r R + p_h (1 - R))``, with a 95 % interval drawn from the proportions' exact
  posteriors (:meth:`GroupFigures.miss_rate`, :data:`DRAWS` draws, seeded), judged against the
  target: above it, within it, or not known yet (the interval spans it, or too few outcomes);
* the same by ISO week and by model, and every audited release in which an anomaly was found (the
  field's misses, whose pictures belong in the next training set).

Figures are only as good as the records: :func:`field_report` is given records of a chain that
verified, and counts what the officers recorded (an outcome ``found`` of any type, ``unknown``
included, is an anomaly; ``None`` is clean).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple

import numpy as np

from pipeline.audit.records import AuditRecord
from pipeline.intervals import CONFIDENCE, binomial_interval, trials_to_show
from pipeline.verdicts import Tier

__all__ = [
    "ALL",
    "DRAWS",
    "FieldMiss",
    "FieldReport",
    "GroupFigures",
    "field_report",
    "rate_text",
    "would_be_tier",
]

ALL = "all cargo"
"""The group every shipment counts in, beside its cargo type's."""

DRAWS = 10_000
"""Draws from the posteriors for the miss rate's interval."""


def rate_text(value: float, *, significant: int = 2, apart_from: Sequence[float] = ()) -> str:
    """A share as a percentage with ``significant`` significant digits and at least one decimal, the
    zeros past it dropped: ``0.0001`` -> ``"0.01%"``, ``0.0005`` -> ``"0.05%"``, ``0.01`` -> ``"1.0%"``,
    ``0.667`` -> ``"66.7%"``; with more where it takes them to tell it from each of ``apart_from``
    it is not equal to (as :func:`pipeline.report.score_text` tells a score from its cuts). One
    decimal wrote a target of 0.0001 as "0.0%" and one of 0.0005 as "0.1%"."""

    def text(share: float, decimals: int) -> str:
        digits = f"{100.0 * share:.{decimals}f}"
        if "." in digits:
            whole, tail = digits.split(".")
            digits = f"{whole}.{tail.rstrip('0') or '0'}"
        return f"{digits}%"

    percent = 100.0 * value
    magnitude = math.floor(math.log10(percent)) if math.isfinite(percent) and percent > 0 else 0
    decimals = max(1, significant - 1 - magnitude)
    while decimals < 12 and any(
        text(value, decimals) in (text(cut, decimals), rate_text(cut, significant=3))
        for cut in apart_from
        if cut != value
    ):
        decimals += 1
    return text(value, decimals)


_OUTWARD = 2.33 * ((1 - CONFIDENCE) / 2 * (1 + CONFIDENCE) / 2 / DRAWS) ** 0.5
"""How far past 2.5 % (97.5 %) the interval's ends are read among the draws: a sample quantile of a
fixed seed's draws sat about 1 % inside the exact bound in every report, so "within" came a few
hundred audits early; read 2.33 standard errors outward, it lies outside the exact bound but for
one seed in a hundred."""

_RANDOM_AUDIT = "random_audit"


def would_be_tier(record: AuditRecord) -> Tier:
    """The tier the decision would have had without its random audit: the strictest of its other
    reasons (its own tier where it gives none)."""
    others = [reason.tier for reason in record.decision.reasons if reason.rule != _RANDOM_AUDIT]
    if not others:
        return record.decision.tier
    return max(others, key=lambda tier: tier.severity)


class FieldMiss(NamedTuple):
    """An audited would-be release in which the inspection found an anomaly."""

    shipment_id: str
    decision_seq: int
    decided_at: str
    cargo_type: str
    found: str
    model_ids: tuple[str, ...]
    top_score: float | None
    pictures: tuple[str, ...]


class _Seen(NamedTuple):
    """What the figures read of a shipment's latest decision (a store holds a million of them)."""

    seq: int
    tier: str
    would_release: bool
    random_audit: bool
    inspected: bool
    found: str | None
    cargo_type: str
    week: str
    models: str
    audit: FieldMiss | None
    """An audited would-be release's particulars, kept to list it should its cargo be found anomalous."""


@dataclass
class GroupFigures:
    """The counts of one group of shipments (a cargo type, a week, a model) and what follows."""

    decided: int = 0
    tiers: Counter[str] = field(default_factory=Counter)
    would_release: int = 0
    audited: int = 0
    audited_inspected: int = 0
    audited_found: int = 0
    held: int = 0
    held_inspected: int = 0
    held_found: int = 0
    found_types: Counter[str] = field(default_factory=Counter)
    holds_by_tier: dict[str, list[int]] = field(default_factory=dict)
    """Per tier held at: [holds, inspected, found anomalous]."""
    _estimated: dict[tuple[Any, ...], tuple[float | None, tuple[float, float] | None]] = field(
        default_factory=dict, repr=False, compare=False
    )
    """:meth:`miss_rate` by the counts it was drawn from: the verdict, the JSON, the page's rows and
    charts ask for it of one group several times, and each asks for 20,000 draws or more."""

    def add(self, seen: _Seen) -> None:
        self.decided += 1
        self.tiers[seen.tier] += 1
        if seen.would_release:
            self.would_release += 1
            if seen.random_audit:
                self.audited += 1
                if seen.inspected:
                    self.audited_inspected += 1
                    if seen.found is not None:
                        self.audited_found += 1
                        self.found_types[seen.found] += 1
        else:
            self.held += 1
            tier = self.holds_by_tier.setdefault(seen.tier, [0, 0, 0])
            tier[0] += 1
            if seen.inspected:
                self.held_inspected += 1
                self.held_found += seen.found is not None
                tier[1] += 1
                tier[2] += seen.found is not None

    @property
    def released_share(self) -> float | None:
        return self.would_release / self.decided if self.decided else None

    @property
    def anomalous_among_released(self) -> float | None:
        return self.audited_found / self.audited_inspected if self.audited_inspected else None

    @property
    def tiers_without_outcome(self) -> list[str]:
        """The tiers held at that have holds but no outcome yet: the anomalous share among held
        cargo is unknown until each has one (pooling the others' stood in for them, and said
        "within" of holds no outcome described)."""
        return sorted(tier for tier, (_, inspected, _) in self.holds_by_tier.items() if not inspected)

    @property
    def anomalous_among_held(self) -> float | None:
        """The anomalous share among held cargo: each tier's share among its inspected holds,
        weighed by its holds (physical holds may be inspected more often than remote ones, and
        find more); None until every tier held at has an outcome."""
        if not self.held_inspected or self.tiers_without_outcome:
            return None
        return (
            sum(held * found / inspected for held, inspected, found in self.holds_by_tier.values())
            / self.held
        )

    def miss_rate(self) -> tuple[float | None, tuple[float, float] | None]:
        """The estimated share of anomalous cargo released and its 95 % interval; (None, None)
        where no audited release or no hold has an outcome, or the cargo held and released alike
        was all found clean (no anomaly to miss).

        The interval's upper end is drawn with each proportion at the side of its exact
        (Clopper-Pearson) posterior that raises the miss rate, Beta(x + 1, n - x) for the
        anomalous share among releases and the released share and Beta(x, n - x + 1) for the
        holds', and the lower end the other way (0 where nothing was found): Jeffreys' posteriors
        said "within the target" about twice as often as a 95 % interval may, and "above" with no
        anomaly found at all."""
        p_r, p_h, share = self.anomalous_among_released, self.anomalous_among_held, self.released_share
        if p_r is None or p_h is None or share is None:
            return None, None
        anomalous = p_r * share + p_h * (1 - share)
        if not anomalous:
            return None, None
        counts = (
            self.audited_found,
            self.audited_inspected,
            self.would_release,
            self.decided,
            self.held,
            tuple((tier, *tally) for tier, tally in sorted(self.holds_by_tier.items())),
        )
        if counts not in self._estimated:
            rng = np.random.default_rng(0)  # seeded: the report is reproducible
            tail = (1 - CONFIDENCE) / 2 - _OUTWARD
            high = np.quantile(self._draws(rng, raising=True), 1 - tail)
            low = np.quantile(self._draws(rng, raising=False), tail)
            self._estimated[counts] = (p_r * share / anomalous, (float(low), float(high)))
        return self._estimated[counts]

    def _draws(self, rng: np.random.Generator, *, raising: bool) -> np.ndarray:
        """:data:`DRAWS` miss rates, each proportion drawn from the side of its exact posterior that
        raises the miss rate (``raising``) or lowers it."""
        released_anomalous = _side(rng, self.audited_found, self.audited_inspected, up=raising)
        share = _side(rng, self.would_release, self.decided, up=raising)
        held_anomalous = sum(
            held / self.held * _side(rng, found, inspected, up=not raising)
            for held, inspected, found in self.holds_by_tier.values()
        )
        released = released_anomalous * share
        total = released + held_anomalous * (1 - share)
        return np.divide(released, total, out=np.zeros(DRAWS), where=total > 0)

    def verdict(self, target: float) -> str:
        """The miss rate against ``target`` in words: above, within, not known yet (and why)."""
        if not self.audited_inspected:
            return (
                "not known: no random audit of a would-be release has an outcome yet (only those "
                "inspections see the released cargo)"
            )
        if not self.held_inspected:
            return "not known: no hold has an outcome yet, so the anomalous cargo's total is unknown"
        if self.tiers_without_outcome:
            tier = self.tiers_without_outcome[0]
            return (
                f"not known: the {self.holds_by_tier[tier][0]:,} {tier} holds have no outcome yet, so the "
                "anomalous share among held cargo is unknown"
            )
        point, interval = self.miss_rate()
        if point is None:
            return "not known: every inspection found the cargo clean: no anomalous cargo to miss yet"
        low, high = interval or (point, point)
        # significant digits, each figure told from the target: one decimal wrote a target of
        # 0.0001 as "0.0%", and an estimate above it as the target itself
        shown = rate_text(target, significant=3)
        point_text, low_text, high_text = (rate_text(v, apart_from=(target,)) for v in (point, low, high))
        said = f"estimated {point_text} (95 % interval {low_text} to {high_text})"
        if low > target:
            return (
                f"ABOVE the {shown} target: {said}; the model releases more anomalous cargo than "
                "it was validated for"
            )
        if high <= target:
            return f"within the {shown} target: {said}"
        needed = self.audits_to_show(target)
        more = (
            f"; at least {needed:,} audit outcomes of releases, none finding an anomaly, are needed to "
            f"show it at today's shares (there are {self.audited_inspected:,})"
            if needed is not None
            else "; more audit outcomes narrow it"
        )
        return f"not known yet: {said} spans the {shown} target{more}"

    def audits_to_show(self, target: float) -> int | None:
        """The fewest audits of releases, none finding an anomaly, that could show the miss rate
        within ``target``, were today's released share and anomalous share among holds exact (the
        exact bound on the anomalous share among releases that keeps ``m`` at ``target``): a lower
        bound, since their own uncertainty asks for more. None where that cannot be said (no hold
        found anomalous, or nothing released or held)."""
        p_h, share = self.anomalous_among_held, self.released_share
        if not p_h or share is None or not 0 < share < 1:
            return None
        allowed = target * p_h * (1 - share) / (share * (1 - target))
        return trials_to_show(min(allowed, 0.999999))

    def as_json(self, target: float) -> dict[str, Any]:
        point, interval = self.miss_rate()
        among_released = binomial_interval(self.audited_found, self.audited_inspected)
        among_held = binomial_interval(self.held_found, self.held_inspected)
        return {
            "shipments_decided": self.decided,
            "tiers": dict(sorted(self.tiers.items())),
            "would_release": self.would_release,
            "released_share": self.released_share,
            "random_audits_of_releases": self.audited,
            "random_audits_inspected": self.audited_inspected,
            "random_audits_found_anomalous": self.audited_found,
            "anomalous_share_among_released": self.anomalous_among_released,
            "anomalous_share_among_released_interval": list(among_released) if among_released else None,
            "holds": self.held,
            "holds_inspected": self.held_inspected,
            "holds_found_anomalous": self.held_found,
            "holds_by_tier": {
                tier: {"holds": held, "inspected": inspected, "found_anomalous": found}
                for tier, (held, inspected, found) in sorted(self.holds_by_tier.items())
            },
            "holds_tiers_without_outcome": self.tiers_without_outcome,
            "anomalous_share_among_held": self.anomalous_among_held,
            "anomalous_share_among_held_interval": list(among_held) if among_held else None,
            "field_miss_rate": point,
            "field_miss_rate_interval": list(interval) if interval else None,
            "target_miss_rate": target,
            "verdict": self.verdict(target),
            "audits_to_show_target_at_least": self.audits_to_show(target),
            "found_in_audits": dict(sorted(self.found_types.items())),
        }


@dataclass
class FieldReport:
    """Every group's figures: by cargo type (and :data:`ALL`), by ISO week, by model."""

    target: float
    since: str | None
    until: str | None
    by_cargo: dict[str, GroupFigures]
    by_week: dict[str, GroupFigures]
    by_model: dict[str, GroupFigures]
    misses: list[FieldMiss]
    records_read: int

    def as_json(self) -> dict[str, Any]:
        return {
            "target_miss_rate": self.target,
            "since": self.since,
            "until": self.until,
            "decision_records_read": self.records_read,
            "by_cargo_type": {k: v.as_json(self.target) for k, v in self.by_cargo.items()},
            "by_week": {k: v.as_json(self.target) for k, v in self.by_week.items()},
            "by_model": {k: v.as_json(self.target) for k, v in self.by_model.items()},
            "misses": [m._asdict() for m in self.misses],
        }


def _side(rng: np.random.Generator, found: int, of: int, *, up: bool) -> np.ndarray:
    """:data:`DRAWS` draws of a proportion ``found`` of ``of`` from the side of its exact posterior
    that lies above it (``up``: Beta(x + 1, n - x), 1 where all were found) or below it (Beta(x,
    n - x + 1), 0 where none was)."""
    if up:
        return np.ones(DRAWS) if found >= of else rng.beta(found + 1, of - found, DRAWS)
    return np.zeros(DRAWS) if found <= 0 else rng.beta(found, of - found + 1, DRAWS)


def _week(decided_at: str) -> str:
    year, week, _ = datetime.fromisoformat(decided_at).isocalendar()
    return f"{year}-W{week:02d}"


def field_report(
    records: Iterable[AuditRecord],
    *,
    target: float = 0.01,
    since: datetime | None = None,
    until: datetime | None = None,
) -> FieldReport:
    """The field figures of the decision ``records`` (every decision, in chain order, each with its
    latest outcome: :meth:`~pipeline.audit.store.AuditStore.iter_records`), counting each shipment
    by its latest decision decided in ``[since, until)`` (aware datetimes; None: open).

    Raises:
        ValueError: ``target`` not in (0, 1).
    """
    if not 0 < target < 1:
        raise ValueError(f"target miss rate {target!r} not accepted (a share above 0 and below 1)")
    latest: dict[str, _Seen] = {}
    inspected: dict[str, _Seen] = {}
    anomalous: dict[str, _Seen] = {}
    audited: dict[str, list[_Seen]] = {}  # few: a shipment is audited once or twice
    read = 0
    followed: dict[str, _Seen] = {}  # of an audited shipment: its latest inspection and finding, any date
    found_any: dict[str, _Seen] = {}
    # audited as would-be releases before the window (--since): whether the audit's finding is still
    # to be recorded
    audited_before: dict[str, bool] = {}
    for record in records:
        read += 1
        shipment = record.decision.shipment_id
        when = datetime.fromisoformat(record.decision.decided_at)
        inside = (since is None or when >= since) and (until is None or when < until)
        if since is not None and when < since:
            if record.decision.random_audit and would_be_tier(record) is Tier.RELEASE:
                audited_before[shipment] = record.outcome is None  # its finding still to come
            elif shipment in audited_before and record.outcome is not None:
                audited_before[shipment] = False  # recorded before the window
            continue
        if not (inside or (record.outcome is not None and shipment in audited)):
            continue
        seen = _seen(record)
        if inside and seen.inspected and audited_before.get(shipment) and shipment not in audited:
            # the first finding after an audit before the window, its own still unrecorded, is that
            # audit's, outside the window: counted as a hold's, last week's misses read as this
            # week's catches. Any later one, or one after the audit's own, is a new inspection's
            audited_before[shipment] = False
            if seen.audit is None:
                seen = seen._replace(inspected=False, found=None)
        if seen.inspected:
            followed[shipment] = seen
            if seen.found is not None:
                found_any[shipment] = seen
        if not inside:  # a finding on a decision past the window, of an audit within it
            continue
        latest[shipment] = seen
        if seen.inspected:
            inspected[shipment] = seen
            if seen.found is not None and not seen.would_release:
                anomalous[shipment] = seen  # a hold's finding, which a later clean inspection leaves
        if seen.audit is not None:
            audited.setdefault(shipment, []).append(seen)
    # deciding a shipment again (a batch run again under a new policy, a re-send) erased what its
    # inspection had found; an audit within the window counts what inspections found from it on, of
    # any date: with --until, a finding recorded on the next day's decision left the sample, and
    # ABOVE read "within"
    latest = {
        s: _counted(seen, followed.get(s), found_any.get(s), audited[s])
        if s in audited
        else _counted(seen, inspected.get(s), anomalous.get(s), [])
        for s, seen in latest.items()
    }
    by_cargo: dict[str, GroupFigures] = {ALL: GroupFigures()}
    by_week: dict[str, GroupFigures] = {}
    by_model: dict[str, GroupFigures] = {}
    for seen in latest.values():
        for group in (
            by_cargo[ALL],
            by_cargo.setdefault(seen.cargo_type, GroupFigures()),
            by_week.setdefault(seen.week, GroupFigures()),
            by_model.setdefault(seen.models, GroupFigures()),
        ):
            group.add(seen)
    misses = [
        seen.audit._replace(found=seen.found)
        for seen in latest.values()
        if seen.audit is not None and seen.found is not None
    ]
    return FieldReport(
        target,
        since.isoformat() if since else None,
        until.isoformat() if until else None,
        dict(sorted(by_cargo.items(), key=lambda kv: (kv[0] != ALL, kv[0]))),
        dict(sorted(by_week.items())),
        dict(sorted(by_model.items())),
        sorted(misses, key=lambda m: m.decided_at),
        read,
    )


def _seen(record: AuditRecord) -> _Seen:
    decision, outcome = record.decision, record.outcome
    would_release = would_be_tier(record) is Tier.RELEASE
    found = outcome.found if outcome is not None else None
    audit = None
    if would_release and decision.random_audit:
        scores = [i.score for i in decision.images if i.score is not None]
        audit = FieldMiss(
            decision.shipment_id,
            record.seq,
            decision.decided_at,
            decision.cargo_type,
            "",
            tuple(decision.model_ids),
            max(scores) if scores else None,
            tuple(i.path for i in decision.images),
        )
    return _Seen(
        record.seq,
        decision.tier.value,
        would_release,
        decision.random_audit,
        outcome is not None,
        found,
        decision.cargo_type,
        _week(decision.decided_at),
        " + ".join(sorted(decision.model_ids)) or "(no model)",
        audit,
    )


def _counted(latest: _Seen, inspected: _Seen | None, anomalous: _Seen | None, audits: list[_Seen]) -> _Seen:
    """The decision a shipment counts by (``anomalous``: audited, its latest decision found
    anomalous from any date; else its latest held decision found anomalous within the window).

    Audited as a would-be release: by that audit, found anomalous where any inspection from an
    audit on found an anomaly (on the audit's own decision, or a later one: an officer records a
    finding on the shipment's latest decision, and a hold after the audit is lifted only by one),
    counted at the latest audit before that finding; else clean where one inspected it since; else
    not inspected. A finding must not leave the one fair sample of the released cargo, whichever
    decision came after (the findings that left it were the misses), nor a later clean inspection
    (the object seized at the audit) wash it out. Not audited: by its latest held decision whose
    inspection found an anomaly (its latest outcome), where one did and no later inspection found
    one: a hold's finding counts whatever came after it (a re-scan inspected clean, the cargo then
    released), as it stays a hold (:meth:`pipeline.decide.EarlierHold.found`), and at the tier it
    was found at. Else by its latest inspected decision, else its latest."""
    if not audits:
        counted = inspected or latest
        if counted.found is None and anomalous is not None:
            return anomalous
        return counted
    if anomalous is not None and anomalous.seq >= audits[0].seq:
        chosen = [a for a in audits if a.seq <= anomalous.seq][-1]
        return chosen._replace(inspected=True, found=anomalous.found)
    if inspected is not None and inspected.seq >= audits[0].seq:
        chosen = [a for a in audits if a.seq <= inspected.seq][-1]
        return chosen._replace(inspected=True, found=None)
    return audits[-1]._replace(inspected=False, found=None)
