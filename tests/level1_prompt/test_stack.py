"""Level 1 stack: the properties that matter, asserted on the template a real synth produces."""

from __future__ import annotations

import importlib
import json
import re
from typing import Any

import pytest
from aws_cdk.assertions import Match

from stacks.level1_prompt.prompt_templates import load_templates
from stacks.level1_prompt.stack import temperature_env
from stacks.shared.facts import PROFILE_GEOGRAPHIES
from stacks.shared.rest_api import NO_SUCH_ROUTE
from tests.infra.helpers import DEFAULT_PROJECT, as_list, only, render, resources, statements

STACK = "GenAiKit-1-Prompt"


@pytest.fixture(scope="module")
def template(sandbox: Any) -> dict[str, Any]:
    return sandbox.templates[STACK]


def _function(template: dict[str, Any]) -> dict[str, Any]:
    return only(template, "AWS::Lambda::Function")[1]["Properties"]


# --- API ----------------------------------------------------------------------------------------------


def test_api_is_regional(template: dict[str, Any]) -> None:
    _, api = only(template, "AWS::ApiGateway::RestApi")
    assert api["Properties"]["EndpointConfiguration"] == {"Types": ["REGIONAL"]}


def test_every_method_requires_iam_auth_and_uses_the_validator(template: dict[str, Any]) -> None:
    methods = resources(template, "AWS::ApiGateway::Method")
    routes = set()
    validator_id, validator = only(template, "AWS::ApiGateway::RequestValidator")
    assert validator["Properties"]["ValidateRequestBody"] is True
    assert validator["Properties"]["ValidateRequestParameters"] is True
    for method in methods.values():
        props = method["Properties"]
        assert props["AuthorizationType"] == "AWS_IAM"
        assert props["RequestValidatorId"] == {"Ref": validator_id}
        assert props["Integration"]["Type"] == "AWS_PROXY"
        routes.add(props["HttpMethod"])
        if props["HttpMethod"] == "POST":
            assert "application/json" in props["RequestModels"]
    assert len(methods) == 3 and routes == {"GET", "POST"}


def test_template_route_requires_the_name_path_parameter(template: dict[str, Any]) -> None:
    params = [
        m["Properties"].get("RequestParameters", {}) for m in resources(template, "AWS::ApiGateway::Method").values()
    ]
    assert {"method.request.path.name": True} in params


def test_stage_is_throttled_logged_and_traced(sandbox: Any, template: dict[str, Any]) -> None:
    _, stage = only(template, "AWS::ApiGateway::Stage")
    props = stage["Properties"]
    assert props["TracingEnabled"] is True
    access_logs_id, _ = next(
        (k, v) for k, v in resources(template, "AWS::Logs::LogGroup").items() if k.startswith("PromptApiAccessLogs")
    )
    assert render(props["AccessLogSetting"]["DestinationArn"]).endswith(":log-group:${" + access_logs_id + "}")
    assert "$context.requestId" in props["AccessLogSetting"]["Format"]
    [settings] = props["MethodSettings"]
    assert settings["ThrottlingRateLimit"] == sandbox.config.api_throttle_rate
    assert settings["ThrottlingBurstLimit"] == sandbox.config.api_throttle_burst
    assert settings["LoggingLevel"] == "ERROR"
    assert settings["DataTraceEnabled"] is False


# The shared RestApi (stacks/shared/rest_api.py) serves Levels 1 and 2: its gateway responses are checked on both.
API_STACKS = (STACK, "GenAiKit-2-Rag")
BODY_REASON = "The request body must be a JSON object (sent with Content-Type: application/json)."


@pytest.mark.parametrize("stack", API_STACKS)
def test_per_method_metrics_stay_off_and_the_api_alarms_read_api_level_metrics(sandbox: Any, stack: str) -> None:
    """Method-level metrics bill as custom metrics ("Your account is charged for accessing method-level CloudWatch
    metrics, but not the API-level or stage-level metrics", API Gateway's stage settings page); before, every
    method's were on while no alarm read them."""
    template = sandbox.templates[stack]
    [(_, stage)] = resources(template, "AWS::ApiGateway::Stage").items()
    assert [s["MetricsEnabled"] for s in stage["Properties"]["MethodSettings"]] == [False]
    api_alarms = [
        a["Properties"]
        for a in resources(template, "AWS::CloudWatch::Alarm").values()
        if a["Properties"].get("Namespace") == "AWS/ApiGateway"
    ]
    assert len(api_alarms) >= 2  # 5xx and latency
    assert all([d["Name"] for d in alarm["Dimensions"]] == ["ApiName"] for alarm in api_alarms), api_alarms


