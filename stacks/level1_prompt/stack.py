"""Level 1 — prompt engineering: a secured API over Bedrock Converse, managed prompts, a guardrail on every call.

caller (SigV4) ──► API Gateway REST (IAM auth, validation, throttling, access logs, X-Ray)
                       │  POST /prompt · GET /templates · POST /templates/{name}
                       ▼
                   Lambda (Powertools) ──► Bedrock Converse (model or inference profile)
                       │                     ├─ Guardrail version on every call (judges the caller's text only)
                       │                     └─ templates: Prompt Management versions (GetPrompt), rendered
                       └──► CloudWatch metrics/logs ──► alarms ──► SNS topic
"""

from __future__ import annotations

import json
from typing import Any

from aws_cdk import CfnOutput, Stack
from aws_cdk import aws_bedrock as bedrock
from aws_cdk import aws_iam as iam
from constructs import Construct

from prompt_api.settings import NO_TEMPERATURE
from stacks.config import KitConfig
from stacks.level1_prompt.prompt_templates import PromptTemplate, catalog_json, output_id
from stacks.shared.alarms import FIVE_MINUTES, AlarmTopic
from stacks.shared.deployment import Deployment
from stacks.shared.facts import request_metadata
from stacks.shared.guardrail import KitGuardrail
from stacks.shared.model_access import grant_invoke_model
from stacks.shared.nag import suppress
from stacks.shared.python_function import PythonFunction
from stacks.shared.regions import refuse
from stacks.shared.rest_api import API_FUNCTION_TIMEOUT, JSON_OBJECT_BODY, ApiThrottle, RestApi
from stacks.shared.settings import (
    ModelRef,
    guardrail_region_problems,
    profile_region_problems,
)
from stacks.shared.stage import tag_stack

LEVEL = "1-prompt"
SERVICE_NAME = "prompt-api"  # the function's Powertools service: its logs and the dimension of its metrics


