"""Fixtures for the service tests: an audit store and a started app per test.

``serve_fakes`` (beside this file) holds the fakes; pytest's importlib mode does not put test folders
on ``sys.path``, so this conftest does, once, for the modules of this folder.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
import time
import uuid
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

BASE_SETTINGS: dict[str, Any] = {
    "api_keys": API_KEYS,
    "audit_secret": "service-tests-audit-secret",
    "max_wait_ms": 1.0,
}
"""What every test app starts with (a key ring, a non-default audit secret, quick batches)."""


@pytest.fixture
def logging_restored() -> Iterator[None]:
    """For a test that runs ``clearsight serve``, which configures the process's loggers (JSON lines
    on stderr, not propagated: ``caplog`` would see no more of them) and SIGTERM: puts them back."""
    loggers = [logging.getLogger(name) for name in ("clearsight", "uvicorn", "uvicorn.error")]
    saved = [(logger, logger.handlers[:], logger.propagate, logger.level) for logger in loggers]
    sigterm = signal.getsignal(signal.SIGTERM)
    yield
    signal.signal(signal.SIGTERM, sigterm)
    for logger, handlers, propagate, level in saved:
        logger.handlers[:], logger.propagate = handlers, propagate
        logger.setLevel(level)


@pytest.fixture
def audit_store(tmp_path: Path) -> Iterator[AuditStore]:
    store = AuditStore.open(f"sqlite:///{tmp_path / 'audit.db'}")
    yield store
    store.close()


PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def either_audit_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[AuditStore]:
    """An audit store on SQLite, then on the real PostgreSQL (a uniquely named schema dropped
    afterwards), as ``tests/pipeline`` runs the store: for pages whose queries differ by backend.
    Give it to ``make_client(audit=...)``."""
    if request.param == "sqlite":
        store = AuditStore.open(f"sqlite:///{tmp_path / 'either.db'}")
        yield store
        store.close()
        return
    from sqlalchemy import create_engine, text

    schema = f"cs_serve_{uuid.uuid4().hex[:12]}"
    admin = create_engine(PG_URL)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        store = AuditStore.open(f"{PG_URL}?options=-csearch_path%3D{schema}")
        yield store
        store.close()
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture
def make_client(tmp_path: Path, audit_store: AuditStore) -> Iterator[AppFactory]:
    """Build a started TestClient; keyword arguments override settings, ``predictors=`` replaces the fakes."""
    clients: list[TestClient] = []

    def factory(
        *, predictors: dict[str, Any] | None = None, audit: Any = None, **overrides: Any
    ) -> TestClient:
        values: dict[str, Any] = {**BASE_SETTINGS, "data_dir": tmp_path / "data"}
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


class LiveServer:
    """A real uvicorn server on 127.0.0.1 (random free port) in a thread, configured as
    ``clearsight serve`` configures it (but for logging, which stays pytest's)."""

    def __init__(self, app: Any, settings: ServeSettings) -> None:
        import socket

        import uvicorn

        from serve.cli import uvicorn_options

        self.socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.socket.bind(("127.0.0.1", 0))
        self.port = self.socket.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        options = {**uvicorn_options(settings), "log_config": None}
        config = uvicorn.Config(app, **options, lifespan="on", timeout_graceful_shutdown=2)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.socket]}, daemon=True)

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.socket.close()


@pytest.fixture
def live_server(tmp_path: Path, audit_store: AuditStore) -> Iterator[Callable[..., LiveServer]]:
    """Start a real server: keyword arguments override settings, ``predictors=`` replaces the fakes,
    ``audit=`` the audit store."""
    servers: list[LiveServer] = []

    def start(*, predictors: dict[str, Any] | None = None, audit: Any = None, **overrides: Any) -> LiveServer:
        values: dict[str, Any] = {**BASE_SETTINGS, "data_dir": tmp_path / "data"}
        values.update(overrides)
        if predictors is None:
            predictors = {"bulk_ore": FakePredictor("bulk_ore"), "vacuum_pack": FakePredictor("vacuum_pack")}
        settings = ServeSettings(_env_file=None, **values)
        app = create_app(settings, predictors=predictors, audit=audit or audit_store)
        server = LiveServer(app, settings).__enter__()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.__exit__(None, None, None)