@pytest.mark.parametrize("stack", API_STACKS)
def test_gateway_errors_render_the_kit_error_shape_as_valid_json(sandbox: Any, stack: str) -> None:
    responses = resources(sandbox.templates[stack], "AWS::ApiGateway::GatewayResponse")
    types = {r["Properties"]["ResponseType"] for r in responses.values()}
    assert {"BAD_REQUEST_BODY", "ACCESS_DENIED", "THROTTLED", "DEFAULT_4XX", "DEFAULT_5XX"} <= types
    for response in responses.values():
        props = response["Properties"]
        body_template = props["ResponseTemplates"]["application/json"]
        # API Gateway substitutes messageString already quoted and escaped.
        body = json.loads(body_template.replace("$context.error.messageString", json.dumps('say "no"')))
        assert set(body) == {"error"} and body["error"]["code"]
        if props["ResponseType"] == "BAD_REQUEST_BODY":
            # messageString is only "Invalid request body": the response states the one rule the model checks.
            assert "$context" not in body_template and json.loads(body_template) == {
                "error": {"code": "invalid_request_body", "message": BODY_REASON, "field": "body"}
            }
        elif props["ResponseType"] == "MISSING_AUTHENTICATION_TOKEN":
            # A signed caller with a mistyped path or method is told so, and shown the routes the API has.
            head, routes = NO_SUCH_ROUTE.split("{routes}")[0], body["error"]["message"]
            assert "$context" not in body_template and routes.startswith(head) and routes.endswith(".")
            assert sorted(routes[len(head) : -1].split(", ")) == sorted(api_routes(sandbox.templates[stack]))
        else:
            assert body["error"]["message"] == 'say "no"'
        if props["ResponseType"] == "THROTTLED":
            assert props["StatusCode"] == "429"
            assert props["ResponseParameters"]["gatewayresponse.header.Retry-After"] == "'1'"


def api_routes(template: dict[str, Any]) -> list[str]:
    """ "<METHOD> <path>" of every method of the template's REST API, its path read up the resources' parents."""
    parts = {k: v["Properties"] for k, v in resources(template, "AWS::ApiGateway::Resource").items()}

    def path(ref: Any) -> str:
        if not isinstance(ref, dict) or "Ref" not in ref:  # the API's root resource (Fn::GetAtt RootResourceId)
            return ""
        part = parts[ref["Ref"]]
        return f"{path(part['ParentId'])}/{part['PathPart']}"

    methods = resources(template, "AWS::ApiGateway::Method").values()
    routes = [f"{m['Properties']['HttpMethod']} {path(m['Properties']['ResourceId']) or '/'}" for m in methods]
    assert routes, "no methods"
    return routes


