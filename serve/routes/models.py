"""``GET /v1/models``: the cards of the loaded models."""

from __future__ import annotations

import re
from pathlib import PurePath
from typing import Any

from fastapi import APIRouter

from serve.deps import OfficerDep, PredictorsDep
from serve.problems import AUTHENTICATED, problem_responses
from serve.schemas import ModelCards

__all__ = ["router"]

router = APIRouter(prefix="/v1", tags=["models"])

# a weights source is written "file:<path>" (models.weights): the prefix stays, the path is cut
_ABSOLUTE_PATH = re.compile(r"(file:)?((?:/|~|[A-Za-z]:[\\/]).*)")


def public_card(card: dict[str, Any]) -> dict[str, Any]:
    """The card with every absolute file path cut to its last part (``/srv/data/ore_2026`` ->
    ``ore_2026``, ``file:/srv/weights/resnet18.pth`` -> ``file:resnet18.pth``), at any depth: where
    the training data and weights lay on the training machine is nobody's business over HTTP; their
    names and hashes stay."""

    def strip(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items()}
        if isinstance(value, list):
            return [strip(v) for v in value]
        found = _ABSOLUTE_PATH.fullmatch(value) if isinstance(value, str) else None
        if found is not None:
            return (found[1] or "") + PurePath(found[2].replace("\\", "/")).name
        return value

    return strip(card)  # type: ignore[no-any-return]


@router.get(
    "/models",
    response_model=ModelCards,
    responses=problem_responses(AUTHENTICATED, {403: "Officers and admins only (forbidden)"}),
    summary="Loaded model cards",
)
async def list_models(predictors: PredictorsDep, _caller: OfficerDep) -> ModelCards:
    """Each loaded model's card (``model.json``) with its id, cargo type and thresholds; officers and
    admins only, and without the server's file paths (:func:`public_card`)."""
    cards = []
    for cargo_type, predictor in sorted(predictors.items()):
        t = predictor.thresholds
        cards.append(
            {
                **public_card(dict(predictor.card)),
                "model_id": predictor.model_id,
                "cargo_type": cargo_type,
                "thresholds": {
                    "release": t.release,
                    "hold": t.hold,
                    "target_miss_rate": t.target_miss_rate,
                    "method": t.method,
                },
            }
        )
    return ModelCards(models=cards)
