"""The cluster's network: private subnets, the S3 gateway endpoint, flow logs, the EFA security group, and the
network-interface grants SageMaker needs inside it.
"""

from __future__ import annotations

from aws_cdk import Stack
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_iam as iam
from constructs import Construct

from stacks.shared.deployment import Deployment
from stacks.shared.stage import log_group

# The EC2 grants SageMaker needs to place cluster nodes and training jobs in the kit's VPC
# (https://docs.aws.amazon.com/sagemaker/latest/dg/sagemaker-hyperpod-prerequisites.html), scoped with the
# resource types and condition keys the Service Authorization Reference gives each action
# (https://docs.aws.amazon.com/service-authorization/latest/reference/list_amazonec2.html): only the Describe
# actions and DeleteNetworkInterfacePermission (below) stay on "*".
VPC_DESCRIBE_ACTIONS = (
    "ec2:DescribeNetworkInterfaces",
    "ec2:DescribeVpcs",
    "ec2:DescribeDhcpOptions",
    "ec2:DescribeSubnets",
    "ec2:DescribeSecurityGroups",
)
# Resource type network-interface, whose condition key ec2:Subnet is the ARN of the interface's subnet.
ENI_MANAGE_ACTIONS = (
    "ec2:CreateNetworkInterfacePermission",
    "ec2:DeleteNetworkInterface",
)
# The reference makes network-interface optional for this action and its request names only the permission id
# (https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_DeleteNetworkInterfacePermission.html), so the call
# may be authorized against "*" with no ec2:Subnet: a grant on network-interface/* would not match it.
ENI_PERMISSION_DELETE = "ec2:DeleteNetworkInterfacePermission"


def subnet_arns(scope: Construct, subnet_ids: list[str]) -> list[str]:
    """The ARNs of the given subnets: the values of ec2:Subnet for an interface in one of them."""
    stack = Stack.of(scope)
    return [f"arn:{stack.partition}:ec2:{stack.region}:{stack.account}:subnet/{subnet}" for subnet in subnet_ids]


def interfaces_arn(scope: Construct) -> str:
    """Every network interface of the stack's account and Region (narrowed by ec2:Subnet where granted)."""
    stack = Stack.of(scope)
    return f"arn:{stack.partition}:ec2:{stack.region}:{stack.account}:network-interface/*"


def vpc_access_statements(
    scope: Construct, *, subnet_ids: list[str], security_group_id: str, detach: bool
) -> list[iam.PolicyStatement]:
    """The network-interface grants SageMaker needs in the kit's VPC, confined to its subnets and security group."""
    stack = Stack.of(scope)
    ec2_arn = f"arn:{stack.partition}:ec2:{stack.region}"
    subnets = subnet_arns(scope, subnet_ids)
    interfaces = interfaces_arn(scope)
    statements = [
        iam.PolicyStatement(sid="DescribeNetworking", actions=list(VPC_DESCRIBE_ACTIONS), resources=["*"]),
        # CreateNetworkInterface authorizes the new interface, its subnet and its security groups: naming the
        # kit's subnets and group keeps new interfaces inside them.
        iam.PolicyStatement(
            sid="CreateInterfacesInKitSubnets",
            actions=["ec2:CreateNetworkInterface"],
            resources=[interfaces, *subnets, f"{ec2_arn}:{stack.account}:security-group/{security_group_id}"],
        ),
        iam.PolicyStatement(
            sid="ManageInterfacesInKitSubnets",
            actions=[*ENI_MANAGE_ACTIONS, *(["ec2:DetachNetworkInterface"] if detach else [])],
            resources=[interfaces],
            conditions={"ArnEquals": {"ec2:Subnet": subnets}},
        ),
        iam.PolicyStatement(sid="DeleteInterfacePermissions", actions=[ENI_PERMISSION_DELETE], resources=["*"]),
    ]
    if detach:
        # DetachNetworkInterface authorizes the instance too, and HyperPod's instances are not in this account;
        # the interface side stays confined to the kit's subnets by the statement above.
        statements.append(
            iam.PolicyStatement(
                sid="DetachFromClusterInstances",
                actions=["ec2:DetachNetworkInterface"],
                resources=[f"{ec2_arn}:*:instance/*"],
            )
        )
    return statements


