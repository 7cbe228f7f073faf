"""The OpenAPI document against the service that serves it: Schemathesis generates requests
from /openapi.json (valid ones and broken ones) for every operation and sends them to the real
service (uvicorn on 127.0.0.1, the tiny model exported by export/build_engine.py, an API key).
Every answer must have a documented status, a documented content type, a body and headers
that match the documented schema, and no 5xx. Bounded: a fixed number of examples per
operation, derandomized, no shrinking (a failure prints the request that caused it)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from pemt.media.encode import make_test_video
from server.testing import ServerProcess

schemathesis = pytest.importorskip("schemathesis")

from hypothesis import HealthCheck, Phase, given, settings  # noqa: E402
from hypothesis.errors import Unsatisfiable  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.specs.openapi.checks import (  # noqa: E402
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

KEY = "contract-key"
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
EXAMPLES = {"positive": 20, "negative": 12}  # per operation; about 15 s on 2 cores


@pytest.fixture(scope="module")
def server(repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    data = tmp_path_factory.mktemp("contract-data")
    env = {
        "PEMT_MODEL_PATH": str(repo),
        "PEMT_DATA_DIR": str(data),
        "PEMT_API_KEYS": KEY,
        "PEMT_DECODE_WORKERS": "1",
        "PEMT_MAX_UPLOAD_BYTES": "200000",
        "PEMT_MAX_CONCURRENT_JOBS": "4",
    }
    with ServerProcess(env, log_path=data / "server.log") as srv:
        # stored items, so that ids from the document's examples exist
        clip = make_test_video(data / "clip.mp4", seconds=2, width=64, height=48)
        long = make_test_video(data / "long.mp4", seconds=6, width=32, height=32, fps=8)
        with httpx.Client(base_url=srv.url, headers={"X-API-Key": KEY}, timeout=60) as c:
            for item, path in (("clip1", clip), ("long", long)):
                with open(path, "rb") as f:
                    r = c.post(
                        "/embed", files={"file": (path.name, f, "video/mp4")}, data={"id": item}
                    )
                assert r.status_code == 200, r.text
        yield srv


def operations(schema: object) -> list[object]:
    ops = [result.ok() for result in schema.get_all_operations()]  # type: ignore[attr-defined]
    assert len(ops) >= 12, [op.label for op in ops]
    return ops


def _describe(e: BaseException) -> str:
    if isinstance(e, BaseExceptionGroup):
        return "; ".join(_describe(x) for x in e.exceptions)
    return f"{type(e).__name__}: {str(e)[:1500]}"


def test_every_operation_answers_as_documented(server: ServerProcess) -> None:
    schema = schemathesis.openapi.from_url(f"{server.url}/openapi.json")
    failures: list[str] = []
    for op in operations(schema):
        for mode, n in EXAMPLES.items():
            strategy = op.as_strategy(
                schemathesis.GenerationMode.POSITIVE
                if mode == "positive"
                else schemathesis.GenerationMode.NEGATIVE
            )

            @settings(
                max_examples=n,
                deadline=None,
                database=None,
                derandomize=True,
                phases=[Phase.explicit, Phase.generate],
                suppress_health_check=list(HealthCheck),
            )
            @given(case=strategy)
            def run(case: object) -> None:
                case.call_and_validate(  # type: ignore[attr-defined]
                    base_url=server.url, headers={"X-API-Key": KEY}, checks=CHECKS, timeout=60
                )

            try:
                run()
            except Unsatisfiable:  # nothing to break: the operation takes no input
                assert mode == "negative" and not op.path_parameters and not op.query, op.label
            except (Exception, BaseExceptionGroup) as e:  # noqa: BLE001 - collect them all
                failures.append(f"{op.label} [{mode}]: {_describe(e)}")
    assert not failures, "\n\n".join(failures)
    assert httpx.get(server.url + "/healthz").status_code == 200


def test_the_document_states_errors_operation_ids_and_id_patterns(server: ServerProcess) -> None:
    spec = httpx.get(server.url + "/openapi.json").json()
    open_routes = {"/healthz", "/readyz", "/metrics"}
    seen = set()
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            name = f"{method.upper()} {path}"
            # explicit, not FastAPI's generated "<function>_<path>_<method>"
            op_id = op["operationId"]
            assert op_id.replace("_", "").isalpha() and not op_id.endswith(method), (name, op_id)
            seen.add(op_id)
            errors = {int(s) for s in op["responses"] if int(s) >= 400}
            if path not in open_routes:
                assert {401, 503} <= errors, (name, errors)
            if "{id}" in path and method != "put":  # PUT creates: no 404
                assert {400, 404} <= errors, (name, errors)
            if method == "post":
                assert {400, 408, 413, 415, 422, 429, 503, 507} <= errors, (name, errors)
            for status in errors:
                schema = op["responses"][str(status)]["content"]["application/json"]["schema"]
                assert schema == {"$ref": "#/components/schemas/ErrorBody"}, (name, status)
            for param in op.get("parameters", []):
                if param["name"] in ("id", "clip_id"):
                    assert param["schema"]["pattern"].endswith("{0,127}$"), (name, param)
    assert len(seen) == sum(len(ops) for ops in spec["paths"].values())  # unique
    assert "HTTPValidationError" not in spec["components"]["schemas"]
    body = spec["paths"]["/search"]["post"]["requestBody"]["content"]
    assert body["application/json"]["schema"]["properties"]["id"]["anyOf"][0]["pattern"]
    assert spec["paths"]["/embed"]["post"]["requestBody"]["content"]["multipart/form-data"][
        "schema"
    ]["properties"]["id"]["pattern"].startswith("^[A-Za-z0-9]")
