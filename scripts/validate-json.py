#!/usr/bin/python3
"""Checks a JSON document (standard input) against a JSON Schema (argument): exit 0 when it
conforms, 1 with one line per violation on standard error. The tests run every `--json`
output through it with Debian's python3-jsonschema."""
import json
import pathlib
import sys

import jsonschema

path = pathlib.Path(sys.argv[1])
# Every schema beside it, by $id, so one may refer to another (common.schema.json).
store = {}
for other in path.parent.glob("*.schema.json"):
    loaded = json.loads(other.read_text(encoding="utf-8"))
    store[loaded["$id"]] = loaded
schema = json.loads(path.read_text(encoding="utf-8"))
validator = jsonschema.validators.validator_for(schema)
validator.check_schema(schema)
resolver = jsonschema.RefResolver.from_schema(schema, store=store)
errors = sorted(
    validator(schema, resolver=resolver).iter_errors(json.load(sys.stdin)),
    key=lambda e: list(e.path),
)
for e in errors:
    where = "/".join(str(p) for p in e.path) or "(document)"
    print(f"{sys.argv[1]}: {where}: {e.message}", file=sys.stderr)
sys.exit(1 if errors else 0)
