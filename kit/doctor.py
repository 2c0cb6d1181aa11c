"""``kit doctor``: is this account and region ready for the kit? One row per check, OK or FIX with what to do.

Checks: credentials (STS GetCallerIdentity), the region against the kit config, CDK bootstrap, Bedrock model
access for the text and embedding models, whether the fine-tuning base model can be customized in the region,
and the SageMaker service quotas of the Level 4 instance types. Exit status: 0 all OK, 1 something to fix,
2 a usage or configuration error.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import click
from rich.table import Table
from rich.text import Text

from kit import aws
from kit.aws import KitError, Target
from kit.smoke import console, remember_target, target_options

OK, FIX, SKIP = "OK", "FIX", "SKIP"
# Every kit template carries CDK's CheckBootstrapVersion rule, which refuses bootstrap versions below 6.
MIN_BOOTSTRAP_VERSION = 6
BOOTSTRAP_STACK = "CDKToolkit"
MODEL_ACCESS_FIX = "enable model access in the Amazon Bedrock console (Model access) for this account and region"


@dataclass(frozen=True)
class Check:
    name: str
    status: str  # OK | FIX | SKIP
    detail: str


def _fix_from(exc: BaseException, name: str, action: str, region: str) -> Check:
    return Check(name, FIX, aws.explain(exc, action, region) or f"{action} failed: {exc}")


def _guarded(name: str, action: str, region: str, run: Callable[[], Check]) -> Check:
    """Run one check; an AWS error it does not handle itself becomes its FIX row."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        return run()
    except (BotoCoreError, ClientError) as exc:
        return _fix_from(exc, name, action, region)
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
        return _fix_from(exc, name, "calling sts:GetCallerIdentity", target.region), None
    except KitError as exc:
        return Check(name, FIX, exc.message), None
    account = str(identity["Account"])
    wanted = target.config.account
    if wanted and wanted != account:
        detail = f"credentials are for account {account}, the kit config says {wanted}: switch profile or fix account"
        return Check(name, FIX, detail), account
    return Check(name, OK, f"account {account} as {identity.get('Arn', '?')}"), account


def check_region(target: Target) -> Check:
    name = "Region"
    try:
        ambient = aws.default_region(target.profile)
    except KitError as exc:
        return Check(name, FIX, exc.message)
    if ambient is None or ambient == target.region:
        source = "" if ambient else " (no default region in your profile or environment)"
        return Check(name, OK, f"{target.region}, as the kit config says{source}")
    return Check(
        name,
        FIX,
        f"your profile/environment uses {ambient} but the kit deploys to {target.region}: "
        f"export AWS_REGION={target.region}, or set region in cdk.json (or pass --region)",
    )


def check_bootstrap(target: Target, account: str) -> Check:
    name = "CDK bootstrap"
    command = f"npx cdk bootstrap aws://{account}/{target.region}"

    def run() -> Check:
        try:
            outputs = aws.stack_outputs(BOOTSTRAP_STACK, target.region, target.profile)
        except aws.StackNotDeployed:
            return Check(name, FIX, f"{target.region} is not bootstrapped: run {command}")
        version = outputs.get("BootstrapVersion", "")
        if version.isdigit() and int(version) < MIN_BOOTSTRAP_VERSION:
            return Check(name, FIX, f"bootstrap version {version} is too old: run {command}")
        return Check(name, OK, f"{BOOTSTRAP_STACK} in {target.region} (version {version or '?'})")

    return _guarded(name, "reading the CDKToolkit stack", target.region, run)


def has_operation(client: Any, operation: str) -> bool:
    """Whether the installed botocore knows ``operation`` for this client's service."""
    return operation in client.meta.service_model.operation_names


