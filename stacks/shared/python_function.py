"""A Python Lambda function with the kit's defaults and a role that grants nothing by default."""

from __future__ import annotations

import ast
import atexit
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

from aws_cdk import Duration
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from constructs import Construct

from stacks.shared.deployment import Deployment
from stacks.shared.nag import derive_wildcard_suppression
from stacks.shared.stage import log_group

REPO_ROOT = Path(__file__).resolve().parents[2]
LAMBDAS_DIR = REPO_ROOT / "lambdas"
RUNTIME = lambda_.Runtime.PYTHON_3_14
ARCHITECTURE = lambda_.Architecture.ARM_64
POWERTOOLS_LAYER_ACCOUNT = "017000801446"  # publisher of the Powertools for AWS Lambda managed layers
# The Regions where that account publishes the Powertools v3 layers for Python on arm64: the regions of its release
# workflows (powertools-lambda-python .github/workflows/reusable_deploy_v3_layer_stack.yml, and update_ssm.yml for
# the Regions added since: ap-southeast-5, ap-southeast-7, mx-central-1). Not ap-east-2, and not ap-southeast-6 (its
# request is still open: https://github.com/aws-powertools/powertools-lambda-python/issues/7355). Not me-central-1:
# Powertools stopped publishing there during the Region's 2026 outage (powertools-lambda-python issue #8022), and the
# update_ssm.yml of the Python 3.14 layers (the ones the kit's runtime takes) lists no me-central-1. A function whose
# layer version does not exist fails CreateFunction, so a stack with a kit function is refused elsewhere at synth
# (stacks/shared/regions.py); `kit doctor` checks the configured version in a deployed Region.
POWERTOOLS_LAYER_REGIONS = frozenset(
    {
        "af-south-1", "ap-east-1", "ap-northeast-1", "ap-northeast-2", "ap-northeast-3", "ap-south-1", "ap-south-2",
        "ap-southeast-1", "ap-southeast-2", "ap-southeast-3", "ap-southeast-4", "ap-southeast-5", "ap-southeast-7",
        "ca-central-1", "ca-west-1", "eu-central-1", "eu-central-2", "eu-north-1", "eu-south-1", "eu-south-2",
        "eu-west-1", "eu-west-2", "eu-west-3", "il-central-1", "mx-central-1",
        "sa-east-1", "us-east-1", "us-east-2", "us-west-1", "us-west-2",
    }
)  # fmt: skip
POWERTOOLS_LAYERS_PAGE = "https://docs.aws.amazon.com/powertools/python/latest/getting-started/lambda-layers/"

# The shared code every function's asset carries next to the function's own package (lambdas/common).
SHARED_PACKAGES = ("common",)
_CACHES = ("__pycache__", "*.pyc", ".pytest_cache", ".mypy_cache")


def powertools_layer_arn(deployment: Deployment) -> str:
    python = f"python{RUNTIME.name.removeprefix('python').replace('.', '')}"
    return (
        f"arn:aws:lambda:{deployment.region}:{POWERTOOLS_LAYER_ACCOUNT}:layer:"
        f"AWSLambdaPowertoolsPythonV3-{python}-{ARCHITECTURE.name}:{deployment.powertools_layer_version}"
    )


def package_dir(package: str, lambdas_dir: Path | None = None) -> Path:
    """The folder of a Lambda package: ``lambdas/common`` for the shared code, ``lambdas/<level>/<package>``
    for a function's own code (each level keeps its functions in its own folder)."""
    root = lambdas_dir or LAMBDAS_DIR
    found = [p.parent for p in (root / package / "__init__.py", *root.glob(f"*/{package}/__init__.py")) if p.is_file()]
    if len(found) != 1:
        raise ValueError(f"package {package!r} is in {len(found)} folders under {root}, not exactly one")
    return found[0]


def function_package(handler: str) -> str:
    """The function package a handler string names (``prompt_api.handler.handler`` -> ``prompt_api``)."""
    package = handler.split(".", 1)[0]
    try:
        found = package not in SHARED_PACKAGES and package_dir(package) is not None
    except ValueError:
        found = False
    if not found:
        raise ValueError(f"handler {handler!r} names no function package under {LAMBDAS_DIR}")
    return package


def module_file(module: str, root: Path | None = None) -> Path:
    """The source file of a dotted module name of the kit outside lambdas/ (``workloads.x.y`` ->
    ``workloads/x/y.py``) or of another function's package (``rag_ingest.names`` ->
    ``lambdas/level2_rag/rag_ingest/names.py``): ValueError when it is not one plain module file of the checkout."""
    parts = module.split(".")
    if not all(part.isidentifier() for part in parts) or parts[0] in ("lambdas", *SHARED_PACKAGES):
        raise ValueError(f"extra module {module!r} is not a dotted module name of the kit outside lambdas/")
    try:
        path = package_dir(parts[0], root and root / "lambdas").joinpath(*parts[1:]).with_suffix(".py")
    except ValueError:  # not a function package: a module of the checkout
        path = (root or REPO_ROOT).joinpath(*parts).with_suffix(".py")
    if not path.is_file():
        raise ValueError(f"extra module {module!r}: {path} is not a file")
    return path


