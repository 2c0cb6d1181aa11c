"""The shared parts on their own: secure bucket, model access, nag helper, schema conversion."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aws_cdk as cdk
import pytest
from aws_cdk import aws_iam as iam
from cdk_nag import AwsSolutionsChecks

from stacks.shared.facts import PROFILE_GEOGRAPHIES
from stacks.shared.model_access import model_invoke_statements
from stacks.shared.nag import suppress
from stacks.shared.secure_bucket import SecureBucket
from stacks.shared.settings import parse_model_id
from tests.conftest import cdk_json_context
from tests.infra.helpers import only, resources
from tests.infra.test_config import build


def feature_flags() -> dict[str, Any]:
    """cdk.json's CDK feature flags, so test apps behave like the real one."""
    return {k: v for k, v in cdk_json_context().items() if k.startswith("@")}


@pytest.fixture(scope="module")
def parts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One app, synthesized once: the secure bucket in both stages, checked by cdk-nag."""
    app = cdk.App(context=feature_flags(), outdir=str(tmp_path_factory.mktemp("parts")))
    env = cdk.Environment(region="us-east-1")
    for stage in ("sandbox", "prod"):
        stack = cdk.Stack(app, f"Parts-{stage}", env=env)
        SecureBucket(stack, "Data", deployment=build(stage=stage).deployment, versioned=True, event_bridge_enabled=True)
    cdk.Aspects.of(app).add(AwsSolutionsChecks(verbose=True))
    assembly = app.synth()
    out: dict[str, Any] = {}
    for stack in (c for c in app.node.children if isinstance(c, cdk.Stack)):
        artifact = assembly.get_stack_artifact(stack.artifact_id)
        out[stack.node.id] = {
            "template": artifact.template,
            "findings": [str(m.entry.data) for m in artifact.messages if "AwsSolutions-" in str(m.entry.data)],
        }
    return out


def _bucket(template: dict[str, Any], prefix: str) -> dict[str, Any]:
    return next(v for k, v in resources(template, "AWS::S3::Bucket").items() if k.startswith(prefix))


@pytest.mark.parametrize("stage", ["sandbox", "prod"])
def test_secure_bucket_blocks_public_access_encrypts_versions_and_logs(parts: dict[str, Any], stage: str) -> None:
    template = parts[f"Parts-{stage}"]["template"]
    props = _bucket(template, "DataBucket")["Properties"]
    assert props["PublicAccessBlockConfiguration"] == {
        "BlockPublicAcls": True,
        "BlockPublicPolicy": True,
        "IgnorePublicAcls": True,
        "RestrictPublicBuckets": True,
    }
    assert props["BucketEncryption"]["ServerSideEncryptionConfiguration"][0]["ServerSideEncryptionByDefault"]
    assert props["VersioningConfiguration"] == {"Status": "Enabled"}
    assert props["LoggingConfiguration"]["DestinationBucketName"]["Ref"].startswith("DataAccessLogs")
    _, notifications = only(template, "Custom::S3BucketNotifications")
    assert notifications["Properties"]["NotificationConfiguration"] == {"EventBridgeConfiguration": {}}


@pytest.mark.parametrize("stage", ["sandbox", "prod"])
def test_secure_bucket_denies_requests_without_tls(parts: dict[str, Any], stage: str) -> None:
    template = parts[f"Parts-{stage}"]["template"]
    policies = resources(template, "AWS::S3::BucketPolicy").values()
    assert len(policies) == 2  # the data bucket and its access-log bucket
    for policy in policies:
        denies = [s for s in policy["Properties"]["PolicyDocument"]["Statement"] if s["Effect"] == "Deny"]
        assert any(s["Condition"] == {"Bool": {"aws:SecureTransport": "false"}} for s in denies)


def test_sandbox_buckets_are_destroyed_with_their_objects(parts: dict[str, Any]) -> None:
    template = parts["Parts-sandbox"]["template"]
    for bucket in resources(template, "AWS::S3::Bucket").values():
        assert bucket["DeletionPolicy"] == "Delete"
    assert len(resources(template, "Custom::S3AutoDeleteObjects")) == 2


def test_prod_buckets_are_retained_and_never_emptied(parts: dict[str, Any]) -> None:
    template = parts["Parts-prod"]["template"]
    for bucket in resources(template, "AWS::S3::Bucket").values():
        assert bucket["DeletionPolicy"] == "Retain" and bucket["UpdateReplacePolicy"] == "Retain"
    assert not resources(template, "Custom::S3AutoDeleteObjects")


@pytest.mark.parametrize("stack", ["Parts-sandbox", "Parts-prod"])
def test_shared_parts_pass_cdk_nag(parts: dict[str, Any], stack: str) -> None:
    assert parts[stack]["findings"] == []


def _canary(tmp_path: Path, *, suppressed: bool) -> str:
    app = cdk.App(context=feature_flags(), outdir=str(tmp_path))
    canary = cdk.Stack(app, "Canary", env=cdk.Environment(region="us-east-1"))
    bucket = cdk.aws_s3.Bucket(canary, "PlainBucket")
    role = iam.Role(canary, "WideRole", assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"))
    role.add_to_policy(iam.PolicyStatement(actions=["bedrock:*"], resources=["*"]))
    if suppressed:
        reason = "Canary: proves that a narrow, reasoned suppression is honoured."
        suppress(bucket, "AwsSolutions-S1", reason)
        suppress(bucket, "AwsSolutions-S10", reason)
        suppress(role.node.find_child("DefaultPolicy"), "AwsSolutions-IAM5", reason, applies_to=["Action::bedrock:*"])
    cdk.Aspects.of(app).add(AwsSolutionsChecks(verbose=True))
    artifact = app.synth().get_stack_by_name("Canary")
    # Errors on the stack: the CDK CLI refuses to synthesize or deploy it (stacks/shared/regions.py says why the
    # app itself does not fail on them).
    return "\n".join(str(m.entry.data) for m in artifact.messages if str(m.level).endswith("ERROR"))


def test_canary_bad_constructs_are_still_flagged(tmp_path: Path) -> None:
    # Given a bucket without logs or TLS enforcement and a role with wildcards, When synthesized with the
    # kit's checks, Then each rule is an error on the stack.
    errors = _canary(tmp_path, suppressed=False)
    for finding in (
        "AwsSolutions-S1:",
        "AwsSolutions-S10:",
        "AwsSolutions-IAM5[Action::bedrock:*]",
        "AwsSolutions-IAM5[Resource::*]",
    ):
        assert finding in errors


def test_canary_suppressions_cover_only_what_they_name(tmp_path: Path) -> None:
    # The IAM5 suppression names the action wildcard only, so the resource wildcard is still reported.
    message = _canary(tmp_path, suppressed=True)
    assert "AwsSolutions-IAM5[Resource::*]" in message
    assert "AwsSolutions-IAM5[Action::bedrock:*]" not in message
    assert "AwsSolutions-S10:" not in message and "AwsSolutions-S1:" not in message


# --- model access ---------------------------------------------------------------------------------------


def _statements(model_id: str, region: str) -> list[dict[str, Any]]:
    stack = cdk.Stack(
        cdk.App(context=feature_flags()), "Grants", env=cdk.Environment(region=region, account="111122223333")
    )
    model = parse_model_id("text_model_id", model_id)
    return [stack.resolve(s.to_statement_json()) for s in model_invoke_statements(stack, model)]


def test_a_foundation_model_gets_one_statement_in_the_stack_region() -> None:
    [statement] = _statements("amazon.nova-micro-v1:0", "eu-west-1")
    assert statement["Resource"] == [
        "arn:aws:bedrock:eu-west-1::foundation-model/amazon.nova-micro-v1:0",
        "arn:aws:bedrock:eu-west-1:111122223333:project/default",  # Converse authorizes the project too
    ]
    assert statement["Action"] == "bedrock:InvokeModel"
    assert "Condition" not in statement


def test_an_eu_profile_grants_the_profile_and_every_eu_destination_through_it() -> None:
    profile, destinations = _statements("eu.amazon.nova-lite-v1:0", "eu-central-1")
    profile_arn = "arn:aws:bedrock:eu-central-1:111122223333:inference-profile/eu.amazon.nova-lite-v1:0"
    assert profile["Resource"] == [profile_arn, "arn:aws:bedrock:eu-central-1:111122223333:project/default"]
    assert destinations["Resource"] == [
        f"arn:aws:bedrock:{r}::foundation-model/amazon.nova-lite-v1:0" for r in PROFILE_GEOGRAPHIES["eu"]
    ]
    assert destinations["Condition"] == {"StringEquals": {"bedrock:InferenceProfileArn": profile_arn}}


# --- nag helper and schema conversion -------------------------------------------------------------------


def test_suppress_demands_a_reason_and_applies_to_for_granular_rules() -> None:
    stack = cdk.Stack(cdk.App(), "Nag")
    with pytest.raises(ValueError, match="must explain"):
        suppress(stack, "AwsSolutions-S1", "because")
    with pytest.raises(ValueError, match="granular"):
        suppress(stack, "AwsSolutions-IAM5", "X-Ray actions support no resource-level permissions at all.")
    with pytest.raises(ValueError, match="not an AwsSolutions rule"):
        suppress(stack, "HIPAA-S1", "A reason that is long enough to explain the decision.")


def test_lambda_asset_root_holds_only_function_packages() -> None:
    from stacks.shared.python_function import LAMBDAS_DIR

    assert not (LAMBDAS_DIR / "__init__.py").exists()
    assert (LAMBDAS_DIR / "level1_prompt" / "prompt_api" / "handler.py").is_file()
    assert isinstance(LAMBDAS_DIR, Path)


@pytest.mark.parametrize("qualifier", [None, "corpqual"])
def test_the_bucket_deployment_suppression_follows_the_bootstrap_qualifier(
    tmp_path: Path, qualifier: str | None
) -> None:
    """An account bootstrapped with its own qualifier (@aws-cdk/core:bootstrapQualifier) has asset bucket
    cdk-<qualifier>-assets-...: the suppression of CDK's copy grants names that bucket, or synth fails with IAM5."""
    from aws_cdk import aws_s3 as s3
    from aws_cdk import aws_s3_deployment as s3deploy

    from stacks.shared.nag import suppress_bucket_deployment

    context = {**feature_flags(), **({"@aws-cdk/core:bootstrapQualifier": qualifier} if qualifier else {})}
    app = cdk.App(context=context, outdir=str(tmp_path))
    stack = cdk.Stack(app, "Copy", env=cdk.Environment(region="us-east-1"))
    bucket = s3.Bucket(stack, "Target")
    copy = s3deploy.BucketDeployment(
        stack, "Copy", sources=[s3deploy.Source.data("a.txt", "a")], destination_bucket=bucket
    )
    suppress_bucket_deployment(copy, bucket)
    cdk.Aspects.of(app).add(AwsSolutionsChecks(verbose=True))
    messages = app.synth().get_stack_artifact(stack.artifact_id).messages
    unsuppressed = [str(m.entry.data) for m in messages if "AwsSolutions-IAM5" in str(m.entry.data)]
    assert unsuppressed == []


