"""Schemathesis: bounded schema-driven requests against a real server; never a 5xx, 4xx are problems."""

from __future__ import annotations

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from serve_fakes import ADMIN_KEY, auth

MAX_EXAMPLES = 20


@pytest.mark.slow
def test_no_server_errors_from_schema_driven_requests(live_server) -> None:
    server = live_server(max_images_per_request=4, max_image_pixels=100_000, api_docs=True)
    raw = httpx.get(f"{server.url}/openapi.json").json()
    schema = schemathesis.openapi.from_dict(raw)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {f"{op.method.upper()} {op.path}" for op in operations} >= {
        "POST /v1/score",
        "POST /v1/shipments",
        "GET /v1/shipments/{shipment_id}",
        "POST /v1/shipments/{shipment_id}/outcome",
        "GET /v1/shipments",
        "POST /v1/outcomes",
        "GET /v1/models",
        "GET /healthz",
        "GET /readyz",
    }
    failures: list[str] = []
    for operation in operations:

        @settings(
            max_examples=MAX_EXAMPLES,
            database=None,
            deadline=None,
            phases=[Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        @given(case=operation.as_strategy())
        def check(case: schemathesis.Case) -> None:
            response = case.call(base_url=server.url, headers=auth(ADMIN_KEY), timeout=10)
            if response.status_code >= 500:
                failures.append(
                    f"{case.method} {case.formatted_path}: {response.status_code} {response.text[:300]}"
                )
            elif response.status_code >= 400:
                content_type = response.headers.get("content-type")  # header values come as lists
                assert content_type == ["application/problem+json"], response.text
                assert response.json()["status"] == response.status_code

        check()
    assert failures == []
