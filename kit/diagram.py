"""Architecture diagrams (Mermaid flowcharts) generated from synthesized CloudFormation templates.

Each resource is a node grouped by role (API, compute, AI / ML, data, messaging, network, observability,
security). CDK helper resources are folded into the resource they serve (policies, permissions, log groups,
API Gateway plumbing, bucket policies and custom-resource providers), so the diagram shows the architecture
and not the deployment machinery. Edges come from three sources:

- references (Ref, Fn::GetAtt, Fn::Sub) inside a resource's properties: ``A --> B`` means A uses B;
- IAM grants: a policy attached to a role that names a resource makes an edge from the role's owner (the
  function, state machine, knowledge base or cluster that assumes it) to that resource, drawn dotted;
- event sources: EventBridge rule targets, SNS subscriptions, SQS event source mappings, API Gateway
  integrations and CloudWatch alarm actions, drawn as labelled arrows in the direction events flow.

The output is deterministic: nodes and edges are sorted and named after the templates' logical ids.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kit import KitError
from stacks.shared.facts import PROFILE_GEOGRAPHIES

Template = Mapping[str, Any]

GROUPS: tuple[tuple[str, str], ...] = (
    ("api", "API"),
    ("compute", "Compute"),
    ("ai", "AI / ML"),
    ("data", "Data and storage"),
    ("messaging", "Messaging and events"),
    ("network", "Network"),
    ("observability", "Observability"),
    ("security", "Security and IAM"),
    ("other", "Other"),
)
_GROUP_BY_SERVICE = {
    "ApiGateway": "api",
    "Lambda": "compute",
    "StepFunctions": "compute",
    "Bedrock": "ai",
    "SageMaker": "ai",
    "S3": "data",
    "S3Vectors": "data",
    "FSx": "data",
    "DynamoDB": "data",
    "OpenSearchServerless": "data",
    "SQS": "messaging",
    "SNS": "messaging",
    "Events": "messaging",
    "Scheduler": "messaging",
    "EC2": "network",
    "CloudWatch": "observability",
    "Logs": "observability",
    "IAM": "security",
    "KMS": "security",
    "SecretsManager": "security",
}
_GROUP_BY_TYPE = {
    "AWS::EC2::FlowLog": "observability",
    "AWS::OpenSearchServerless::AccessPolicy": "security",
    "AWS::OpenSearchServerless::SecurityPolicy": "security",
    "Custom::BedrockInvocationLogging": "observability",
}
_TYPE_LABELS = {
    "AWS::ApiGateway::RestApi": "REST API",
    "AWS::Bedrock::DataSource": "Bedrock data source",
    "AWS::Bedrock::Guardrail": "Bedrock guardrail",
    "AWS::Bedrock::KnowledgeBase": "Bedrock knowledge base",
    "AWS::Bedrock::Prompt": "Bedrock prompt",
    "AWS::EC2::EIP": "Elastic IP",
    "AWS::EC2::FlowLog": "VPC flow log",
    "AWS::EC2::InternetGateway": "Internet gateway",
    "AWS::EC2::NatGateway": "NAT gateway",
    "AWS::EC2::SecurityGroup": "Security group",
    "AWS::EC2::VPC": "VPC",
    "AWS::EC2::VPCEndpoint": "VPC endpoint",
    "AWS::Events::Rule": "EventBridge rule",
    "AWS::FSx::FileSystem": "FSx for Lustre",
    "AWS::IAM::Role": "IAM role",
    "AWS::KMS::Key": "KMS key",
    "AWS::Lambda::Function": "Lambda function",
    "AWS::OpenSearchServerless::Collection": "OpenSearch Serverless collection",
    "AWS::OpenSearchServerless::Index": "OpenSearch Serverless index",
    "AWS::S3::Bucket": "S3 bucket",
    "AWS::S3Vectors::Index": "S3 vector index",
    "AWS::S3Vectors::VectorBucket": "S3 vector bucket",
    "AWS::SNS::Topic": "SNS topic",
    "AWS::SQS::Queue": "SQS queue",
    "AWS::SageMaker::Cluster": "SageMaker HyperPod cluster",
    "AWS::StepFunctions::StateMachine": "Step Functions state machine",
}
# Types folded away entirely: their meaning is carried by other edges (IAM policies become grant edges).
_DROPPED = {
    "AWS::CDK::Metadata",
    "AWS::Lambda::Permission",
    "AWS::IAM::Policy",
    "AWS::IAM::ManagedPolicy",
    "AWS::ApiGateway::Account",
    "AWS::EC2::SubnetRouteTableAssociation",
    "AWS::SNS::Subscription",
    "AWS::Lambda::EventSourceMapping",
}
# Helpers folded into the resource one of their properties points at; they add no edges of their own.
_FOLD_INTO = {
    "AWS::ApiGateway::Deployment": ("RestApiId",),
    "AWS::ApiGateway::GatewayResponse": ("RestApiId",),
    "AWS::ApiGateway::Method": ("RestApiId",),
    "AWS::ApiGateway::Model": ("RestApiId",),
    "AWS::ApiGateway::RequestValidator": ("RestApiId",),
    "AWS::ApiGateway::Resource": ("RestApiId",),
    "AWS::ApiGateway::Stage": ("RestApiId",),
    "AWS::Bedrock::GuardrailVersion": ("GuardrailIdentifier",),
    "AWS::Bedrock::PromptVersion": ("PromptArn",),
    "AWS::EC2::Route": ("RouteTableId",),
    "AWS::EC2::RouteTable": ("VpcId",),
    "AWS::EC2::SecurityGroupEgress": ("GroupId",),
    "AWS::EC2::SecurityGroupIngress": ("GroupId",),
    "AWS::EC2::Subnet": ("VpcId",),
    "AWS::EC2::VPCGatewayAttachment": ("VpcId",),
    "AWS::FSx::DataRepositoryAssociation": ("FileSystemId",),
    "AWS::IAM::InstanceProfile": ("Roles",),
    "AWS::KMS::Alias": ("TargetKeyId",),
    "AWS::S3::BucketPolicy": ("Bucket",),
    "AWS::SNS::TopicPolicy": ("Topics",),
    "AWS::SQS::QueuePolicy": ("Queues",),
    "Custom::CDKBucketDeployment": ("DestinationBucketName",),
    "Custom::S3AutoDeleteObjects": ("BucketName",),
    "Custom::S3BucketNotifications": ("BucketName",),
    "Custom::VpcRestrictDefaultSG": ("DefaultSecurityGroupId",),
}
# Helpers that keep their edges but show as the resource they serve (a route's NAT gateway, a subnet's VPC).
_KEEP_EDGES = {"AWS::EC2::Route", "AWS::EC2::VPCGatewayAttachment"}
# Resource policies and documents: they name principals (the other direction), so they make no reference edges;
# identity policies make grant edges instead.
_POLICY_KEYS = {"AssumeRolePolicyDocument", "KeyPolicy", "Policy", "PolicyDocument", "Policies"}
# Referrers that name a role without assuming it (a role's owner is the resource that assumes it).
_NOT_ROLE_OWNERS = {
    "AWS::IAM::Policy",
    "AWS::IAM::ManagedPolicy",
    "AWS::IAM::Role",
    "AWS::KMS::Key",
    "AWS::Lambda::Permission",
    "AWS::OpenSearchServerless::AccessPolicy",
    "AWS::S3::BucketPolicy",
    "AWS::SNS::TopicPolicy",
    "AWS::SQS::QueuePolicy",
}
_RESERVED_IDS = {"end", "graph", "subgraph", "flowchart", "style", "class", "classdef", "click", "default"}
_MODEL_ARN = re.compile(r"(?:foundation-model|inference-profile)/([A-Za-z0-9.:*-]+)")
_SERVICE_ARN = re.compile(r"arn:[a-z*-]*:(bedrock|sagemaker):[^:]*:[^:]*:([a-z-]+)/")
# Things outside the stack that a grant names by ARN pattern, drawn as one node each.
_EXTERNAL = {
    ("bedrock", "custom-model"): ("ext_bedrock_custom_models", "Bedrock custom models"),
    ("bedrock", "model-customization-job"): ("ext_bedrock_customization_jobs", "Bedrock model customization jobs"),
    ("bedrock", "provisioned-model"): ("ext_bedrock_provisioned", "Bedrock Provisioned Throughput"),
    ("sagemaker", "training-job"): ("ext_sagemaker_training_jobs", "SageMaker training jobs"),
}
# EventBridge detail types that come from those outside things.
_EXTERNAL_EVENTS = {
    "Model Customization Job State Change": ("bedrock", "model-customization-job"),
    "SageMaker Training Job State Change": ("sagemaker", "training-job"),
}
# The prefixes of Bedrock's cross-region inference profile ids, as the kit's config accepts them. No "us-gov":
# the config refuses GovCloud regions and that prefix, so no template of the kit carries such an id.
_GEO_PREFIXES = frozenset(PROFILE_GEOGRAPHIES)
_ALARMS_NODE = "CloudWatchAlarms"


@dataclass
class Node:
    """One box of the diagram."""

    id: str
    label: str
    group: str


@dataclass
class Edge:
    """One arrow; ``labels`` name events or invocations, ``actions`` the IAM actions a grant allows."""

    source: str
    target: str
    labels: set[str] = field(default_factory=set)
    actions: set[str] = field(default_factory=set)
    reference: bool = False


@dataclass
class Diagram:
    """A stack's nodes and edges, plus what was folded away."""

    stack_id: str
    description: str
    nodes: dict[str, Node]
    edges: dict[tuple[str, str], Edge]
    resource_count: int
    folded: dict[str, int]


