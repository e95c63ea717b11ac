"""Schemathesis hooks for the Sluice gateway: `/v1/commands` takes newline-delimited JSON, which
the OpenAPI document describes as an array of commands; this serializer writes such an array as
one JSON document a line."""
import json

import schemathesis


@schemathesis.serializer("application/x-ndjson")
def ndjson(ctx, value):
    if value is None:
        return None
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    items = value if isinstance(value, list) else [value]
    return "".join(json.dumps(item) + "\n" for item in items).encode()
