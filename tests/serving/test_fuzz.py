"""A schema-driven fuzz of the served OpenAPI (schemathesis) on the session Serve app: every operation,
with a valid API key, gets generated valid and invalid requests; no answer may be a 5xx, and answers must
conform to the spec (documented status codes and content types, response schemas)."""

from __future__ import annotations

from collections import Counter

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode

from tests.serving.conftest import ServeApp

# Few examples per operation and mode: /v1/ask and chat run a real generation (about a second on CPU).
MAX_EXAMPLES = 6
CHECKS = [schemathesis.checks.not_a_server_error, schemathesis.checks.status_code_conformance,
          schemathesis.checks.content_type_conformance, schemathesis.checks.response_schema_conformance]


@pytest.fixture(scope="module")
def served_schema(serve_app: ServeApp):
    return schemathesis.openapi.from_url(serve_app.url + "/openapi.json")


def fuzz(operation, mode: GenerationMode, serve_app: ServeApp, statuses: Counter) -> None:
    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(max_examples=MAX_EXAMPLES, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    def run(case) -> None:
        response = case.call_and_validate(headers=serve_app.auth, checks=CHECKS, timeout=120)
        statuses[response.status_code] += 1

    run()


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=["valid", "invalid"])
def test_no_operation_answers_a_server_error(served_schema, serve_app: ServeApp, mode: GenerationMode) -> None:
    operations = [result.ok() for result in served_schema.get_all_operations()]
    labels = {op.label for op in operations}
    assert {"POST /v1/ask", "POST /v1/search", "POST /v1/chat/completions", "POST /v1/feedback",
            "GET /v1/models", "GET /health", "GET /ready"} <= labels, labels
    if mode is GenerationMode.NEGATIVE:  # an operation without inputs has no invalid request
        operations = [op for op in operations if len(op.body) or len(op.query) or len(op.headers)]
    statuses: Counter = Counter()
    failures: dict[str, str] = {}
    for operation in operations:
        try:
            fuzz(operation, mode, serve_app, statuses)
        except (Exception, BaseExceptionGroup) as exc:  # fuzz every operation; report all findings together
            failures[operation.label] = str(exc)
    print(f"{mode.value}: {sum(statuses.values())} requests over {len(operations)} operations, statuses "
          f"{dict(sorted(statuses.items()))}")
    assert not failures, "\n\n".join(f"{label}: {text}" for label, text in failures.items())
    assert sum(statuses.values()) >= len(operations)
    if mode is GenerationMode.NEGATIVE:  # invalid requests are refused as such, not answered
        assert statuses[422] > 0
