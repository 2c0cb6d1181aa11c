"""A Bedrock guardrail from the kit's guardrail settings, and a published version of it."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from aws_cdk import Annotations, Stack
from aws_cdk import aws_bedrock as bedrock
from aws_cdk import aws_iam as iam
from constructs import Construct

from stacks.shared.deployment import Deployment
from stacks.shared.settings import GuardrailSettings, guardrail_profile, guardrail_region_problems

_CONTENT_FILTERS = ("SEXUAL", "VIOLENCE", "HATE", "INSULTS", "MISCONDUCT")
# Bump when the guardrail's fixed parts below (messages, topic text) change, to publish a new version; a test
# (tests/infra/test_guardrail_tier.py, RENDERED) fails when the rendered guardrail changes under the same revision.
_GUARDRAIL_REVISION = 2


class KitGuardrail(Construct):
    """A guardrail from the settings and a published version of it (a new version whenever the settings change)."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        deployment: Deployment,
        settings: GuardrailSettings,
        name: str,
        applied_to: str,
    ) -> None:
        super().__init__(scope, construct_id)
        stack = Stack.of(self)
        # The Standard tier runs through the region's guardrail profile; a region no profile serves gets the config
        # error on the stack that builds the guardrail (the CDK CLI then refuses to synthesize or deploy it).
        problems = guardrail_region_problems(settings, deployment.region)
        for problem in problems:
            Annotations.of(stack).add_error(problem.line())
        profile = guardrail_profile(deployment.region) if settings.tier == "standard" else None
        # The profile's ARN in the source region and in every region it may route to: ApplyGuardrail (and Converse or
        # RetrieveAndGenerate with the guardrail) needs the latter granted
        # (https://docs.aws.amazon.com/bedrock/latest/userguide/guardrail-profiles-permissions.html).
        self.profile_arns: list[str] = []
        if profile is not None:
            profile_id, destinations = profile
            self.profile_arns = [
                f"arn:{stack.partition}:bedrock:{region}:{stack.account}:guardrail-profile/{profile_id}"
                for region in dict.fromkeys((deployment.region, *destinations))
            ]
        # ContentFiltersTierName and TopicsTierName: CLASSIC (the default, left unset) or STANDARD.
        standard = bool(self.profile_arns)
        # Each filter and PII entity says what it does on each side: the input and output actions and switches are
        # optional and their defaults undocumented (CloudFormation PiiEntityConfig and ContentFilterConfig; botocore
        # bedrock GuardrailPiiEntityConfig), and a guardrail given only Action has been reported to deploy with the
        # input side off (awslabs/generative-ai-cdk-constructs#1138): both sides are set, on.
        filters: list[Any] = [
            bedrock.CfnGuardrail.ContentFilterConfigProperty(
                type=kind,
                input_strength=settings.content_filter_strength,
                output_strength=settings.content_filter_strength,
                input_action="BLOCK",
                input_enabled=True,
                output_action="BLOCK",
                output_enabled=True,
            )
            for kind in _CONTENT_FILTERS
        ]
        # Prompt attacks are judged on the input only; Bedrock requires NONE on the output side.
        filters.append(
            bedrock.CfnGuardrail.ContentFilterConfigProperty(
                type="PROMPT_ATTACK",
                input_strength=settings.prompt_attack_strength,
                output_strength="NONE",
                input_action="BLOCK",
                input_enabled=True,
            )
        )

        def pii_entity(kind: str, action: str) -> bedrock.CfnGuardrail.PiiEntityConfigProperty:
            return bedrock.CfnGuardrail.PiiEntityConfigProperty(
                type=kind,
                action=action,
                input_action=action,
                input_enabled=True,
                output_action=action,
                output_enabled=True,
            )

        pii = [pii_entity(kind, "ANONYMIZE") for kind in settings.pii_anonymize] + [
            pii_entity(kind, "BLOCK") for kind in settings.pii_block
        ]
        topics = (
            [
                bedrock.CfnGuardrail.TopicConfigProperty(
                    name="Investment advice",
                    type="DENY",
                    definition="Recommendations about buying, selling or holding specific securities, funds "
                    "or cryptocurrencies, or predictions of their returns.",
                    examples=[
                        "Which stocks should I buy this month?",
                        "Is it a good time to put my savings into bitcoin?",
                    ],
                )
            ]
            if settings.deny_investment_advice
            else []
        )
        self.guardrail = bedrock.CfnGuardrail(
            self,
            "Guardrail",
            name=deployment.resource_name(name),
            description=f"Applied to every {applied_to}: content filters, prompt attacks, PII, denied topics.",
            blocked_input_messaging="Sorry, this request was blocked by the kit's guardrail.",
            blocked_outputs_messaging="Sorry, the model's answer was blocked by the kit's guardrail.",
            content_policy_config=bedrock.CfnGuardrail.ContentPolicyConfigProperty(
                filters_config=filters,
                content_filters_tier_config=(
                    bedrock.CfnGuardrail.ContentFiltersTierConfigProperty(tier_name="STANDARD") if standard else None
                ),
            ),
            sensitive_information_policy_config=(
                bedrock.CfnGuardrail.SensitiveInformationPolicyConfigProperty(pii_entities_config=pii) if pii else None
            ),
            topic_policy_config=(
                bedrock.CfnGuardrail.TopicPolicyConfigProperty(
                    topics_config=topics,
                    topics_tier_config=(
                        bedrock.CfnGuardrail.TopicsTierConfigProperty(tier_name="STANDARD") if standard else None
                    ),
                )
                if topics
                else None
            ),
            # The system-defined guardrail profile the Standard tier runs through (GuardrailCrossRegionConfig).
            cross_region_config=(
                bedrock.CfnGuardrail.GuardrailCrossRegionConfigProperty(guardrail_profile_arn=self.profile_arns[0])
                if standard
                else None
            ),
        )
        # The settings the version publishes. The tier joins them only off its default, so that a guardrail on the
        # classic tier keeps the digest (and version) it had before the tier was a setting. On the Standard tier the
        # profile joins them too: it comes from the kit's table (facts.GUARDRAIL_PROFILES), not a setting, and
        # GetGuardrail answers crossRegionDetails for each version, so a version may keep the profile it was
        # published with. A kit release that serves the region through another profile then publishes a version
        # with it, the profile the role's ApplyGuardrailProfile grant names from then on.
        published = settings.model_dump(exclude={"tier"} if settings.tier == "classic" else None)
        fixed: list[object] = [_GUARDRAIL_REVISION] + ([profile[0]] if profile is not None else [])
        digest = hashlib.sha256(json.dumps([published, *fixed], sort_keys=True).encode()).hexdigest()[:16]
        self.version = bedrock.CfnGuardrailVersion(
            self,
            "Version",
            guardrail_identifier=self.guardrail.attr_guardrail_id,
            # Versions are immutable and Description is create-only: a changed digest publishes a new one.
            description=f"settings {digest}",
        )

    def grant_apply(self, role: iam.Role) -> None:
        """ApplyGuardrail on the guardrail (Converse and RetrieveAndGenerate with it, and ApplyGuardrail itself), and on
        the Standard tier also on its guardrail profile in the source and every destination region."""
        role.add_to_policy(
            iam.PolicyStatement(
                sid="ApplyGuardrail", actions=["bedrock:ApplyGuardrail"], resources=[self.guardrail.attr_guardrail_arn]
            )
        )
        if self.profile_arns:
            role.add_to_policy(
                iam.PolicyStatement(
                    sid="ApplyGuardrailProfile", actions=["bedrock:ApplyGuardrail"], resources=self.profile_arns
                )
            )