def _refs(node: Any) -> Iterator[str]:
    """Logical ids named by Ref, Fn::GetAtt and Fn::Sub anywhere inside ``node``."""
    if isinstance(node, Mapping):
        if len(node) == 1:
            ((key, value),) = node.items()
            if key == "Ref" and isinstance(value, str) and not value.startswith("AWS::"):
                yield value
                return
            if key == "Fn::GetAtt":
                yield str(value[0] if isinstance(value, list) else str(value).split(".", 1)[0])
                return
            if key == "Fn::Sub":
                text = value[0] if isinstance(value, list) else value
                yield from re.findall(r"\$\{([A-Za-z0-9]+)(?:\.[A-Za-z0-9.]+)?\}", str(text))
        for value in node.values():
            yield from _refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _refs(value)


def _text(node: Any) -> str:
    """A template value as text, with Fn::Join applied and references as ``*`` (enough to read an ARN pattern)."""
    if isinstance(node, str):
        return node
    if isinstance(node, Mapping):
        if "Fn::Join" in node and isinstance(node["Fn::Join"], list) and len(node["Fn::Join"]) == 2:
            separator, parts = node["Fn::Join"]
            return str(separator).join(_text(part) for part in parts) if isinstance(parts, list) else "*"
        if "Ref" in node or "Fn::GetAtt" in node:
            return "*"
        return " ".join(_text(value) for value in node.values())
    if isinstance(node, list):
        return " ".join(_text(value) for value in node)
    return str(node)


