"""`clearsight policy check`: what a decision policy decides with, before it is put in service."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from datasets.errors import InputError
from pipeline.policy import CargoPolicy, Policy, load_policy
from pipeline.verdicts import Tier

__all__ = ["register"]


def _cut(rule: float | str, own: float | None) -> str:
    """A threshold as the policy gives it, with the number it comes to where a model is known."""
    if not isinstance(rule, float):  # "model"
        return "the model's own" if own is None else f"{own:.4f} (the model's own)"
    return f"{rule:.4f}" if own is None else f"{rule:.4f} (the model's own: {own:.4f})"


def _numbers(rules: CargoPolicy, card: dict[str, Any] | None) -> tuple[float | None, float | None]:
    """The release and hold thresholds ``rules`` come to with ``card``'s model (None: not known)."""
    own = card["thresholds"] if card is not None else {}
    release = own.get("release") if rules.release_threshold == "model" else rules.release_threshold
    hold = own.get("hold") if rules.hold_threshold == "model" else rules.hold_threshold
    return release, hold


def _cargo_table(policy: Policy, cards: dict[str, dict[str, Any]]) -> Table:
    traders = sorted(policy.trusted_traders)
    table = Table(title=f"Policy {policy.version} — thresholds per cargo type", title_justify="left")
    columns = ("cargo type", "model", "release below", "hold at or above", *(f"{t} release" for t in traders))
    for column in columns:
        table.add_column(column)
    table.add_column("models approved")
    for cargo, rules in sorted(policy.cargo_types.items()):
        card = cards.get(cargo)
        own = card["thresholds"] if card is not None else {}
        release, hold = _numbers(rules, card)
        raised = [
            f"{policy.trusted_traders[t].raised(release, hold):.4f}"
            if release is not None and hold is not None
            else f"odds x{policy.trusted_traders[t].release_odds_factor:g}"
            for t in traders
        ]
        if rules.models is None:
            approved = "any"
        elif card is None:
            approved = ", ".join(rules.models)
        else:
            word = "approved" if card["model_id"] in rules.models else "NOT APPROVED"
            approved = f"{', '.join(rules.models)} ({card['model_id']}: {word})"
        table.add_row(
            cargo,
            card["model_id"] if card is not None else "-",
            _cut(rules.release_threshold, own.get("release")),
            _cut(rules.hold_threshold, own.get("hold")),
            *raised,
            approved,
        )
    return table


def _by_tier(rules: dict[str, Tier]) -> str:
    """``{rule: tier}`` as ``TIER: rule, rule; TIER: rule``, the strictest tier first."""
    tiers = sorted(set(rules.values()), key=lambda t: -t.severity)
    return "; ".join(f"{t.value}: {', '.join(r for r, tier in rules.items() if tier is t)}" for t in tiers)


def _other_rules(policy: Policy) -> list[str]:
    audit = policy.random_audit
    return [
        f"sha256 {policy.sha256} (every decision records it)",
        f"random audit: {audit.rate:.1%} of all shipments, inspected at least at {audit.tier.value}",
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
        from models.artifact import read_card

        policy = load_policy(policy_file)
        cards: dict[str, dict[str, Any]] = {}
        for directory in model or []:
            card = read_card(directory)
            cargo = str(card["cargo_type"])
            if cargo in cards:
                raise InputError(
                    f"--model {str(directory)!r} and the model {cards[cargo]['model_id']} are both "
                    f"{cargo} models; give one model per cargo type, as serve and score load them"
                )
            cards[cargo] = card
        # a terminal's width on a terminal; wide lines when piped (rich would fold at 80 columns)
        console = Console() if sys.stdout.isatty() else Console(width=200)
        console.print(_cargo_table(policy, cards))
        for line in _other_rules(policy):
            console.print(line, highlight=False)
        unlisted = sorted(set(cards) - set(policy.cargo_types))
        warnings = [*policy.warnings()]
        warnings += [
            f"the policy has no rules for cargo type {cargo!r} of model {cards[cargo]['model_id']}: its "
            "shipments are never released (fail_closed.unknown_cargo_type)"
            for cargo in unlisted
        ]
        for warning in warnings:
            console.print(f"Warning: {warning}", highlight=False)
        policy.check_models({cargo: str(card["model_id"]) for cargo, card in cards.items()})
        console.print(f"policy {policy.version} is valid", highlight=False)