# MISSING_AUTHENTICATION_TOKEN also answers "an unsupported API method or resource" (supported-gateway-response-
# types.html): before, a signed request to a mistyped path was told "Missing Authentication Token".
# API Gateway's default status code for each response type the kit customizes, and the fallback response a type
# defaults to, from "Gateway response types for API Gateway":
# https://docs.aws.amazon.com/apigateway/latest/developerguide/supported-gateway-response-types.html
# | Gateway response type        | Default status code | Falls back to |
# | BAD_REQUEST_BODY             | 400                 | DEFAULT_4XX   |
# | BAD_REQUEST_PARAMETERS       | 400                 | DEFAULT_4XX   |
# | REQUEST_TOO_LARGE            | 413                 | DEFAULT_4XX   |
# | UNSUPPORTED_MEDIA_TYPE       | 415                 | DEFAULT_4XX   |
# | ACCESS_DENIED                | 403                 | DEFAULT_4XX   |
# | MISSING_AUTHENTICATION_TOKEN | 403                 | DEFAULT_4XX   |
# | INVALID_SIGNATURE            | 403                 | DEFAULT_4XX   |
# | EXPIRED_TOKEN                | 403                 | DEFAULT_4XX   |
# | THROTTLED                    | 429                 | DEFAULT_4XX   |
# | QUOTA_EXCEEDED               | 429                 | DEFAULT_4XX   |
# | INTEGRATION_TIMEOUT          | 504                 | DEFAULT_5XX   |
# DEFAULT_4XX and DEFAULT_5XX have none (Null): a status set on one of them changes every other response of its class.
AWS_GATEWAY_DEFAULTS = {
    "BAD_REQUEST_BODY": ("400", "DEFAULT_4XX"),
    "BAD_REQUEST_PARAMETERS": ("400", "DEFAULT_4XX"),
    "REQUEST_TOO_LARGE": ("413", "DEFAULT_4XX"),
    "UNSUPPORTED_MEDIA_TYPE": ("415", "DEFAULT_4XX"),
    "ACCESS_DENIED": ("403", "DEFAULT_4XX"),
    "MISSING_AUTHENTICATION_TOKEN": ("403", "DEFAULT_4XX"),
    "INVALID_SIGNATURE": ("403", "DEFAULT_4XX"),
    "EXPIRED_TOKEN": ("403", "DEFAULT_4XX"),
    "THROTTLED": ("429", "DEFAULT_4XX"),
    "QUOTA_EXCEEDED": ("429", "DEFAULT_4XX"),
    "INTEGRATION_TIMEOUT": ("504", "DEFAULT_5XX"),
}


@pytest.mark.parametrize("stack", API_STACKS)
def test_gateway_errors_keep_api_gateways_status_codes(sandbox: Any, stack: str) -> None:
    # The kit rewrites the bodies only: a client relies on the status to tell a request it must fix (4xx) from one
    # to retry, and the README documents e.g. 400 invalid_request_body.
    responses = resources(sandbox.templates[stack], "AWS::ApiGateway::GatewayResponse")
    for response in responses.values():
        props = response["Properties"]
        response_type = props["ResponseType"]
        if response_type in ("DEFAULT_4XX", "DEFAULT_5XX"):
            assert "StatusCode" not in props, response_type
            continue
        assert response_type in AWS_GATEWAY_DEFAULTS, f"{response_type}: add its row from the AWS page above"
        default, fallback = AWS_GATEWAY_DEFAULTS[response_type]
        status = props.get("StatusCode", default)
        assert status == default, (response_type, status)
        if fallback == "DEFAULT_4XX":  # a client error stays a client error
            assert status.startswith("4"), (response_type, status)


@pytest.mark.parametrize("stack", API_STACKS)
def test_the_body_reason_is_all_the_gateway_checks(sandbox: Any, stack: str) -> None:
    # BODY_REASON holds only while every body model is a bare JSON object for application/json, the one
    # content type request validation runs for (api-gateway-method-request-validation.html).
    template = sandbox.templates[stack]
    models = resources(template, "AWS::ApiGateway::Model")
    assert models
    for model in models.values():
        assert model["Properties"]["ContentType"] == "application/json"
        schema = model["Properties"]["Schema"]
        assert set(schema) == {"$schema", "type"} and schema["type"] == "object"
    for method in resources(template, "AWS::ApiGateway::Method").values():
        assert set(method["Properties"].get("RequestModels", {})) <= {"application/json"}


def test_request_body_model_is_a_draft4_json_object(template: dict[str, Any]) -> None:
    models = resources(template, "AWS::ApiGateway::Model")
    assert models
    for model in models.values():
        schema = model["Properties"]["Schema"]
        assert schema["type"] == "object"
        assert schema["$schema"].startswith("http://json-schema.org/draft-04/")


# --- Function -----------------------------------------------------------------------------------------


def test_function_runtime_architecture_tracing_and_logs(sandbox: Any, template: dict[str, Any]) -> None:
    props = _function(template)
    assert props["Runtime"] == "python3.14"
    assert props["Architectures"] == ["arm64"]
    assert props["TracingConfig"] == {"Mode": "Active"}
    assert props["LoggingConfig"]["LogFormat"] == "JSON"
    log_group_id = props["LoggingConfig"]["LogGroup"]["Ref"]
    log_group = template["Resources"][log_group_id]
    assert log_group["Properties"]["RetentionInDays"] == sandbox.config.log_retention_days == 7


