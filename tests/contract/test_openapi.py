"""openapi/openapi.json: in sync with the app, and complete enough for SDK generators and fuzzers."""

from __future__ import annotations

from typing import Any

from app.openapi_export import openapi_document, render
from tests.contract.conftest import OPENAPI_PATH

OPERATION_IDS = {
    ("get", "/healthz"): "healthz",
    ("get", "/readyz"): "readyz",
    ("get", "/metrics"): "metrics",
    ("get", "/v1/models"): "listModels",
    ("post", "/v1/models/{model_id}/load"): "loadModel",
    ("post", "/v1/models/{model_id}/unload"): "unloadModel",
    ("get", "/v1/mcp/servers"): "listMcpServers",
    ("get", "/v1/mcp/servers/{name}/tools"): "listMcpTools",
    ("post", "/v1/mcp/servers/{name}/tools/{tool}"): "callMcpTool",
    ("get", "/v1/prompts"): "listPrompts",
    ("post", "/v1/prompts/{server}/{prompt}/run"): "runPrompt",
    ("post", "/v1/autonomous"): "runAutonomous",
    ("post", "/v1/autonomous/with-mcp"): "runWithMcp",
    ("post", "/v1/autonomous/with-multiple-mcps"): "runWithMultipleMcps",
    ("post", "/v1/autonomous/discover"): "runDiscover",
    ("post", "/v1/chat/completions"): "createChatCompletion",
    ("post", "/v1/completions"): "createCompletion",
    ("post", "/v1/embeddings"): "createEmbedding",
    ("post", "/v1/responses"): "createResponse",
    ("post", "/v1/runs"): "startRun",
    ("post", "/v1/pipelines"): "runPipeline",
    ("get", "/v1/runs"): "listRuns",
    ("get", "/v1/runs/{run_id}"): "getRun",
    ("delete", "/v1/runs/{run_id}"): "deleteRun",
    ("get", "/v1/runs/{run_id}/events"): "streamRunEvents",
    ("post", "/v1/runs/{run_id}/cancel"): "cancelRun",
    ("post", "/v1/runs/{run_id}/approvals/{tool_call_id}"): "decideApproval",
    ("post", "/v1/evals"): "startEvals",
    ("get", "/v1/evals"): "listEvals",
    ("get", "/v1/evals/{eval_id}"): "getEval",
}
STREAMING = {"runAutonomous", "runWithMcp", "runWithMultipleMcps", "runDiscover", "createChatCompletion", "runPipeline"}
PROBLEM_REF = "#/components/schemas/Problem"


def operations(doc: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(method, path, op) for path, item in doc["paths"].items() for method, op in item.items()]


def resolve(doc: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref")
    if isinstance(ref, str):
        return dict(doc["components"]["schemas"][ref.rsplit("/", 1)[1]])
    return schema


def test_document_matches_the_app(openapi_doc: dict[str, Any]) -> None:
    current = openapi_document()
    assert openapi_doc == current, "openapi/openapi.json is out of date: run `make openapi`"
    assert OPENAPI_PATH.read_text(encoding="utf-8") == render(current), "run `make openapi` (formatting)"


def test_operation_ids_are_stable(openapi_doc: dict[str, Any]) -> None:
    found = {(method, path): op.get("operationId") for method, path, op in operations(openapi_doc)}
    assert found == OPERATION_IDS


def test_every_operation_has_a_one_line_summary(openapi_doc: dict[str, Any]) -> None:
    for method, path, op in operations(openapi_doc):
        summary = op.get("summary", "")
        assert summary and "\n" not in summary and len(summary) <= 60, (method, path, summary)
        assert op.get("description"), (method, path)


def test_every_error_response_is_a_problem_document(openapi_doc: dict[str, Any]) -> None:
    for method, path, op in operations(openapi_doc):
        for status, response in op["responses"].items():
            if int(status) < 400 or (path == "/readyz" and status == "503"):  # readiness reports, not problems
                continue
            media = response.get("content", {}).get("application/problem+json")
            assert media and media["schema"] == {"$ref": PROBLEM_REF}, (method, path, status)
        if path.startswith("/v1/"):
            assert "401" in op["responses"], (method, path)
        if method == "post":
            assert {"413", "422"} <= set(op["responses"]), (method, path)
    schemas = openapi_doc["components"]["schemas"]
    assert "HTTPValidationError" not in schemas, "a route still declares FastAPI's default 422 body"
    assert {"type", "title", "status", "detail", "code"} <= set(schemas["Problem"]["required"])


def test_request_bodies_have_examples(openapi_doc: dict[str, Any]) -> None:
    for method, path, op in operations(openapi_doc):
        if "requestBody" not in op:
            continue
        media = op["requestBody"]["content"]["application/json"]
        schema = media["schema"]
        if "anyOf" in schema:  # optional body: the model or null
            schema = next(s for s in schema["anyOf"] if "$ref" in s)
        examples = media.get("example") or media.get("examples") or resolve(openapi_doc, schema).get("examples")
        assert examples, (method, path)


def test_path_parameters_have_examples(openapi_doc: dict[str, Any]) -> None:
    expected = {
        "name": "time",
        "tool": "get_current_time",
        "model_id": "qwen/qwen3-4b",
        "run_id": "run_5f0c1e2a9b7d4c3e8a6f1b2d",
        "tool_call_id": "call_0_0",
        "server": "everything",
        "prompt": "args-prompt",
        "eval_id": "eval_5f0c1e2a9b7d4c3e8a6f1b2d",
    }
    for method, path, op in operations(openapi_doc):
        for param in op.get("parameters", []):
            if param["in"] == "path":
                assert param["schema"].get("examples") == [expected[param["name"]]], (method, path, param)


def test_streaming_responses_are_documented(openapi_doc: dict[str, Any]) -> None:
    for _, _, op in operations(openapi_doc):
        if op["operationId"] not in STREAMING:
            continue
        content = op["responses"]["200"]["content"]
        assert "application/json" in content
        sse = content["text/event-stream"]["schema"]
        assert sse["type"] == "object" and "data" in sse["properties"], op["operationId"]
    run_event = openapi_doc["paths"]["/v1/autonomous"]["post"]["responses"]["200"]["content"]["text/event-stream"]
    events = set(run_event["schema"]["properties"]["event"]["enum"])
    assert events == {
        "run.started",
        "round.started",
        "model.answered",
        "reasoning",
        "tool_call.started",
        "tool_call.completed",
        "message",
        "context.fitted",
        "run.completed",
        "run.failed",
    }
