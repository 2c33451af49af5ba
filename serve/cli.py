"""Console entry point: the pipeline CLI plus the commands that need the HTTP layer."""

from __future__ import annotations

import sys

from pipeline.cli import app, run

__all__ = ["main"]


def main() -> None:
    sys.exit(run(app))


if __name__ == "__main__":
    main()
