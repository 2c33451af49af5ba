"""The heatmap overlay and its colour scale: the legend shows the overlay's own colours."""

from __future__ import annotations

import re

import numpy as np

from pipeline.heatmap import legend_svg, overlay


def test_the_legend_shows_the_overlays_colours_from_clean_to_defect() -> None:
    svg = legend_svg()
    stops = re.findall(r'stop-color="#([0-9a-f]{6})"', svg)
    assert len(stops) == 9
    grey = np.full((4, 4, 3), 128, np.uint8)
    # a map at 1 (a defect) blends the legend's last colour in at the overlay's full weight (0.45)
    red = np.array([int(stops[-1][i : i + 2], 16) for i in (0, 2, 4)], np.float32)
    expected = np.round(128 * 0.55 + red * 0.45)
    assert np.array_equal(overlay(grey, np.ones((4, 4), np.float32))[0, 0], expected)
    # a map at 0 leaves the picture as it is: the legend says so at its left end
    assert np.array_equal(overlay(grey, np.zeros((4, 4), np.float32)), grey)
    assert "0: like clean cargo" in svg and "1: a defect" in svg
