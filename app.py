#!/usr/bin/env python3
"""The kit's CDK app: configuration enters here once, is validated, and is passed down to each level."""

from __future__ import annotations

import functools
import json
import os
import re
import sys
import time
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

import aws_cdk as cdk
from cdk_nag import AwsSolutionsChecks

from stacks.config import PERMISSIONS_BOUNDARY, ConfigError, KitConfig, load_config
from stacks.level0_account.api_gateway_account import ApiGatewayAccountStack, import_account_role
from stacks.level0_account.invocation_logging import InvocationLoggingStack
from stacks.level1_prompt.prompt_templates import PromptTemplate, load_templates
from stacks.level1_prompt.stack import PromptEngineeringStack
from stacks.level2_rag.stack import RagStack
from stacks.level3_finetune.sagemaker import SageMakerFineTuneStack
from stacks.level3_finetune.stack import FineTuneStack
from stacks.level4_pretrain.stack import PretrainClusterStack, PretrainJobsStack
from stacks.shared.facts import PINNED_POWERTOOLS_LAYER, STACK_IDS
from stacks.shared.regions import refuse_unavailable_types, refuse_without_powertools_layer
from stacks.shared.registry import config_errors, name_findings
from stacks.shared.settings import Problem


def build_app(
    context: Mapping[str, Any] | None = None,
    *,
    outdir: str | None = None,
    nag: bool = True,
    schema_validation: bool = True,
    only: Collection[str] | None = None,
) -> tuple[cdk.App, KitConfig]:
    """Build the app; ``context`` (tests) replaces the CLI's context. Raises ConfigError on bad config.

    ``nag=False`` leaves cdk-nag out and ``schema_validation=False`` CDK's CloudFormation validation (as
    ``CDK_VALIDATION=false`` and ``cdk synth --no-validation`` do);
    ``only`` builds just those stack ids and the stacks they need (the update-safety tests synthesize many
    variants of the stacks a key reaches, compare templates and check names themselves).
    """
    wanted = set(STACK_IDS.values()) if only is None else set(only)
    if unknown := wanted - set(STACK_IDS.values()):
        raise ValueError(f"unknown stack ids {sorted(unknown)}; known: {sorted(STACK_IDS.values())}")
    app = cdk.App(
        context=dict(context) if context is not None else None,
        outdir=outdir,
        builtin_cloud_formation_validation=schema_validation,
    )
    if schema_validation and os.environ.get("CDK_VALIDATION") != "false":
        cdk.Validations.of(app).add_plugins(_template_validation())
    # A refused permissions boundary and Level 1's prompt templates (prompts/*.json) are configuration too: their
    # mistakes are reported with every other config mistake, not before them.
    try:
        _permissions_boundary(app)
        early: list[Problem] = []
    except ConfigError as error:
        early = error.problems
    templates: list[PromptTemplate] = []
    if STACK_IDS["1"] in wanted:
        try:
            templates = load_templates()
        except ConfigError as error:
            early += error.problems
    # The CDK leaves out null context values: a key null in cdk.json (the stage decides) arrives absent.
    try:
        config = load_config(app.node.get_all_context(), pinned_layer_version=PINNED_POWERTOOLS_LAYER)
    except ConfigError as error:
        raise ConfigError.of([*early, *error.problems]) from None
    if early:
        raise ConfigError.of(early)
    env = cdk.Environment(region=config.region, account=config.account)
    # One per account and region: its stack name carries no stage, so every stage deployed there shares it.
    api_account = None
    if wanted & {STACK_IDS["0-apigw"], STACK_IDS["1"], STACK_IDS["2"]}:
        api_account = ApiGatewayAccountStack(
            app, STACK_IDS["0-apigw"], stack_name=STACK_IDS["0-apigw"], env=env, tags=dict(config.deployment.tags)
        )
    api_stacks: list[cdk.Stack] = []
    if STACK_IDS["1"] in wanted:
        api_stacks.append(
            PromptEngineeringStack(
                app,
                STACK_IDS["1"],
                stack_name=f"{STACK_IDS['1']}-{config.stage}",
                env=env,
                config=config,
                templates=templates,
            )
        )
    if STACK_IDS["2"] in wanted:
        api_stacks.append(
            RagStack(app, STACK_IDS["2"], stack_name=f"{STACK_IDS['2']}-{config.stage}", env=env, config=config)
        )
    for api_stack in api_stacks:  # their API stages log through the account's role: deploy it first
        assert api_account is not None
        api_stack.add_stack_dependency(api_account, "API Gateway logs through the account's CloudWatch role")
        import_account_role(api_stack)  # and keep it: no stage's destroy deletes it while this one exists
    fine_tune = None
    if STACK_IDS["3"] in wanted:
        fine_tune = FineTuneStack(
            app, STACK_IDS["3"], stack_name=f"{STACK_IDS['3']}-{config.stage}", env=env, config=config
        )
    if STACK_IDS["3-sagemaker"] in wanted:
        SageMakerFineTuneStack(
            app,
            STACK_IDS["3-sagemaker"],
            stack_name=f"{STACK_IDS['3-sagemaker']}-{config.stage}",
            env=env,
            config=config,
        )
    # Level 4: the zero-idle training-job path stands alone unless tj_in_cluster_vpc puts it in the cluster's VPC
    # (the jobs stack decides; built alone, it brings the cluster stack only when it needs its network).
    cluster = None
    if STACK_IDS["4-cluster"] in wanted or (STACK_IDS["4-jobs"] in wanted and config.pretrain.job_in_cluster_vpc):
        cluster = PretrainClusterStack(
            app, STACK_IDS["4-cluster"], stack_name=f"{STACK_IDS['4-cluster']}-{config.stage}", env=env, config=config
        )
    if STACK_IDS["4-jobs"] in wanted:
        PretrainJobsStack(
            app,
            STACK_IDS["4-jobs"],
            stack_name=f"{STACK_IDS['4-jobs']}-{config.stage}",
            env=env,
            config=config,
            network=cluster.network if cluster is not None else None,
        )
    # Opt-in: one account-level setting per account and region, so one stack whatever the stage (its name carries
    # none): a second stage's copy would create the same SSM parameter name and fight over the one setting.
    if STACK_IDS["0-logging"] in wanted and config.invocation_logging:
        logging_stack = InvocationLoggingStack(
            app, STACK_IDS["0-logging"], stack_name=STACK_IDS["0-logging"], env=env, config=config
        )
        # Distillation from invocation logs reads the logging bucket's name from the SSM parameter this stack
        # creates, as an SSM parameter type CloudFormation resolves at deploy time: deploy the logging stack first.
        if fine_tune is not None and fine_tune.reads_invocation_logs_parameter:
            fine_tune.add_stack_dependency(logging_stack, "reads the invocation-logs bucket from its SSM parameter")
    # A stack whose resource types the region's CloudFormation lacks, or whose functions' Powertools layer it lacks, is
    # refused alone (stacks/shared/regions.py).
    for stack in app.node.children:
        if isinstance(stack, cdk.Stack):
            refuse_unavailable_types(stack, config.region)
            refuse_without_powertools_layer(stack, config.region)
    if nag:
        cdk.Aspects.of(app).add(AwsSolutionsChecks(verbose=True))
    return app, config