class PromptCatalog(Construct):
    """One managed prompt and one published version per template file, each for ``model``."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        deployment: Deployment,
        model: ModelRef,
        templates: list[PromptTemplate],
    ) -> None:
        super().__init__(scope, construct_id)
        self.templates = templates
        self.prompts: dict[str, bedrock.CfnPrompt] = {}
        self.versions: dict[str, bedrock.CfnPromptVersion] = {}
        for template in templates:
            inference = template.inference
            prompt = bedrock.CfnPrompt(
                self,
                f"{template.name}-prompt",
                name=deployment.resource_name(template.name),
                description=template.description,
                default_variant="default",
                variants=[
                    bedrock.CfnPrompt.PromptVariantProperty(
                        name="default",
                        template_type="TEXT",
                        model_id=model.model_id,
                        template_configuration=bedrock.CfnPrompt.PromptTemplateConfigurationProperty(
                            text=bedrock.CfnPrompt.TextPromptTemplateConfigurationProperty(
                                text=template.template,
                                input_variables=[
                                    bedrock.CfnPrompt.PromptInputVariableProperty(name=v) for v in template.variables
                                ],
                            )
                        ),
                        inference_configuration=bedrock.CfnPrompt.PromptInferenceConfigurationProperty(
                            text=bedrock.CfnPrompt.PromptModelInferenceConfigurationProperty(
                                temperature=inference.get("temperature"),
                                top_p=inference.get("topP"),
                                max_tokens=inference.get("maxTokens"),
                            )
                        ),
                    )
                ],
            )
            self.prompts[template.name] = prompt
            self.versions[template.name] = bedrock.CfnPromptVersion(
                self,
                f"{template.name}-version",
                prompt_arn=prompt.attr_arn,
                # Description is create-only, so a changed template publishes a new immutable version.
                description=f"template {template.digest} model {model.model_id}",
            )
        # load_templates refused a catalog over CATALOG_ENV_BUDGET with the other configuration mistakes.

    @property
    def catalog_json(self) -> str:
        """The PROMPT_CATALOG the function reads: name -> version ARN, description, variables."""
        return catalog_json(self.templates, lambda name: self.versions[name].attr_arn)

    def grant_read(self, role: iam.Role) -> None:
        """The function reads each prompt version (GetPrompt) and renders it itself, so that the guardrail
        judges only the caller's values (guardContent blocks); the call then goes to the configured model, which
        ``grant_invoke_model`` covers. Converse with a prompt ARN as modelId (InvokeModel/RenderPrompt on the
        prompt) is not used. GetPrompt is authorized on the prompt and its version (Service Authorization
        Reference: https://docs.aws.amazon.com/service-authorization/latest/reference/list_amazonbedrock.html).

        Every version of the kit's own prompts (``<prompt ARN>:*``), not only the current one: a changed template
        replaces its version, the role's policy is updated before the function's environment, and until then a
        running instance still reads the old version, which CloudFormation deletes only at cleanup.
        """
        resources = [p.attr_arn for p in self.prompts.values()] + [f"{p.attr_arn}:*" for p in self.prompts.values()]
        role.add_to_policy(
            iam.PolicyStatement(sid="ReadManagedPrompts", actions=["bedrock:GetPrompt"], resources=resources)
        )
        stack = Stack.of(self)
        suppress(
            role.node.find_child("DefaultPolicy"),
            "AwsSolutions-IAM5",
            "GetPrompt on the versions of the kit's own prompts: a deploy that changes a template replaces its "
            "version before the function's environment names the new one, and a running instance reads the old one",
            applies_to=[f"Resource::<{stack.get_logical_id(p)}.Arn>:*" for p in self.prompts.values()],
        )


class PromptEngineeringStack(Stack):
    """``GenAiKit-1-Prompt``: the API, the function, the guardrail, the prompt catalog and the alarms."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: KitConfig,
        templates: list[PromptTemplate],
        **kwargs: Any,
    ) -> None:
        super().__init__(
            scope,
            construct_id,
            description="genai-spectrum-kit Level 1: prompt engineering on Amazon Bedrock",
            **kwargs,
        )
        # Every problem at once: the text model the region cannot call, a guardrail tier no profile serves there.
        problems = [
            *profile_region_problems("text_model_id", config.text_model, self.region),
            *guardrail_region_problems(config.guardrail, self.region),
        ]
        if refuse(self, problems):
            return  # an empty stand-in with the errors
        deployment = config.deployment
        tag_stack(self, deployment, LEVEL)

        guardrail = KitGuardrail(
            self,
            "Guardrail",
            deployment=deployment,
            settings=config.guardrail,
            name="guardrail",
            applied_to="Level 1 call",
        )
        catalog = PromptCatalog(self, "Prompts", deployment=deployment, model=config.text_model, templates=templates)

        handler = PythonFunction(
            self,
            "PromptFunction",
            deployment=deployment,
            handler="prompt_api.handler.handler",
            description="Level 1 prompt API: Bedrock Converse with a guardrail on every call",
            service_name=SERVICE_NAME,
            timeout=API_FUNCTION_TIMEOUT,
            memory_size=256,
            environment={
                "MODEL_ID": config.text_model.model_id,
                "GUARDRAIL_ID": guardrail.guardrail.attr_guardrail_id,
                "GUARDRAIL_VERSION": guardrail.version.attr_version,
                "PROMPT_CATALOG": catalog.catalog_json,
                "DEFAULT_TEMPERATURE": temperature_env(config.prompt.text_temperature),
                "DEFAULT_MAX_TOKENS": str(config.prompt.text_max_tokens),
                "REQUEST_METADATA": json.dumps(request_metadata(deployment.name_prefix, deployment.stage)),
            },
        )
        grant_invoke_model(handler.role, config.text_model)
        guardrail.grant_apply(handler.role)
        catalog.grant_read(handler.role)

        rest = RestApi(
            self,
            "PromptApi",
            deployment=deployment,
            throttle=ApiThrottle(rate=config.api_throttle_rate, burst=config.api_throttle_burst),
            description="Level 1: prompts and managed templates",
        )
        body = rest.body_model("JsonObjectBody", JSON_OBJECT_BODY)
        prompt = rest.api.root.add_resource("prompt")
        rest.add_lambda_method(prompt, "POST", handler.function, body=body)
        templates_resource = rest.api.root.add_resource("templates")
        rest.add_lambda_method(templates_resource, "GET", handler.function)
        one_template = templates_resource.add_resource("{name}")
        rest.add_lambda_method(one_template, "POST", handler.function, body=body, path_parameters=("name",))

        alarms = AlarmTopic(self, "Alarms", deployment=deployment)
        alarms.api_alarms(self, rest.api, label="Level 1", service=SERVICE_NAME, namespace=deployment.metrics_namespace)
        alarms.alarm(
            self,
            "FunctionErrorsAlarm",
            metric=handler.function.metric_errors(period=FIVE_MINUTES, statistic="Sum"),
            threshold=1,
            description="Level 1 function raised unhandled errors",
        )
        alarms.alarm(
            self,
            "FunctionThrottlesAlarm",
            metric=handler.function.metric_throttles(period=FIVE_MINUTES, statistic="Sum"),
            threshold=1,
            description="Level 1 function invocations were throttled (concurrency limit)",
        )

        self.api = rest.api
        self.function = handler.function
        self.alarm_topic = alarms.topic
        self.guardrail = guardrail
        self.catalog = catalog

        CfnOutput(
            self, "ApiUrl", value=rest.api.url, description="Base URL of the Level 1 API (SigV4, service execute-api)"
        )
        CfnOutput(self, "Region", value=self.region)
        CfnOutput(self, "ModelId", value=config.text_model.model_id)
        CfnOutput(self, "GuardrailId", value=guardrail.guardrail.attr_guardrail_id)
        CfnOutput(self, "GuardrailVersion", value=guardrail.version.attr_version)
        CfnOutput(self, "AlarmTopicArn", value=alarms.topic.topic_arn)
        for name, version in catalog.versions.items():
            CfnOutput(
                self,
                output_id(name),
                value=version.attr_arn,
                description=f"Prompt version ARN of template '{name}'",
            )


def temperature_env(value: float | None) -> str:
    """DEFAULT_TEMPERATURE: the number, or the function's own word for none (prompt_api.settings.NO_TEMPERATURE)
    when the deployment sends no default temperature."""
    return NO_TEMPERATURE if value is None else str(value)
