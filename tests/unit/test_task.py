from __future__ import annotations

from dtqs.runtime.redis.keys import QueueKeys
from dtqs.runtime.task import TaskInfo, new_task_id, queue_of


def test_task_ids_carry_their_queue_and_sort_by_time():
    a, b = new_task_id("emails"), new_task_id("emails")
    assert queue_of(a) == "emails" and a.startswith("emails.")
    assert a[:19] <= b[:19]
    assert queue_of("../../etc/passwd") is None and queue_of("Bad.x") is None
    assert queue_of("") is None and queue_of("q.") is None


def test_keys_of_a_queue_share_one_hash_tag():
    k = QueueKeys("dtqs", "emails", 2)
    names = [*k.all_pending, k.scheduled, k.active, k.dead, k.done, k.notify, k.paused,
             k.stats, k.task("emails.1"), k.idem_prefix]  # fmt: skip
    assert all(n.startswith("dtqs:{emails}:") for n in names)
    assert k.pending(1) == "dtqs:{emails}:pending:1" and k.task("x") == "dtqs:{emails}:t:x"


def test_task_info_from_a_record_and_to_json():
    info = TaskInfo.from_record({
        "id": "q.1", "function": "f", "queue": "q", "state": "succeeded", "priority": "low",
        "attempts": "2", "payload": '{"a": 1}', "result": "[1]", "created_at": "1700000000000",
        "finished_at": "1700000001500", "errors": '[{"message": "x"}]',
    })  # fmt: skip
    assert info.finished and info.attempts == 2 and info.payload == {"a": 1}
    assert info.result == [1] and info.errors == [{"message": "x"}]
    d = info.to_dict()
    assert d["created_at"] == "2023-11-14T22:13:20Z" and d["finished_at"].endswith(".500000Z")
