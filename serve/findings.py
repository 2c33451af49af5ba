"""What an officer may say inspection found in a shipment: one rule for the review page's list and
for the outcome routes' check, so that a finding the page offers is always accepted and a typo sent
to the API (``foriegn_object``) is not kept in the audit trail for good as a kind of anomaly.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from models.inference import GOOD
from pipeline.verdicts import ShipmentDecision, scored_anomaly_types

__all__ = ["UNKNOWN", "finding_types"]

UNKNOWN = "unknown"
"""An anomaly of a kind nobody could name: always a finding."""


def finding_types(predictors: Mapping[str, Any], decision: ShipmentDecision) -> list[str]:
    """The anomaly types an officer may record for ``decision``'s shipment, sorted, ``unknown``
    among them (``clean`` aside): those the loaded model of its cargo type knows, less the synthetic
    ones it trained on, and those its pictures of that cargo type were scored against (a model
    replaced since knew them). Never another cargo type's: a puncture is no finding in a bulk-ore
    wagon.

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
    own = [i for i in decision.images if i.cargo_type in (None, decision.cargo_type)]
    names |= scored_anomaly_types([decision.model_copy(update={"images": own})])
    return sorted(names | {UNKNOWN})
