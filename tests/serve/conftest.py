"""Fixtures for the service tests: an audit store and a started app per test.

``serve_fakes`` (beside this file) holds the fakes; pytest's importlib mode does not put test folders
on ``sys.path``, so this conftest does, once, for the modules of this folder.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

sys.path.insert(0, str(Path(__file__).parent))

from serve_fakes import API_KEYS, FakePredictor  # noqa: E402

from pipeline.audit import AuditStore  # noqa: E402
from serve.app import create_app  # noqa: E402
from serve.settings import ServeSettings  # noqa: E402

AppFactory = Callable[..., TestClient]


@pytest.fixture
def audit_store(tmp_path: Path) -> Iterator[AuditStore]:
    store = AuditStore.open(f"sqlite:///{tmp_path / 'audit.db'}")
    yield store
    store.close()


AppFactory = Callable[..., TestClient]


@pytest.fixture
def make_client(tmp_path: Path, audit_store: AuditStore) -> Iterator[AppFactory]:
    """Build a started TestClient; keyword arguments override settings, ``predictors=`` replaces the fakes."""
    clients: list[TestClient] = []

    def factory(
        *, predictors: dict[str, Any] | None = None, audit: Any = None, **overrides: Any
    ) -> TestClient:
        values: dict[str, Any] = {"api_keys": API_KEYS, "data_dir": tmp_path / "data", "max_wait_ms": 1.0}
        values.update(overrides)
        settings = ServeSettings(_env_file=None, **values)
        if predictors is None:
            predictors = {"bulk_ore": FakePredictor("bulk_ore"), "vacuum_pack": FakePredictor("vacuum_pack")}
        client = TestClient(create_app(settings, predictors=predictors, audit=audit or audit_store))
        client.__enter__()
        clients.append(client)
        return client

    yield factory
    for client in clients:
        client.__exit__(None, None, None)
