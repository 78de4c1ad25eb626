"""Handler loading by path: success, each kind of failure with file:line, call conventions."""

from __future__ import annotations

import functools
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from dtqs.runtime.errors import HandlerImportError
from dtqs.runtime.handlers import accepts_context, check_handlers, is_async, load_handler
from dtqs.runtime.manifest import FunctionSpec, Manifest, load_manifest


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty project folder as the working directory; sys.path restored afterwards."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    (tmp_path / "functions").mkdir()
    return tmp_path


def make(project: Path, files: dict[str, str], handlers: dict[str, str]) -> Manifest:
    """Write `files` under functions/ and a manifest with one function per handler."""
    for name, text in files.items():
        path = project / "functions" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    lines = ["version: 1", "queues:", "  default: {}", "functions:"]
    for name, handler in handlers.items():
        lines += [f"  {name}:", f"    handler: {handler}"]
    (project / "dtqs.yaml").write_text("\n".join(lines) + "\n")
    return load_manifest(project / "dtqs.yaml", environ={})


def spec(project: Path, text: str, handler: str = "functions/mod.py:handle") -> FunctionSpec:
    manifest = make(project, {"mod.py": text}, {"fn": handler})
    return manifest.functions["fn"]


def failure(function: FunctionSpec) -> str:
    with pytest.raises(HandlerImportError) as info:
        load_handler(function)
    return str(info.value.problem)


def test_load_handler(project: Path) -> None:
    handler = load_handler(spec(project, "def handle(payload):\n    return payload['n'] + 1\n"))
    assert handler({"n": 1}) == 2


def test_repository_hello_handler() -> None:
    manifest = load_manifest(Path(__file__).resolve().parents[2] / "dtqs.yaml", environ={})
    handler = load_handler(manifest.functions["hello"])
    assert handler({"name": "Ada"}) == {"greeting": "Hello, Ada!"}


def test_syntax_error_has_its_line(project: Path) -> None:
    text = "import os\n\ndef handle(payload:\n    return 1\n"
    problem = failure(spec(project, text))
    assert problem.startswith("functions/mod.py:3: functions.fn.handler: SyntaxError: ")


def test_exception_at_import_has_its_line(project: Path) -> None:
    text = "import os\n\nraise RuntimeError('boom')\n\ndef handle(payload):\n    return 1\n"
    assert (
        failure(spec(project, text))
        == "functions/mod.py:3: functions.fn.handler: RuntimeError: boom"
    )


def test_exception_in_a_function_called_at_import_has_the_deepest_line(project: Path) -> None:
    text = "def setup():\n    return {}['missing']\n\nsetup()\n"
    assert (
        failure(spec(project, text))
        == "functions/mod.py:2: functions.fn.handler: KeyError: 'missing'"
    )


def test_missing_import(project: Path) -> None:
    text = "\nimport no_such_module_dtqs\n\ndef handle(payload):\n    return 1\n"
    assert failure(spec(project, text)) == (
        "functions/mod.py:2: functions.fn.handler:"
        " ModuleNotFoundError: No module named 'no_such_module_dtqs'"
    )


def test_sys_exit_at_import(project: Path) -> None:
    assert failure(spec(project, "import sys\nsys.exit(3)\n")) == (
        "functions/mod.py:2: functions.fn.handler: SystemExit: 3"
    )


def test_missing_function(project: Path) -> None:
    function = spec(project, "def handel(payload):\n    return 1\n")
    assert failure(function) == "functions/mod.py: functions.fn.handler: has no function 'handle'"


def test_not_callable(project: Path) -> None:
    function = spec(project, "handle = 42\n")
    assert (
        failure(function)
        == "functions/mod.py: functions.fn.handler: 'handle' is a int, not a function"
    )


def test_failed_import_is_not_cached(project: Path) -> None:
    function = spec(project, "raise ValueError('not yet')\n")
    failure(function)
    (project / "functions" / "mod.py").write_text("def handle(payload):\n    return 'ok'\n")
    assert load_handler(function)(None) == "ok"


def test_a_module_read_half_written_is_not_cached(project: Path) -> None:
    """A file read while it was being rewritten (truncated: an empty module) imports
    cleanly but lacks the handler. Before, that empty module stayed in sys.modules and
    the worker process failed every task of the function until it was replaced."""
    function = spec(project, "")
    failure(function)
    (project / "functions" / "mod.py").write_text("def handle(payload):\n    return 'ok'\n")
    assert load_handler(function)(None) == "ok"


def test_sibling_import(project: Path) -> None:
    manifest = make(
        project,
        {
            "dtqs_test_sibling_helpers.py": "def shout(s):\n    return s.upper()\n",
            "mod.py": """\
                import dtqs_test_sibling_helpers

                def handle(payload):
                    return dtqs_test_sibling_helpers.shout(payload)
                """,
        },
        {"fn": "functions/mod.py:handle"},
    )
    try:
        assert load_handler(manifest.functions["fn"])("hi") == "HI"
    finally:
        sys.modules.pop("dtqs_test_sibling_helpers", None)


def test_handler_in_a_subfolder(project: Path) -> None:
    manifest = make(
        project,
        {"billing/invoice.py": "def run(p):\n    return __name__\n"},
        {"fn": "functions/billing/invoice.py:run"},
    )
    assert load_handler(manifest.functions["fn"])(None).startswith("dtqs_functions.billing.invoice")


def test_two_functions_in_one_file_share_the_module(project: Path) -> None:
    text = """\
        STATE = []

        def first(payload):
            STATE.append(1)
            return STATE

        def second(payload):
            return STATE
        """
    manifest = make(
        project, {"mod.py": text}, {"a": "functions/mod.py:first", "b": "functions/mod.py:second"}
    )
    first = load_handler(manifest.functions["a"])
    second = load_handler(manifest.functions["b"])
    first(None)
    assert second(None) == [1]
    assert first.__module__ == second.__module__
    assert sys.modules[first.__module__].__file__ == str(project / "functions" / "mod.py")