@pytest.mark.parametrize("stack_id", ["GenAiKit-1-Prompt", "GenAiKit-2-Rag"])
def test_each_api_alarms_on_the_model_access_refusals_its_function_counts(sandbox: Any, stack_id: str) -> None:
    """A 403 model_access_denied is the deployment's or the account's fault and reaches every caller, but the API's
    5xx alarm does not count it: the function publishes ModelAccessDenied (common/resolver.py), and the alarm reads
    that metric in the namespace and under the service name the function writes it with."""
    template = sandbox.templates[stack_id]
    [alarm] = [
        a["Properties"]
        for a in resources(template, "AWS::CloudWatch::Alarm").values()
        if a["Properties"]["MetricName"] == "ModelAccessDenied"
    ]
    functions = [
        f["Properties"]["Environment"]["Variables"]
        for f in resources(template, "AWS::Lambda::Function").values()
        if "POWERTOOLS_SERVICE_NAME" in f["Properties"].get("Environment", {}).get("Variables", {})
    ]
    [api] = [v for v in functions if v["POWERTOOLS_SERVICE_NAME"] in {"prompt-api", "rag-api"}]
    assert alarm["Namespace"] == api["POWERTOOLS_METRICS_NAMESPACE"]
    assert alarm["Dimensions"] == [{"Name": "service", "Value": api["POWERTOOLS_SERVICE_NAME"]}]
    assert (alarm["Statistic"], alarm["Threshold"], alarm["ComparisonOperator"]) == (
        "Sum",
        1,
        "GreaterThanOrEqualToThreshold",
    )
    assert alarm["TreatMissingData"] == "notBreaching"


