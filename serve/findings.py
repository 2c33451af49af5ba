"""What an officer may say inspection found in a shipment: one rule for the review page's list and
for the outcome routes' check (:func:`pipeline.verdicts.finding_types`, which ``clearsight audit
outcome`` applies too), with the types of the model this service has loaded for its cargo type.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from models.inference import GOOD
from pipeline.verdicts import ShipmentDecision
from pipeline.verdicts import finding_types as _finding_types

__all__ = ["finding_types"]


def finding_types(predictors: Mapping[str, Any], decision: ShipmentDecision) -> list[str]:
    """The anomaly types an officer may record for ``decision``'s shipment, sorted, ``unknown``
    among them (``clean`` aside): those its pictures of its cargo type were scored against, and
    those the loaded model of that cargo type knows, less the synthetic ones it trained on.

    Args:
        predictors: the loaded models by cargo type (``card`` is read).
        decision: the shipment's decision the outcome is for.
    """
    names: set[str] = set()
    predictor = predictors.get(decision.cargo_type)
    if predictor is not None:
        card = predictor.card
        pseudo = set(card.get("training", {}).get("pseudo_types", []))
        names = {n for n in card.get("detector", {}).get("class_names", []) if n != GOOD and n not in pseudo}
    return _finding_types(decision, names)