@functools.cache
def _template_validation() -> cdk.CloudFormationValidatePlugin:
    """CDK's CloudFormation validation (registry schemas and the engine's built-in rules) without the CDK's default
    Rego rules, which check GameLift resources only and need a second engine: about 0.5 s to build and 0.4 s to
    run per synth of the kit, on a 3.5 s synth of an empty app (BENCHMARKS.md). One per process, as the CDK keeps
    its own default; tests/infra/test_template_validation.py holds the rules left out to types the kit lacks."""
    return cdk.CloudFormationValidatePlugin(include_default_rules=False)


# The CDK's own context key for a permissions boundary on every role the app creates, the CDK's helper roles
# included: {"name": "<policy name>"} or {"arn": "<policy ARN>"}
# (https://docs.aws.amazon.com/cdk/v2/guide/customize-permissions-boundaries.html). Organizations often require one.
# The key is PERMISSIONS_BOUNDARY (stacks/config.py, which refuses a near miss of it).
# A managed policy's name: IAM CreatePolicy's PolicyName (botocore's iam model: 1-128 of [\w+=,.@-]).
POLICY_NAME = re.compile(r"[\w+=,.@-]{1,128}")
# A managed policy's ARN: its optional path (botocore's iam model, policyPathType: segments of [A-Za-z0-9.,+@=_-])
# and its name (policyNameType).
POLICY_ARN = re.compile(r"arn:[a-z-]+:iam::(\d{12}|aws):policy/([A-Za-z0-9.,+@=_-]+/)*[\w+=,.@-]{1,128}")
BOUNDARY_ALLOWED = 'a policy name, a policy ARN, {"name": "<policy name>"} or {"arn": "<policy ARN>"}'
# The placeholders the CDK fills in a boundary's name or ARN (the guide above: cdk-${Qualifier}-PermissionsBoundary),
# with a value of their form each, for the check only.
BOUNDARY_PLACEHOLDERS = {
    "${Qualifier}": "hnb659fds",
    "${AWS::AccountId}": "123456789012",
    "${AWS::Region}": "us-east-1",
    "${AWS::Partition}": "aws",
}


