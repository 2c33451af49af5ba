"""The fusion rules: the max of the calibrated probabilities, or the sum of the calibrated log-odds."""

from __future__ import annotations

import pytest
import torch

from models.fusion import OFF, Fusion


def _fusion(rule: str, platt: list[tuple[float, float]]) -> Fusion:
    fusion = Fusion(rule)
    fusion.slope.copy_(torch.tensor([a for a, _ in platt]))
    fusion.bias.copy_(torch.tensor([b for _, b in platt]))
    return fusion


# Standardised one-class z = log(score_raw) (mu 0, sd 1); the type head's log-odds of these logits
# is 1.0 - 0.0 = 1; the patch score is given as it is.
SCORE_RAW = torch.exp(torch.tensor([0.5, -1.0]))
TYPE_LOGITS = torch.tensor([[0.0, 1.0], [0.0, 1.0]])
PATCH = torch.tensor([2.0, -2.0])


@pytest.mark.parametrize(
    ("rule", "platt", "logits"),
    [
        # every signal on: the max of the three logits, or their sum
        ("max", [(2.0, 0.0), (1.0, -1.0), (0.5, 0.5)], [[1.0, 0.0, 1.5], [-2.0, 0.0, -0.5]]),
        ("sum", [(2.0, 0.0), (1.0, -1.0), (0.5, 0.5)], [[2.5], [-2.5]]),
        # the type head switched off: under "sum" it adds nothing, not its bias of -30
        ("sum", [(2.0, 0.0), OFF, (0.5, 0.5)], [[2.5], [-2.5]]),
        ("max", [(2.0, 0.0), OFF, (0.5, 0.5)], [[1.0, 1.5], [-2.0, -0.5]]),
        # one signal alone: both rules give its calibrated probability
        ("sum", [(2.0, 0.0), OFF, OFF], [[1.0], [-2.0]]),
        ("max", [(2.0, 0.0), OFF, OFF], [[1.0], [-2.0]]),
    ],
)
def test_fused_score(rule: str, platt: list[tuple[float, float]], logits: list[list[float]]) -> None:
    expected = torch.sigmoid(torch.tensor(logits, dtype=torch.float64)).max(dim=1).values
    got = _fusion(rule, platt)(SCORE_RAW, TYPE_LOGITS, PATCH)
    assert got.dtype == torch.float64
    assert torch.allclose(got, expected, atol=1e-6)


@pytest.mark.parametrize("rule", ["max", "sum"])
def test_confident_scores_stay_apart(rule: str) -> None:
    # Log-odds of 20 and 30 both came out as exactly 1.0 from a float32 sigmoid: a clean image one
    # signal flagged hard tied with every plain anomaly, and no hold cut could go between them.
    platt = [(1.0, 0.0), OFF, OFF]
    score_raw = torch.exp(torch.tensor([17.0, 20.0, 30.0]))  # one-class z of 17, 20, 30
    got = _fusion(rule, platt)(score_raw, TYPE_LOGITS[:1].expand(3, -1), PATCH[:1].expand(3))
    assert float(got[0]) < float(got[1]) < float(got[2]) < 1.0
    # a model trained before keeps the precision its thresholds were placed on
    old = Fusion(rule, score_dtype="float32")
    old.slope.copy_(torch.tensor([a for a, _ in platt]))
    old.bias.copy_(torch.tensor([b for _, b in platt]))
    saturated = old(score_raw, TYPE_LOGITS[:1].expand(3, -1), PATCH[:1].expand(3))
    assert saturated.dtype == torch.float64 and float(saturated[1]) == float(saturated[2]) == 1.0


def test_an_unknown_score_dtype_is_refused() -> None:
    with pytest.raises(ValueError, match=r"score_dtype 'float16' not in \('float64', 'float32'\)"):
        Fusion("sum", score_dtype="float16")


def test_sum_ranks_two_suspect_signals_above_one() -> None:
    platt = [(1.0, 0.0), OFF, (1.0, 0.0)]
    # image 0: both signals somewhat suspect (z 1.0, patch 1.0); image 1: one signal more so (z 1.5)
    score_raw, patch = torch.exp(torch.tensor([1.0, 1.5])), torch.tensor([1.0, -3.0])
    max_scores = _fusion("max", platt)(score_raw, TYPE_LOGITS, patch)
    sum_scores = _fusion("sum", platt)(score_raw, TYPE_LOGITS, patch)
    assert max_scores[0] < max_scores[1] and sum_scores[0] > sum_scores[1]


