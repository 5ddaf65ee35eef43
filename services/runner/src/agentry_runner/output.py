"""Output formats: the instruction each format adds to the system prompt, and the JSON answer's checks."""

from __future__ import annotations

import re
from typing import Any

import jsonschema
import orjson
from jsonschema.exceptions import best_match

from agentry_common.events import EndpointSnapshot

JSON_INSTRUCTION = "Answer with a single JSON {kind} and nothing else: no prose before or after it, no code fences."
MARKDOWN_INSTRUCTION = "Format your answer in Markdown."
_FENCE = re.compile(r"^```[a-zA-Z0-9_-]*\s*\n?(.*?)\n?```$", re.DOTALL)


class InvalidOutput(Exception):
    """The model's answer is not the JSON the endpoint promises; the message says why (for the re-ask)."""


class InvalidSchema(InvalidOutput):
    """The endpoint's own `output_schema` is broken: re-asking the model cannot help."""


def system_prompt(endpoint: EndpointSnapshot) -> str:
    if endpoint.output_format == "markdown":
        return f"{endpoint.system_prompt}\n\n{MARKDOWN_INSTRUCTION}"
    if endpoint.output_format != "json":
        return endpoint.system_prompt
    prompt = f"{endpoint.system_prompt}\n\n{json_instruction(endpoint.output_schema)}"
    if endpoint.output_schema:
        schema = orjson.dumps(endpoint.output_schema).decode()
        prompt += f"\nThe JSON must validate against this JSON Schema:\n{schema}"
    return prompt


def wants_object(schema: dict[str, Any] | None) -> bool:
    return not schema or schema.get("type", "object") == "object"


def json_instruction(schema: dict[str, Any] | None) -> str:
    return JSON_INSTRUCTION.format(kind="object" if wants_object(schema) else "value")


def parse_json(text: str, schema: dict[str, Any] | None) -> Any:
    """The parsed answer, validated against `schema`; raises `InvalidOutput`."""
    body = text.strip()
    fenced = _FENCE.match(body)
    if fenced:  # models fence JSON even when told not to; the content is what was asked for
        body = fenced.group(1).strip()
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise InvalidOutput("the answer is not valid JSON") from None
    if schema:
        validator_cls = jsonschema.validators.validator_for(schema)
        try:
            validator_cls.check_schema(schema)
        except jsonschema.SchemaError:
            raise InvalidSchema("the endpoint's output_schema is not a valid JSON Schema") from None
        error = best_match(validator_cls(schema).iter_errors(value))
        if error is not None:
            where = "/".join(str(p) for p in error.absolute_path) or "(root)"
            raise InvalidOutput(f"the JSON does not match the schema at {where}: {error.message}"[:400])
    return value


def corrective_prompt(problem: str, schema: dict[str, Any] | None) -> str:
    rejected = f"Your previous answer was rejected: {problem}. Reply again with only the corrected JSON."
    return f"{rejected} {json_instruction(schema)}"