def test_function_timeout_is_below_the_api_integration_timeout(template: dict[str, Any]) -> None:
    assert _function(template)["Timeout"] < 29


def test_function_uses_the_pinned_powertools_layer(sandbox: Any, template: dict[str, Any]) -> None:
    [layer] = _function(template)["Layers"]
    assert layer == (
        "arn:aws:lambda:us-east-1:017000801446:layer:AWSLambdaPowertoolsPythonV3-python314-arm64:"
        f"{sandbox.config.powertools_layer_version}"
    )


def test_handler_string_is_the_dotted_path_tests_import(template: dict[str, Any]) -> None:
    module_path, _, attribute = _function(template)["Handler"].rpartition(".")
    module = importlib.import_module(module_path)
    assert callable(getattr(module, attribute))


def test_function_environment_wires_model_guardrail_and_prompt_versions(sandbox: Any, template: dict[str, Any]) -> None:
    env = _function(template)["Environment"]["Variables"]
    guardrail_id, _ = only(template, "AWS::Bedrock::Guardrail")
    version_id, _ = only(template, "AWS::Bedrock::GuardrailVersion")
    assert env["MODEL_ID"] == sandbox.config.text_model.model_id
    assert env["GUARDRAIL_ID"] == {"Fn::GetAtt": [guardrail_id, "GuardrailId"]}
    assert env["GUARDRAIL_VERSION"] == {"Fn::GetAtt": [version_id, "Version"]}
    assert (
        env["DEFAULT_TEMPERATURE"]
        == temperature_env(sandbox.config.text_temperature)
        == str(sandbox.config.text_temperature)
    )
    assert env["DEFAULT_MAX_TOKENS"] == str(sandbox.config.text_max_tokens)
    catalog = render(env["PROMPT_CATALOG"])
    for version_logical_id in resources(template, "AWS::Bedrock::PromptVersion"):
        assert "${" + version_logical_id + ".Arn}" in catalog
    for prompt in load_templates():
        assert f'"{prompt.name}":' in catalog


def test_every_call_is_tagged_with_what_a_level_3_distillation_from_the_logs_selects(
    sandbox: Any, prod_extremes: Any, template: dict[str, Any]
) -> None:
    """The function's requestMetadata is this deployment's (stacks/shared/facts.py), and the longest name prefix
    still fits both Converse's requestMetadata and the distillation job's requestMetadataFilters (botocore)."""
    import botocore.session

    from stacks.shared.facts import request_metadata
    from tests.infra.asl import member_errors

    env = _function(template)["Environment"]["Variables"]
    deployment = sandbox.config.deployment
    assert json.loads(env["REQUEST_METADATA"]) == request_metadata(deployment.name_prefix, deployment.stage)
    longest = request_metadata(prod_extremes.config.deployment.name_prefix, "prod")
    assert member_errors("bedrock-runtime", "Converse", "requestMetadata", longest) == []
    filters = botocore.session.get_session().get_service_model("bedrock").shape_for("RequestMetadataFilters")
    for key, value in longest.items():
        assert re.fullmatch(filters.members["equals"].key.metadata["pattern"], key)
        assert re.fullmatch(filters.members["equals"].value.metadata["pattern"], value)


def test_function_role_trusts_only_lambda_and_has_no_managed_policies(template: dict[str, Any]) -> None:
    role_id = _function(template)["Role"]["Fn::GetAtt"][0]
    role = template["Resources"][role_id]["Properties"]
    [statement] = role["AssumeRolePolicyDocument"]["Statement"]
    assert statement["Principal"] == {"Service": "lambda.amazonaws.com"}
    assert "ManagedPolicyArns" not in role


# --- IAM exactness ------------------------------------------------------------------------------------


def _bedrock_statements(template: dict[str, Any]) -> list[dict[str, Any]]:
    return [s for _, s in statements(template) if any(a.startswith("bedrock:") for a in as_list(s["Action"]))]


