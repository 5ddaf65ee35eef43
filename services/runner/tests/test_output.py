"""Output formats: the instruction each adds, and how a JSON answer is parsed and validated."""

from __future__ import annotations

import pytest

from agentry_common.events import EndpointSnapshot
from agentry_runner import output

SCHEMA = {"type": "object", "required": ["name"], "properties": {"name": {"type": "string"}}}


def endpoint(**fields) -> EndpointSnapshot:
    return EndpointSnapshot(id="aep", slug="s", owner_id="u", workspace_id="w", system_prompt="Extract.", **fields)


def test_text_keeps_the_prompt_markdown_and_json_add_their_instruction():
    assert output.system_prompt(endpoint()) == "Extract."
    assert output.MARKDOWN_INSTRUCTION in output.system_prompt(endpoint(output_format="markdown"))
    prompt = output.system_prompt(endpoint(output_format="json", output_schema=SCHEMA))
    assert "a single JSON object" in prompt and '"required":["name"]' in prompt
    listing = output.system_prompt(endpoint(output_format="json", output_schema={"type": "array"}))
    assert "a single JSON value" in listing


def test_json_answers_are_parsed_even_inside_a_code_fence():
    assert output.parse_json('  {"name": "Ada"} ', SCHEMA) == {"name": "Ada"}
    assert output.parse_json('```json\n{"name": "Ada"}\n```', SCHEMA) == {"name": "Ada"}
    assert output.parse_json("[1, 2]", None) == [1, 2]


@pytest.mark.parametrize(
    ("answer", "reason"),
    [("Sure! here it is", "not valid JSON"), ('{"name": 3}', "at name"), ("{}", "(root)")],
)
def test_invalid_answers_say_what_is_wrong(answer, reason):
    with pytest.raises(output.InvalidOutput) as invalid:
        output.parse_json(answer, SCHEMA)
    assert reason in str(invalid.value)


def test_a_broken_schema_is_not_the_models_fault():
    with pytest.raises(output.InvalidSchema):
        output.parse_json("{}", {"type": "no-such-type"})