def _strings(node: Any) -> Iterator[str]:
    if isinstance(node, str):
        yield node
    elif isinstance(node, Mapping):
        for value in node.values():
            yield from _strings(value)
    elif isinstance(node, list):
        for value in node:
            yield from _strings(value)


def _display_name(logical_id: str) -> str:
    """The construct path without CDK's 8-character hash suffix (``PromptFunction0D9EEE9C`` -> ``PromptFunction``)."""
    match = re.fullmatch(r"(.+?)[0-9A-F]{8}", logical_id)
    return match.group(1) if match else logical_id


def _node_id(logical_id: str) -> str:
    clean = re.sub(r"[^A-Za-z0-9_]", "_", logical_id)
    return f"r_{clean}" if clean.lower() in _RESERVED_IDS else clean


def _group_of(kind: str) -> str:
    if kind in _GROUP_BY_TYPE:
        return _GROUP_BY_TYPE[kind]
    parts = kind.split("::")
    return _GROUP_BY_SERVICE.get(parts[1], "other") if len(parts) == 3 and parts[0] == "AWS" else "other"


def _type_label(kind: str) -> str:
    if kind in _TYPE_LABELS:
        return _TYPE_LABELS[kind]
    parts = kind.split("::")
    return " ".join(parts[1:]) if len(parts) > 1 else kind


def _base_model(model_id: str) -> str:
    first, _, rest = model_id.partition(".")
    return rest if first in _GEO_PREFIXES and rest else model_id