def test_no_bedrock_action_is_granted_on_a_wildcard_resource(template: dict[str, Any]) -> None:
    """The one wildcard: the versions of one of the kit's own prompts (``<prompt ARN>:*``, GetPrompt only)."""
    found = _bedrock_statements(template)
    assert found
    versions = {f"${{{k}.Arn}}:*" for k in resources(template, "AWS::Bedrock::Prompt")}
    for statement in found:
        for resource in as_list(statement["Resource"]):
            shown = render(resource)
            if shown in versions:
                assert as_list(statement["Action"]) == ["bedrock:GetPrompt"], statement
                continue
            assert resource != "*" and "*" not in shown, statement


def test_invoke_model_covers_the_profile_and_every_destination_region_only(
    sandbox: Any, template: dict[str, Any]
) -> None:
    model = sandbox.config.text_model
    invoke = [s for s in _bedrock_statements(template) if s.get("Sid", "").startswith("Invoke")]
    by_sid = {s["Sid"]: s for s in invoke}
    profile_arn = "arn:aws:bedrock:us-east-1:${AWS::AccountId}:inference-profile/" + model.model_id
    # and the account's default project, which Converse authorizes as well (stacks/shared/model_access.py)
    assert [render(r) for r in by_sid["InvokeInferenceProfile"]["Resource"]] == [profile_arn, DEFAULT_PROJECT]
    destinations = by_sid["InvokeProfileDestinations"]
    assert sorted(destinations["Resource"]) == sorted(
        f"arn:aws:bedrock:{region}::foundation-model/{model.foundation_model_id}"
        for region in PROFILE_GEOGRAPHIES["us"]
    )
    condition = destinations["Condition"]["StringEquals"]["bedrock:InferenceProfileArn"]
    assert render(condition) == profile_arn
    assert {a for s in invoke for a in as_list(s["Action"])} == {"bedrock:InvokeModel"}


def test_guardrail_and_prompt_grants_name_exactly_their_resources(template: dict[str, Any]) -> None:
    by_sid = {s.get("Sid"): s for s in _bedrock_statements(template)}
    guardrail_id, _ = only(template, "AWS::Bedrock::Guardrail")
    assert by_sid["ApplyGuardrail"]["Action"] == "bedrock:ApplyGuardrail"
    assert by_sid["ApplyGuardrail"]["Resource"] == {"Fn::GetAtt": [guardrail_id, "GuardrailArn"]}
    read = by_sid["ReadManagedPrompts"]
    # each prompt and every version of it: the version a running instance still reads while a deploy replaces it
    expected = {f"${{{k}.Arn}}" for k in resources(template, "AWS::Bedrock::Prompt")} | {
        f"${{{k}.Arn}}:*" for k in resources(template, "AWS::Bedrock::Prompt")
    }
    assert {render(r) for r in read["Resource"]} == expected
    assert as_list(read["Action"]) == ["bedrock:GetPrompt"]


def prompt_grants(template: dict[str, Any]) -> list[list[str]]:
    """The actions of every Bedrock statement on a prompt or prompt version, named by Fn::GetAtt (``${Id.Arn}``)
    or by Ref (``${Id}``: both types' Ref is the ARN, their registry schemas' primaryIdentifier)."""
    prompt_ids = set(resources(template, "AWS::Bedrock::Prompt")) | set(
        resources(template, "AWS::Bedrock::PromptVersion")
    )
    named = re.compile(r"\$\{(" + "|".join(map(re.escape, sorted(prompt_ids))) + r")[.}]") if prompt_ids else None
    return [
        as_list(statement["Action"])
        for statement in _bedrock_statements(template)
        if named and any(named.search(render(r)) for r in as_list(statement["Resource"]))
    ]


def test_the_function_reads_prompts_but_never_runs_them_as_a_model(template: dict[str, Any]) -> None:
    """Templates are rendered in the function (guardContent on the caller's values), so no statement lets the
    role invoke or render a prompt resource: the guardrail could not be told which text the caller wrote."""
    grants = prompt_grants(template)
    assert grants, "no statement names a prompt: the function could not read its templates"
    assert all(actions == ["bedrock:GetPrompt"] for actions in grants), grants


