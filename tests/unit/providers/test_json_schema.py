"""Tests for instance_of(), checked by a small independent validator."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

import pytest

from modelway.providers.json_schema import MAX_REF_DEPTH, instance_of

_FORMAT_CHECKS = {
    "date-time": r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})",
    "date": r"\d{4}-\d{2}-\d{2}",
    "email": r"[^@\s]+@[^@\s]+\.[^@\s]+",
    "uri": r"[a-z][a-z0-9+.-]*://\S+",
    "uuid": r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}",
}


def _type_ok(value: Any, kind: str) -> bool:
    if kind == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "number":
        return isinstance(value, int | float) and not isinstance(value, bool)
    python = {"string": str, "boolean": bool, "null": type(None), "object": dict, "array": list}[kind]
    return isinstance(value, python)


def errors(value: Any, schema: Any, root: Mapping[str, Any], path: str = "$") -> list[str]:
    """Violations of `schema` by `value`, for the subset instance_of() claims."""
    if schema is True or schema == {}:
        return []
    if "$ref" in schema:
        node: Any = root
        for part in schema["$ref"].lstrip("#").split("/")[1:]:
            node = node[part]
        return errors(value, node, root, path)
    found: list[str] = []
    kinds = schema.get("type")
    if kinds is not None:
        kinds = [kinds] if isinstance(kinds, str) else kinds
        if not any(_type_ok(value, kind) for kind in kinds):
            return [f"{path}: {value!r} is not {kinds}"]
    if "const" in schema and value != schema["const"]:
        found.append(f"{path}: not const")
    if "enum" in schema and value not in schema["enum"]:
        found.append(f"{path}: not in enum")
    for part in schema.get("allOf", ()):
        found += errors(value, part, root, path)
    for key in ("anyOf", "oneOf"):
        if key in schema and all(errors(value, branch, root, path) for branch in schema[key]):
            found.append(f"{path}: matches no {key} branch")
    if isinstance(value, dict):
        properties = schema.get("properties", {})
        for key in schema.get("required", ()):
            if key not in value:
                found.append(f"{path}: missing {key}")
        for key, item in value.items():
            if key in properties:
                found += errors(item, properties[key], root, f"{path}.{key}")
            elif schema.get("additionalProperties") is False:
                found.append(f"{path}: unexpected {key}")
            elif isinstance(schema.get("additionalProperties"), Mapping):
                found += errors(item, schema["additionalProperties"], root, f"{path}.{key}")
        if len(value) < schema.get("minProperties", 0):
            found.append(f"{path}: too few properties")
    if isinstance(value, list):
        if len(value) < schema.get("minItems", 0) or len(value) > schema.get("maxItems", len(value)):
            found.append(f"{path}: {len(value)} items")
        prefix = schema.get("prefixItems", [])
        for index, item in enumerate(value):
            sub = prefix[index] if index < len(prefix) else schema.get("items", {})
            found += errors(item, sub, root, f"{path}[{index}]")
    if isinstance(value, str):
        if not schema.get("minLength", 0) <= len(value) <= schema.get("maxLength", len(value)):
            found.append(f"{path}: length {len(value)}")
        check = _FORMAT_CHECKS.get(schema.get("format", ""))
        if check and not re.fullmatch(check, value):
            found.append(f"{path}: not a {schema['format']}")
    if _type_ok(value, "number"):
        if "minimum" in schema and value < schema["minimum"]:
            found.append(f"{path}: below minimum")
        if "maximum" in schema and value > schema["maximum"]:
            found.append(f"{path}: above maximum")
        if "exclusiveMinimum" in schema and value <= schema["exclusiveMinimum"]:
            found.append(f"{path}: not above exclusiveMinimum")
        if "exclusiveMaximum" in schema and value >= schema["exclusiveMaximum"]:
            found.append(f"{path}: not below exclusiveMaximum")
        if "multipleOf" in schema and value % schema["multipleOf"]:
            found.append(f"{path}: not a multiple of {schema['multipleOf']}")
    return found


def assert_valid(schema: Mapping[str, Any], **kwargs: Any) -> Any:
    value = instance_of(schema, **kwargs)
    json.dumps(value)  # must be JSON data
    assert errors(value, schema, schema) == [], value
    assert instance_of(schema, **kwargs) == value  # deterministic
    return value


WEATHER = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "description": "City name"},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
        "days": {"type": "integer", "minimum": 1, "maximum": 14},
        "detailed": {"type": "boolean"},
        "note": {"type": ["string", "null"]},
        "when": {"type": "string", "format": "date-time"},
    },
    "required": ["city", "unit", "days", "detailed", "note", "when"],
    "additionalProperties": False,
}


def test_empty_schema_is_empty_object() -> None:
    assert instance_of({}) == {}


def test_strict_object() -> None:
    value = assert_valid(WEATHER, text="Paris")
    assert value == {
        "city": "Paris",
        "unit": "celsius",
        "days": 1,
        "detailed": True,
        "note": "Paris",
        "when": "1970-01-01T00:00:00Z",
    }


def test_property_names_without_text() -> None:
    value = assert_valid(WEATHER)
    assert value["city"] == "city"


def test_optional_properties_filled_and_required_extras() -> None:
    schema = {
        "type": "object",
        "properties": {"a": {"type": "integer"}, "b": {"type": "number"}},
        "required": ["a", "c"],
        "additionalProperties": {"type": "string"},
    }
    value = assert_valid(schema, text="t")
    assert set(value) == {"a", "b", "c"}


@pytest.mark.parametrize(
    ("schema", "expected"),
    [
        ({"type": "string", "maxLength": 3}, "hel"),
        ({"type": "string", "minLength": 8}, "hello world"),
        ({"type": "string", "minLength": 15}, "hello worldxxxx"),
        ({"type": "string", "format": "email"}, "echo@example.com"),
        ({"type": "string", "format": "uri"}, "https://example.com"),
        ({"type": "string", "format": "uuid"}, "00000000-0000-4000-8000-000000000000"),
        ({"type": "string", "format": "date"}, "1970-01-01"),
        ({"type": "string", "pattern": "^[0-9]+$"}, "hello world"),
        ({"enum": ["b", "a"]}, "b"),
        ({"const": 42}, 42),
        ({"type": "integer", "default": 7}, 7),
        ({"type": ["null", "integer"]}, 0),
        ({"type": "null"}, None),
    ],
)
def test_scalars(schema: Mapping[str, Any], expected: Any) -> None:
    assert instance_of(schema, text="hello world") == expected


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "integer", "minimum": 3},
        {"type": "integer", "maximum": -3},
        {"type": "integer", "exclusiveMinimum": 0},
        {"type": "integer", "minimum": 7, "multipleOf": 5},
        {"type": "integer", "exclusiveMinimum": 0, "exclusiveMaximum": 3, "multipleOf": 2},
        {"type": "number", "exclusiveMinimum": 0, "maximum": 0.5},
        {"type": "number", "minimum": 1.5},
        {"type": "number", "minimum": -10, "maximum": -2},
        {"type": "integer", "minimum": 1.5},
    ],
)
def test_numbers_respect_bounds(schema: Mapping[str, Any]) -> None:
    assert_valid(schema)


def test_draft4_boolean_exclusive_minimum() -> None:
    assert instance_of({"type": "integer", "minimum": 0, "exclusiveMinimum": True}) == 1


def test_arrays() -> None:
    assert instance_of({"type": "array", "items": {"type": "string"}}, text="x") == ["x"]
    assert instance_of({"type": "array", "items": {"type": "boolean"}, "minItems": 3}) == [True] * 3
    assert instance_of({"type": "array", "items": {"type": "string"}, "maxItems": 0}) == []
    assert instance_of({"type": "array"}) == []
    tuple_schema = {"type": "array", "prefixItems": [{"type": "integer"}, {"type": "string"}]}
    assert assert_valid(tuple_schema, text="s") == [0, "s"]


def test_any_of_takes_first_non_null_branch() -> None:
    schema = {"anyOf": [{"type": "null"}, {"type": "integer", "minimum": 2}, {"type": "string"}]}
    assert assert_valid(schema) == 2
    assert assert_valid({"oneOf": [{"type": "string"}, {"type": "integer"}]}, text="t") == "t"


def test_all_of_merges_objects() -> None:
    schema = {
        "allOf": [
            {"type": "object", "properties": {"x": {"type": "integer"}}, "required": ["x"]},
            {"properties": {"y": {"const": "why"}}, "required": ["y"]},
        ]
    }
    assert assert_valid(schema) == {"x": 0, "y": "why"}


@pytest.mark.parametrize("defs", ["$defs", "definitions"])
def test_refs(defs: str) -> None:
    schema = {
        "type": "object",
        "properties": {"home": {"$ref": f"#/{defs}/Address"}, "work": {"$ref": f"#/{defs}/Address"}},
        "required": ["home", "work"],
        defs: {
            "Address": {
                "type": "object",
                "properties": {"street": {"type": "string"}, "zip": {"type": "string", "maxLength": 5}},
                "required": ["street", "zip"],
                "additionalProperties": False,
            }
        },
    }
    value = assert_valid(schema, text="Main Street")
    assert value["home"] == {"street": "Main Street", "zip": "Main "}


def _depth(value: Any, key: str) -> int:
    depth = 0
    while isinstance(value, dict) and isinstance(value.get(key), dict):
        value, depth = value[key], depth + 1
    return depth


def test_recursive_linked_list_ends_in_null() -> None:
    schema = {
        "$ref": "#/$defs/Node",
        "$defs": {
            "Node": {
                "type": "object",
                "properties": {
                    "value": {"type": "string"},
                    "next": {"anyOf": [{"$ref": "#/$defs/Node"}, {"type": "null"}]},
                },
                "required": ["value", "next"],
                "additionalProperties": False,
            }
        },
    }
    value = assert_valid(schema, text="v")
    assert 1 <= _depth(value, "next") <= MAX_REF_DEPTH + 1


def test_recursive_tree_stays_small_and_valid() -> None:
    node = {
        "type": "object",
        "properties": {
            "left": {"anyOf": [{"$ref": "#/$defs/T"}, {"type": "null"}]},
            "right": {"anyOf": [{"$ref": "#/$defs/T"}, {"type": "null"}]},
            "children": {"type": "array", "items": {"$ref": "#/$defs/T"}},
        },
        "required": ["left", "right", "children"],
    }
    schema = {"$ref": "#/$defs/T", "$defs": {"T": node}}
    value = assert_valid(schema)
    assert len(json.dumps(value)) < 20_000


def test_root_self_reference_and_pure_loops_terminate() -> None:
    nested = instance_of({"type": "object", "properties": {"self": {"$ref": "#"}}})
    assert 1 <= _depth(nested, "self") <= MAX_REF_DEPTH + 1
    assert instance_of({"$ref": "#/$defs/A", "$defs": {"A": {"allOf": [{"$ref": "#/$defs/A"}]}}}) == {}
    assert instance_of({"$ref": "#/$defs/A", "$defs": {"A": {"$ref": "#/$defs/A"}}}) == {}


def test_unknown_ref_gives_empty_object() -> None:
    assert instance_of({"$ref": "https://example.com/schema.json"}) == {}


def test_validator_rejects_bad_values() -> None:
    # The checker above must be able to fail, or the tests using it prove nothing.
    assert errors({"city": 3}, WEATHER, WEATHER)
    assert errors([1], {"type": "array", "maxItems": 0}, {})
    assert errors(0, {"type": "integer", "exclusiveMinimum": 0}, {})
