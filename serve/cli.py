"""Console entry point: the pipeline CLI plus the commands that need the HTTP layer."""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from pipeline.cli import app, run
from serve import demo

if TYPE_CHECKING:
    from serve.settings import ServeSettings

__all__ = ["main", "uvicorn_options"]


def uvicorn_options(settings: ServeSettings) -> dict[str, Any]:
    """What ``uvicorn.run`` is given besides the app (and, with several, ``workers``).

    uvicorn's own default takes X-Forwarded-For from any connection out of 127.0.0.1, so behind a
    same-host proxy that passes a client's header on, each client would name its own address, and
    the wrong-key lockout (which counts per address) would never hold it, or hold someone else.
    Proxy headers are read only from the proxies ``forwarded_allow_ips`` names. uvicorn bounds no
    connections by default: ``limit_concurrency`` does, and the protocol given as ``http``
    (:class:`~serve.connection_limits.ConnectionLimits`, h11) bounds how long a request head may
    take, how many connections one client holds and how many of a worker's wait for a head (half of
    ``limit_concurrency``; past that the longest waiting is closed), which uvicorn does not:
    connections trickling their heads held ``limit_concurrency`` full for good.
    """
    from serve.connection_limits import ConnectionLimits
    from serve.logs import log_config

    proxies = list(settings.forwarded_allow_ips)
    return {
        **_worker_healthcheck(),
        "host": settings.host,
        "port": settings.port,
        "log_config": log_config(),
        "access_log": False,
        "proxy_headers": bool(proxies),
        "forwarded_allow_ips": proxies,
        "limit_concurrency": settings.limit_concurrency,
        "http": ConnectionLimits(
            settings.header_timeout_s,
            settings.max_connections_per_client,
            trusted_proxies=proxies,
            # the other half is the requests': uvicorn answers 503 to one arriving with
            # limit_concurrency connections open, those waiting for a head among them
            max_waiting=max(1, settings.limit_concurrency // 2),
        ),
    }


WORKER_HEALTHCHECK_S = 60.0
"""How long a worker may take to answer its supervisor's health check: uvicorn's default of 5 s
killed workers still importing (about 2.7 s alone, more on a loaded machine) as "Child process died",
and started them again, for ever."""


def _worker_healthcheck() -> dict[str, Any]:
    import inspect

    import uvicorn

    # the setting came with uvicorn 0.3x: an older one, which pyproject still admits, has none
    if "timeout_worker_healthcheck" in inspect.signature(uvicorn.Config).parameters:
        return {"timeout_worker_healthcheck": WORKER_HEALTHCHECK_S}
    return {}


def _run_workers(settings: ServeSettings) -> None:
    """Serve with ``settings.workers`` processes, as ``uvicorn.run(..., workers=N)`` does, and exit
    with uvicorn's start-up failure code (3) where the supervisor stopped because a worker failed to
    start: ``uvicorn.run`` returned as after Ctrl-C, and the command exited 0.

    Raises:
        SystemExit: code 3, a worker failed to start (its log lines say why).
    """
    import uvicorn
    from uvicorn.config import STARTUP_FAILURE
    from uvicorn.supervisors import Multiprocess

    config = uvicorn.Config(
        "serve.app:create_app_from_env", factory=True, workers=settings.workers, **uvicorn_options(settings)
    )
    supervisor = Multiprocess(config, sockets=[config.bind_socket()])
    supervisor.run()
    # an older uvicorn keeps the multiprocessing processes themselves in the list
    codes = [getattr(worker, "process", worker).exitcode for worker in supervisor.processes]
    if STARTUP_FAILURE in codes:
        logging.getLogger("clearsight.serve").error(
            "a worker failed to start (its log lines above say why): the service stopped"
        )
        raise SystemExit(STARTUP_FAILURE)


@app.command("serve")
def serve_command(
    audit_db: Annotated[
        str,
        typer.Option(
            "--audit-db",
            envvar="CLEARSIGHT_AUDIT_DB",
            help="Audit store URL (sqlite:///FILE or postgresql+psycopg://...); from the environment, a "
            "database password stays out of the process list.",
        ),
    ],
    model: Annotated[
        list[Path] | None,
        typer.Option(
            "--model",
            help="Model directory to load (repeat: one per cargo type); default: CLEARSIGHT_MODELS.",
        ),
    ] = None,
    policy: Annotated[
        Path | None, typer.Option("--policy", help="Decision policy YAML (default: the packaged one).")
    ] = None,
    trader_register: Annotated[
        Path | None,
        typer.Option(
            "--trader-register",
            help="CSV of trusted traders (trader_id, aeo_tier, submitters): the AEO tier shipments are "
            "decided under. Submitters never declare a tier (403); a submitter's shipments get a trader's "
            "tier only where its key is named among that trader's submitters (`clearsight keys`).",
        ),
    ] = None,
    # None where not given: the settings take CLEARSIGHT_HOST, _PORT, _WORKERS (or .env), then their
    # defaults; typer's own defaults, always passed on, hid those variables
    host: Annotated[
        str | None, typer.Option(help="Interface to bind (default 127.0.0.1; CLEARSIGHT_HOST).")
    ] = None,
    port: Annotated[int | None, typer.Option(help="TCP port (default 8000; CLEARSIGHT_PORT).")] = None,
    workers: Annotated[
        int | None,
        typer.Option(help="Worker processes, each loading the models (default 1; CLEARSIGHT_WORKERS)."),
    ] = None,
    data_dir: Annotated[
        Path | None, typer.Option("--data-dir", help="Where uploads and heatmaps are kept.")
    ] = None,
    insecure_dev: Annotated[
        bool,
        typer.Option(
            "--insecure-dev",
            help="Serve WITHOUT API keys and with the public development audit secret (development only).",
        ),
    ] = False,
) -> None:
    """Run the HTTP scoring service and the officer review page.

    API keys come from CLEARSIGHT_API_KEYS ('role:key,...'; roles submitter, officer, admin); other
    settings from CLEARSIGHT_* variables (see serve/settings.py).
    """
    import logging.config

    import uvicorn

    from datasets.errors import InputError
    from serve.app import check_keys, create_app, preflight
    from serve.logs import log_config
    from serve.settings import ServeSettings

    # the start-up warnings (keys, secrets, cookies) are log lines like the server's own: JSON, not
    # plain text ahead of uvicorn's configuring the same loggers
    logging.config.dictConfig(log_config())

    overrides = {
        "models": model or None,
        "audit_db": audit_db,
        "policy": policy,
        "trader_register": trader_register,
        "host": host,
        "port": port,
        "workers": workers,
        "insecure_dev": insecure_dev or None,
        "data_dir": data_dir,
    }
    settings = ServeSettings.load(**{k: v for k, v in overrides.items() if v is not None})
    if not settings.models:
        raise InputError(
            "no model to serve: pass --model MODEL_DIR (repeat: one per cargo type), or set "
            "CLEARSIGHT_MODELS (comma-separated folders)"
        )
    keys = check_keys(settings)  # refuse to start without keys, before any model is loaded
    predictors = preflight(settings)
    # uvicorn stops gracefully on SIGTERM and then ends by the signal, as a service manager expects
    # of a stopped service; the CLI's own handler (exit 143, which systemd counts as a failure) would
    # be the one uvicorn hands the signal back to
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    if settings.workers == 1:
        uvicorn.run(create_app(settings, predictors=predictors, keys=keys), **uvicorn_options(settings))
        return
    del predictors  # each worker loads its own
    # Worker processes rebuild their settings from the environment: hand the options on through it,
    # the models as a JSON list (a folder name may hold a comma)
    os.environ.update(
        {
            "CLEARSIGHT_MODELS": json.dumps([str(p) for p in settings.models]),
            "CLEARSIGHT_AUDIT_DB": settings.audit_db,
            "CLEARSIGHT_DATA_DIR": str(settings.data_dir),
            "CLEARSIGHT_INSECURE_DEV": str(settings.insecure_dev),
            **({"CLEARSIGHT_POLICY": str(settings.policy)} if settings.policy else {}),
            **(
                {"CLEARSIGHT_TRADER_REGISTER": str(settings.trader_register)}
                if settings.trader_register
                else {}
            ),
        }
    )
    _run_workers(settings)


@app.command("keys")
def keys_command() -> None:
    """Print the name of each key in CLEARSIGHT_API_KEYS (role and the first 12 hex digits of its
    SHA-256), one per line: what the audit trail records and a trader register's `submitters` lists.
    The keys themselves are never printed."""
    from datasets.errors import InputError
    from serve.auth import parse_api_keys
    from serve.settings import ServeSettings

    ring = parse_api_keys(ServeSettings.load().api_keys.get_secret_value())
    if not len(ring):
        raise InputError(
            "CLEARSIGHT_API_KEYS holds no keys; set it to 'role:key,...' (roles submitter, officer, admin)"
        )
    for name in ring.names():
        typer.echo(name)


demo.register(app)


def main() -> None:
    sys.exit(run(app))


if __name__ == "__main__":
    main()