def test_the_prompt_grant_check_sees_a_prompt_named_by_ref() -> None:
    version = {"Type": "AWS::Bedrock::PromptVersion", "Properties": {}}
    policy = {
        "Type": "AWS::IAM::Policy",
        "Properties": {
            "PolicyDocument": {
                "Statement": [
                    {"Effect": "Allow", "Action": "bedrock:GetPrompt", "Resource": {"Fn::GetAtt": ["V", "Arn"]}},
                    {"Effect": "Allow", "Action": ["bedrock:InvokeModel"], "Resource": {"Ref": "V"}},
                ]
            }
        },
    }
    assert prompt_grants({"Resources": {"V": version, "P": policy}}) == [["bedrock:GetPrompt"], ["bedrock:InvokeModel"]]


# --- Guardrail and prompts ----------------------------------------------------------------------------


def test_guardrail_filters_pii_and_denied_topic_follow_config(sandbox: Any, template: dict[str, Any]) -> None:
    settings = sandbox.config.guardrail
    _, guardrail = only(template, "AWS::Bedrock::Guardrail")
    props = guardrail["Properties"]
    filters = {f["Type"]: f for f in props["ContentPolicyConfig"]["FiltersConfig"]}
    assert filters["PROMPT_ATTACK"] == {
        "Type": "PROMPT_ATTACK",
        "InputStrength": settings.prompt_attack_strength,
        "OutputStrength": "NONE",
        "InputAction": "BLOCK",
        "InputEnabled": True,
    }
    # Each side of each filter and PII entity is set, on: their defaults are undocumented, and a guardrail given
    # only Action has been reported to deploy with its input side off.
    for kind in ("SEXUAL", "VIOLENCE", "HATE", "INSULTS", "MISCONDUCT"):
        assert filters[kind]["InputStrength"] == filters[kind]["OutputStrength"] == settings.content_filter_strength
        assert (filters[kind]["InputAction"], filters[kind]["OutputAction"]) == ("BLOCK", "BLOCK")
        assert filters[kind]["InputEnabled"] is filters[kind]["OutputEnabled"] is True
    entities = props["SensitiveInformationPolicyConfig"]["PiiEntitiesConfig"]
    pii = {p["Type"]: p["Action"] for p in entities}
    assert pii == {**{t: "ANONYMIZE" for t in settings.pii_anonymize}, **{t: "BLOCK" for t in settings.pii_block}}
    for entity in entities:
        assert entity["InputAction"] == entity["OutputAction"] == entity["Action"], entity
        assert entity["InputEnabled"] is entity["OutputEnabled"] is True, entity
    [topic] = props["TopicPolicyConfig"]["TopicsConfig"]
    assert topic["Type"] == "DENY" and topic["Examples"]


def test_guardrail_version_publishes_the_guardrail(template: dict[str, Any]) -> None:
    guardrail_id, _ = only(template, "AWS::Bedrock::Guardrail")
    _, version = only(template, "AWS::Bedrock::GuardrailVersion")
    assert version["Properties"]["GuardrailIdentifier"] == {"Fn::GetAtt": [guardrail_id, "GuardrailId"]}


def test_one_prompt_and_version_per_template_file(sandbox: Any, template: dict[str, Any]) -> None:
    prompts = resources(template, "AWS::Bedrock::Prompt")
    versions = resources(template, "AWS::Bedrock::PromptVersion")
    files = {t.name: t for t in load_templates()}
    assert len(prompts) == len(versions) == len(files)
    by_name = {}
    for logical_id, prompt in prompts.items():
        props = prompt["Properties"]
        name = props["Name"].removeprefix(sandbox.config.resource_name(""))
        by_name[name] = props
        [variant] = props["Variants"]
        assert variant["ModelId"] == sandbox.config.text_model.model_id
        text = variant["TemplateConfiguration"]["Text"]
        assert text["Text"] == files[name].template
        assert [v["Name"] for v in text["InputVariables"]] == list(files[name].variables)
        assert any(v["Properties"]["PromptArn"] == {"Fn::GetAtt": [logical_id, "Arn"]} for v in versions.values())
    assert set(by_name) == set(files)


