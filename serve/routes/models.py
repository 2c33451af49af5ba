"""``GET /v1/models``: the cards of the loaded models."""

from __future__ import annotations

from fastapi import APIRouter

from serve.deps import PredictorsDep, SubmitterDep
from serve.schemas import ModelCards

__all__ = ["router"]

router = APIRouter(prefix="/v1", tags=["models"])


@router.get(
    "/models",
    response_model=ModelCards,
    responses={401: {"description": "Missing or invalid API key"}},
    summary="Loaded model cards",
)
async def list_models(predictors: PredictorsDep, _caller: SubmitterDep) -> ModelCards:
    """Each loaded model's card (``model.json``) with its id, cargo type and thresholds."""
    cards = []
    for cargo_type, predictor in sorted(predictors.items()):
        t = predictor.thresholds
        cards.append(
            {
                **dict(predictor.card),
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
