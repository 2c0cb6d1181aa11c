"""Level 1's AWS facts (Prompt Management's inference keys, variable names and count), held to AWS's
machine-readable sources (botocore's service models, the CloudFormation registry schemas that cfn-lint ships): a
fact AWS changes fails here, not in an account. The kit-wide ones are in tests/infra/test_facts_from_sources.py."""

from __future__ import annotations

import botocore.session


def test_prompt_inference_keys_are_the_members_bedrock_stores() -> None:
    from prompt_api.prompts import INFERENCE_KEYS

    model = botocore.session.get_session().get_service_model("bedrock-agent")
    assert list(INFERENCE_KEYS) == list(model.shape_for("PromptModelInferenceConfiguration").members)


def test_prompt_variable_names_and_count_follow_bedrock_prompt_management() -> None:
    """The stack refuses a template whose variables AWS::Bedrock::Prompt refuses; the function, which reads the
    catalog the stack writes, must accept every name and count the stack lets through (else every route fails)."""
    import json
    from pathlib import Path

    from prompt_api.settings import VARIABLE_NAME, parse_catalog
    from stacks.level1_prompt.prompt_templates import _variable_rule, max_variables

    agent = botocore.session.get_session().get_service_model("bedrock-agent")
    api_rule = agent.shape_for("PromptInputVariable").members["name"].metadata["pattern"]
    assert VARIABLE_NAME.pattern == api_rule == (_variable_rule().pattern or "").removeprefix("^").removesuffix("$")
    most = agent.shape_for("PromptInputVariablesList").metadata["max"]
    assert max_variables() == most
    schemas = json.loads(Path("lambdas/level1_prompt/prompt_api/request_schemas.json").read_text())
    assert schemas["TemplateRequest"]["properties"]["variables"]["maxProperties"] == most

    longest = "a_" * 100  # 200 characters: the longest name both sources allow
    assert _variable_rule().problem(longest) is None
    arn = "arn:aws:bedrock:us-east-1:123456789012:prompt/ABCDEFGHIJ:1"
    names = [f"{longest[:-4]}{i:02d}" for i in range(most)]  # 198 characters, 100 groups
    assert all(_variable_rule().problem(name) is None for name in names)
    catalog = parse_catalog({"t": {"arn": arn, "variables": names}})
    assert catalog["t"].variables == tuple(names)