_STAGING_ROOT: list[Path] = []


def _common_imports(path: Path) -> set[str]:
    """The lambdas/common modules ``path`` imports (``from common.x import``, ``from common import x``)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module == "common":
                found |= {alias.name for alias in node.names}
            elif node.module.startswith("common."):
                found.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            found |= {alias.name.split(".")[1] for alias in node.names if alias.name.startswith("common.")}
    return found


def function_sources(package: str) -> list[Path]:
    """The package's files and the lambdas/common modules they import, at any depth: the code the function runs
    (a shared module's calls count for the functions that use it, not for every function that ships
    lambdas/common). Read by the permission tests and by make bench."""
    files = sorted(package_dir(package).rglob("*.py"))  # package_dir raises for a package it cannot find
    if package == "common":
        return files
    common = package_dir("common")
    used: set[str] = set()
    pending = [name for path in files for name in _common_imports(path)]
    while pending:
        name = pending.pop()
        module = common / f"{name}.py"
        if name in used or not module.is_file():
            continue
        used.add(name)
        pending += _common_imports(module)
    return files + sorted(common / f"{name}.py" for name in used)


def stage_function_code(package: str, modules: Sequence[str] = ()) -> Path:
    """A fresh folder holding ``package`` and the shared packages side by side: the function's asset root.

    The function's own folder sits under its level (``lambdas/level2_rag/rag_api``) and the shared code under
    ``lambdas/common``; Lambda imports both from the asset root, so the two are copied next to each other
    (plain file copies: no bundling image, no Docker). The asset hash covers only the files shipped, so
    editing one function's package redeploys that function alone, and editing lambdas/common redeploys all.
    CDK copies the folder into the cloud assembly when the function is built; the copies here go at exit.

    ``modules`` names single modules from elsewhere in the checkout the function imports as well (for example
    ``workloads.finetune_sagemaker.chat_records``, rules a training program shares): each is copied alone to the
    same relative path, so it imports by the same dotted name in Lambda as through the editable install (its
    folders carry no ``__init__.py`` here: namespace packages). Without ``modules`` the asset is unchanged.
    """
    if not _STAGING_ROOT:
        _STAGING_ROOT.append(Path(tempfile.mkdtemp(prefix="kit-function-code-")))
        atexit.register(shutil.rmtree, _STAGING_ROOT[0], True)
    staged = Path(tempfile.mkdtemp(prefix=f"{package}-", dir=_STAGING_ROOT[0]))
    for name in (package, *SHARED_PACKAGES):
        shutil.copytree(package_dir(name), staged / name, ignore=shutil.ignore_patterns(*_CACHES))
    for module in modules:
        source = module_file(module)
        target = staged.joinpath(*module.split(".")).with_suffix(".py")
        if target.exists() or module.split(".")[0] in (package, *SHARED_PACKAGES):
            raise ValueError(f"extra module {module!r} would overwrite a file of the {package} asset")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
    return staged


class PythonFunction(Construct):
    """arm64, the newest Python runtime, JSON logs to an explicit log group, X-Ray active, Powertools layer.

    ``handler`` is the dotted import path of the function (e.g. ``prompt_api.handler.handler``), the same
    path the tests import; the asset holds that package and lambdas/common, plus the single ``modules`` named from
    elsewhere in the checkout (:func:`stage_function_code`).
    ``role`` starts with write access to its own log group only; callers add grants.
    ``service_name`` becomes POWERTOOLS_SERVICE_NAME, the one place a function's service is named: its logger and
    metrics read it from there (a handler names none, as one handler may serve two functions).
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        deployment: Deployment,
        handler: str,
        description: str,
        service_name: str,
        environment: Mapping[str, str] | None = None,
        timeout: Duration | None = None,
        memory_size: int = 512,
        modules: Sequence[str] = (),
    ) -> None:
        super().__init__(scope, construct_id)
        self.log_group: logs.LogGroup = log_group(self, "Logs", deployment)
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
            code=lambda_.Code.from_asset(str(stage_function_code(function_package(handler), modules))),
            description=description,
            role=self.role,
            timeout=timeout or Duration.seconds(25),
            memory_size=memory_size,
            tracing=lambda_.Tracing.ACTIVE,
            log_group=self.log_group,
            logging_format=lambda_.LoggingFormat.JSON,
            application_log_level_v2=lambda_.ApplicationLogLevel.INFO,
            system_log_level_v2=lambda_.SystemLogLevel.WARN,
            layers=[lambda_.LayerVersion.from_layer_version_arn(self, "Powertools", powertools_layer_arn(deployment))],
            environment={
                "POWERTOOLS_SERVICE_NAME": service_name,
                "POWERTOOLS_METRICS_NAMESPACE": deployment.metrics_namespace,
                **(environment or {}),
            },
        )
        # Active tracing grants the X-Ray actions on "*"; the policy's one Resource::* suppression is written at
        # synthesis and names every action granted on "*", with the reasons callers give for theirs.
        derive_wildcard_suppression(
            self.role.node.find_child("DefaultPolicy"), "Lambda's active tracing needs the xray actions."
        )