def _permissions_boundary(app: cdk.App) -> None:
    """Accept the boundary as the CLI passes it, a string, which the CDK otherwise ignores without a word: a policy
    name or ARN as it is (-c @aws-cdk/core:permissionsBoundary=corp-boundary), or the CDK's JSON object. Anything
    else stops synth with the key and what it takes."""
    value = app.node.try_get_context(PERMISSIONS_BOUNDARY)
    if value is None:
        return
    parsed: Any = value
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("{"):
            try:
                parsed = json.loads(text)
            except ValueError:
                parsed = None
        else:
            parsed = {"arn": text} if text.startswith("arn:") else {"name": text}
    name, arn = (parsed.get("name"), parsed.get("arn")) if isinstance(parsed, dict) and len(parsed) == 1 else (0, 0)

    def filled(text: str) -> str:
        for placeholder, sample in BOUNDARY_PLACEHOLDERS.items():
            text = text.replace(placeholder, sample)
        return text

    valid_name = isinstance(name, str) and POLICY_NAME.fullmatch(filled(name))
    valid_arn = isinstance(arn, str) and POLICY_ARN.fullmatch(filled(arn))
    if not (valid_name or valid_arn):
        raise ConfigError(PERMISSIONS_BOUNDARY, value, BOUNDARY_ALLOWED)
    # The CDK fills ${Qualifier}, and ${AWS::Region} / ${AWS::AccountId} only from a stack's own environment; it
    # refuses the others at synth ("includes a pseudo parameter, which is not supported for environment agnostic
    # stacks": Stack.permissionsBoundaryArn, aws-cdk-lib core/lib/stack.js). The kit's stacks name their region
    # always and their account only when `account` is set; ${AWS::Partition} is never filled, in a name or an ARN.
    unfilled = [] if str(app.node.try_get_context("account") or "").strip() else ["${AWS::AccountId}"]
    unfilled += ["${AWS::Partition}"]
    left = [placeholder for placeholder in unfilled if placeholder in str(name if valid_name else arn)]
    if left:
        raise ConfigError(
            PERMISSIONS_BOUNDARY,
            value,
            f"{BOUNDARY_ALLOWED} without {' or '.join(left)}, which the CDK cannot fill here (write the value"
            + (", or set account" if "${AWS::AccountId}" in left else "")
            + ")",
        )
    app.node.set_context(PERMISSIONS_BOUNDARY, parsed)


