"""YAML text -> plain data plus the line of every node, with ${VAR} expansion.

The manifest loader needs both the data (for JSON Schema) and where each value was
written (for "file:line" in messages), which `yaml.safe_load` alone cannot give; so
JSON Schema errors are turned into located problems here too.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml
from jsonschema import Draft202012Validator, ValidationError

from dtqs.runtime.errors import Problem

#: A position in the document: mapping keys and sequence indexes from the root.
YamlPath = tuple[str | int, ...]

_STR_TAG = "tag:yaml.org,2002:str"
_MERGE_TAG = "tag:yaml.org,2002:merge"
_VALUE_TAG = "tag:yaml.org,2002:value"
_JSON_SCALARS = (str, int, float, bool, type(None))
#: JSON Schema types in YAML words, for "expected a mapping, got []".
_KINDS = {
    "object": "a mapping",
    "array": "a list",
    "string": "a string",
    "integer": "an integer",
    "number": "a number",
    "boolean": "true or false",
}
#: ${VAR}, ${VAR:-default}; a leading extra "$" ($${VAR}) keeps the text literally.
_VARIABLE = re.compile(r"\$(\$?)\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")

# NOTE(manifest): a YAML file is hostile input (a saved file reaches a running API
# through hot reload). Anchors and aliases let 700 bytes stand for 10**9 values, and
# PyYAML's composer recurses once per level of nesting; these bounds keep loading a
# small, fast, ordinary failure. Each one is far above what a manifest needs.
#: Deepest nesting of lists and mappings; the top-level mapping is level 1.
MAX_DEPTH = 64
#: Most aliases (`*name`) in one file.
MAX_ALIASES = 10_000
#: Most values (scalars, lists, mappings, merged pairs) once aliases and `<<` are expanded.
MAX_VALUES = 100_000
#: Most characters of keys and scalars once aliases and ${VAR}s are expanded.
MAX_CHARS = 10 * 2**20


class LimitError(yaml.YAMLError):
    """The document exceeds one of the bounds above; reported at `line` (and `path`)."""

    def __init__(self, message: str, line: int | None, path: YamlPath = ()) -> None:
        super().__init__(message)
        self.message = message
        self.line = line
        self.path = path


class _Loader(yaml.SafeLoader):
    """SafeLoader that keeps dates as strings, so every value is JSON-shaped.

    It also bounds nesting and aliases while composing, and merged pairs while
    flattening `<<`, so neither step can recurse or grow without limit.
    """

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0
        self._aliases = 0
        self._merged = 0  # pairs copied by `<<` so far, in the whole document
        self._flattening: set[int] = set()  # mappings whose merges are being resolved

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        event = self.peek_event()  # type: ignore[no-untyped-call]
        line = event.start_mark.line + 1
        if isinstance(event, yaml.AliasEvent):
            self._aliases += 1
            if self._aliases > MAX_ALIASES:
                raise LimitError(f"more than {MAX_ALIASES:,} aliases (*name) in one file", line)
            return super().compose_node(parent, index)
        if self._depth >= MAX_DEPTH:
            raise LimitError(f"nested deeper than {MAX_DEPTH} levels", line)
        self._depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def flatten_mapping(self, node: yaml.MappingNode) -> None:
        """Resolve `<<` merge keys in place, as SafeConstructor.flatten_mapping does.

        Later pairs win: merged pairs come first, and of a list of mappings the
        first one's pairs come last. Bounded by MAX_VALUES in all; a mapping that
        merges itself (through an alias of its own anchor) is refused.
        """
        merged: list[tuple[yaml.Node, yaml.Node]] = []
        own: list[tuple[yaml.Node, yaml.Node]] = []
        for key_node, value_node in node.value:
            if key_node.tag != _MERGE_TAG:
                if key_node.tag == _VALUE_TAG:
                    key_node.tag = _STR_TAG
                own.append((key_node, value_node))
                continue
            for source in _merge_sources(node, value_node):
                merged += self._merged_pairs(source)
        if len(own) < len(node.value):
            node.value = merged + own

    def _merged_pairs(self, source: yaml.MappingNode) -> list[tuple[yaml.Node, yaml.Node]]:
        if id(source) in self._flattening:
            raise yaml.constructor.ConstructorError(
                None, None, "a mapping merges itself (<< with an alias of its own anchor)",
                source.start_mark,
            )  # fmt: skip
        self._flattening.add(id(source))
        try:
            self.flatten_mapping(source)
        finally:
            self._flattening.discard(id(source))
        self._merged += len(source.value)
        if self._merged > MAX_VALUES:
            line = source.start_mark.line + 1
            raise LimitError(f"merge keys (<<) expand to more than {MAX_VALUES:,} values", line)
        return list(source.value)


def _kind(node: yaml.Node) -> str:
    """The node's kind as PyYAML's own messages name it: scalar, sequence or mapping."""
    return str(getattr(node, "id", "node"))


def _merge_sources(node: yaml.MappingNode, value: yaml.Node) -> list[yaml.MappingNode]:
    """The mappings a `<<` merges, in the order their pairs are copied (last wins)."""
    if isinstance(value, yaml.MappingNode):
        return [value]
    if isinstance(value, yaml.SequenceNode):
        for item in value.value:
            if not isinstance(item, yaml.MappingNode):
                raise yaml.constructor.ConstructorError(
                    "while constructing a mapping", node.start_mark,
                    f"expected a mapping for merging, but found {_kind(item)}", item.start_mark,
                )  # fmt: skip
        return list(reversed(value.value))
    raise yaml.constructor.ConstructorError(
        "while constructing a mapping", node.start_mark,
        f"expected a mapping or list of mappings for merging, but found {_kind(value)}",
        value.start_mark,
    )  # fmt: skip


_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


@dataclass
class Document:
    """A parsed YAML file: its data, the line of each path, and what was wrong."""

    file: str  #: as shown in problems
    data: Any
    lines: dict[YamlPath, int] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    bad_paths: set[YamlPath] = field(default_factory=set)  #: where the problems are

    def line(self, path: YamlPath) -> int | None:
        """Line (1-based) of `path`, or of its nearest ancestor written in the file."""
        for end in range(len(path), 0, -1):
            if path[:end] in self.lines:
                return self.lines[path[:end]]
        return None

    def check(self, schema: Mapping[str, Any]) -> None:
        """Add a problem, at its line, for each way the data breaks `schema`."""
        for error in Draft202012Validator(schema).iter_errors(self.data):
            for where, bad, message in _explain(error):
                if where not in self.bad_paths:  # e.g. an unset ${VAR} was reported there
                    self.problems.append(
                        Problem(self.file, self.line(where), dotted(where), message)
                    )
                self.bad_paths.update(bad)


def _explain(error: ValidationError) -> Iterator[tuple[YamlPath, list[YamlPath], str]]:
    """A schema error -> (where to report it, paths now known bad, message)."""
    path: YamlPath = tuple(error.absolute_path)
    schema = error.schema if isinstance(error.schema, dict) else {}
    # NOTE: the stubs type these as possibly unset; a schema error always has them.
    instance: Any = error.instance
    expected: Any = error.validator_value
    if error.validator == "additionalProperties" and expected is False:
        allowed = schema.get("properties", {})
        for key in instance:
            if key not in allowed:
                message = f"unknown key; expected one of: {', '.join(allowed)}"
                yield (*path, key), [(*path, key)], message
    elif "propertyNames" in error.schema_path:
        yield (*path, instance), [(*path, instance)], f"invalid name: {error.message}"
    elif error.validator == "required":
        missing = [key for key in expected if key not in instance]
        yield path, [(*path, key) for key in missing], error.message
    elif error.validator == "type" and error.validator_value in _KINDS:
        got = "an empty value" if error.instance is None else repr(error.instance)
        yield path, [path], f"expected {_KINDS[error.validator_value]}, got {got}"
    elif error.validator == "const":
        expected = f"expected {error.validator_value!r}"
        yield path, [path], f"{error.instance!r} is not supported; {expected}"
    elif error.validator in ("anyOf", "oneOf") and "title" in schema:
        # The schema's own title and description say more than "is not valid under
        # any of the given schemas"; keys the branches require are the bad ones.
        what = (
            "not a valid"
            if isinstance(error.instance, dict | list)
            else f"{error.instance!r} is not a"
        )
        keys = [key for branch in expected for key in branch.get("required", ())]
        bad = [(*path, key) for key in keys] or [path]
        yield path, bad, f"{what} {schema['title']}; {schema.get('description', '')}".rstrip("; ")
    else:
        yield path, [path], error.message


def dotted(path: YamlPath) -> str:
    """`("functions", "hello", "retry")` -> "functions.hello.retry"; indexes as `[0]`."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text