def check_model_access(target: Target, model_id: str, label: str) -> Check:
    """Model access through GetFoundationModelAvailability, or (older botocore) GetFoundationModel."""
    from botocore.exceptions import ClientError

    name = f"Model access: {label}"
    region = target.region
    bedrock = target.client("bedrock")

    def run() -> Check:
        try:
            if has_operation(bedrock, "GetFoundationModelAvailability"):
                return _availability(
                    name, model_id, region, bedrock.get_foundation_model_availability(modelId=model_id)
                )
            return _listed_and_readable(name, model_id, region, bedrock)
        except ClientError as exc:
            if aws.is_access_denied(exc):
                return Check(name, FIX, f"{model_id} is not authorized: {MODEL_ACCESS_FIX} (and allow bedrock in IAM)")
            if aws.error_code(exc) in ("ResourceNotFoundException", "ValidationException"):
                return Check(name, FIX, f"{model_id} is not offered in {region}: choose a model offered there")
            raise

    return _guarded(name, f"checking access to {model_id}", region, run)


def _availability(name: str, model_id: str, region: str, answer: Mapping[str, Any]) -> Check:
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
        return Check(name, FIX, f"{model_id}: {reason}: accept the offer again in the Bedrock console (Model access)")
    return Check(name, OK, f"{model_id} is available to this account in {region}")


def _listed_and_readable(name: str, model_id: str, region: str, bedrock: Any) -> Check:
    listed = {str(m["modelId"]) for m in bedrock.list_foundation_models()["modelSummaries"]}
    if model_id not in listed:
        return Check(name, FIX, f"{model_id} is not offered in {region}: choose a model offered there")
    bedrock.get_foundation_model(modelIdentifier=model_id)  # AccessDenied when the account may not use it
    return Check(name, OK, f"{model_id} is offered in {region} and readable (upgrade botocore for a full check)")


def check_customization(target: Target) -> Check:
    """The configured base model is offered for the configured customization type in the region."""
    from botocore.exceptions import ClientError

    ft = target.config.finetune
    name = f"Customization: {ft.base_model_id}"

    def run() -> Check:
        try:
            answer = target.client("bedrock").list_foundation_models(byCustomizationType=ft.customization_type)
        except ClientError as exc:
            if aws.is_access_denied(exc):
                return Check(
                    name, FIX, f"may not list Bedrock models (bedrock:ListFoundationModels): {MODEL_ACCESS_FIX}"
                )
            raise
        offered = {str(m["modelId"]) for m in answer["modelSummaries"]}
        if ft.base_model_id in offered or ft.foundation_model_id in offered:
            return Check(name, OK, f"{ft.customization_type} is offered for it in {target.region}")
        return Check(
            name,
            FIX,
            f"{ft.customization_type} of {ft.foundation_model_id} is not offered in {target.region}: "
            "set ft_base_model_id to a model customizable there (or change region)",
        )

    return _guarded(name, "listing customizable models", target.region, run)


def quota_needs(target: Target) -> dict[str, int]:
    """SageMaker quota name -> instances the configuration needs (at least 1 to use the type at all)."""
    settings = target.config.pretrain
    usage = "spot training job usage" if settings.job_spot else "training job usage"
    needs = {f"{settings.job_instance_type} for {usage}": max(settings.job_instance_count, 1)}
    cluster: dict[str, int] = {}
    for group in settings.groups:
        cluster[group.instance_type] = cluster.get(group.instance_type, 0) + group.count
    for instance_type, count in cluster.items():
        needs[f"{instance_type} for cluster usage"] = max(count, 1)
    return needs


def _quotas(client: Any, operation: str) -> dict[str, tuple[float, str]]:
    found: dict[str, tuple[float, str]] = {}
    for page in client.get_paginator(operation).paginate(ServiceCode="sagemaker"):
        for quota in page["Quotas"]:
            found[str(quota["QuotaName"]).lower()] = (float(quota.get("Value", 0)), str(quota.get("QuotaCode", "")))
    return found


