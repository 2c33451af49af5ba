"""datasets.csv_lines: one CSV line, a cell holding a line break quoted, every other line as csv writes it."""

from __future__ import annotations

import csv
import io

import pytest

from datasets.csv_lines import csv_line


@pytest.mark.parametrize("cell", ["a\rb", "\rstart", "end\r", "a\r\nb", "a\nb"])
def test_a_cell_holding_a_line_break_is_quoted_and_reads_back(cell: str) -> None:
    line = csv_line(["x.png", cell, "3"])
    assert line.endswith("\n") and not line.endswith("\r\n")
    assert f'"{cell}"' in line
    assert list(csv.reader(io.StringIO(line, newline=""))) == [["x.png", cell, "3"]]


@pytest.mark.parametrize(
    "cells", [["a", "b,c", 'say "hi"', ""], [""], ["ünï", None, 1.5, True], ["\\x5c", " lead", "tab\tx"]]
)
def test_every_other_line_is_written_as_csv_wrote_it_with_a_newline(cells: list[object]) -> None:
    text = io.StringIO()
    csv.writer(text, lineterminator="\n").writerow(cells)
    assert csv_line(cells) == text.getvalue()
