"""The ``/docs`` page: the Swagger UI that ships in ``swagger-ui-bundle`` (4.15), fed an OpenAPI 3.0 copy.

FastAPI emits OpenAPI 3.1, which Swagger UI 4 refuses ("does not specify a valid version field").
:func:`openapi_30` rewrites the document into its OpenAPI 3.0.3 equivalent: ``anyOf [X, null]``
and ``type: [X, "null"]`` become ``nullable``, ``const`` an ``enum`` of one, schema ``examples``
an ``example``, numeric ``exclusiveMinimum``/``exclusiveMaximum`` the 3.0 boolean form, binary
``contentMediaType`` a ``format: binary``; 3.1-only top-level fields are dropped. ``/openapi.json``
stays 3.1; only the docs page reads the 3.0 copy. Everything is served from local files (no CDN).
"""

from __future__ import annotations

import copy
from typing import Any

_TOP_LEVEL_31 = ("webhooks", "jsonSchemaDialect")
_SCHEMA_ONLY_31 = ("$schema", "$id", "$anchor", "$dynamicRef", "$dynamicAnchor", "$comment", "contentEncoding")


def openapi_30(document: dict[str, Any]) -> dict[str, Any]:
    """An OpenAPI 3.1 document -> an equivalent OpenAPI 3.0.3 document (the input is not changed)."""
    out = copy.deepcopy(document)
    out["openapi"] = "3.0.3"
    for key in _TOP_LEVEL_31:
        out.pop(key, None)
    info = out.get("info", {})
    summary = info.pop("summary", None)
    if summary:
        info["description"] = f"{summary}\n\n{info.get('description', '')}".strip()
    info.get("license", {}).pop("identifier", None)
    return _walk(out)


def _walk(node: Any) -> Any:
    """Convert every schema found under ``schema`` keys and in ``components.schemas``."""
    if isinstance(node, list):
        return [_walk(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {}
    for key, value in node.items():
        if key == "schema":
            out[key] = _convert(value)
        elif key == "schemas" and isinstance(value, dict):
            out[key] = {name: _convert(schema) for name, schema in value.items()}
        else:
            out[key] = _walk(value)
    return out


def _convert(schema: Any) -> Any:
    """A JSON Schema (OpenAPI 3.1) and its sub-schemas -> the OpenAPI 3.0 schema object."""
    if not isinstance(schema, dict):
        return schema
    schema = dict(schema)
    for key in ("properties", "patternProperties", "$defs"):
        if isinstance(schema.get(key), dict):
            schema[key] = {name: _convert(sub) for name, sub in schema[key].items()}
    for key in ("items", "additionalProperties", "not"):
        if isinstance(schema.get(key), dict):
            schema[key] = _convert(schema[key])
    for key in ("anyOf", "oneOf", "allOf"):
        if isinstance(schema.get(key), list):
            schema[key] = [_convert(sub) for sub in schema[key]]
    if isinstance(schema.get("prefixItems"), list):  # tuples: 3.0 has only one item schema
        schema.pop("prefixItems")
    return _schema_30(schema)


def _schema_30(schema: dict[str, Any]) -> dict[str, Any]:
    """One schema object (its children already converted)."""
    for key in _SCHEMA_ONLY_31:
        schema.pop(key, None)
    kind = schema.get("type")
    if isinstance(kind, list):
        rest = [k for k in kind if k != "null"]
        if len(rest) < len(kind):
            schema["nullable"] = True
        if len(rest) == 1:
            schema["type"] = rest[0]
        else:
            schema.pop("type")
            if rest:
                schema["anyOf"] = [{"type": k} for k in rest]
    for combiner in ("anyOf", "oneOf"):
        options = schema.get(combiner)
        if isinstance(options, list) and any(_is_null(o) for o in options):
            options = [o for o in options if not _is_null(o)]
            schema["nullable"] = True
            if len(options) == 1:
                del schema[combiner]
                (only,) = options
                if "$ref" in only:  # siblings of $ref are ignored in 3.0: wrap it
                    schema["allOf"] = [only]
                else:
                    schema = {**only, **schema}
            else:
                schema[combiner] = options
    if "const" in schema:
        schema["enum"] = [schema.pop("const")]
    if isinstance(schema.get("examples"), list):
        examples = schema.pop("examples")
        if examples:
            schema.setdefault("example", examples[0])
    for bound, plain in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        value = schema.get(bound)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            schema[plain] = value
            schema[bound] = True
    if "contentMediaType" in schema:
        media = schema.pop("contentMediaType")
        if schema.get("type") == "string" and media == "application/octet-stream":
            schema["format"] = "binary"
    return schema


def _is_null(schema: Any) -> bool:
    return isinstance(schema, dict) and schema.get("type") == "null" and len(schema) == 1


DOCS_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>lggseg HTTP API</title>
<link rel="icon" type="image/png" href="/docs-assets/favicon-32x32.png">
<link rel="stylesheet" href="/docs-assets/swagger-ui.css">
<script src="/docs-assets/swagger-ui-bundle.js" defer></script>
<script src="/static/docs.js" defer></script>
</head>
<body>
<div id="swagger-ui"></div>
</body>
</html>
"""
"""The docs page: the Swagger UI bundle and ``web/docs.js`` (which starts it on the 3.0 document)."""