class _Builder:
    """Turns one template into a Diagram."""

    def __init__(self, stack_id: str, template: Template) -> None:
        self.stack_id = stack_id
        self.template = template
        self.resources: dict[str, Mapping[str, Any]] = dict(sorted(template.get("Resources", {}).items()))
        self.kinds = {lid: str(r.get("Type", "?")) for lid, r in self.resources.items()}
        self.referrers: dict[str, set[str]] = defaultdict(set)
        for lid, resource in self.resources.items():
            for target in _refs(resource.get("Properties", {})):
                if target in self.resources and target != lid:
                    self.referrers[target].add(lid)
        self.providers = self._custom_resource_providers()
        self._host: dict[str, str | None] = {}
        self.nodes: dict[str, Node] = {}
        self.edges: dict[tuple[str, str], Edge] = {}

    # --- folding -------------------------------------------------------------------------------------------

    def _custom_resource_providers(self) -> set[str]:
        providers: set[str] = set()
        for resource in self.resources.values():
            if self._is_custom(str(resource.get("Type", ""))):
                providers.update(t for t in _refs(resource.get("Properties", {}).get("ServiceToken")) if t)
        return providers

    @staticmethod
    def _is_custom(kind: str) -> bool:
        return kind.startswith("Custom::") or kind == "AWS::CloudFormation::CustomResource"

    def host(self, lid: str, seen: frozenset[str] = frozenset()) -> str | None:
        """The node a resource is drawn as: itself, the resource it was folded into, or None (not drawn)."""
        if lid not in self._host:
            self._host[lid] = None if lid in seen else self._resolve(lid, seen | {lid})
        return self._host[lid]

    def _first_ref(self, lid: str, keys: Iterable[str]) -> str | None:
        props = self.resources[lid].get("Properties", {}) or {}
        for key in keys:
            for target in _refs(props.get(key)):
                if target in self.resources:
                    return target
        return None

    def _resolve(self, lid: str, seen: frozenset[str]) -> str | None:
        kind = self.kinds[lid]
        props = self.resources[lid].get("Properties", {}) or {}
        if kind in _DROPPED or lid in self.providers:
            return None
        if kind in _FOLD_INTO:
            target = self._first_ref(lid, _FOLD_INTO[kind])
            return self.host(target, seen) if target else None
        if kind == "AWS::CloudWatch::Alarm":
            return _ALARMS_NODE
        if kind == "AWS::IAM::Role":
            owners = [r for r in sorted(self.referrers[lid]) if self.kinds[r] not in _NOT_ROLE_OWNERS]
            if not owners:
                return lid
            hosts = sorted({h for h in (self.host(o, seen) for o in owners) if h})
            return hosts[0] if hosts else None
        if kind in {"AWS::Logs::LogGroup", "AWS::Lambda::LayerVersion", "AWS::EC2::EIP"}:
            users = [r for r in sorted(self.referrers[lid]) if self.kinds[r] != "AWS::IAM::Policy"]
            hosts = [h for h in (self.host(u, seen) for u in users) if h]
            return hosts[0] if hosts else None
        if kind == "AWS::S3::Bucket" and self._log_source(lid):
            return self.host(self._log_source(lid) or lid, seen)
        if kind in {"AWS::OpenSearchServerless::AccessPolicy", "AWS::OpenSearchServerless::SecurityPolicy"}:
            text = "\n".join(_strings(props))
            for other, other_kind in self.kinds.items():
                if other_kind == "AWS::OpenSearchServerless::Collection":
                    name = (self.resources[other].get("Properties", {}) or {}).get("Name")
                    if isinstance(name, str) and name in text:
                        return self.host(other, seen)
        return lid

    def _log_source(self, bucket: str) -> str | None:
        """The bucket whose access logs land in ``bucket`` (an access-log bucket is drawn as that bucket)."""
        for other in sorted(self.referrers[bucket]):
            if self.kinds[other] != "AWS::S3::Bucket":
                continue
            logging = (self.resources[other].get("Properties", {}) or {}).get("LoggingConfiguration", {})
            if bucket in set(_refs(logging)):
                return other
        return None

    # --- nodes and edges -----------------------------------------------------------------------------------

    def build(self) -> Diagram:
        folded: dict[str, int] = defaultdict(int)
        for lid, kind in self.kinds.items():
            node = self.host(lid)
            if node == lid:
                self.nodes[_node_id(lid)] = Node(_node_id(lid), self._label(lid), _group_of(kind))
            elif node != _ALARMS_NODE:
                folded[kind] += 1
        alarms = [lid for lid, kind in self.kinds.items() if kind == "AWS::CloudWatch::Alarm"]
        if alarms:
            self.nodes[_ALARMS_NODE] = Node(_ALARMS_NODE, f"CloudWatch alarms x{len(alarms)}", "observability")
        for lid in self.resources:
            self._edges_of(lid)
        description = str(self.template.get("Description", "")).removeprefix("genai-spectrum-kit").lstrip(" :")
        return Diagram(self.stack_id, description, self.nodes, self.edges, len(self.resources), dict(folded))

    def _label(self, lid: str) -> str:
        kind = self.kinds[lid]
        props = self.resources[lid].get("Properties", {}) or {}
        lines = [_display_name(lid), _type_label(kind)]
        if kind == "AWS::ApiGateway::RestApi":
            lines.extend(self._routes(lid))
        elif kind == "AWS::Events::Rule" and isinstance(props.get("ScheduleExpression"), str):
            lines[1] = f"EventBridge schedule: {props['ScheduleExpression']}"
        elif kind == "AWS::SageMaker::Cluster":
            for group in props.get("InstanceGroups", []) or []:
                name, itype, count = (
                    group.get("InstanceGroupName"),
                    group.get("InstanceType"),
                    group.get("InstanceCount"),
                )
                if all(isinstance(v, str | int) for v in (name, itype, count)):
                    lines.append(f"{name}: {itype} x{count}")
        return "<br/>".join(lines)

    def _routes(self, api: str) -> list[str]:
        paths: dict[str, str] = {}

        def path_of(resource_lid: str | None) -> str:
            if resource_lid is None or self.kinds.get(resource_lid) != "AWS::ApiGateway::Resource":
                return ""
            if resource_lid not in paths:
                props = self.resources[resource_lid].get("Properties", {})
                parent = next(iter(_refs(props.get("ParentId"))), None)
                parent_path = path_of(parent) if parent != api else ""
                paths[resource_lid] = f"{parent_path}/{props.get('PathPart', '?')}"
            return paths[resource_lid]

        routes = []
        for lid, kind in self.kinds.items():
            if kind != "AWS::ApiGateway::Method" or self._first_ref(lid, ("RestApiId",)) != api:
                continue
            props = self.resources[lid].get("Properties", {})
            resource = next(iter(_refs(props.get("ResourceId"))), None)
            routes.append(f"{props.get('HttpMethod', '?')} {path_of(resource) or '/'}")
        return sorted(routes, key=lambda route: (route.split(" ", 1)[1], route))

    def _edge(self, source: str | None, target: str | None) -> Edge | None:
        if source is None or target is None:
            return None
        source, target = self._node_key(source), self._node_key(target)
        if source == target:
            return None
        return self.edges.setdefault((source, target), Edge(source, target))

    @staticmethod
    def _node_key(host: str) -> str:
        return host if host == _ALARMS_NODE or host.startswith("ext_") else _node_id(host)

    def _target(self, lid: str) -> str | None:
        return self.host(lid) if lid in self.resources else None

    def _event(self, source: str | None, target: str | None, label: str) -> None:
        edge = self._edge(source, target)
        if edge:
            edge.labels.add(label)

    def _edges_of(self, lid: str) -> None:
        kind = self.kinds[lid]
        props: Mapping[str, Any] = self.resources[lid].get("Properties", {}) or {}
        if kind in {"AWS::IAM::Policy", "AWS::IAM::ManagedPolicy"}:
            roles = [t for t in _refs(props.get("Roles")) if t in self.resources]
            self._grants(roles, props.get("PolicyDocument", {}))
            return
        if kind == "AWS::IAM::Role":
            for policy in props.get("Policies", []) or []:
                self._grants([lid], policy.get("PolicyDocument", {}))
        if kind == "AWS::SNS::Subscription":
            topic = next(iter(_refs(props.get("TopicArn"))), None)
            endpoint = next(iter(_refs(props.get("Endpoint"))), None)
            if topic and endpoint:
                self._event(self._target(topic), self._target(endpoint), "delivers")
            return
        if kind == "AWS::Lambda::EventSourceMapping":
            source = next(iter(_refs(props.get("EventSourceArn"))), None)
            function = next(iter(_refs(props.get("FunctionName"))), None)
            if source and function:
                self._event(self._target(source), self._target(function), "triggers")
            return
        me = self.host(lid)
        if me is None or (kind in _FOLD_INTO and kind not in _KEEP_EDGES):
            if kind == "AWS::ApiGateway::Method":
                integration = props.get("Integration", {}) or {}
                for target in _refs(integration.get("Uri")):
                    self._event(me, self._target(target), "invokes")
            return
        skip: set[str] = set()
        if kind == "AWS::Events::Rule":
            skip = {"Targets", "EventPattern"}
            for target in props.get("Targets", []) or []:
                for ref in _refs(target.get("Arn")):
                    self._event(me, self._target(ref), "triggers")
                for ref in _refs({k: v for k, v in target.items() if k != "Arn"}):
                    self._reference(me, ref)
            for ref in _refs(props.get("EventPattern")):
                self._event(self._target(ref), me, "events")
            pattern = _text(props.get("EventPattern"))
            for detail_type, origin in sorted(_EXTERNAL_EVENTS.items()):
                if detail_type in pattern:
                    self._event(self._external(origin), me, "events")
        elif kind == "AWS::CloudWatch::Alarm":
            skip = {"AlarmActions", "OKActions", "InsufficientDataActions", "Dimensions", "Metrics"}
            for action in ("AlarmActions", "OKActions", "InsufficientDataActions"):
                for ref in _refs(props.get(action)):
                    self._event(me, self._target(ref), "notifies")
            for ref in _refs([props.get("Dimensions"), props.get("Metrics")]):
                self._event(self._target(ref), me, "metrics")
        elif kind == "AWS::S3::Bucket":
            skip = {"NotificationConfiguration"}
            for ref in _refs(props.get("NotificationConfiguration")):
                self._event(me, self._target(ref), "events")
        elif kind == "AWS::Scheduler::Schedule":
            skip = {"Target"}
            schedule_target: Mapping[str, Any] = props.get("Target", {}) or {}
            for ref in _refs(schedule_target.get("Arn")):
                self._event(me, self._target(ref), "triggers")
        for key, value in props.items():
            if key in skip or key in _POLICY_KEYS or (self._is_custom(kind) and key == "ServiceToken"):
                continue
            for ref in _refs(value):
                self._reference(me, ref)

    def _reference(self, source: str | None, ref: str) -> None:
        edge = self._edge(source, self._target(ref))
        if edge:
            edge.reference = True

    def _grants(self, roles: list[str], document: Any) -> None:
        owners = sorted({h for h in (self.host(role) for role in roles) if h})
        statements = document.get("Statement", []) if isinstance(document, Mapping) else []
        for statement in statements if isinstance(statements, list) else [statements]:
            if not isinstance(statement, Mapping) or statement.get("Effect") != "Allow":
                continue
            actions = statement.get("Action", [])
            actions = [actions] if isinstance(actions, str) else [a for a in actions if isinstance(a, str)]
            resource = statement.get("Resource", [])
            targets = {self._target(t) for t in _refs(resource)}
            text = _text(resource)
            for model in _MODEL_ARN.findall(text):
                targets.add(self._model_node(model))
            for service, resource_type in _SERVICE_ARN.findall(text):
                if (service, resource_type) in _EXTERNAL:
                    targets.add(self._external((service, resource_type)))
            for owner in owners:
                for target in sorted(t for t in targets if t):
                    edge = self._edge(owner, target)
                    if edge:
                        edge.actions.update(actions)

    def _external(self, key: tuple[str, str]) -> str:
        node_id, label = _EXTERNAL[key]
        self.nodes.setdefault(node_id, Node(node_id, f"{label}<br/>(outside the stack)", "ai"))
        return node_id

    def _model_node(self, model: str) -> str:
        base = _base_model(model)
        if base == "*":
            node_id, label = "ext_bedrock_models", "Bedrock foundation models<br/>(any model)"
        else:
            node_id = "ext_model_" + re.sub(r"[^A-Za-z0-9]", "_", base)
            label = f"{base}<br/>Bedrock model"
        self.nodes.setdefault(node_id, Node(node_id, label, "ai"))
        return node_id


