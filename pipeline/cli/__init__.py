"""The ``clearsight`` command line: one Typer app, one module per command group.

Each module exposes ``register(app)``; ``serve.cli`` adds the ``serve`` and ``demo`` commands on top
(they need the HTTP layer, which sits above ``pipeline``).
"""

from __future__ import annotations

from pipeline.cli import audit, data, decide, evaluate, export, policy, score, train
from pipeline.cli._app import app, run

for _module in (data, train, evaluate, export, score, decide, policy, audit):
    _module.register(app)

__all__ = ["app", "run"]