def load_yaml(text: str, *, file: str, environ: Mapping[str, str]) -> Document:
    """Parse one YAML document; problems (syntax, unset variables...) are collected."""
    loader = _Loader(text)
    try:
        root = loader.get_single_node()
        if root is None:
            return Document(file, None)
        walker = _Walker(loader, file, environ)
        data = walker.value(root, ())
        return Document(file, data, walker.lines, walker.problems, walker.bad_paths)
    except LimitError as exc:
        return Document(
            file, None, problems=[Problem(file, exc.line, dotted(exc.path), exc.message)]
        )
    except yaml.YAMLError as exc:
        return Document(file, None, problems=[_syntax_problem(exc, file)])
    finally:
        loader.dispose()


def _syntax_problem(exc: yaml.YAMLError, file: str) -> Problem:
    if not isinstance(exc, yaml.MarkedYAMLError):
        return Problem(file, None, "", f"invalid YAML: {exc}")
    mark = exc.problem_mark or exc.context_mark
    text = exc.problem or "invalid YAML"
    if exc.context:
        text += f" ({exc.context})"
    return Problem(file, mark.line + 1 if mark else None, "", f"invalid YAML: {text}")


class _Walker:
    """Turns composed nodes into data, recording lines and collecting problems."""

    def __init__(self, loader: _Loader, file: str, environ: Mapping[str, str]) -> None:
        self.loader = loader
        self.file = file
        self.environ = environ
        self.lines: dict[YamlPath, int] = {}
        self.problems: list[Problem] = []
        self.bad_paths: set[YamlPath] = set()
        self._open: set[int] = set()  # nodes being walked: an alias to one is a cycle
        self._own_keys: dict[int, set[int]] = {}  # mapping -> its keys not from a merge
        self._values = 0  # values produced so far, aliases expanded
        self._chars = 0  # characters of keys and scalars so far, aliases and ${VAR}s expanded

    def problem(self, node: yaml.Node, path: YamlPath, message: str) -> None:
        self.problems.append(Problem(self.file, node.start_mark.line + 1, dotted(path), message))
        self.bad_paths.add(path)

    def count(self, node: yaml.Node, path: YamlPath) -> None:
        """Account for one more value; LimitError once the expanded document is too big."""
        self._values += 1
        line = node.start_mark.line + 1
        if len(path) >= MAX_DEPTH:  # aliases inside aliases nest deeper than the text
            raise LimitError(f"nested deeper than {MAX_DEPTH} levels once aliases are expanded",
                             line, path)  # fmt: skip
        if self._values > MAX_VALUES:
            message = f"more than {MAX_VALUES:,} values once aliases (*name) are expanded"
            raise LimitError(message, line, path)

    def count_text(self, text: str, node: yaml.Node, path: YamlPath) -> None:
        """Account for the characters of a key or scalar, as expanded."""
        self._chars += len(text)
        if self._chars > MAX_CHARS:
            size = f"{MAX_CHARS // 2**20} MiB"
            line = node.start_mark.line + 1
            raise LimitError(f"more than {size} of text once aliases are expanded", line, path)

    def value(self, node: yaml.Node, path: YamlPath) -> Any:
        self.count(node, path)
        if isinstance(node, yaml.ScalarNode):
            return self.scalar(node, path)
        if id(node) in self._open:
            self.problem(node, path, "an alias refers to a node containing it (a cycle)")
            return None
        self._open.add(id(node))
        try:
            if isinstance(node, yaml.SequenceNode):
                items = []
                for index, item in enumerate(node.value):
                    self.lines[(*path, index)] = item.start_mark.line + 1
                    items.append(self.value(item, (*path, index)))
                return items
            assert isinstance(node, yaml.MappingNode)  # the third and last kind of node
            return self.mapping(node, path)
        finally:
            self._open.discard(id(node))

    def mapping(self, node: yaml.MappingNode, path: YamlPath) -> dict[str, Any]:
        # NOTE(manifest): an alias walks its mapping again, after "<<" was flattened.
        own = self._own_keys.setdefault(
            id(node), {id(k) for k, _ in node.value if k.tag != _MERGE_TAG}
        )
        self.loader.flatten_mapping(node)  # resolves "<<" merge keys in place
        result: dict[str, Any] = {}
        first_own: dict[str, int] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                self.problem(key_node, path, "a key must be a plain name, not a list or mapping")
                continue
            # NOTE(manifest): keys are names as written; `on:` must not become True.
            key = key_node.value
            self.count_text(key, key_node, path)
            line = key_node.start_mark.line + 1
            if id(key_node) in own:
                if key in first_own:
                    self.problem(
                        key_node, (*path, key), f"duplicate key (first at line {first_own[key]})"
                    )
                first_own.setdefault(key, line)
            self.lines[(*path, key)] = line
            result[key] = self.value(value_node, (*path, key))
        return result

    def scalar(self, node: yaml.ScalarNode, path: YamlPath) -> Any:
        if node.tag == _STR_TAG and "${" in node.value:
            node = self.expand(node, path)
        self.count_text(node.value, node, path)
        try:
            value = self.loader.construct_object(node, deep=True)
        except yaml.YAMLError as exc:
            self.problem(node, path, f"invalid value: {getattr(exc, 'problem', None) or exc}")
            return None
        if not isinstance(value, _JSON_SCALARS):
            self.problem(node, path, f"{type(value).__name__} is not a JSON value")
            return None
        return value

    def expand(self, node: yaml.ScalarNode, path: YamlPath) -> yaml.ScalarNode:
        def substitute(match: re.Match[str]) -> str:
            escaped, name, default = match.groups()
            if escaped:
                return match.group(0)[1:]
            if self.environ.get(name):
                return self.environ[name]
            if default is not None:
                return default  # like the shell: unset or empty both take the default
            if name in self.environ:
                return ""
            allow = f"write ${{{name}:-default}} to allow that"
            self.problem(node, path, f"environment variable {name} is not set ({allow})")
            return ""

        text = _VARIABLE.sub(substitute, node.value)
        tag = node.tag
        if node.style is None and text:
            # An unquoted value is typed after expansion: `${N:-16}` is the number 16,
            # but an empty expansion stays "" rather than becoming null.
            tag = self.loader.resolve(yaml.ScalarNode, text, (True, False))  # type: ignore[no-untyped-call]
        return yaml.ScalarNode(tag, text, node.start_mark, node.end_mark, node.style)
