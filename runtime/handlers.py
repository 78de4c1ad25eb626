"""Import handlers by file path from the project's functions/ folder, and how to call them.

Handler files are never installed and never reloaded in place: a changed file is
picked up by replacing the worker process.
"""

from __future__ import annotations

import hashlib
import importlib.util
import inspect
import linecache
import os
import re
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePath
from types import ModuleType
from typing import Any

from dtqs.runtime.errors import HandlerImportError, Problem
from dtqs.runtime.manifest import FUNCTIONS_DIR, FunctionSpec, Manifest, display_path

#: Package prefix of handler modules in sys.modules: functions/a/b.py -> dtqs_functions.a.b
MODULE_PREFIX = "dtqs_functions"
_DEF = re.compile(r"\s*(async\s+)?def\b")


def load_handler(spec: FunctionSpec) -> Callable[..., Any]:
    """Import the file of `spec` (once per file) and return its handler function.

    Raises:
        HandlerImportError: the file does not import, or lacks a callable by that name.
    """
    try:
        module = _import(spec.handler_file, _relative_parts(spec))
    except (Exception, SystemExit) as exc:  # SystemExit: a module calling sys.exit()
        line, message = _describe(exc, spec.handler_file)
        raise HandlerImportError(_problem(spec, line, message)) from exc
    handler = getattr(module, spec.handler_attr, None)
    if handler is None or not callable(handler):
        # NOTE: not kept in sys.modules: the file may have been read while an editor or
        # a hot reload was rewriting it (truncated, half written); the next load reads
        # it again instead of the incomplete module for the life of the process.
        if sys.modules.get(module.__name__) is module:
            del sys.modules[module.__name__]
        if handler is None:
            raise HandlerImportError(_problem(spec, None, f"has no function {spec.handler_attr!r}"))
        message = f"{spec.handler_attr!r} is a {type(handler).__name__}, not a function"
        raise HandlerImportError(_problem(spec, None, message))
    return handler  # type: ignore[no-any-return]


@dataclass(frozen=True)
class Handler:
    """A loaded handler and how to call it, worked out once (not per task)."""

    fn: Callable[..., Any]
    takes_context: bool  #: called as fn(payload, ctx)
    is_async: bool  #: an `async def`: runs on the worker's event loop

    @classmethod
    def load(cls, spec: FunctionSpec) -> Handler:
        fn = load_handler(spec)
        return cls(fn, accepts_context(fn), is_async(fn))


def check_handlers(manifest: Manifest) -> list[Problem]:
    """Import every function's handler and check how it will be called.

    One problem per handler that fails to import or cannot be called as
    handler(payload) or handler(payload, ctx).
    """
    problems = []
    for spec in manifest.functions.values():
        try:
            handler = load_handler(spec)
        except HandlerImportError as exc:
            problems.append(exc.problem)
            continue
        if problem := check_signature(spec, handler):
            problems.append(problem)
    return problems


def check_signature(spec: FunctionSpec, fn: Callable[..., Any]) -> Problem | None:
    """A problem if `fn` cannot take the call a worker will make, else None.

    A worker calls fn(payload, ctx) when it takes a second positional argument (see
    accepts_context), else fn(payload): `def run():` or a required keyword-only
    argument would fail every attempt, so `dtqs validate` says so up front.
    """
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):  # some builtins have no signature: nothing to check
        return None
    args = ("payload", "ctx") if accepts_context(fn) else ("payload",)
    try:
        signature.bind(*args)
    except TypeError as exc:
        name = spec.handler_attr
        expected = f"expected {name}(payload) or {name}(payload, ctx)"
        message = f"{name}{signature} cannot be called as {name}({', '.join(args)}): {exc}"
        return _problem(spec, _def_line(fn, spec.handler_file), f"{message}; {expected}")
    return None


def _def_line(fn: Callable[..., Any], path: Path) -> int | None:
    """Line of the `def` of `fn` in the handler file `path` (below any decorators)."""
    code = getattr(inspect.unwrap(fn), "__code__", None)
    if code is None or code.co_filename != str(path):
        return None
    lines = linecache.getlines(code.co_filename)
    for number in range(code.co_firstlineno, min(len(lines), code.co_firstlineno + 50) + 1):
        if _DEF.match(lines[number - 1]):
            return number
    return int(code.co_firstlineno)


def accepts_context(fn: Callable[..., Any]) -> bool:
    """True when `fn` takes a second positional argument: it is called as fn(payload, ctx)."""
    try:
        parameters = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):  # some builtins have no signature
        return False
    positional = 0
    for parameter in parameters:
        if parameter.kind is inspect.Parameter.VAR_POSITIONAL:
            return True
        if parameter.kind in (
            inspect.Parameter.POSITIONAL_ONLY,
            inspect.Parameter.POSITIONAL_OR_KEYWORD,
        ):
            positional += 1
    return positional >= 2


def is_async(fn: Callable[..., Any]) -> bool:
    """True when `fn` is an `async def` function (or an object whose __call__ is)."""
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(type(fn).__call__)


def _relative_parts(spec: FunctionSpec) -> tuple[str, ...]:
    """Path parts of the handler file below functions/, e.g. ("billing", "invoice.py")."""
    written = PurePath(os.path.normpath(spec.handler.rpartition(":")[0]))
    if written.parts[:1] == (FUNCTIONS_DIR,) and len(written.parts) > 1:
        return written.parts[1:]
    return (spec.handler_file.name,)  # not from load_manifest: treat its folder as functions/


def _import(path: Path, parts: tuple[str, ...]) -> ModuleType:
    name = ".".join((MODULE_PREFIX, *parts[:-1], PurePath(parts[-1]).stem))
    loaded = sys.modules.get(name)
    if loaded is not None and getattr(loaded, "__file__", None) != str(path):
        # Another project's file of the same name (tests load many): keep both apart.
        name += "_" + hashlib.sha256(str(path).encode()).hexdigest()[:12]
        loaded = sys.modules.get(name)
    if loaded is not None:
        return loaded
    module_spec = importlib.util.spec_from_file_location(name, path)
    if module_spec is None or module_spec.loader is None:
        raise ImportError(f"cannot import {path}")
    module = importlib.util.module_from_spec(module_spec)
    folder = str(path.parents[len(parts) - 1])
    if folder not in sys.path:
        sys.path.insert(0, folder)  # so handlers can import their sibling modules
    sys.modules[name] = module
    try:
        module_spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def _describe(exc: BaseException, path: Path) -> tuple[int | None, str]:
    """(line in the handler file, message) for an exception raised while importing it."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename == str(path)]
    line = frames[-1].lineno if frames else None
    kind = type(exc).__name__
    if isinstance(exc, SyntaxError):
        if exc.filename == str(path):
            return exc.lineno, f"{kind}: {exc.msg}"
        elsewhere = display_path(Path(exc.filename)) if exc.filename else "an imported module"
        return line, f"{kind} in {elsewhere}:{exc.lineno}: {exc.msg}"
    return line, f"{kind}: {exc}" if str(exc) else kind


def _problem(spec: FunctionSpec, line: int | None, message: str) -> Problem:
    path = f"functions.{spec.name}.handler"
    return Problem(display_path(spec.handler_file), line, path, message)
