#!/usr/bin/env python3
"""Validates an SBOM with the formats' own tools: `cyclonedx FILE` against the official
CycloneDX 1.5 JSON schema (cyclonedx-python-lib's strict validator, which ships it), `spdx FILE`
with spdx-tools, the SPDX project's parser and SPDX 2.3 validator. Exit 0 when valid, 1 with
the findings on standard error. The tests run it in a virtual environment holding both
(scripts/test.sh makes it)."""
import sys

kind, path = sys.argv[1], sys.argv[2]
if kind == "cyclonedx":
    from cyclonedx.schema import SchemaVersion
    from cyclonedx.validation.json import JsonStrictValidator

    with open(path, encoding="utf-8") as f:
        error = JsonStrictValidator(SchemaVersion.V1_5).validate_str(f.read())
    if error is not None:
        print(f"{path}: {error}", file=sys.stderr)
        sys.exit(1)
elif kind == "spdx":
    from spdx_tools.spdx.parser.parse_anything import parse_file
    from spdx_tools.spdx.validation.document_validator import validate_full_spdx_document

    try:
        document = parse_file(path)
    except Exception as e:  # the parser's own error types: any of them means invalid
        print(f"{path}: {e}", file=sys.stderr)
        sys.exit(1)
    messages = validate_full_spdx_document(document, spdx_version="SPDX-2.3")
    for m in messages:
        print(f"{path}: {m.validation_message}", file=sys.stderr)
    if messages:
        sys.exit(1)
else:
    sys.exit(f"unknown SBOM kind {kind}")