class ClusterNetwork(Construct):
    """A VPC whose cluster subnets are private, an S3 gateway endpoint, flow logs, and the EFA security group."""

    def __init__(self, scope: Construct, construct_id: str, *, deployment: Deployment, nat_gateways: int) -> None:
        super().__init__(scope, construct_id)
        nat = nat_gateways  # at least 1 (settings.py): the nodes reach AWS endpoints only through NAT
        private_type = ec2.SubnetType.PRIVATE_WITH_EGRESS
        subnets = [
            ec2.SubnetConfiguration(name="cluster", subnet_type=private_type, cidr_mask=20),
            # A public subnet only to hold the NAT gateway, listed after the cluster subnets so that their CIDR
            # blocks (and with them the subnets, FSx and the cluster, whose VpcConfig cannot change in place) stay.
            ec2.SubnetConfiguration(name="nat", subnet_type=ec2.SubnetType.PUBLIC, cidr_mask=26),
        ]
        flow_logs = log_group(self, "FlowLogs", deployment)
        self.vpc = ec2.Vpc(
            self,
            "Vpc",
            ip_addresses=ec2.IpAddresses.cidr("10.40.0.0/16"),
            max_azs=2,
            nat_gateways=nat,
            subnet_configuration=subnets,
            gateway_endpoints={"S3": ec2.GatewayVpcEndpointOptions(service=ec2.GatewayVpcEndpointAwsService.S3)},
            flow_logs={"All": ec2.FlowLogOptions(destination=ec2.FlowLogDestination.to_cloud_watch_logs(flow_logs))},
        )
        # The flow-logs service assumes CDK's role to deliver to the log group. The Amazon VPC guide recommends
        # aws:SourceAccount (StringEquals, the flow log's owner) and aws:SourceArn (ArnLike, the flow log's ARN, its
        # id a wildcard when it is not known before the flow log exists) in that role's trust policy against the
        # confused deputy problem (https://docs.aws.amazon.com/vpc/latest/userguide/flow-logs-iam-role.html); CDK's
        # role trusts vpc-flow-logs.amazonaws.com without them. Set on CDK's own role, not a new one: the flow log's
        # DeliverLogsPermissionArn is create-only (registry schema of AWS::EC2::FlowLog), so a new role would
        # replace the deployed flow log.
        stack = Stack.of(self)
        flow_log = self.vpc.node.find_child("All")
        assert isinstance(flow_log, ec2.FlowLog) and flow_log.iam_role is not None
        trust = flow_log.iam_role.node.default_child
        assert isinstance(trust, iam.CfnRole)
        trust.add_property_override(
            "AssumeRolePolicyDocument.Statement.0.Condition",
            {
                "StringEquals": {"aws:SourceAccount": stack.account},
                "ArnLike": {
                    "aws:SourceArn": f"arn:{stack.partition}:ec2:{stack.region}:{stack.account}:vpc-flow-log/*"
                },
            },
        )
        # Created after the role's policy: EC2 publishes with the role from the first aggregation interval on, and a
        # publication it may not make is the flow log's "Access error" (API_FlowLog.html), not a failed create
        # (tests/infra/test_first_deploy_order.py).
        # (On the CfnFlowLog alone: the role is a child of the FlowLog construct, which would then wait for itself.)
        cfn_flow_log = flow_log.node.default_child
        assert isinstance(cfn_flow_log, ec2.CfnFlowLog)
        cfn_flow_log.node.add_dependency(flow_log.iam_role)
        self.cluster_subnets = self.vpc.select_subnets(subnet_type=private_type)
        self.security_group = ec2.SecurityGroup(
            self,
            "ClusterSecurityGroup",
            vpc=self.vpc,
            description="HyperPod nodes, FSx and training jobs: all traffic among themselves (EFA needs it)",
            # Kept despite the HyperPod prerequisites' advice against 0.0.0.0/0 egress: nodes reach SageMaker,
            # SSM and CloudWatch through the NAT gateway at public addresses (no interface endpoints here), as
            # AWS's own HyperPod VPC sample does (awsome-distributed-training 2.SageMakerVPC.yaml: self in, self
            # out, 0.0.0.0/0 out). docs/level-4-pretrain.md states the deviation.
            allow_all_outbound=True,
            # Every rule its own resource, as in that sample: an all-traffic egress rule written inside the group
            # looks like the default rule EC2 adds, which CloudFormation may strip when another egress rule (the
            # self rule below) is added to the group (aws-cdk#987), leaving the nodes no way out to S3.
            disable_inline_rules=True,
        )
        self.security_group.add_ingress_rule(self.security_group, ec2.Port.all_traffic(), "all traffic from itself")
        # allow_all_outbound=True drops a self-referencing egress rule, and EFA health checks need one: emit it.
        self_egress = ec2.CfnSecurityGroupEgress(
            self,
            "SelfEgress",
            group_id=self.security_group.security_group_id,
            ip_protocol="-1",
            destination_security_group_id=self.security_group.security_group_id,
            description="all traffic to itself (EFA)",
        )
        # The group and its self rules, which CloudFormation would otherwise create beside whatever uses the group
        # (it refers to the group id only). FSx checks the group's rules when it creates the file system and fails
        # without Lustre's ports open ("do not permit Lustre LNET network traffic on port 988",
        # https://docs.aws.amazon.com/fsx/latest/LustreGuide/cannot-create-fs.html); nodes run EFA health checks
        # at boot. Whatever uses the group depends on these.
        self.security_group_rules: list[Construct] = [self.security_group, self_egress]
        # No AwsSolutions-EC23 suppression: its only ingress rule names the group itself, which cdk-nag finds compliant.
