"""GET /openapi.json: a valid OpenAPI 3.1 document, generated from the current manifest."""

from __future__ import annotations

import json

import pytest
from falcon import inspect as falcon_inspect
from falcon import testing
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from dtqs.api.app import ApiState, create_app
from dtqs.runtime.client import Client
from dtqs.runtime.redis.broker import Broker
from dtqs.runtime.testing import InProcessWorker

MANIFEST = """\
version: 1
queues:
  default: {{}}
  mail:
    priorities: [urgent, bulk]
functions:
  echo:
    handler: functions/tasks.py:echo
  signup:
    handler: functions/tasks.py:echo
    queue: mail
    schema: schemas/signup.json
  boom:
    handler: functions/tasks.py:boom
    retry: {{max_attempts: 1}}
{more}schedules:
  nightly: {{function: echo, cron: "0 3 * * *"}}
workers:
  heartbeat_interval: 100ms
{api}"""
MORE = """\
  invoice:
    handler: functions/tasks.py:echo
    schema: schemas/invoice.json
"""
TOKENS = """\
api:
  tokens:
    ci: {token: "ssssssssssssssssssss", scope: submit}
"""
SIGNUP = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": "https://example.com/signup.json",
    "type": "object",
    "required": ["email", "address"],
    "properties": {
        "email": {"type": "string", "format": "email"},
        "address": {"$ref": "#/$defs/address"},
        # A "$ref" inside data (const) is data: it must be kept as written.
        "tag": {"const": {"$ref": "#/not/a/schema"}},
        # ...but a property that happens to be called "const" is a schema.
        "const": {"$ref": "#/$defs/address"},
    },
    "$defs": {"address": {"type": "object", "required": ["city"],
                          "properties": {"city": {"type": "string"}}}},
}  # fmt: skip
INVOICE = {"type": "object", "required": ["amount"], "properties": {"amount": {"type": "number"}}}
FILES = {
    "functions/tasks.py": "def echo(payload):\n    return payload\n\n"
    "def boom(payload):\n    raise ValueError('no')\n",
    "schemas/signup.json": json.dumps(SIGNUP),
    "schemas/invoice.json": json.dumps(INVOICE),
}
#: The issue's table plus the prototype's routes: path -> methods.
ROUTES = {
    "/v1/tasks": {"post", "get"},
    "/v1/tasks/batch": {"post"},
    "/v1/tasks/{task_id}": {"get", "delete"},
    "/v1/tasks/{task_id}/cancel": {"post"},
    "/v1/queues": {"get"},
    "/v1/queues/{name}": {"get"},
    "/v1/queues/{name}/pause": {"post"},
    "/v1/queues/{name}/resume": {"post"},
    "/v1/dead-letters": {"get", "delete"},
    "/v1/dead-letters/replay": {"post"},
    "/v1/dead-letters/{task_id}": {"delete"},
    "/v1/dead-letters/{task_id}/replay": {"post"},
    "/v1/functions": {"get"},
    "/v1/schedules": {"get"},
    "/v1/workers": {"get"},
    "/healthz": {"get"},
    "/readyz": {"get"},
    "/metrics": {"get"},
    "/openapi.json": {"get"},
    "/tasks": {"post"},
    "/tasks/{task_id}": {"get"},
    "/health": {"get"},
}


@pytest.fixture
def make(project, redis_url):
    made: list[Client] = []

    def build(more: str = "", tokens: bool = False):
        p = project(MANIFEST.format(more=more, api=TOKENS if tokens else ""), FILES)
        client = Client(manifest=p.manifest(), broker=Broker(redis_url))
        made.append(client)
        state = ApiState(client)
        return testing.TestClient(create_app(state)), client, state

    yield build
    for c in made:
        c.close()


def validator(doc: dict, name: str) -> Draft202012Validator:
    """A validator for one component, resolving $refs inside the whole document."""
    registry = Registry().with_resource("urn:doc", Resource(doc, DRAFT202012))
    return Draft202012Validator({"$ref": f"urn:doc#/components/schemas/{name}"}, registry=registry)


def test_the_document_is_valid_openapi_3_1(make):
    for tokens in (False, True):
        api, _, _ = make(tokens=tokens)
        resp = api.simulate_get("/openapi.json")
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("application/json")
        doc = resp.json
        assert doc["openapi"] == "3.1.0"
        validate(doc)
        for schema in doc["components"]["schemas"].values():
            Draft202012Validator.check_schema(schema)
        ids = [op["operationId"] for item in doc["paths"].values() for op in item.values()]
        assert len(ids) == len(set(ids))


def test_every_route_is_documented_and_every_documented_route_exists(make):
    api, _, _ = make()
    doc = api.simulate_get("/openapi.json").json
    documented = {path: set(item) for path, item in doc["paths"].items()}
    for path, methods in ROUTES.items():
        assert methods <= documented.get(path, set()), path
    served: dict[str, set[str]] = {}
    for route in falcon_inspect.inspect_routes(api.app):
        served[route.path] = {m.method.lower() for m in route.methods if not m.internal}
    assert served == documented


