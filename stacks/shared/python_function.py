"""A Python Lambda function with the kit's defaults and a role that grants nothing by default."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from aws_cdk import Duration, IgnoreMode
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from constructs import Construct

from stacks.config import KitConfig
from stacks.shared.nag import suppress
from stacks.shared.stage import log_group

LAMBDAS_DIR = Path(__file__).resolve().parents[2] / "lambdas"
RUNTIME = lambda_.Runtime.PYTHON_3_14
ARCHITECTURE = lambda_.Architecture.ARM_64
POWERTOOLS_LAYER_ACCOUNT = "017000801446"  # publisher of the Powertools for AWS Lambda managed layers

# The shared code every function's asset carries next to the function's own package (lambdas/common).
SHARED_PACKAGES = ("common",)
_CACHES = ["__pycache__/", "*.pyc", ".pytest_cache/", ".mypy_cache/"]


def powertools_layer_arn(config: KitConfig) -> str:
    python = f"python{RUNTIME.name.removeprefix('python').replace('.', '')}"
    return (
        f"arn:aws:lambda:{config.region}:{POWERTOOLS_LAYER_ACCOUNT}:layer:"
        f"AWSLambdaPowertoolsPythonV3-{python}-{ARCHITECTURE.name}:{config.powertools_layer_version}"
    )


def function_package(handler: str) -> str:
    """The package under lambdas/ a handler string names (``prompt_api.handler.handler`` -> ``prompt_api``)."""
    package = handler.split(".", 1)[0]
    if package in SHARED_PACKAGES or not (LAMBDAS_DIR / package / "__init__.py").is_file():
        raise ValueError(f"handler {handler!r} names no function package under {LAMBDAS_DIR}")
    return package


def asset_excludes(package: str) -> list[str]:
    """gitignore-style patterns that leave ``package`` and the shared packages of lambdas/ and nothing else.

    The function's asset is lambdas/ with every other entry excluded: no bundling, no Docker, no copy. The
    handler string stays the import path it is in tests, and the asset hash covers only the files shipped,
    so editing one function's package redeploys that function alone. Anchored names (``/rag_api``) match
    only entries of lambdas/ itself (IgnoreMode.GIT reads them as .gitignore lines:
    https://docs.aws.amazon.com/cdk/api/v2/docs/aws-cdk-lib.IgnoreMode.html).
    """
    shipped = {package, *SHARED_PACKAGES}
    others = sorted(entry.name for entry in LAMBDAS_DIR.iterdir() if entry.name not in shipped)
    return [*(f"/{name}" for name in others), *_CACHES]


class PythonFunction(Construct):
    """arm64, the newest Python runtime, JSON logs to an explicit log group, X-Ray active, Powertools layer.

    ``handler`` is a dotted path inside ``lambdas/`` (e.g. ``prompt_api.handler.handler``), the same path
    the tests import; the asset holds that package and lambdas/common only (:func:`asset_excludes`).
    ``role`` starts with write access to its own log group only; callers add grants.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: KitConfig,
        handler: str,
        description: str,
        service_name: str,
        environment: Mapping[str, str] | None = None,
        timeout: Duration | None = None,
        memory_size: int = 512,
    ) -> None:
        super().__init__(scope, construct_id)
        self.log_group: logs.LogGroup = log_group(self, "Logs", config)
        self.role = iam.Role(
            self,
            "Role",
            assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
            description=f"{description} (function role)",
        )
        # The log group exists before the function, so the role needs no logs:CreateLogGroup.
        self.role.add_to_policy(
            iam.PolicyStatement(
                actions=["logs:CreateLogStream", "logs:PutLogEvents"],
                resources=[self.log_group.log_group_arn],
            )
        )
        self.function = lambda_.Function(
            self,
            "Function",
            runtime=RUNTIME,
            architecture=ARCHITECTURE,
            handler=handler,
            code=lambda_.Code.from_asset(
                str(LAMBDAS_DIR), exclude=asset_excludes(function_package(handler)), ignore_mode=IgnoreMode.GIT
            ),
            description=description,
            role=self.role,
            timeout=timeout or Duration.seconds(25),
            memory_size=memory_size,
            tracing=lambda_.Tracing.ACTIVE,
            log_group=self.log_group,
            logging_format=lambda_.LoggingFormat.JSON,
            application_log_level_v2=lambda_.ApplicationLogLevel.INFO,
            system_log_level_v2=lambda_.SystemLogLevel.WARN,
            layers=[lambda_.LayerVersion.from_layer_version_arn(self, "Powertools", powertools_layer_arn(config))],
            environment={
                "POWERTOOLS_SERVICE_NAME": service_name,
                "POWERTOOLS_METRICS_NAMESPACE": config.resource_name("kit"),
                **(environment or {}),
            },
        )
        suppress(
            self.role.node.find_child("DefaultPolicy"),
            "AwsSolutions-IAM5",
            "X-Ray PutTraceSegments and PutTelemetryRecords support no resource-level permissions; "
            "Lambda's active tracing needs them on '*'.",
            applies_to=["Resource::*"],
        )