def schema_violations(app: cdk.App) -> list[str]:
    """One readable line per value CloudFormation's resource schemas refuse, naming the config key behind it.

    CDK validates every template against the registry schemas at synth (the validateAgainstDefaultRules
    flag) but reports a failure as a stack trace; the templates are written by then, so read them and say
    which configuration value made the refused string.
    """
    outdir = Path(app.outdir)
    templates = {
        path.name.removesuffix(".template.json"): json.loads(path.read_text())
        for path in outdir.glob("*.template.json")
    }
    context = {k: v for k, v in app.node.get_all_context().items() if "@" not in k and ":" not in k}
    lines = config_errors(name_findings(templates, context), context)
    if lines:
        return lines
    report = outdir / "validation-report.json"  # a rule the kit's own reading does not cover: CDK's words
    if not report.exists():
        return []
    found = []
    for plugin in json.loads(report.read_text()).get("pluginReports", []):
        for violation in plugin.get("violations", []):
            paths = [c.get("constructPath", "?") for c in violation.get("violatingConstructs", [])]
            found.append(f"template error: {violation.get('description')} ({', '.join(paths[:3])})")
    return found


def validation_failed(outdir: Path, since: float = 0.0) -> bool:
    """Whether the validation report synth wrote (validation-report.json) at ``since`` or later has a plugin whose
    conclusion is failure (synth writes none when no validation runs, and leaves an older run's in the folder)."""
    report = outdir / "validation-report.json"
    if not report.exists() or report.stat().st_mtime < since:
        return False
    return any(
        plugin.get("conclusion") == "failure" for plugin in json.loads(report.read_text()).get("pluginReports", [])
    )


# CloudFormation reads a template of at most 1,000,000 bytes from S3, where `cdk deploy` uploads the file as synth
# wrote it, indented (https://docs.aws.amazon.com/AWSCloudFormation/latest/UserGuide/cloudformation-limits.html;
# cfn-lint's E1002 counts the same bytes). Prompt texts (up to 100,000 characters each) and long `tags` values grow
# a template past it.
TEMPLATE_BYTES_QUOTA = 1_000_000


def oversized_templates(assembly: Any, quota: int = TEMPLATE_BYTES_QUOTA) -> list[str]:
    """One config-error line per stack whose template, as written, is larger than CloudFormation reads."""
    found = []
    for stack in assembly.stacks:
        size = (Path(assembly.directory) / stack.template_file).stat().st_size
        if size > quota:
            allowed = (
                f"at most {quota:,} bytes, what CloudFormation reads: shorten or remove prompt templates "
                "(prompts/*.json, Level 1) or shorten `tags`"
            )
            found.append(ConfigError(f"the {stack.stack_name} template", f"{size:,} bytes", allowed).problems[0].line())
    return found


def main() -> int:
    try:
        app, _ = build_app()
    except ConfigError as err:  # every mistake, one line each
        print(err, file=sys.stderr)
        return 1
    started = time.time() - 1  # a report written by this synth, not one an earlier run left (mtime resolution)
    try:
        assembly = app.synth()
    except RuntimeError as err:
        lines = schema_violations(app) if "ValidationFailed" in str(err) else []
        if not lines:
            raise
        print("\n".join(lines), file=sys.stderr)
        return 1
    # Run by the CDK CLI (app mode "process"), a failed validation does not raise: CDK prints its report, naming
    # construct paths, and the app adds the line naming the config key.
    if validation_failed(Path(app.outdir), started) and (lines := schema_violations(app)):
        print("\n".join(lines), file=sys.stderr)
        return 1
    if lines := oversized_templates(assembly):
        print("\n".join(lines), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
