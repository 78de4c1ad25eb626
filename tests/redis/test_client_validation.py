"""The Python client refuses what the API refuses, with a DtqsError naming where, and stores
nothing; it never changes a submission silently. Against a real server."""

from __future__ import annotations

import pytest

from dtqs.runtime.errors import DtqsError, PayloadValidationError

pytestmark = pytest.mark.redis


def refused(call, *args, **kwargs) -> list[str]:
    """The violation pointers of the PayloadValidationError the call raises."""
    with pytest.raises(PayloadValidationError) as err:
        call(*args, **kwargs)
    return [v.pointer for v in err.value.violations]


@pytest.mark.parametrize(
    ("payload", "pointer"),
    [
        ({1: "a", "1": "b"}, "/payload/1"),
        ({"a": {"b": [{"c": 1}, {None: 2}]}}, "/payload/a/b/1/None"),
        ([{True: 1}], "/payload/0/True"),
        ({"x/y": {2.5: 0}}, "/payload/x~1y/2.5"),
    ],
)
def test_non_string_object_keys_are_refused_not_rewritten(client, r, payload, pointer):
    assert refused(client.submit, "echo", payload) == [pointer]
    assert refused(client.submit_many, [{"function": "echo", "payload": payload}]) == [
        "/0" + pointer
    ]
    assert r.dbsize() == 0


def test_header_keys_and_values_must_be_strings(client, r):
    assert refused(client.submit, "echo", 1, headers={1: "a"}) == ["/headers"]
    assert refused(client.submit, "echo", 1, headers={"a": 1}) == ["/headers/a"]
    assert refused(client.submit, "echo", 1, headers=["a"]) == ["/headers"]
    assert r.dbsize() == 0


@pytest.mark.parametrize("key", ["\ud800", "order-\udfff", "\ud800\udc00"])
def test_an_idempotency_key_with_a_lone_surrogate_is_refused_before_redis(client, r, key):
    assert refused(client.submit, "echo", 1, idempotency_key=key) == ["/idempotency_key"]
    item = {"function": "echo", "payload": 1, "idempotency_key": key}
    assert refused(client.submit_many, [item]) == ["/0/idempotency_key"]
    assert r.dbsize() == 0


def test_valid_unicode_keys_and_strings_are_stored_as_given(client):
    payload = {"ключ": ["😀", "\ud800"], "": {"~/": None}}
    task_id = client.submit("echo", payload, idempotency_key="ключ-😀", headers={"é": "😀"})
    info = client.get(task_id)
    assert info.payload == payload and info.headers == {"é": "😀"}
    assert info.idempotency_key == "ключ-😀"
    assert client.submit("echo", payload, idempotency_key="ключ-😀") == task_id


@pytest.mark.parametrize(
    ("payload", "pointer"),
    [
        ({"a": [1, object()]}, "/payload/a/1"),
        ({"a": float("nan")}, "/payload/a"),
        ({(1, 2): "tuple key"}, "/payload/(1, 2)"),
        ({"deep": [[]] * 3 + [{"x": {1, 2}}]}, "/payload/deep/3/x"),
    ],
)
def test_what_json_cannot_hold_is_named(client, r, payload, pointer):
    assert refused(client.submit, "echo", payload) == [pointer]
    assert r.dbsize() == 0


def test_cycles_and_absurd_nesting_are_dtqs_errors(client, r):
    cycle: list = []
    cycle.append(cycle)
    deep: list = []
    for _ in range(100_000):
        deep = [deep]
    for payload in (cycle, deep):
        with pytest.raises(DtqsError, match="not JSON-serialisable"):
            client.submit("echo", payload)
    assert r.dbsize() == 0


def test_delay_and_run_at_together_name_run_at(client, r):
    assert refused(client.submit, "echo", 1, delay=1, run_at="2099-01-01T00:00:00Z") == ["/run_at"]
    assert r.dbsize() == 0