def build_diagram(stack_id: str, template: Template) -> Diagram:
    """The diagram of one stack's template."""
    return _Builder(stack_id, template).build()


def _quote(label: str) -> str:
    return '"' + label.replace('"', "#quot;") + '"'


def _edge_line(edge: Edge) -> str:
    if edge.labels:
        return f"  {edge.source} -->|{_quote(', '.join(sorted(edge.labels)))}| {edge.target}"
    if edge.actions:
        actions = sorted(edge.actions)
        summary = actions[0] if len(actions) == 1 else f"{actions[0]} +{len(actions) - 1}"
        return f"  {edge.source} -.->|{_quote('IAM: ' + summary)}| {edge.target}"
    return f"  {edge.source} --> {edge.target}"


def to_mermaid(diagram: Diagram) -> str:
    """The diagram as a Mermaid flowchart (deterministic: groups in a fixed order, nodes and edges sorted)."""
    lines = ["flowchart LR"]
    by_group: dict[str, list[Node]] = defaultdict(list)
    for node in diagram.nodes.values():
        by_group[node.group].append(node)
    for group_id, title in GROUPS:
        members = sorted(by_group.get(group_id, []), key=lambda node: node.id)
        if not members:
            continue
        lines.append(f"  subgraph {group_id}[{_quote(title)}]")
        lines.extend(f"    {node.id}[{_quote(node.label)}]" for node in members)
        lines.append("  end")
    lines.extend(_edge_line(edge) for _, edge in sorted(diagram.edges.items()))
    return "\n".join(lines) + "\n"