def test_unknown_rule_names_the_accepted_ones() -> None:
    with pytest.raises(ValueError, match=r"fusion rule 'mean' not in \('max', 'sum'\)"):
        Fusion("mean")


@pytest.mark.parametrize("rule", ["max", "sum"])
@pytest.mark.parametrize(
    "platt",
    [
        [(2.0, 0.0), (1.0, -1.0), (0.5, 0.5)],
        [(2.0, 0.0), OFF, (0.5, 0.5)],
        [(2.0, 0.0), OFF, OFF],
    ],
)
def test_log_odds_give_the_score_back(rule: str, platt: list[tuple[float, float]]) -> None:
    fusion = _fusion(rule, platt)
    log_odds = fusion.log_odds(SCORE_RAW, TYPE_LOGITS, PATCH)
    off = torch.tensor([a == 0.0 for a, _ in platt])
    assert torch.equal(torch.isnan(log_odds), off.expand_as(log_odds))  # a switched-off signal says nothing
    on = log_odds[:, ~off]
    fused = on.sum(dim=1) if rule == "sum" else on.max(dim=1).values
    assert torch.allclose(torch.sigmoid(fused.double()), fusion(SCORE_RAW, TYPE_LOGITS, PATCH), atol=1e-6)


def _maps(
    z_peaks: dict[tuple[int, int], float], patch_peaks: dict[tuple[int, int], float]
) -> tuple[torch.Tensor, torch.Tensor]:
    """(1, 4, 4) one-class distance map (its log is the standardised z under mu 0, sd 1; z 0 where
    not given) and patch logit map (-1 where not given)."""
    z, patch = torch.zeros(1, 4, 4), torch.full((1, 4, 4), -1.0)
    for (r, c), v in z_peaks.items():
        z[0, r, c] = v
    for (r, c), v in patch_peaks.items():
        patch[0, r, c] = v
    return z.exp(), patch


@pytest.mark.parametrize(
    ("patch_slope", "spot"),
    [
        # evidence: (0, 0) 3 - 1 = 2, (2, 2) 2 + 2 = 4, (3, 3) 0 + 3 = 3: where both are fairly high
        (1.0, (2, 2)),
        # a patch head that counts for little: the one-class peak wins, 3 - 0.1 = 2.9 against 2.2
        (0.1, (0, 0)),
    ],
)
def test_co_located_reads_both_signals_where_their_sum_is_largest(
    patch_slope: float, spot: tuple[int, int]
) -> None:
    fusion = _fusion("sum", [(1.0, 0.0), OFF, (patch_slope, 0.0)])
    map_raw, patch_map = _maps({(0, 0): 3.0, (2, 2): 2.0}, {(3, 3): 3.0, (2, 2): 2.0})
    score_raw, patch = fusion.co_located(map_raw, patch_map)
    assert torch.allclose(score_raw, map_raw[:, spot[0], spot[1]])
    assert torch.equal(patch, patch_map[:, spot[0], spot[1]])


def test_co_located_peaks_in_different_places_no_longer_add_up() -> None:
    fusion = _fusion("sum", [(1.0, 0.0), OFF, (1.0, 0.0)])
    head = TYPE_LOGITS[:1]
    apart = _maps({(0, 0): 3.0}, {(3, 3): 3.0})  # a background peak, and a barcode elsewhere
    together = _maps({(1, 1): 2.5}, {(1, 1): 2.5})  # a defect both see, each less sure

    def own_spots(maps: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        return fusion(maps[0].amax(dim=(1, 2)), head, maps[1].amax(dim=(1, 2)))

    def one_spot(maps: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        score_raw, patch = fusion.co_located(*maps)
        return fusion(score_raw, head, patch)

    assert own_spots(apart) > own_spots(together)  # log-odds 3 + 3 against 2.5 + 2.5
    assert one_spot(apart) < one_spot(together)  # max(3 - 1, 0 + 3) = 3 against 5
    assert torch.allclose(one_spot(together), own_spots(together))  # coinciding peaks: no change
