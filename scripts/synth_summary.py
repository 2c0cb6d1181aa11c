"""Print one line per synthesized stack: id, level, resource count, idle cost per month, what it is for.

Idle cost counts only resource types that bill while nothing uses them (us-east-1 list prices, checked
2026-11); everything else in the kit is pay-per-use. A resource type this table has not classified is
reported as "unclassified" rather than silently counted as free.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

# USD per month for one resource of the type, while idle. Source: the AWS pricing pages of each service.
IDLE_MONTHLY_USD: dict[str, float] = {
    "AWS::CloudWatch::Alarm": 0.10,  # standard-resolution metric alarm (the first 10 per account are free)
    "AWS::KMS::Key": 1.00,  # customer managed key
    "AWS::EC2::NatGateway": 32.85,  # $0.045/hour
    "AWS::SecretsManager::Secret": 0.40,
    "AWS::EC2::EIP": 3.65,  # public IPv4 address, $0.005/hour (the NAT gateway's)
}
# SageMaker HyperPod instances that run while a cluster exists (USD per hour, us-east-1 list price; the
# controller and login groups always run, compute groups bill only for the instances they hold).
HYPERPOD_HOURLY_USD = {"ml.t3.medium": 0.05, "ml.t3.large": 0.10, "ml.m5.large": 0.115, "ml.m5.xlarge": 0.23}
# FSx for Lustre PERSISTENT_2 storage, USD per GiB-month by throughput tier (MB/s per TiB).
LUSTRE_GIB_MONTH_USD = {125: 0.145, 250: 0.210, 500: 0.340, 1000: 0.600}
# Types that cost nothing while idle (pay per request, per GB stored, or free).
FREE_WHILE_IDLE = frozenset(
    {
        "AWS::ApiGateway::Account",
        "AWS::ApiGateway::Deployment",
        "AWS::ApiGateway::GatewayResponse",
        "AWS::ApiGateway::Method",
        "AWS::ApiGateway::Model",
        "AWS::ApiGateway::RequestValidator",
        "AWS::ApiGateway::Resource",
        "AWS::ApiGateway::RestApi",
        "AWS::ApiGateway::Stage",
        "AWS::Bedrock::Guardrail",
        "AWS::Bedrock::GuardrailVersion",
        "AWS::Bedrock::Prompt",
        "AWS::Bedrock::PromptVersion",
        "AWS::CDK::Metadata",
        "AWS::IAM::Policy",
        "AWS::IAM::Role",
        "AWS::Lambda::Function",
        "AWS::Lambda::Permission",
        "AWS::Logs::LogGroup",
        "AWS::SNS::Topic",
        "AWS::SNS::TopicPolicy",
        "AWS::SNS::Subscription",
        "AWS::S3::Bucket",
        "AWS::S3::BucketPolicy",
        "Custom::S3AutoDeleteObjects",
        "AWS::SQS::Queue",
        "AWS::SQS::QueuePolicy",
        "AWS::Events::Rule",
        "AWS::Lambda::LayerVersion",
        "Custom::CDKBucketDeployment",
        "Custom::S3BucketNotifications",
        # Knowledge bases bill per use; S3 Vectors bills per GB stored and per query, with no floor.
        "AWS::Bedrock::KnowledgeBase",
        "AWS::Bedrock::DataSource",
        "AWS::S3Vectors::VectorBucket",
        "AWS::S3Vectors::Index",
        "AWS::OpenSearchServerless::AccessPolicy",
        "AWS::OpenSearchServerless::Index",
        "AWS::OpenSearchServerless::SecurityPolicy",
        "AWS::StepFunctions::StateMachine",  # standard workflows bill per state transition
        "AWS::EC2::VPC",
        "AWS::EC2::Subnet",
        "AWS::EC2::RouteTable",
        "AWS::EC2::Route",
        "AWS::EC2::SubnetRouteTableAssociation",
        "AWS::EC2::InternetGateway",
        "AWS::EC2::VPCGatewayAttachment",
        "AWS::EC2::VPCEndpoint",  # the S3 gateway endpoint is free
        "AWS::EC2::SecurityGroup",
        "AWS::EC2::SecurityGroupIngress",
        "AWS::EC2::SecurityGroupEgress",
        "AWS::EC2::FlowLog",  # billed per GB of logs delivered
        "Custom::VpcRestrictDefaultSG",
        "AWS::FSx::DataRepositoryAssociation",
        "AWS::KMS::Alias",
    }
)
# An OpenSearch Serverless vector collection bills OCUs around the clock: 1 OCU ($0.24/hour) with standby
# replicas disabled, 2 with them enabled.
OCU_MONTHLY_USD = 0.24 * 730


def idle_cost(resource: dict) -> float | None:
    """USD per month one resource bills while idle, or None when the type is unclassified."""
    kind = resource["Type"]
    props = resource.get("Properties", {})
    if kind == "AWS::SageMaker::Cluster":
        hours = 0.0
        for group in props.get("InstanceGroups", []):
            count = group.get("InstanceCount", 0)
            if count and group.get("InstanceType") not in HYPERPOD_HOURLY_USD:
                return None
            hours += count * HYPERPOD_HOURLY_USD.get(group.get("InstanceType"), 0.0)
        return hours * 730
    if kind == "AWS::FSx::FileSystem":
        tier = props.get("LustreConfiguration", {}).get("PerUnitStorageThroughput")
        return props.get("StorageCapacity", 0) * LUSTRE_GIB_MONTH_USD[tier] if tier in LUSTRE_GIB_MONTH_USD else None
    if kind == "AWS::OpenSearchServerless::Collection":
        standby = resource.get("Properties", {}).get("StandbyReplicas", "ENABLED")
        return OCU_MONTHLY_USD * (2 if standby == "ENABLED" else 1)
    if kind in IDLE_MONTHLY_USD:
        return IDLE_MONTHLY_USD[kind]
    return 0.0 if kind in FREE_WHILE_IDLE else None


def stack_summary(template: dict) -> tuple[int, float, list[str]]:
    """(resource count, idle USD/month, unclassified types) of one template."""
    resources = list(template.get("Resources", {}).values())
    costs = [(r["Type"], idle_cost(r)) for r in resources]
    idle = sum(cost for _, cost in costs if cost is not None)
    unknown = sorted({kind for kind, cost in costs if cost is None})
    return len(resources), round(idle, 2), unknown


def summarize(assembly_dir: Path) -> list[str]:
    manifest = json.loads((assembly_dir / "manifest.json").read_text())
    lines = []
    for artifact_id, artifact in sorted(manifest["artifacts"].items()):
        if artifact.get("type") != "aws:cloudformation:stack":
            continue
        template = json.loads((assembly_dir / artifact["properties"]["templateFile"]).read_text())
        count, idle, unknown = stack_summary(template)
        purpose = template.get("Description", "").removeprefix("genai-spectrum-kit ")
        line = f"{artifact_id:<22} {count:>4} resources  idle ~${idle:,.2f}/month  {purpose}"
        if unknown:
            line += f"  (idle cost unclassified: {', '.join(unknown)})"
        lines.append(line)
    return lines


def main(argv: list[str]) -> int:
    assembly = Path(argv[1] if len(argv) > 1 else "cdk.out")
    lines = summarize(assembly)
    if not lines:
        print(f"no stacks found in {assembly}", file=sys.stderr)
        return 1
    print("\nSynthesized stacks (idle cost: what the stack bills per month with no traffic):")
    for line in lines:
        print("  " + line)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
