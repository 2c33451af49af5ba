"""The OpenAPI document against the service: every error response a problem+json of the shared
schema, with the statuses each route returns and the headers it sends."""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import pytest
from serve_fakes import ADMIN_KEY, OFFICER_KEY, SUBMITTER_KEY, auth, png_bytes

from datasets.errors import AuditError
from serve.problems import PROBLEM_JSON
from serve.schemas import SHIPMENT_ID_PATTERN

READ = {401, 403, 404, 422, 429, 500, 503}
OUTCOME = {400, 401, 403, 404, 408, 409, 413, 415, 422, 429, 500, 503}
UPLOAD = {400, 401, 403, 408, 413, 415, 422, 429, 500, 503, 504}
ERRORS = {
    ("post", "/v1/score"): UPLOAD,
    ("post", "/v1/shipments"): UPLOAD | {409},
    ("get", "/v1/shipments"): READ,
    ("get", "/v1/shipments/{shipment_id}"): READ,
    ("post", "/v1/outcomes"): OUTCOME,
    ("post", "/v1/shipments/{shipment_id}/outcome"): OUTCOME,
    ("get", "/v1/models"): {401, 403, 429, 500},
    ("get", "/metrics"): {401, 403, 429, 500},
    ("get", "/healthz"): set(),
    ("get", "/readyz"): {503},
}
"""The error statuses each route returns: 401/403/429 on every route behind a key (a lockout
answers before the key is checked), 503 with Retry-After wherever the audit store or a model is
used, 400 and 408 where a body is read."""


@pytest.fixture
def spec(make_client) -> dict[str, Any]:
    return make_client(api_docs=True).get("/openapi.json").json()  # type: ignore[no-any-return]


def test_every_error_response_is_a_problem_of_the_shared_schema(spec) -> None:
    documented = {
        (method, path): {int(code) for code in op["responses"] if code[0] in "45"}
        for path, ops in spec["paths"].items()
        for method, op in ops.items()
    }
    assert documented == ERRORS
    for (method, path), statuses in documented.items():
        for status in statuses:
            response = spec["paths"][path][method]["responses"][str(status)]
            where = f"{method.upper()} {path} {status}"
            schema = "ValidationProblem" if status == 422 else "Problem"
            assert response["content"] == {
                PROBLEM_JSON: {"schema": {"$ref": f"#/components/schemas/{schema}"}}
            }, where
            assert response["description"], where
            headers = set(response.get("headers", {}))
            expected = {429: {"Retry-After"}, 503: {"Retry-After"}, 401: {"WWW-Authenticate"}}
            assert headers == expected.get(status, set()), where
    schemas = spec["components"]["schemas"]
    assert set(schemas["Problem"]["required"]) == {
        "type",
        "title",
        "status",
        "detail",
        "instance",
        "request_id",
    }
    errors = schemas["ValidationProblem"]["properties"]["errors"]["anyOf"][0]
    assert errors == {"type": "array", "items": {"$ref": "#/components/schemas/FieldError"}}
    assert "HTTPValidationError" not in schemas  # FastAPI's own 422 body, which the service never sends


