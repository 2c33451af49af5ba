"""`clearsight policy check`: what a decision policy decides with, before it is put in service."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from datasets.errors import InputError
from pipeline.policy import CargoPolicy, Policy, load_policy
from pipeline.verdicts import Tier

__all__ = ["register"]


def _source(rule: float | str, own: float | None) -> str:
    """Where a threshold comes from, in words."""
    if not isinstance(rule, float):  # "model"
        return "the model's own"
    return "the policy's" if own is None else f"the policy's; the model's own: {own:.4f}"


def _cargo_lines(policy: Policy, cargo: str, rules: CargoPolicy, card: dict[str, Any] | None) -> list[str]:
    """What ``cargo``'s shipments are judged by, as ``decide`` judges them, one item a line."""
    own = card["thresholds"] if card is not None else {}
    release = own.get("release") if rules.release_threshold == "model" else rules.release_threshold
    hold = own.get("hold") if rules.hold_threshold == "model" else rules.hold_threshold
    lines = [cargo]
    if card is None:
        lines.append("  model: none given (--model shows the thresholds as numbers)")
    else:
        approval = (
            ""
            if rules.models is None
            else (": approved" if card["model_id"] in rules.models else ": NOT APPROVED by this policy")
        )
        lines.append(f"  model: {card['model_id']}{approval}")
    # a score at or above hold is held before release is looked at: a release cut above it is hold
    if release is None:
        lines.append("  released below: the model's own threshold")
    elif hold is not None and release > hold:
        lines.append(
            f"  released below: {hold:.4f} (set at {release:.4f} ({_source(rules.release_threshold, None)}), "
            "above the hold threshold: no score is sent to the review tier)"
        )
    else:
        lines.append(
            f"  released below: {release:.4f} ({_source(rules.release_threshold, own.get('release'))})"
        )
    if hold is None:
        lines.append("  held at or above: the model's own threshold")
    else:
        lines.append(f"  held at or above: {hold:.4f} ({_source(rules.hold_threshold, own.get('hold'))})")
    for name, trader in sorted(policy.trusted_traders.items()):
        factor = f"odds x{trader.release_odds_factor:g}"
        if release == 0.0:  # a release threshold of 0 stays 0, whoever sends the cargo
            shown = "0.0000"
        elif release is not None and hold is not None:
            shown = f"{min(trader.raised(release, hold), hold):.4f}"
        else:
            shown = "the release threshold's"
        lines.append(f"  {name} traders released below: {shown} ({factor})")
    if rules.models is None:
        lines.append("  models approved: any (none listed)")
    else:
        lines.append("  models approved:")
        lines += [f"    {model_id}" for model_id in rules.models]
    return lines


def _by_tier(rules: dict[str, Tier]) -> str:
    """``{rule: tier}`` as ``TIER: rule, rule; TIER: rule``, the strictest tier first."""
    tiers = sorted(set(rules.values()), key=lambda t: -t.severity)
    return "; ".join(f"{t.value}: {', '.join(r for r, tier in rules.items() if tier is t)}" for t in tiers)


def _other_rules(policy: Policy) -> list[str]:
    audit = policy.random_audit
    return [
        f"random audit: {audit.rate * 100:.4g}% of all shipments, inspected at least at {audit.tier.value}",
        f"score tiers: at or above hold {policy.image_tiers.at_or_above_hold.value}, at or above "
        f"release {policy.image_tiers.at_or_above_release.value}",
        f"overrides: {_by_tier(dict(policy.overrides))}",
        f"fail closed: {_by_tier(dict(policy.fail_closed))}",
    ]


def register(app: typer.Typer) -> None:
    """Add the ``policy`` command group to the root app."""
    group = typer.Typer(help="Decision policies: check one before it decides.", no_args_is_help=True)
    app.add_typer(group, name="policy")

    @group.command("check")
    def check(
        policy_file: Annotated[Path, typer.Argument(help="The policy YAML file.", metavar="POLICY")],
        model: Annotated[
            list[Path] | None,
            typer.Option(
                "--model",
                help="A trained MODEL_DIR it will decide with (repeatable, one per cargo type): its "
                "thresholds are shown as numbers, and it must be approved where the policy lists models.",
            ),
        ] = None,
    ) -> None:
        """Validate a policy and show what it decides with: its hash, each cargo type's release and
        hold thresholds (as numbers with --model), trusted traders' raised release thresholds, the
        models it approves, random audits, overrides and fail-closed tiers.

        Exits 2 naming the problem when the policy is invalid, two models are of one cargo type, or
        a model is one the policy does not approve (serve and score --policy would refuse it).
        """
        from models.artifact import load_model

        policy = load_policy(policy_file)
        cards: dict[str, dict[str, Any]] = {}
        for directory in model or []:
            # loaded as serve and score load it (weights checked against the card), on PyTorch: the
            # ONNX Runtime graph is traced at load, which checks nothing a policy depends on
            card = dict(load_model(directory, runtime="torch").card)
            cargo = str(card["cargo_type"])
            if cargo in cards:
                raise InputError(
                    f"--model {str(directory)!r} and the model {cards[cargo]['model_id']} are both "
                    f"{cargo} models; give one model per cargo type, as serve and score load them"
                )
            cards[cargo] = card
        # plain lines: names are the policy's own text (no markup), and none is cut to a width
        typer.echo(f"policy {policy.version}, sha256 {policy.sha256} (every decision records both)")
        for cargo, rules in sorted(policy.cargo_types.items()):
            for line in _cargo_lines(policy, cargo, rules, cards.get(cargo)):
                typer.echo(line)
        for line in _other_rules(policy):
            typer.echo(line)
        models = {cargo: str(card["model_id"]) for cargo, card in cards.items()}
        for warning in [*policy.warnings(), *policy.model_warnings(models)]:
            typer.echo(f"Warning: {warning}")
        policy.check_models(models)
        typer.echo(f"policy {policy.version} is valid")
