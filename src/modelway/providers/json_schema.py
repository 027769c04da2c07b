"""Deterministic example values for the JSON Schema subset that structured outputs use."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["instance_of"]

# Beyond this many re-entries of a $ref already being expanded, a recursive
# schema gets the smallest value it allows instead of another level.
MAX_REF_DEPTH = 8
# A recursive schema with several recursive fields would otherwise grow
# exponentially before reaching MAX_REF_DEPTH; past this many recursions in
# total, every further one is as small as allowed too.
_MAX_RECURSIONS = 64
# A schema that is nothing but references to itself never reaches a value.
_GIVE_UP_DEPTH = 4 * MAX_REF_DEPTH

_FORMATS: Mapping[str, str] = {
    "date-time": "1970-01-01T00:00:00Z",
    "date": "1970-01-01",
    "time": "00:00:00Z",
    "duration": "P1D",
    "email": "echo@example.com",
    "idn-email": "echo@example.com",
    "hostname": "example.com",
    "idn-hostname": "example.com",
    "ipv4": "127.0.0.1",
    "ipv6": "::1",
    "uri": "https://example.com",
    "iri": "https://example.com",
    "url": "https://example.com",
    "uri-reference": "https://example.com",
    "uuid": "00000000-0000-4000-8000-000000000000",
}

_TYPE_HINTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("object", ("properties", "required", "additionalProperties", "minProperties")),
    ("array", ("items", "prefixItems", "minItems", "maxItems")),
    ("string", ("minLength", "maxLength", "pattern", "format")),
    ("number", ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf")),
)


def instance_of(schema: Mapping[str, Any], *, text: str = "") -> Any:
    """Build a JSON value that validates against `schema`.

    Strings are `text` (cut to fit) or, when `text` is empty, the property
    name. Every declared property is filled, arrays get minItems items (at
    least one), the first enum value and the first anyOf / oneOf branch that
    is not just null are taken, `default` and `const` are used when present,
    and `pattern` and `uniqueItems` are ignored. Recursive $refs are followed
    MAX_REF_DEPTH deep; past that a value is null if allowed, else an empty
    object or array. An empty schema gives {}.
    """
    if not schema:
        return {}
    return _Builder(root=schema, text=text).build(schema, name="", refs=("#",))


@dataclass(slots=True)
class _Builder:
    """One instance_of() call. `refs` arguments are the $refs expanded on the way here."""

    root: Mapping[str, Any]
    text: str
    recursions: int = 0  # re-entries of a $ref already on the path, over the whole value

    def build(self, schema: Any, *, name: str, refs: tuple[str, ...]) -> Any:
        if not isinstance(schema, Mapping) or _depth(refs) > _GIVE_UP_DEPTH:
            # Boolean schemas: `true` accepts anything and `false` nothing, so
            # no value is better than another; nor is it for a schema that
            # does nothing but refer to itself.
            return {}
        if "$ref" in schema:
            return self.build(self._inline(schema), name=name, refs=self._enter(refs, schema["$ref"]))
        if "const" in schema:
            return schema["const"]
        enum = schema.get("enum")
        if isinstance(enum, list) and enum:
            return enum[0]
        if "default" in schema:
            return schema["default"]
        parts = schema.get("allOf")
        if isinstance(parts, list):
            merged: Mapping[str, Any] = {k: v for k, v in schema.items() if k != "allOf"}
            for part in parts:
                merged = _merge(merged, self._inline(part))
                if isinstance(part, Mapping) and "$ref" in part:
                    refs = self._enter(refs, part["$ref"])
            return self.build(merged, name=name, refs=refs)
        for key in ("anyOf", "oneOf"):
            branches = schema.get(key)
            if isinstance(branches, list) and branches:
                rest = {k: v for k, v in schema.items() if k != key}
                branch = self._pick_branch(branches, refs)
                merged = _merge(rest, branch) if isinstance(branch, Mapping) else rest
                return self.build(merged, name=name, refs=refs)

        kind = _kind(schema)
        if self._exhausted(refs):
            if _allows_null(schema):
                return None
            if kind == "object":
                return {}
            if kind == "array":
                return []
        if kind == "null":
            return None
        if kind == "boolean":
            return True
        if kind in ("integer", "number"):
            return _number(schema, integer=kind == "integer")
        if kind == "string":
            return self._string(schema, name)
        if kind == "array":
            return self._array(schema, name=name, refs=refs)
        if kind == "object":
            return self._object(schema, refs=refs)
        return {}

    def _enter(self, refs: tuple[str, ...], ref: Any) -> tuple[str, ...]:
        if str(ref) in refs:
            self.recursions += 1
        return (*refs, str(ref))

    def _exhausted(self, refs: tuple[str, ...], ahead: Any = None) -> bool:
        """Whether recursion has gone far enough, or would after expanding `ahead`."""
        recursions = self.recursions
        if ahead is not None:
            recursions += str(ahead) in refs
            refs = (*refs, str(ahead))
        return _depth(refs) > MAX_REF_DEPTH or recursions > _MAX_RECURSIONS

    def _object(self, schema: Mapping[str, Any], *, refs: tuple[str, ...]) -> dict[str, Any]:
        properties = schema.get("properties")
        properties = properties if isinstance(properties, Mapping) else {}
        extra = schema.get("additionalProperties", True)
        result = {key: self.build(sub, name=key, refs=refs) for key, sub in properties.items()}
        required = schema.get("required")
        for key in required if isinstance(required, list) else ():
            if isinstance(key, str) and key not in result:
                result[key] = self.build(extra if isinstance(extra, Mapping) else {}, name=key, refs=refs)
        minimum = schema.get("minProperties")
        if isinstance(minimum, int) and extra is not False:
            counter = 1
            while len(result) < minimum:
                key = f"key{counter}"
                counter += 1
                if key not in result:
                    result[key] = self.build(extra if isinstance(extra, Mapping) else {}, name=key, refs=refs)
        return result

    def _array(self, schema: Mapping[str, Any], *, name: str, refs: tuple[str, ...]) -> list[Any]:
        items = schema.get("items")
        prefix = schema.get("prefixItems")
        if isinstance(items, list):  # draft-4 tuple form
            prefix, items = items, schema.get("additionalItems")
        prefix = prefix if isinstance(prefix, list) else []
        minimum = _int(schema.get("minItems")) or 0
        maximum = _int(schema.get("maxItems"))
        count = max(minimum, len(prefix))
        if count == 0 and isinstance(items, Mapping) and not self._exhausted(refs, items.get("$ref")):
            # One example item shows the item shape, which an empty list would
            # not; but not an item that recursion would cut to an invalid stub.
            count = 1
        if maximum is not None:
            count = min(count, maximum)
        tail = items if isinstance(items, Mapping) else {}
        return [self.build(prefix[i] if i < len(prefix) else tail, name=name, refs=refs) for i in range(count)]

    def _string(self, schema: Mapping[str, Any], name: str) -> str:
        fmt = schema.get("format")
        value = _FORMATS.get(fmt, "") if isinstance(fmt, str) else ""
        if not value:
            value = self.text or name or "echo"
        maximum = _int(schema.get("maxLength"))
        minimum = _int(schema.get("minLength")) or 0
        if maximum is not None:
            value = value[:maximum]
        if len(value) < minimum:
            value = value.ljust(minimum, "x")
        return value

    def _pick_branch(self, branches: list[Any], refs: tuple[str, ...]) -> Any:
        """The first branch with content that recursion does not cut short.

        Failing that, a branch allowing null or a scalar, so that a recursive
        structure ends in a valid leaf rather than an invalid empty stub. The
        branch is returned as written so that build() records its $ref.
        """
        shapes = [(branch, self._inline(branch)) for branch in branches]
        content = [(branch, shape) for branch, shape in shapes if _kind(shape) != "null"]
        for branch, _ in content:
            if not self._exhausted(refs, branch.get("$ref") if isinstance(branch, Mapping) else None):
                return branch
        for branch, shape in shapes:
            if _allows_null(shape):
                return branch
        for branch, shape in content:
            if _kind(shape) not in ("object", "array", ""):
                return branch
        return content[0][0] if content else branches[0]

    def _inline(self, schema: Any) -> Mapping[str, Any]:
        """`schema` with one level of $ref replaced by its target."""
        if not isinstance(schema, Mapping):
            return {}
        if "$ref" not in schema:
            return schema
        siblings = {k: v for k, v in schema.items() if k != "$ref"}
        return _merge(self._resolve(schema["$ref"]), siblings)

    def _resolve(self, ref: Any) -> Mapping[str, Any]:
        """Follow a local JSON pointer such as `#/$defs/Node`; anything else is {}."""
        if not isinstance(ref, str) or not ref.startswith("#"):
            return {}
        node: Any = self.root
        for raw in ref[1:].split("/")[1:]:
            part = raw.replace("~1", "/").replace("~0", "~")
            if isinstance(node, Mapping) and part in node:
                node = node[part]
            elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
                node = node[int(part)]
            else:
                return {}
        return node if isinstance(node, Mapping) else {}


def _depth(refs: tuple[str, ...]) -> int:
    """How many of the $refs on a path re-enter one already on it."""
    return len(refs) - len(set(refs))


def _merge(base: Mapping[str, Any], extra: Mapping[str, Any]) -> Mapping[str, Any]:
    """Combine two schemas as allOf would, uniting properties and required."""
    if not isinstance(extra, Mapping):
        return base
    merged = {**base, **extra}
    if isinstance(base.get("properties"), Mapping) and isinstance(extra.get("properties"), Mapping):
        merged["properties"] = {**base["properties"], **extra["properties"]}
    if isinstance(base.get("required"), list) and isinstance(extra.get("required"), list):
        merged["required"] = list(dict.fromkeys([*base["required"], *extra["required"]]))
    return merged


def _kind(schema: Mapping[str, Any]) -> str:
    declared = schema.get("type")
    if isinstance(declared, str):
        return declared
    if isinstance(declared, list) and declared:
        for name in declared:
            if name != "null":
                return str(name)
        return "null"
    for kind, keys in _TYPE_HINTS:
        if any(key in schema for key in keys):
            return kind
    return ""


def _allows_null(schema: Any) -> bool:
    if not isinstance(schema, Mapping):
        return False
    declared = schema.get("type")
    if declared == "null" or (isinstance(declared, list) and "null" in declared):
        return True
    enum = schema.get("enum")
    if isinstance(enum, list) and None in enum:
        return True
    branches = [branch for key in ("anyOf", "oneOf") if isinstance(schema.get(key), list) for branch in schema[key]]
    return any(_allows_null(branch) for branch in branches)


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _real(value: Any) -> float | None:
    return value if isinstance(value, int | float) and not isinstance(value, bool) else None


def _number(schema: Mapping[str, Any], *, integer: bool) -> int | float:
    """The value closest to 0 within the bounds and a multiple of multipleOf."""
    low, high = _real(schema.get("minimum")), _real(schema.get("maximum"))
    low_open = schema.get("exclusiveMinimum") is True
    high_open = schema.get("exclusiveMaximum") is True
    # Draft 6+ writes exclusive bounds as numbers of their own.
    exclusive_low, exclusive_high = _real(schema.get("exclusiveMinimum")), _real(schema.get("exclusiveMaximum"))
    if exclusive_low is not None and (low is None or exclusive_low >= low):
        low, low_open = exclusive_low, True
    if exclusive_high is not None and (high is None or exclusive_high <= high):
        high, high_open = exclusive_high, True
    step = _real(schema.get("multipleOf"))
    if step is not None and step <= 0:
        step = None
    if integer and step is None:
        step = 1

    def fits(value: float) -> bool:
        above = low is None or (value > low if low_open else value >= low)
        below = high is None or (value < high if high_open else value <= high)
        return above and below

    candidates: list[float] = [0]
    if low is not None:
        candidates += _grid_after(low, step, high)
    if high is not None:
        candidates += [-v for v in _grid_after(-high, step, None if low is None else -low)]
    for value in candidates:
        if fits(value) and (not integer or value == int(value)):
            return int(value) if integer else value
    # Unsatisfiable bounds: any value is as wrong as another.
    return int(low or 0) if integer else (low or 0)


def _grid_after(low: float, step: float | None, high: float | None) -> list[float]:
    """Candidates just at and above `low`: on the step grid, or a plain offset."""
    if step is not None:
        first = math.ceil(low / step) * step
        return [first, first + step]
    candidates = [low, low + 1]
    if high is not None:
        candidates.append((low + high) / 2)
    return candidates