def test_same_file_name_in_two_projects(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "path", list(sys.path))
    results = []
    for name in ("one", "two"):
        root = tmp_path / name
        (root / "functions").mkdir(parents=True)
        manifest = make(
            root,
            {"mod.py": f"def handle(p):\n    return {name!r}\n"},
            {"fn": "functions/mod.py:handle"},
        )
        results.append(load_handler(manifest.functions["fn"])(None))
    assert results == ["one", "two"]


def test_check_handlers_reports_every_problem(project: Path) -> None:
    manifest = make(
        project,
        {"good.py": "def handle(p):\n    return p\n", "bad.py": "x = (\n", "empty.py": ""},
        {
            "ok": "functions/good.py:handle",
            "broken": "functions/bad.py:handle",
            "gone": "functions/empty.py:handle",
        },
    )
    found = [str(problem) for problem in check_handlers(manifest)]
    assert len(found) == 2
    assert found[0].startswith("functions/bad.py:1: functions.broken.handler: SyntaxError: ")
    assert found[1] == "functions/empty.py: functions.gone.handler: has no function 'handle'"


def one(payload: Any) -> None: ...


def two(payload: Any, ctx: Any) -> None: ...


def star(*args: Any) -> None: ...


def kw_ctx(payload: Any, *, ctx: Any = None) -> None: ...


def defaulted(payload: Any, ctx: Any = None) -> None: ...


class Method:
    def handle(self, payload: Any) -> None: ...

    def handle_ctx(self, payload: Any, ctx: Any) -> None: ...


async def coro(payload: Any) -> None: ...


class AsyncCallable:
    async def __call__(self, payload: Any) -> None: ...


@pytest.mark.parametrize(
    ("fn", "expected"),
    [
        (one, False),
        (two, True),
        (star, True),
        (kw_ctx, False),
        (defaulted, True),
        (Method().handle, False),
        (Method().handle_ctx, True),
        (functools.partial(two, None), False),
        (coro, False),
        (len, False),
    ],
)
def test_accepts_context(fn: Any, expected: bool) -> None:
    assert accepts_context(fn) is expected


@pytest.mark.parametrize(
    ("fn", "expected"),
    [
        (one, False),
        (coro, True),
        (AsyncCallable(), True),
        (functools.partial(coro), True),
        (Method().handle, False),
    ],
)
def test_is_async(fn: Any, expected: bool) -> None:
    assert is_async(fn) is expected


def test_loaded_async_handler_with_context(project: Path) -> None:
    handler = load_handler(spec(project, "async def handle(payload, ctx):\n    return ctx\n"))
    assert is_async(handler) and accepts_context(handler)


# -- signatures: validate says up front what every attempt would fail on ---------------


def signature_problems(project: Path, text: str) -> list[str]:
    manifest = make(project, {"mod.py": text}, {"fn": "functions/mod.py:handle"})
    return [str(problem) for problem in check_handlers(manifest)]


@pytest.mark.parametrize(
    ("source", "line", "detail"),
    [
        ("def handle():\n    return 1\n", 1,
         "handle() cannot be called as handle(payload): too many positional arguments"),
        ("async def handle():\n    return 1\n", 1,
         "handle() cannot be called as handle(payload): too many positional arguments"),
        ("import os\n\n\ndef handle(payload, *, key):\n    return key\n", 4,
         "handle(payload, *, key) cannot be called as handle(payload): "
         "missing a required argument: 'key'"),
        ("def handle(payload, ctx, extra):\n    return 1\n", 1,
         "handle(payload, ctx, extra) cannot be called as handle(payload, ctx): "
         "missing a required argument: 'extra'"),
        ("def handle(**options):\n    return 1\n", 1,
         "handle(**options) cannot be called as handle(payload): "
         "too many positional arguments"),
        ("import functools\n\n\ndef deco(f):\n    @functools.wraps(f)\n"
         "    def inner(*a):\n        return f(*a)\n    return inner\n\n\n"
         "@deco\ndef handle():\n    return 1\n", 12,
         "handle() cannot be called as handle(payload): too many positional arguments"),
    ],
    ids=["no-args", "async-no-args", "required-keyword", "three-args", "only-kwargs", "decorated"],
)  # fmt: skip
def test_handler_that_cannot_take_the_call_is_reported_at_its_def(
    project: Path, source: str, line: int, detail: str
) -> None:
    assert signature_problems(project, source) == [
        f"functions/mod.py:{line}: functions.fn.handler: {detail}; "
        "expected handle(payload) or handle(payload, ctx)"
    ]


@pytest.mark.parametrize(
    "source",
    [
        "def handle(payload):\n    return 1\n",
        "def handle(payload, ctx):\n    return 1\n",
        "async def handle(payload, ctx):\n    return 1\n",
        "def handle(*args):\n    return 1\n",
        "def handle(payload, *, retries=3):\n    return 1\n",
        "def handle(payload, ctx=None, extra=None):\n    return 1\n",
        "class Handler:\n    def __call__(self, payload):\n        return 1\n\n"
        "handle = Handler()\n",
        "handle = print\n",  # a builtin: no signature to check
    ],
    ids=["payload", "payload-ctx", "async", "star-args", "optional-keyword", "defaults",
         "callable-object", "builtin"],
)  # fmt: skip
def test_handlers_that_take_the_call_pass(project: Path, source: str) -> None:
    assert signature_problems(project, source) == []