def test_what_the_service_answers_is_what_the_document_says(make_client, audit_store, spec) -> None:
    """Each error the reviewer met (and a few more) is documented for its route, its body matches
    the schema and the headers documented are sent."""

    class Locked:
        """The audit store, its lock wait run out for reads and outcomes."""

        def get(self, *args: Any, **kwargs: Any) -> Any:
            raise AuditError("database is locked: waited 30 s for the write lock")

        def __getattr__(self, name: str) -> Any:
            return getattr(audit_store, name)

    client = make_client(auth_failures_per_minute=2)
    officer, submitter = auth(OFFICER_KEY), auth(SUBMITTER_KEY)
    image = [("images", ("a.png", png_bytes(10), "image/png"))]
    declaration = json.dumps({"shipment_id": "SHP-DOC", "cargo_type": "bulk_ore"})
    assert client.post(
        "/v1/shipments", files=image, data={"declaration": declaration}, headers=submitter
    ).is_success
    assert client.post(
        "/v1/outcomes", json={"shipment_id": "SHP-DOC", "found": "clean"}, headers=officer
    ).is_success
    outcome = "/v1/shipments/{shipment_id}/outcome"
    no_boundary = {**submitter, "content-type": "multipart/form-data"}
    bad_length = {**officer, "content-type": "application/json", "content-length": "x"}
    no_such_decision = {"shipment_id": "SHP-DOC", "found": "clean", "decision_seq": 7, "amend": True}
    answers = [
        ("post", "/v1/shipments", client.post("/v1/shipments", content=b"x", headers=no_boundary)),
        (
            "post",
            "/v1/shipments",
            client.post("/v1/shipments", files=image, data={"declaration": "{"}, headers=submitter),
        ),
        (
            "post",
            "/v1/score",
            client.post("/v1/score", files=image, data={"cargo_type": "bulk_ore"}, headers=submitter),
        ),
        ("get", "/metrics", client.get("/metrics", headers=submitter)),
        ("get", "/v1/shipments/{shipment_id}", client.get("/v1/shipments/NOPE", headers=officer)),
        ("get", "/v1/shipments", client.get("/v1/shipments", headers=officer)),
        (
            "post",
            outcome,
            client.post(
                "/v1/shipments/SHP-DOC/outcome", json={"found": "x", "notes": "n" * 70_000}, headers=officer
            ),
        ),
        ("post", outcome, client.post("/v1/shipments/SHP-DOC/outcome", content=b"{}", headers=bad_length)),
        (
            "post",
            outcome,
            client.post("/v1/shipments/SHP-DOC/outcome", data={"found": "clean"}, headers=officer),
        ),
        (
            "post",
            outcome,
            client.post("/v1/shipments/SHP-DOC/outcome", json={"found": "Clean!"}, headers=officer),
        ),
        (
            "post",
            "/v1/outcomes",
            client.post("/v1/outcomes", json={"shipment_id": "SHP-DOC", "found": "clean"}, headers=officer),
        ),
        ("post", "/v1/outcomes", client.post("/v1/outcomes", json=no_such_decision, headers=officer)),
    ]
    locked = make_client(audit=Locked())
    answers += [
        ("get", "/v1/shipments/{shipment_id}", locked.get("/v1/shipments/SHP-DOC", headers=officer)),
        (
            "post",
            outcome,
            locked.post("/v1/shipments/SHP-DOC/outcome", json={"found": "clean"}, headers=officer),
        ),
    ]
    for i in range(2):
        client.get("/v1/models", headers=auth(f"wrong-key-{i:04d}"))
    answers += [
        ("get", "/v1/models", client.get("/v1/models", headers=officer)),
        (
            "post",
            "/v1/shipments",
            client.post("/v1/shipments", files=image, data={"declaration": declaration}, headers=submitter),
        ),
        ("get", "/metrics", client.get("/metrics")),
    ]
    statuses = []
    for method, path, response in answers:
        status = response.status_code
        statuses.append(status)
        documented = spec["paths"][path][method]["responses"]
        assert str(status) in documented, (method, path, status, response.text)
        assert response.headers["content-type"] == PROBLEM_JSON
        media = documented[str(status)]["content"][PROBLEM_JSON]
        jsonschema.validate(response.json(), {**media["schema"], "components": spec["components"]})
        for header in documented[str(status)].get("headers", {}):
            assert header.lower() in response.headers, (method, path, status, header)
    assert statuses == [400, 422, 403, 403, 404, 422, 413, 400, 415, 422, 409, 422, 503, 503, 429, 429, 401]


@pytest.mark.parametrize(
    ("declared", "key", "status"),
    [
        ({"shipment_id": "SHP-2026-0001", "cargo_type": "bulk_ore", "trader_id": "T-1"}, SUBMITTER_KEY, 200),
        ({"shipment_id": "SHP/2026/0001", "cargo_type": "bulk_ore"}, SUBMITTER_KEY, 422),
        ({"shipment_id": "S-2", "cargo_type": "bulk_ore", "extra": {"a": {"b": 1}}}, SUBMITTER_KEY, 422),
        ({"shipment_id": "SHP-2026-0003", "cargo_type": "bulk_ore", "aeo_tier": "AEOF"}, SUBMITTER_KEY, 403),
        ({"shipment_id": "SHP-2026-0004", "cargo_type": "bulk_ore", "aeo_tier": "AEOF"}, ADMIN_KEY, 200),
    ],
    ids=["valid", "a-batch-id", "nested-extra", "a-submitters-tier", "an-admins-tier"],
)  # fmt: skip
def test_the_declaration_the_document_describes_is_the_one_the_service_takes(
    make_client, spec, declared, key, status
) -> None:
    """The declaration form field is JSON of the Declaration schema, with the id pattern and bounds
    the service adds (a batch records ids it refuses), and aeo_tier said to be officers' and admins'."""
    body = spec["paths"]["/v1/shipments"]["post"]["requestBody"]["content"]["multipart/form-data"]
    # an encoding naming the part application/json made Swagger UI send it as a file: /docs broke
    assert "encoding" not in body
    ref = body["schema"]["$ref"].rsplit("/", 1)[-1]
    field = spec["components"]["schemas"][ref]["properties"]["declaration"]
    # Swagger UI 5 takes a string field with a contentMediaType for a file upload: /docs broke
    assert "contentMediaType" not in field
    assert field["contentSchema"]["allOf"][0] == {"$ref": "#/components/schemas/Declaration"}
    assert field["contentSchema"]["allOf"][1]["properties"]["shipment_id"]["pattern"] == SHIPMENT_ID_PATTERN
    assert (
        "Officers and admins only"
        in field["contentSchema"]["allOf"][1]["properties"]["aeo_tier"]["description"]
    )
    schema = {**field["contentSchema"], "components": spec["components"]}
    valid = jsonschema.Draft202012Validator(schema).is_valid(declared)
    assert valid == (status != 422)  # a tier is valid JSON for anyone: who may send it is in words
    response = make_client().post(
        "/v1/shipments",
        files=[("images", ("a.png", png_bytes(10), "image/png"))],
        data={"declaration": json.dumps(declared)},
        headers=auth(key),
    )
    assert response.status_code == status, response.text
