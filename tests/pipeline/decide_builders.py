"""Builders shared by the decision tests (test_decide.py, test_shipment_rows.py): a small policy,
an image verdict and a declaration, with the key and clock the decisions are made under.

Imported by putting this folder on ``sys.path`` (pytest's importlib mode does not). The policy's
hash goes into batch keys pinned in the tests: change it and those keys change.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pipeline.policy import Policy, parse_policy
from pipeline.row_seal import sealed
from pipeline.score.completion import record_completion
from pipeline.settings import Settings, completion_seal_key, row_seal_key
from pipeline.verdict_rows import row_json
from pipeline.verdicts import Declaration, ImageVerdict, Tier

__all__ = ["KEY", "NOW", "H", "P", "R", "decl", "img", "policy", "scored", "scored_line"]

KEY = b"test-audit-key"
NOW = datetime(2026, 11, 5, 10, 30, tzinfo=UTC)
R, H, P = Tier.RELEASE, Tier.REMOTE_INSPECTION, Tier.PHYSICAL_INSPECTION


def policy(**changes: Any) -> Policy:
    data: dict[str, Any] = {
        "policy_version": "test-1",
        "cargo_types": {"bulk_ore": {}, "vacuum_pack": {"release_threshold": 0.3, "hold_threshold": 0.6}},
        # at a release threshold of 0.5: AEOF to 0.55, AEOS to 0.7 (the odds 1 times 11/9 and 7/3)
        "trusted_traders": {"AEOF": {"release_odds_factor": 11 / 9}, "AEOS": {"release_odds_factor": 7 / 3}},
        "random_audit": {"rate": 0.0},
    }
    data.update(changes)
    return parse_policy(data)


def img(score: float | None = 0.2, path: str = "a.png", **kw: Any) -> ImageVerdict:
    base: dict[str, Any] = {
        "threshold": 0.5,
        "hold_threshold": 0.8,
        "model_id": "ore-m1",
        "cargo_type": "bulk_ore",
    }
    return ImageVerdict(path=path, score=score, **{**base, **kw})


def decl(**kw: Any) -> Declaration:
    return Declaration(**{"shipment_id": "S1", "cargo_type": "bulk_ore", **kw})


def scored(row: ImageVerdict) -> ImageVerdict:
    """``row`` as `clearsight score` writes it under the environment's audit secret: row-sealed where
    that secret gives a key (:mod:`pipeline.row_seal`), so that decide, which has it, takes the row."""
    return sealed(row_seal_key(Settings.load()), row)


def scored_line(row: ImageVerdict) -> str:
    """The JSONL line of :func:`scored` ``row``."""
    return row_json(scored(row)).decode("utf-8")


def run_finished(out: Path) -> Path:
    """``out``'s completion record as a finished score run writes it under this environment's audit
    secret: sealed where the secret gives a key (a decide with the key takes an unsealed record for
    no record)."""
    return record_completion(out, seal_key=completion_seal_key(Settings.load()))