def test_prompt_version_changes_when_its_template_changes(sandbox: Any, template: dict[str, Any]) -> None:
    descriptions = {v["Properties"]["Description"] for v in resources(template, "AWS::Bedrock::PromptVersion").values()}
    assert descriptions == {f"template {t.digest} model {sandbox.config.text_model.model_id}" for t in load_templates()}


# --- Alarms, outputs, tags, stages --------------------------------------------------------------------


def test_alarms_cover_5xx_latency_errors_and_throttles_and_notify_the_topic(template: dict[str, Any]) -> None:
    topic_id, _ = only(template, "AWS::SNS::Topic")
    alarms = resources(template, "AWS::CloudWatch::Alarm").values()
    metrics = {(a["Properties"]["Namespace"], a["Properties"]["MetricName"]) for a in alarms}
    assert {
        ("AWS/ApiGateway", "5XXError"),
        ("AWS/ApiGateway", "Latency"),
        ("AWS/Lambda", "Errors"),
        ("AWS/Lambda", "Throttles"),
    } <= metrics
    for alarm in alarms:
        assert alarm["Properties"]["AlarmActions"] == [{"Ref": topic_id}]
        assert alarm["Properties"]["TreatMissingData"] == "notBreaching"


def test_alarm_topic_denies_non_tls_publishing(template: dict[str, Any]) -> None:
    _, policy = only(template, "AWS::SNS::TopicPolicy")
    denies = [s for s in policy["Properties"]["PolicyDocument"]["Statement"] if s["Effect"] == "Deny"]
    assert any(s["Condition"] == {"Bool": {"aws:SecureTransport": "false"}} for s in denies)


def test_outputs_name_api_region_guardrail_and_prompts(sandbox: Any) -> None:
    outputs = sandbox.template(STACK).find_outputs("*")
    assert {"ApiUrl", "Region", "GuardrailId", "GuardrailVersion", "ModelId"} <= set(outputs)
    assert len([o for o in outputs if o.startswith("Prompt") and o.endswith("Arn")]) == len(load_templates())


@pytest.mark.parametrize(
    "type_name", ["AWS::Lambda::Function", "AWS::IAM::Role", "AWS::ApiGateway::RestApi", "AWS::SNS::Topic"]
)
def test_resources_carry_kit_level_and_stage_tags(sandbox: Any, type_name: str) -> None:
    sandbox.template(STACK).all_resources_properties(
        type_name,
        {
            "Tags": Match.array_with(
                [
                    {"Key": "kit", "Value": "genai-spectrum-kit"},
                    {"Key": "kit-level", "Value": "1-prompt"},
                    {"Key": "kit-stage", "Value": "sandbox"},
                ]
            )
        },
    )


def test_bedrock_prompt_and_guardrail_are_tagged(template: dict[str, Any]) -> None:
    for _, prompt in resources(template, "AWS::Bedrock::Prompt").items():
        assert prompt["Properties"]["Tags"]["kit-level"] == "1-prompt"
    _, guardrail = only(template, "AWS::Bedrock::Guardrail")
    assert {"Key": "kit-stage", "Value": "sandbox"} in guardrail["Properties"]["Tags"]


def test_sandbox_deletes_logs_and_prod_retains_them(sandbox: Any, prod: Any) -> None:
    for synth, policy, days in ((sandbox, "Delete", 7), (prod, "RetainExceptOnCreate", 365)):
        groups = resources(synth.templates[STACK], "AWS::Logs::LogGroup")
        assert groups
        for group in groups.values():
            assert group["DeletionPolicy"] == policy
            assert group["Properties"]["RetentionInDays"] == days


def test_prod_stage_names_and_tags_differ_from_sandbox(prod: Any) -> None:
    assert prod.stacks[STACK].stack_name == f"{STACK}-prod"
    _, guardrail = only(prod.templates[STACK], "AWS::Bedrock::Guardrail")
    assert guardrail["Properties"]["Name"] == "genai-kit-prod-guardrail"


def test_no_default_temperature_is_written_as_the_word_the_function_reads() -> None:
    from prompt_api.settings import NO_TEMPERATURE

    assert temperature_env(None) == NO_TEMPERATURE
    assert temperature_env(0.25) == "0.25"
