"""The subschemas of a payload schema file and the $refs between them, checked at load.

A schema that refers outside its own file would make every submission fetch a URL
or fail (an unresolvable $ref), and a loop of $refs that never descends into the
payload (`{"$ref": "#"}`, A -> B -> A, `allOf` back to itself) recurses until the
interpreter gives up. Both used to pass `dtqs validate` and then answer every
submission with a 500, so they are refused here, with the JSON pointer of the $ref.
A recursive schema whose loop passes through `properties`, `items` and the like is
fine: each turn of the loop moves one level into the payload, which is finite.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from referencing import Registry, Specification
from referencing.exceptions import Unresolvable
from referencing.jsonschema import DRAFT202012, specification_with

if TYPE_CHECKING:
    from referencing._core import Resolver  # not exported by the package itself

#: Keywords holding one subschema (`items` may also hold a list, in older drafts).
_ONE = frozenset({
    "additionalItems", "additionalProperties", "contains", "contentSchema", "else", "if",
    "items", "not", "propertyNames", "then", "unevaluatedItems", "unevaluatedProperties",
})  # fmt: skip
#: Keywords holding a list of subschemas.
_LIST = frozenset({"allOf", "anyOf", "oneOf", "prefixItems", "items"})
#: Keywords holding a mapping of names to subschemas (`dependencies` also holds lists).
_MAP = frozenset({
    "$defs", "definitions", "dependentSchemas", "patternProperties", "properties",
    "dependencies",
})  # fmt: skip
#: Keywords whose subschemas apply to the same instance: a loop through only these
#: (and $refs) never reaches the end of the payload.
_SAME_PLACE = frozenset({
    "allOf", "anyOf", "oneOf", "not", "if", "then", "else", "dependentSchemas", "dependencies",
})  # fmt: skip
_REFS = ("$ref", "$dynamicRef", "$recursiveRef")
#: Problems reported per file; a hostile file could otherwise list thousands.
MAX_REPORTED = 10
#: Steps of a loop shown in its message (the first and last halves).
_ROUTE_SHOWN = 8

_Edge = tuple[int, str | None]  #: (target node, pointer of the $ref taking it there, if any)


@dataclass
class _Node:
    pointer: str  #: JSON pointer in the file ("" = the root)
    schema: dict[str, Any]
    resolver: Resolver[Any]  #: resolves this subschema's $refs (its base URI)
    same_place: list[_Edge] = field(default_factory=list)


def escape(token: str | int) -> str:
    """A JSON pointer reference token (RFC 6901)."""
    return str(token).replace("~", "~0").replace("/", "~1")


def fragment(pointer: str) -> str:
    return "#" + pointer


class SchemaGraph:
    """Every subschema of `schema` (an already valid JSON Schema) and the $refs between."""

    def __init__(self, schema: dict[str, Any]) -> None:
        dialect = schema.get("$schema")
        self.spec: Specification[Any] = (
            specification_with(dialect, default=DRAFT202012)
            if isinstance(dialect, str)
            else DRAFT202012
        )
        resource = self.spec.create_resource(schema)
        base = resource.id() or ""
        # NOTE(manifest): a registry holding this file only, crawled once (so lookups
        # of anchors do not crawl again), and with no way to retrieve anything else:
        # a $ref it cannot resolve leaves the file.
        registry: Registry[Any] = Registry().with_resource(base, resource).crawl()
        self.nodes: dict[int, _Node] = {}
        self.problems: list[tuple[str, str]] = []  #: (pointer of the $ref, message)
        self._walk(schema, "", registry.resolver(base_uri=base))
        self._link()

    def subschemas(self) -> Iterator[tuple[str, dict[str, Any]]]:
        """(pointer, subschema) of every subschema that is a JSON object."""
        for node in self.nodes.values():
            yield node.pointer, node.schema

    def _walk(self, schema: Any, pointer: str, resolver: Resolver[Any]) -> list[_Node]:
        """Record `schema` and the subschemas under it; the new nodes."""
        added: list[_Node] = []
        todo = [(schema, pointer, resolver)]
        while todo:  # NOTE(manifest): a loop, not recursion: the file may nest deeply
            contents, where, outer = todo.pop()
            if not isinstance(contents, dict) or id(contents) in self.nodes:
                continue
            here = outer.in_subresource(self.spec.create_resource(contents))
            node = self.nodes[id(contents)] = _Node(where, contents, here)
            added.append(node)
            for key, child_pointer, child in _children(contents, where):
                todo.append((child, child_pointer, here))
                if key in _SAME_PLACE and isinstance(child, dict):
                    node.same_place.append((id(child), None))
        return added

    def _link(self) -> None:
        """Resolve every $ref; walk what they reach; then look for loops."""
        dynamic: dict[str, list[int]] = {}  # $dynamicAnchor name -> nodes
        recursive: list[int] = []  # nodes with "$recursiveAnchor": true
        queue = list(self.nodes.values())
        while queue:
            node = queue.pop()
            if isinstance(name := node.schema.get("$dynamicAnchor"), str):
                dynamic.setdefault(name, []).append(id(node.schema))
            if node.schema.get("$recursiveAnchor") is True:
                recursive.append(id(node.schema))
            for keyword in _REFS:
                if isinstance(ref := node.schema.get(keyword), str):
                    queue += self._resolve(node, keyword, ref)
        # NOTE(manifest): a $dynamicRef or $recursiveRef may land on any anchor of its
        # name in the dynamic scope; counting every one is safe (it can only find more
        # loops than there are).
        for node in self.nodes.values():
            ref = node.schema.get("$dynamicRef")
            if isinstance(ref, str) and ref.startswith("#"):
                at = node.pointer + "/$dynamicRef"
                node.same_place += [(n, at) for n in dynamic.get(ref[1:], [])]
            if isinstance(node.schema.get("$recursiveRef"), str):
                node.same_place += [(n, node.pointer + "/$recursiveRef") for n in recursive]
        self._find_loops()

    def _resolve(self, node: _Node, keyword: str, ref: str) -> list[_Node]:
        """Link `node` to what its `ref` names; the nodes walked anew to get there."""
        at = f"{node.pointer}/{escape(keyword)}"
        try:
            resolved = node.resolver.lookup(ref)
        except (Unresolvable, LookupError, TypeError, ValueError):
            # TypeError, ValueError: a pointer through a string, or a list index not a number
            self.problems.append((at, _outside(keyword, ref, at)))
            return []
        target = resolved.contents
        if isinstance(target, bool):
            return []  # true or false: accepts or refuses, loops nowhere
        if not isinstance(target, dict):
            kind = type(target).__name__
            message = f"{keyword} {ref!r} at {at} points to a {kind}, not a schema"
            self.problems.append((at, message))
            return []
        added = []
        if id(target) not in self.nodes:  # not a subschema by place (e.g. under "examples")
            pointer = ref[1:] if ref.startswith("#") else ref
            added = self._walk(target, pointer, resolved.resolver)
        node.same_place.append((id(target), at))
        return added

    def _find_loops(self) -> None:
        """One problem per $ref that closes a loop staying at one place of the payload."""
        state: dict[int, bool] = {}  # node -> True while on the path, False when done
        for start in self.nodes:
            if start in state:
                continue
            path: list[int] = [start]
            via: list[str | None] = [None]  # the $ref that led to path[i]
            edges = [iter(self.nodes[start].same_place)]
            state[start] = True
            while edges:
                step = next(edges[-1], None)
                if step is None:
                    state[path.pop()] = False
                    via.pop()
                    edges.pop()
                elif step[0] not in state:
                    state[step[0]] = True
                    path.append(step[0])
                    via.append(step[1])
                    edges.append(iter(self.nodes[step[0]].same_place))
                elif state[step[0]]:
                    self._loop(path[path.index(step[0]) :], via[path.index(step[0]) + 1 :], step)

    def _loop(self, cycle: list[int], refs: list[str | None], closing: _Edge) -> None:
        at = closing[1] or next(r for r in refs if r is not None)
        if any(p == at for p, _ in self.problems):
            return
        steps = [fragment(self.nodes[n].pointer) for n in [*cycle, closing[0]]]
        if len(steps) > _ROUTE_SHOWN:  # a hostile loop may run through thousands
            steps = [*steps[: _ROUTE_SHOWN // 2], "...", *steps[-(_ROUTE_SHOWN // 2) :]]
        route = " -> ".join(steps)
        keyword = at.rpartition("/")[2]
        message = (
            f"{keyword} at {at} loops back without descending into the payload ({route}); "
            "a recursive schema must pass through properties, items or the like"
        )
        self.problems.append((at, message))


def _children(schema: dict[str, Any], pointer: str) -> Iterator[tuple[str, str, Any]]:
    """(keyword, pointer, subschema) of the subschemas directly under `schema`."""
    for key, value in schema.items():
        where = f"{pointer}/{escape(key)}"
        if key in _ONE and isinstance(value, dict | bool):
            yield key, where, value
        elif key in _LIST and isinstance(value, list):
            for index, item in enumerate(value):
                yield key, f"{where}/{index}", item
        elif key in _MAP and isinstance(value, dict):
            for name, item in value.items():
                if isinstance(item, dict | bool):  # `dependencies` may map to a list of names
                    yield key, f"{where}/{escape(name)}", item


def _outside(keyword: str, ref: str, at: str) -> str:
    if ref.startswith("#"):
        return f"{keyword} {ref!r} at {at} points to nothing in this file"
    return (
        f"{keyword} {ref!r} at {at} refers outside this file, which is refused (no schema "
        'is fetched); keep each definition in this file, e.g. under $defs as "#/$defs/name"'
    )