def test_each_payload_schema_is_embedded_and_its_refs_resolve(make):
    api, _, _ = make()
    doc = api.simulate_get("/openapi.json").json
    schemas = doc["components"]["schemas"]
    embedded = schemas["payload.signup"]
    assert "$schema" not in embedded and "$id" not in embedded
    assert embedded["properties"]["address"] == {
        "$ref": "#/components/schemas/payload.signup/$defs/address"
    }
    assert embedded["properties"]["tag"] == {"const": {"$ref": "#/not/a/schema"}}
    assert embedded["properties"]["const"] == embedded["properties"]["address"]
    assert embedded["$defs"] == SIGNUP["$defs"]
    assert {"$ref": "#/components/schemas/submit.signup"} in schemas["Submit"]["oneOf"]
    signup = schemas["submit.signup"]
    assert signup["properties"]["priority"] == {"enum": ["urgent", "bulk", None], "default": "bulk"}
    assert signup["additionalProperties"] is False
    assert schemas["submit.echo"]["properties"]["payload"] == {}

    submit = validator(doc, "Submit")
    good = {"function": "signup", "payload": {"email": "a@b.c", "address": {"city": "Oslo"}}}
    assert submit.is_valid(good)
    assert submit.is_valid({"function": "echo", "payload": [1, 2], "priority": "low"})
    assert not submit.is_valid({"function": "signup", "payload": {"email": "a@b.c",
                                                                  "address": {}}})  # fmt: skip
    assert not submit.is_valid({"function": "signup", "priority": "low", "payload": {}})
    assert not submit.is_valid({"function": "nope"})
    assert not submit.is_valid({"function": "echo", "surprise": 1})


def test_the_document_follows_the_manifest(make):
    api, client, _ = make()
    first = api.simulate_get("/openapi.json").text
    assert api.simulate_get("/openapi.json").text == first  # cached for the same manifest
    assert "payload.invoice" not in json.loads(first)["components"]["schemas"]

    _, bigger, _ = make(more=MORE)
    client.use_manifest(bigger.manifest)  # what a hot reload does
    doc = api.simulate_get("/openapi.json").json
    assert doc["components"]["schemas"]["payload.invoice"] == INVOICE
    assert {"$ref": "#/components/schemas/submit.invoice"} in doc["components"]["schemas"][
        "Submit"
    ]["oneOf"]
    validate(doc)


def test_bearer_security_only_with_tokens(make):
    api, _, _ = make()
    open_doc = api.simulate_get("/openapi.json").json
    assert "securitySchemes" not in open_doc["components"]
    assert all("security" not in op for item in open_doc["paths"].values()
               for op in item.values())  # fmt: skip

    api, _, _ = make(tokens=True)
    doc = api.simulate_get("/openapi.json").json
    scheme = doc["components"]["securitySchemes"]["bearer"]
    assert (scheme["type"], scheme["scheme"]) == ("http", "bearer")
    paths = doc["paths"]
    for path in ("/healthz", "/readyz", "/metrics", "/openapi.json", "/health"):
        assert paths[path]["get"]["security"] == []
    assert paths["/v1/tasks"]["post"]["security"] == [{"bearer": ["submit"]}]
    assert paths["/v1/queues"]["get"]["security"] == [{"bearer": ["admin"]}]
    assert "401" in paths["/v1/tasks"]["post"]["responses"]
    assert "403" in paths["/v1/queues"]["get"]["responses"]


def test_error_responses_are_problem_documents(make):
    api, _, _ = make()
    doc = api.simulate_get("/openapi.json").json
    responses = doc["components"]["responses"]
    for status in ("400", "401", "403", "404", "405", "409", "413", "415", "422", "503"):
        content = responses[status]["content"]
        assert content == {"application/problem+json": {"schema": {
            "$ref": "#/components/schemas/Problem"}}}  # fmt: skip
    assert "Retry-After" in responses["503"]["headers"]
    submit = doc["paths"]["/v1/tasks"]["post"]["responses"]
    assert {"202", "400", "404", "413", "415", "422", "503"} <= set(submit)
    assert "Location" in submit["202"]["headers"]
    # The problem a real request gets matches the documented schema.
    problem = api.simulate_post("/v1/tasks", json={"function": "signup", "payload": {}})
    assert problem.status_code == 422
    assert validator(doc, "Problem").is_valid(problem.json)


