"""Schemathesis over the server's own OpenAPI schema: generated requests (valid and invalid) to every
operation, with the token so that writes run too. No answer may be a 5xx."""

from __future__ import annotations


import pytest
from servekit import TOKEN, LiveServer, private_workspace

from pixelmine.uploads import UploadLimits

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402

EXAMPLES_PER_OPERATION = 25  # about 20 operations: ~500 requests, well under a minute on 2 cores


def test_no_5xx_on_generated_requests(tmp_path_factory):
    root = private_workspace(tmp_path_factory, "fuzz")
    failures = []
    with LiveServer(root, limits=UploadLimits(max_bytes=200_000, max_pixels=2_000_000),
                    max_request_bytes=500_000) as live:
        schema = schemathesis.openapi.from_url(f"{live.url}/openapi.json")
        # GET /events is a Server-Sent Events stream: it answers at once and never ends by design, so a request
        # that reads the whole body would wait out its timeout; test_serve_live.py drives it with a real client
        operations = [op for op in (result.ok() for result in schema.get_all_operations())
                      if not (op.method.upper() == "GET" and op.path == "/events")]
        assert len(operations) >= 15
        for operation in operations:
            @given(case=operation.as_strategy())
            @settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, database=None,
                      suppress_health_check=list(HealthCheck))
            def check(case):
                response = case.call(base_url=live.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60)
                if response.status_code >= 500:
                    failures.append(f"{case.method} {case.formatted_path} -> {response.status_code} {response.text[:200]}")

            check()
    assert not failures, "\n".join(failures[:20])
