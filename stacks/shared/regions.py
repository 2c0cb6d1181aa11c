"""What a region cannot hold refuses one stack, not the app.

A stack is refused for its region when CloudFormation there lacks one of its resource types (the registry's
per-region index that cfn-lint ships, stacks/shared/registry.py; deploying it would fail with "Unrecognized
resource types"), or when its level's settings need what the region lacks (each level says what: a callable text
model profile, a customizable base model, Custom Model Import, a published training image), or when it holds a kit
function and the region has no Powertools layer for it (``refuse_without_powertools_layer``). A refused stack carries
one ``config error:`` line per reason as an error annotation. The CDK CLI refuses to synthesize or deploy a stack
with an error, and lists every one when the whole app is synthesized; `cdk deploy` of another stack goes ahead.
That needs cdk.json's ``@aws-cdk/core:annotationsInValidationReport`` off: with it on, any stack's error fails the
app's own synthesis, and with it every stack (tests/infra/test_regions.py).
"""

from __future__ import annotations

from collections.abc import Sequence

from aws_cdk import Acknowledgment, Annotations, CfnResource, Stack, Validations

from stacks.shared.registry import regions_offering, unavailable_types
from stacks.shared.settings import Problem

# The rule of CDK's CloudFormation validation that refuses a template without resources.
EMPTY_TEMPLATE_RULE = "CloudFormation-Validate::F0001"


def refuse(stack: Stack, problems: Sequence[Problem]) -> bool:
    """Mark ``stack`` refused for ``problems`` (True when there are any): its constructor then builds nothing, so
    the stack is an empty stand-in that keeps its id and name for the CLI."""
    for problem in problems:
        Annotations.of(stack).add_error(problem.line())
    if problems:
        stack.template_options.description = (
            f"Not built: region {stack.region} cannot hold this stack (see the errors of `cdk synth`)"
        )
        # CDK's CloudFormation validation, on in every `cdk synth` and `cdk deploy`, fails the whole app on a template
        # without resources (rule F0001: "the only required section is the Resources section, which must declare at
        # least one resource", https://docs.aws.amazon.com/AWSCloudFormation/latest/UserGuide/template-guide.html).
        # The stand-in is never deployed (its errors stop `cdk deploy` of it), so that one rule is acknowledged here,
        # on the stand-in alone: the other stacks of the app then synthesize and deploy.
        Validations.of(stack).acknowledge(
            Acknowledgment(
                id=EMPTY_TEMPLATE_RULE, reason="a refused stack's stand-in, which its errors keep undeployed"
            )
        )
    return bool(problems)


_CFN_TYPES: dict[type, str | None] = {}  # an L1 class -> its CloudFormation type (one jsii call per class)


def resource_types(stack: Stack) -> set[str]:
    """The CloudFormation types of the resources in ``stack``'s construct tree."""
    found = set()
    for construct in stack.node.find_all():
        if not isinstance(construct, CfnResource):
            continue
        kind = type(construct)
        if kind not in _CFN_TYPES:
            _CFN_TYPES[kind] = getattr(kind, "CFN_RESOURCE_TYPE_NAME", None)
        found.add(_CFN_TYPES[kind] or construct.cfn_resource_type)
    return found


def refuse_without_powertools_layer(stack: Stack, region: str) -> None:
    """Refuse ``stack`` when it holds a kit function and ``region`` has no Powertools layer for it (CreateFunction
    fails on a layer version that does not exist)."""
    from stacks.shared.python_function import POWERTOOLS_LAYER_REGIONS, POWERTOOLS_LAYERS_PAGE, PythonFunction

    if region in POWERTOOLS_LAYER_REGIONS or not any(
        isinstance(construct, PythonFunction) for construct in stack.node.find_all()
    ):
        return
    allowed = (
        f"a region where Powertools for AWS Lambda (Python) publishes the layer the functions of {stack.node.id} "
        f"use ({POWERTOOLS_LAYERS_PAGE}); {region} has none"
    )
    Annotations.of(stack).add_error(Problem("region", region, allowed).line())


def refuse_unavailable_types(stack: Stack, region: str) -> None:
    """Refuse ``stack`` when CloudFormation in ``region`` does not offer one of its resource types."""
    types = resource_types(stack)
    missing = unavailable_types(region, types)
    if not missing:
        return
    offering = regions_offering(types)
    allowed = f"a region whose CloudFormation offers every resource type of {stack.node.id}; {region} lacks "
    allowed += ", ".join(missing)
    allowed += f"; all are offered in {', '.join(offering)}" if offering else "; no region offers them all"
    Annotations.of(stack).add_error(Problem("region", region, allowed).line())