# API Gateway's REST integration timeout where a method sets no TimeoutInMillis: 29 seconds ("Integration timeout",
# https://docs.aws.amazon.com/apigateway/latest/developerguide/api-gateway-execution-service-limits-table.html).
REST_INTEGRATION_TIMEOUT_MS = 29_000


def test_the_functions_deadline_is_the_integration_timeout_of_every_api_method(each_stage: Any) -> None:
    # The API functions answer before GATEWAY_TIMEOUT_MS after the request arrived, less a margin for the gateway's
    # own work (common/http.py): past the integration's timeout the caller gets the gateway's 504, not the kit's.
    from common.http import GATEWAY_MARGIN_MS, GATEWAY_TIMEOUT_MS

    timeouts = [
        resource["Properties"]["Integration"].get("TimeoutInMillis", REST_INTEGRATION_TIMEOUT_MS)
        for template in each_stage.templates.values()
        for resource in template["Resources"].values()
        if resource["Type"] == "AWS::ApiGateway::Method"
        and resource["Properties"].get("Integration", {}).get("Type") == "AWS_PROXY"
    ]
    assert len(timeouts) >= 4  # Level 1's and Level 2's routes
    assert set(timeouts) == {GATEWAY_TIMEOUT_MS}
    assert 0 < GATEWAY_MARGIN_MS < GATEWAY_TIMEOUT_MS // 10
