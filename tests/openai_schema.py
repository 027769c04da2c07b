"""Checks a body against OpenAI's published OpenAPI schema (the subset vendored in tests/fixtures).

The spec is OpenAPI 3.0, whose `nullable: true` is not JSON Schema: it is
turned into `"null"` among the allowed types (or values) before jsonschema
reads it. One correction is made, and named here rather than hidden in the
vendored file: the spec's own description of a chunk's `usage` says it "contains
a null value except for the last chunk" when include_usage is set, but its
schema of that commit leaves out `nullable`; later versions of the spec (and the
openai SDK's `ChatCompletionChunk.usage: Optional[CompletionUsage]`) allow null.
"""

from __future__ import annotations

import copy
import json
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema

__all__ = ["schema_errors", "validate"]

_SUBSET = Path(__file__).parent / "fixtures" / "openai_openapi_subset.json"


def _json_schema(node: Any) -> Any:
    """OpenAPI 3.0 -> JSON Schema: `nullable: true` lets null through; `nullable: false` says nothing."""
    if isinstance(node, list):
        return [_json_schema(item) for item in node]
    if not isinstance(node, dict):
        return node
    converted = {key: _json_schema(value) for key, value in node.items() if key != "nullable"}
    if node.get("nullable") is not True:
        return converted
    if isinstance(converted.get("type"), str) and "$ref" not in converted:
        converted["type"] = [converted["type"], "null"]
        if "enum" in converted:
            converted["enum"] = [*converted["enum"], None]
        return converted
    return {"anyOf": [converted, {"type": "null"}]}


@cache
def _components() -> dict[str, Any]:
    spec = json.loads(_SUBSET.read_text())
    schemas = copy.deepcopy(spec["components"]["schemas"])
    schemas["CreateChatCompletionStreamResponse"]["properties"]["usage"]["nullable"] = True  # see the module doc
    return {"schemas": _json_schema(schemas)}


def schema_errors(name: str, body: Any) -> list[str]:
    """Every way `body` breaks components/schemas/`name`, as "path: message" lines (empty when it conforms)."""
    schema = {"$ref": f"#/components/schemas/{name}", "components": _components()}
    validator = jsonschema.Draft202012Validator(schema)
    return [
        f"{'/'.join(str(part) for part in error.absolute_path) or '(root)'}: {error.message}"
        for error in validator.iter_errors(body)
    ]


def validate(name: str, body: Any) -> None:
    """Fails the test, naming every violation, when `body` is not a valid `name`."""
    errors = schema_errors(name, body)
    assert not errors, f"{name} does not match OpenAI's schema:\n" + "\n".join(errors)
