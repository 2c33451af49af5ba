"""One CSV line, as Clearsight writes CSV files people and tools read back (score rows, manifests).

Python's ``csv`` quotes a cell that holds the delimiter, the quote character or a character of its
line terminator. Written with ``lineterminator="\\n"``, a cell holding a carriage return (a file name
from a Linux or macOS share, a declaration typed on a Mac) was left unquoted, and every reader,
``csv`` included, ends a row there: the row came back split in two, or was refused as the wrong
width. :func:`csv_line` writes with ``\\r\\n``, so that such a cell is quoted, and cuts the line's
end back to ``\\n``: every other line is written byte for byte as before.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable

__all__ = ["csv_line"]


def csv_line(cells: Iterable[object]) -> str:
    """``cells`` as one ``\\n``-terminated CSV line (minimal quoting; a cell holding ``\\r`` or ``\\n``
    quoted). A cell is written as ``csv`` writes it: ``None`` empty, anything else its ``str``."""
    text = io.StringIO()
    csv.writer(text, lineterminator="\r\n").writerow(cells)
    return text.getvalue()[:-2] + "\n"
