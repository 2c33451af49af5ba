"""Grey pictures' offsets: medians of each kind's training normals, and when none are measured."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pipeline.picture_kinds import MIN_KIND_NORMALS, GreyOffsets, grey_offsets_words, measure_grey_offsets

_NAN = float("nan")


def _signals(colour: list[float], grey: list[float]) -> tuple[list[float], list[bool]]:
    return colour + grey, [False] * len(colour) + [True] * len(grey)


@pytest.mark.parametrize(
    ("colour", "grey", "expected"),
    [
        # colour median 4.5, grey median 2.5: grey views are raised by 2
        (list(range(10)), [v - 2.0 for v in range(10)], 2.0),
        # a grey median above the colour one lowers them; an outlier does not move a median
        ([0.0] * 9 + [100.0], [1.0] * 10, -1.0),
        # too few grey normals: no offset
        (list(range(10)), [0.0] * (MIN_KIND_NORMALS - 1), 0.0),
        # too few colour normals
        ([0.0] * (MIN_KIND_NORMALS - 1), list(range(10)), 0.0),
        # only grey pictures (an X-ray-only data set)
        ([], list(range(20)), 0.0),
    ],
)
def test_each_offset_is_the_colour_median_minus_the_grey_median(
    colour: list[float], grey: list[float], expected: float
) -> None:
    values, kinds = _signals([float(v) for v in colour], [float(v) for v in grey])
    measured = measure_grey_offsets(values, values, values, kinds)
    assert measured.offsets == pytest.approx((expected,) * 3)
    assert (measured.colour, measured.grey) == (len(colour), len(grey))


def test_unknown_values_are_left_out_signal_by_signal() -> None:
    one_class, kinds = _signals([1.0] * 10, [0.5] * 10)
    head = [1.0] * 10 + [_NAN] * 3 + [0.0] * 7  # 7 finite grey values: too few
    patch = [_NAN] * 20  # no patch head
    measured = measure_grey_offsets(one_class, head, patch, kinds)
    assert measured.offsets == pytest.approx((0.5, 0.0, 0.0))


def test_lengths_must_agree() -> None:
    with pytest.raises(ValueError, match="3 signal values for 4 pictures"):
        measure_grey_offsets([0.0] * 3, [0.0] * 4, [0.0] * 4, [True] * 4)


@pytest.mark.parametrize(
    ("record", "words"),
    [
        (None, "none (trained before grey offsets existed)"),
        ("off (--no-grey-offsets)", "off (--no-grey-offsets)"),
        (
            GreyOffsets((math.log(1.25), 0.5, -1.0), colour=90, grey=30).card(),
            "grey views' one-class distances x1.250, type head +0.500 and patch head -1.000 log-odds "
            "(medians of 30 grey and 90 colour training normals)",
        ),
        (
            GreyOffsets((0.0, 0.0, 0.0), colour=120, grey=0).card(),
            "no offsets: 0 grey and 120 colour training normals "
            f"(at least {MIN_KIND_NORMALS} of each kind needed)",
        ),
    ],
)
def test_the_summary_says_what_was_applied(record: object, words: str) -> None:
    assert grey_offsets_words(record) == words  # type: ignore[arg-type]


def test_the_card_record_is_plain_json() -> None:
    import json

    card = GreyOffsets((0.1, 0.2, 0.3), colour=10, grey=9).card()
    assert json.loads(json.dumps(card)) == card
    assert card["one_class_distance_factor"] == pytest.approx(np.exp(0.1))