def check_quotas(target: Target) -> list[Check]:
    """One row per quota the Level 4 instance types need; a value below the need is FIX with how to ask."""
    from botocore.exceptions import BotoCoreError, ClientError

    needs = quota_needs(target)
    quotas_client = target.client("service-quotas")
    try:
        applied = _quotas(quotas_client, "list_service_quotas")
        defaults: dict[str, tuple[float, str]] | None = None
    except (BotoCoreError, ClientError) as exc:
        if aws.is_access_denied(exc):
            detail = "may not read service quotas (servicequotas:ListServiceQuotas): check them in the console"
        else:
            detail = aws.explain(exc, "listing SageMaker quotas", target.region) or str(exc)
        return [Check(f"Quota: {quota}", FIX, detail) for quota in needs]
    rows = []
    for quota, needed in needs.items():
        name = f"Quota: {quota}"
        found = applied.get(quota.lower())
        if found is None:  # quotas without an applied value are listed only among the defaults
            if defaults is None:
                try:
                    defaults = _quotas(quotas_client, "list_aws_default_service_quotas")
                except (BotoCoreError, ClientError):
                    defaults = {}
            found = defaults.get(quota.lower())
        if found is None:
            detail = f"no SageMaker quota named {quota!r} in {target.region}: the type may not be offered here"
            rows.append(Check(name, FIX, detail))
            continue
        value, code = found
        if value >= needed:
            rows.append(Check(name, OK, f"{value:g} (the config needs {needed})"))
            continue
        rows.append(
            Check(
                name,
                FIX,
                f"{value:g}, the config needs {needed}: request it in Service Quotas > Amazon SageMaker > "
                f"{quota!r} (aws service-quotas request-service-quota-increase --service-code sagemaker "
                f"--quota-code {code} --desired-value {needed} --region {target.region})",
            )
        )
    return rows


def run_checks(target: Target) -> list[Check]:
    """Every check, in order; the AWS checks are skipped when the credentials do not work."""
    credentials, account = check_credentials(target)
    checks = [credentials, check_region(target)]
    config = target.config
    text = config.text_model
    profile = f" (via {text.model_id})" if text.is_inference_profile else ""
    if account is None:
        skipped = [
            "CDK bootstrap",
            f"Model access: {text.foundation_model_id}{profile}",
            f"Model access: {config.rag.embedding_model_id}",
            f"Customization: {config.finetune.base_model_id}",
            *(f"Quota: {quota}" for quota in quota_needs(target)),
        ]
        return checks + [Check(name, SKIP, "needs working credentials") for name in skipped]
    checks.append(check_bootstrap(target, account))
    checks.append(check_model_access(target, text.foundation_model_id, f"{text.foundation_model_id}{profile}"))
    checks.append(check_model_access(target, config.rag.embedding_model_id, config.rag.embedding_model_id))
    checks.append(check_customization(target))
    checks.extend(check_quotas(target))
    return checks


def render(checks: Iterable[Check]) -> Table:
    table = Table("Check", "Status", "Detail / what to do")
    styles = {OK: "green", FIX: "bold red", SKIP: "dim"}
    for check in checks:
        table.add_row(Text(check.name), Text(check.status, style=styles[check.status]), Text(check.detail))
    return table


@click.command()
@target_options
@click.pass_context
def doctor(ctx: click.Context, stage: str | None, region: str | None, profile: str | None, context_pairs: Any) -> None:
    """Check credentials, region, bootstrap, Bedrock model access and SageMaker quotas for the kit.

    Exit status: 0 when every check is OK, 1 when something needs fixing, 2 on a usage error.
    """
    target = remember_target(ctx, stage, region, profile, context_pairs)
    config = target.config  # a configuration error stops here with exit status 2
    out = console()
    out.print(Text(f"Kit stage {config.stage} in {config.region}", style="bold"))
    checks = run_checks(target)
    out.print(render(checks))
    to_fix = [check for check in checks if check.status != OK]
    if not to_fix:
        out.print(Text(f"All {len(checks)} checks passed.", style="green"))
        return
    fixes = sum(check.status == FIX for check in to_fix)
    out.print(Text(f"{fixes} to fix, {len(to_fix) - fixes} skipped.", style="red"))
    ctx.exit(1)