def test_real_answers_match_the_documented_schemas(make, redis_url, r):
    """States the fuzzer cannot reach alone: results, dead letters, live workers."""
    api, client, _ = make()
    doc = api.simulate_get("/openapi.json").json
    registry = Registry().with_resource("urn:doc", Resource(doc, DRAFT202012))

    def check(method: str, path: str, template: str, status: int = 200) -> dict:
        resp = api.simulate_request(method, path)
        assert resp.status_code == status, resp.text
        response = doc["paths"][template][method.lower()]["responses"][str(status)]
        where = "#/paths/" + template.replace("~", "~0").replace("/", "~1")
        where += f"/{method.lower()}/responses/{status}"
        if "$ref" in response:  # a shared error response
            where = response["$ref"]
            response = doc["components"]["responses"][str(status)]
        kind = resp.headers["content-type"].split(";")[0]
        assert kind in response["content"]
        pointer = f"urn:doc{where}/content/{kind.replace('/', '~1')}/schema"
        Draft202012Validator({"$ref": pointer}, registry=registry).validate(resp.json)
        return resp.json

    done = client.submit("echo", {"n": 1}, idempotency_key="k1")
    dead = client.submit("boom", None)
    with InProcessWorker(client.manifest, redis_url):
        client.wait(done, timeout=20)
        client.wait(dead, timeout=20)
        assert check("GET", "/v1/workers", "/v1/workers")["workers"]
    assert check("GET", f"/v1/tasks/{done}", "/v1/tasks/{task_id}")["result"] == {"n": 1}
    assert check("GET", f"/v1/tasks/{dead}", "/v1/tasks/{task_id}")["traceback"]
    assert check("GET", "/v1/dead-letters", "/v1/dead-letters")["items"]
    assert check("GET", "/v1/tasks?limit=1", "/v1/tasks")["next_cursor"]
    check("GET", f"/tasks/{done}", "/tasks/{task_id}")
    check("GET", "/v1/queues", "/v1/queues")
    check("GET", "/v1/functions", "/v1/functions")
    check("GET", "/v1/schedules", "/v1/schedules")
    check("GET", "/readyz", "/readyz")
    check("POST", f"/v1/dead-letters/{dead}/replay", "/v1/dead-letters/{task_id}/replay")
    check("DELETE", f"/v1/tasks/{dead}", "/v1/tasks/{task_id}")
    check("DELETE", f"/v1/tasks/{done}", "/v1/tasks/{task_id}", 409)


def test_submissions_are_described_as_the_api_takes_them(make):
    """What the API refuses, the document refuses, and the reverse (issue 12, section 4)."""
    api, _, _ = make()
    doc = api.simulate_get("/openapi.json").json
    submit, legacy = validator(doc, "Submit"), validator(doc, "LegacySubmit")
    at = "2099-01-01T00:00:00Z"
    cases = [
        (True, {"function": "echo", "delay": None, "run_at": at, "priority": None}),
        (True, {"function": "echo", "run_at": 4102444800, "idempotency_key": None}),
        (True, {"function": "echo", "headers": None, "payload": None}),
        (False, {"function": "echo", "delay": 1, "run_at": at}),
        (False, {"function": "echo", "delay": 10 * 365 * 86400 + 1}),
        (False, {"function": "echo", "idempotency_key": ""}),
        # signup's schema refuses null, and a payload left out is null
        (False, {"function": "signup"}),
    ]
    for ok, body in cases:
        assert submit.is_valid(body) is ok, body
        resp = api.simulate_post("/v1/tasks", json=body)
        assert resp.status_code == (202 if ok else 422), (body, resp.text)
    for ok, body in [
        (True, {"type": "echo", "priority": 3, "anything": "ignored"}),
        (False, {"type": "echo", "priority": 4}),
        (False, {"type": "echo", "priority": True}),
        (False, {"type": "signup"}),
    ]:
        assert legacy.is_valid(body) is ok, body
        assert api.simulate_post("/tasks", json=body).status_code == (201 if ok else 422), body


def test_parameters_and_errors_are_described_as_the_api_answers(make):
    api, _, _ = make()
    doc = api.simulate_get("/openapi.json").json
    paths = doc["paths"]
    listing = {p["name"]: p["schema"] for p in paths["/v1/tasks"]["get"]["parameters"]}
    assert listing["cursor"]["pattern"] == "^[A-Za-z0-9_-]+$"
    assert listing["function"]["pattern"] == "^[a-z][a-z0-9_]*$"
    assert listing["queue"] == {"enum": ["default", "mail"]}
    for path, item in paths.items():
        for method, op in item.items():
            kinds = {p["in"] for p in op.get("parameters", [])}
            if "requestBody" in op or kinds & {"query", "header"}:
                assert "400" in op["responses"], (method, path)
    read = paths["/v1/tasks/{task_id}"]["get"]["responses"]
    assert read["429"] == {"$ref": "#/components/responses/429"}
    responses = doc["components"]["responses"]
    for status in ("429", "503"):
        assert responses[status]["headers"]["Retry-After"]["required"] is True
    assert paths["/v1/tasks/{task_id}"]["delete"]["deprecated"] is True
    assert "deprecated" not in paths["/v1/tasks/{task_id}/cancel"]["post"]
    assert "503" in paths["/v1/schedules"]["get"]["responses"]
    # A query parameter's 400 names it, as the Violation schema says.
    problem = api.simulate_get("/v1/tasks", query_string="queue=")
    assert problem.status_code == 400
    assert validator(doc, "Problem").is_valid(problem.json)
    assert problem.json["errors"] == [
        {"parameter": "queue", "detail": problem.json["errors"][0]["detail"]}
    ]