def to_markdown(diagram: Diagram, *, configuration: str = "sandbox") -> str:
    """The committed docs/diagrams/<stack-id>.md page: a short header, the Mermaid block and a legend."""
    folded = ", ".join(f"{count} {kind}" for kind, count in sorted(diagram.folded.items()))
    title = f"{diagram.stack_id}: {diagram.description}" if diagram.description else diagram.stack_id
    return "\n".join(
        [
            f"# {title}",
            "",
            f"Generated by `kit diagram` from the synthesized template ({configuration} configuration). Do not edit "
            "by hand: run `kit diagram` after changing the stack; `kit diagram --check` (and the test suite) fails "
            "while this file is stale.",
            "",
            "```mermaid",
            to_mermaid(diagram).rstrip("\n"),
            "```",
            "",
            "Solid labelled arrows: invocations and events, in the direction they flow. Dotted arrows: IAM grants "
            "from the resource that assumes the role to the resource the policy names. Plain arrows: references.",
            "",
            f"Folded into the resources they serve: {folded or 'nothing'}.",
            "",
        ]
    )


def render_all(templates: Mapping[str, Template], *, configuration: str = "sandbox") -> dict[str, str]:
    """File name -> Markdown page, one per stack."""
    return {
        f"{stack_id}.md": to_markdown(build_diagram(stack_id, template), configuration=configuration)
        for stack_id, template in sorted(templates.items())
    }


