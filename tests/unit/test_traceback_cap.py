"""The traceback kept on a failed task: capped, and still showing frames and error."""

from __future__ import annotations

import traceback

from dtqs.runtime.worker import TRACEBACK_MAX, capped_traceback


def _raise_with(message: str, depth: int) -> BaseException:
    # Distinct functions, so Python cannot fold the frames into "repeated N times".
    source = "def f0():\n    raise ValueError(MESSAGE)\n" + "".join(
        f"def f{i}():\n    return f{i - 1}()\n" for i in range(1, depth)
    )
    namespace: dict[str, object] = {"MESSAGE": message}
    exec(compile(source, "generated.py", "exec"), namespace)
    try:
        namespace[f"f{depth - 1}"]()  # type: ignore[operator]
    except ValueError as exc:
        return exc
    raise AssertionError("no exception")


def test_a_short_traceback_is_kept_whole():
    exc = _raise_with("small", 3)
    assert capped_traceback(exc) == "".join(traceback.format_exception(exc))


def test_a_huge_message_does_not_push_every_frame_out():
    text = capped_traceback(_raise_with("doomed " + "x" * 50_000, 5))
    assert len(text) <= TRACEBACK_MAX
    assert text.startswith("Traceback (most recent call last):")
    assert "in f0" in text and "in f4" in text and "ValueError: doomed x" in text


def test_deep_stacks_keep_the_outer_and_inner_frames():
    text = capped_traceback(_raise_with("deep", 400))
    assert len(text) <= TRACEBACK_MAX
    assert "in f399" in text and "in f0" in text and "frames cut" in text
    assert text.rstrip().endswith("ValueError: deep")
