"""Prompt template files: a mistake stops synth with the file, the field and what is allowed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from stacks.config import ConfigError
from stacks.level1_prompt.prompt_templates import PROMPTS_DIR, load_template, load_templates

GOOD = {
    "name": "greet",
    "description": "Greets someone.",
    "template": "Say hello to {{person}} in {{language}}.",
    "variables": ["person", "language"],
    "inference": {"temperature": 0.3, "maxTokens": 50},
}


def write(tmp_path: Path, data: Any, name: str = "greet") -> Path:
    path = tmp_path / f"{name}.json"
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


def test_the_repo_templates_load_with_at_least_two_templates() -> None:
    templates = load_templates()
    assert len(templates) >= 2
    assert {t.name for t in templates} == {p.stem for p in PROMPTS_DIR.glob("*.json")}


def test_the_repo_templates_set_one_sampler_so_every_text_model_takes_them() -> None:
    """Anthropic models from Claude 4.5 refuse temperature and topP in one request ("temperature and top_p cannot
    both be specified for this model"), and a template's settings are the deployment's: the caller cannot drop one.
    The shipped templates set temperature only, so switching text_model_id keeps every route working."""
    for template in load_templates():
        assert not {"temperature", "topP"} <= set(template.inference), template.name


def test_a_valid_file_loads(tmp_path: Path) -> None:
    template = load_template(write(tmp_path, GOOD))
    assert template.variables == ("person", "language")
    assert template.inference == {"temperature": 0.3, "maxTokens": 50}


def test_digest_changes_with_the_template_text(tmp_path: Path) -> None:
    first = load_template(write(tmp_path, GOOD)).digest
    second = load_template(write(tmp_path, {**GOOD, "template": GOOD["template"] + " Be brief."})).digest
    assert first != second


@pytest.mark.parametrize(
    ("change", "field", "allowed"),
    [
        ({"name": "Greet_Me"}, "name", "lowercase letters and digits"),
        ({"name": "other"}, "name", "the file name without .json"),
        ({"description": ""}, "description", "1-200 characters"),
        ({"variables": ["person"]}, "template", "placeholders that 'variables' declares"),
        ({"variables": ["person", "language", "mood"]}, "variables", "only names the template uses"),
        ({"variables": ["person", "person"]}, "variables", "distinct names"),
        # Names Bedrock refuses at deploy time, by the pattern in AWS::Bedrock::Prompt's registry schema.
        ({"variables": ["_person", "language"]}, "variables", "AWS::Bedrock::Prompt input variable name"),
        ({"variables": ["per--son", "language"]}, "variables", "a value matching ^([0-9a-zA-Z][_-]?){1,100}$"),
        ({"inference": {"temperature": 2}}, "inference.temperature", "a number from 0.0 to 1.0"),
        ({"inference": {"maxTokens": 10.5}}, "inference.maxTokens", "a whole number"),
        ({"inference": {"topK": 5}}, "inference.topK", "one of temperature, topP, maxTokens"),
        ({"colour": "blue"}, "colour", "only the keys"),
    ],
)
def test_mistakes_name_the_file_and_field(tmp_path: Path, change: dict[str, Any], field: str, allowed: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_template(write(tmp_path, {**GOOD, **change}))
    assert str(caught.value).startswith(f"config error: prompts/greet.json: {field} = ")
    assert allowed in str(caught.value)


def test_missing_key_and_bad_json_are_reported(tmp_path: Path) -> None:
    without_template = {k: v for k, v in GOOD.items() if k != "template"}
    with pytest.raises(ConfigError, match=r"prompts/greet\.json: template"):
        load_template(write(tmp_path, without_template))
    with pytest.raises(ConfigError, match=r"prompts/greet\.json: file = 'line 1: Expecting"):
        load_template(write(tmp_path, "{not json"))


def test_an_empty_prompts_directory_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="at least one template file"):
        load_templates(tmp_path)


def test_two_names_with_one_output_id_are_a_config_error(tmp_path: Path) -> None:
    """Before: both loaded, and the stack's two CfnOutputs of one id (PromptV2ApiArn) stopped synth with a CDK
    stack trace ("There is already a Construct with name ...") instead of a config error naming the files."""
    for name in ("v2-api", "v2api"):
        write(tmp_path, {**GOOD, "name": name}, name=name)
    with pytest.raises(ConfigError) as raised:
        load_templates(tmp_path)
    message = str(raised.value)
    assert "prompts/v2api.json: name" in message and "prompts/v2-api.json" in message
    assert "PromptV2ApiArn" in message
    # Names output_id keeps apart still load together.
    (tmp_path / "v2api.json").unlink()
    write(tmp_path, {**GOOD, "name": "v2-apis"}, name="v2-apis")
    assert [t.name for t in load_templates(tmp_path)] == ["v2-api", "v2-apis"]


def test_a_catalog_too_large_for_the_functions_environment_is_a_config_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: a ValueError, which synth showed as a stack trace; now one config-error line naming the prompts,
    reported with the settings' mistakes (before, only once the settings passed and the stack was built)."""
    import app as app_module
    from stacks.level1_prompt.prompt_templates import CATALOG_ENV_BUDGET
    from stacks.shared.facts import STACK_IDS
    from tests.conftest import cdk_json_context

    variables = [f"variable_number_{i:02d}" for i in range(20)]
    for i in range(10):
        text = " ".join("{{" + v + "}}" for v in variables)
        write(
            tmp_path,
            {**GOOD, "name": f"t{i}", "description": "d" * 200, "template": text, "variables": variables},
            f"t{i}",
        )
    for path in tmp_path.glob("*.json"):
        assert load_template(path)  # each file is valid on its own
    monkeypatch.setattr(app_module, "load_templates", lambda: load_templates(tmp_path))
    context = {**cdk_json_context(), "rag_max_results": 99}
    with pytest.raises(ConfigError) as raised:
        app_module.build_app(context, outdir=str(tmp_path / "out"), nag=False, only=[STACK_IDS["1"]])
    lines = str(raised.value).splitlines()
    [catalog] = [line for line in lines if "prompts/*.json" in line]
    assert catalog.startswith("config error: prompts/*.json (the prompt catalog in the function's environment) = ")
    assert f"at most {CATALOG_ENV_BUDGET} bytes" in catalog
    assert any(line.startswith("config error: rag_max_results = 99") for line in lines)


def test_every_mistake_of_every_template_file_is_reported_at_once(tmp_path: Path) -> None:
    """Before: synth stopped at the first bad field of the first bad file, so three mistakes took three runs."""
    write(tmp_path, {**GOOD, "description": "", "inference": {"maxTokens": 99_999, "temperature": 2}})
    write(tmp_path, {**GOOD, "name": "other", "variables": ["person"]}, name="other")
    with pytest.raises(ConfigError) as raised:
        load_templates(tmp_path)
    keys = [problem.key for problem in raised.value.problems]
    assert keys == [
        "prompts/greet.json: description",
        "prompts/greet.json: inference.maxTokens",
        "prompts/greet.json: inference.temperature",
        "prompts/other.json: template",
    ]
    assert len(str(raised.value).splitlines()) == 4