def _read_page(path: Path) -> str | None:
    """The text of an existing page, None when there is none; a page that cannot be read is a KitError."""
    if not path.is_file():
        return None
    try:
        return path.read_text()
    except (OSError, UnicodeDecodeError) as err:
        raise KitError(
            f"cannot read {path}: {getattr(err, 'strerror', None) or err}: pass --out another folder"
        ) from None


def stale_files(pages: Mapping[str, str], out_dir: Path) -> list[str]:
    """Problems with ``out_dir`` against freshly rendered ``pages``: missing, outdated or orphaned files."""
    problems = []
    for name, text in sorted(pages.items()):
        path = out_dir / name
        found = _read_page(path)
        if found is None:
            problems.append(f"{path} is missing")
        elif found != text:
            problems.append(f"{path} is out of date")
    if out_dir.is_dir():
        for path in sorted(out_dir.glob("*.md")):
            if path.name not in pages and path.name != "README.md":
                problems.append(f"{path} has no stack any more")
    return problems


def write_all(pages: Mapping[str, str], out_dir: Path) -> list[Path]:
    """Write the pages that changed; return the paths written."""
    written = []
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        for name, text in sorted(pages.items()):
            path = out_dir / name
            if _read_page(path) != text:
                path.write_text(text)
                written.append(path)
    except OSError as err:
        where = err.filename or out_dir
        raise KitError(f"cannot write {where}: {err.strerror or err}: pass --out a writable folder") from None
    return written
