"""kit.diagram: nodes and edges from the real templates, determinism, and the committed pages' freshness."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from kit.diagram import Diagram, build_diagram, render_all, stale_files, to_mermaid, write_all
from tests.conftest import ROOT
from tests.infra.helpers import only, resources

DIAGRAMS = ROOT / "docs" / "diagrams"


def node_ids_of(template: dict[str, Any], type_name: str) -> list[str]:
    return sorted(resources(template, type_name))


def edge(diagram: Diagram, source: str, target: str) -> Any:
    found = diagram.edges.get((source, target))
    assert found is not None, f"no edge {source} -> {target}; edges: {sorted(diagram.edges)}"
    return found


def schedule_rules(template: dict[str, Any]) -> dict[str, str]:
    return {
        lid: rule["Properties"]["ScheduleExpression"]
        for lid, rule in resources(template, "AWS::Events::Rule").items()
        if "ScheduleExpression" in rule["Properties"]
    }


def test_level1_api_invokes_the_function_which_uses_guardrail_prompts_and_model(sandbox: Any) -> None:
    template = sandbox.templates["GenAiKit-1-Prompt"]
    diagram = build_diagram("GenAiKit-1-Prompt", template)
    api, _ = only(template, "AWS::ApiGateway::RestApi")
    function, _ = only(template, "AWS::Lambda::Function")
    guardrail, _ = only(template, "AWS::Bedrock::Guardrail")
    assert edge(diagram, api, function).labels == {"invokes"}
    assert "bedrock:ApplyGuardrail" in edge(diagram, function, guardrail).actions
    prompts = node_ids_of(template, "AWS::Bedrock::Prompt")
    assert len(prompts) == 3
    for prompt in prompts:
        assert edge(diagram, function, prompt).actions
    assert "bedrock:InvokeModel" in edge(diagram, function, "ext_model_amazon_nova_micro_v1_0").actions
    # The function's metrics feed the alarms, which notify the alarm topic.
    topic, _ = only(template, "AWS::SNS::Topic")
    assert edge(diagram, function, "CloudWatchAlarms").labels == {"metrics"}
    assert edge(diagram, "CloudWatchAlarms", topic).labels == {"notifies"}
    assert "POST /templates/{name}" in diagram.nodes[api].label


def test_level2_events_flow_from_bucket_to_queue_and_schedules_run_the_ingest_function(sandbox: Any) -> None:
    template = sandbox.templates["GenAiKit-2-Rag"]
    diagram = build_diagram("GenAiKit-2-Rag", template)
    rules = resources(template, "AWS::Events::Rule")
    changes_rule = next(lid for lid, rule in rules.items() if "EventPattern" in rule["Properties"])
    queues = resources(template, "AWS::SQS::Queue")
    queue = next(lid for lid, q in queues.items() if "RedrivePolicy" in q["Properties"])  # not the dead letters
    bucket = next(lid for lid in resources(template, "AWS::S3::Bucket") if lid in diagram.nodes)
    assert edge(diagram, bucket, changes_rule).labels == {"events"}
    assert edge(diagram, changes_rule, queue).labels == {"triggers"}
    knowledge_base, _ = only(template, "AWS::Bedrock::KnowledgeBase")
    ingest = next(lid for lid in node_ids_of(template, "AWS::Lambda::Function") if "Ingest" in lid)
    query = next(lid for lid in node_ids_of(template, "AWS::Lambda::Function") if "Query" in lid)
    schedules = schedule_rules(template)
    assert "rate(5 minutes)" in schedules.values()
    for schedule in schedules:
        assert edge(diagram, schedule, ingest).labels == {"triggers"}
    assert "bedrock:StartIngestionJob" in edge(diagram, ingest, knowledge_base).actions
    assert "bedrock:Retrieve" in edge(diagram, query, knowledge_base).actions
    assert edge(diagram, knowledge_base, "ext_model_amazon_titan_embed_text_v2_0").actions == {"bedrock:InvokeModel"}


def test_helpers_are_folded_into_the_resources_they_serve(sandbox: Any) -> None:
    template = sandbox.templates["GenAiKit-2-Rag"]
    diagram = build_diagram("GenAiKit-2-Rag", template)
    shown_types = {template["Resources"][node]["Type"] for node in diagram.nodes if node in template["Resources"]}
    for helper in ("AWS::IAM::Policy", "AWS::IAM::Role", "AWS::Lambda::Permission", "AWS::Logs::LogGroup"):
        assert helper not in shown_types
    # The destroy's cleanup (it stops ingestion jobs) is the kit's own, drawn as in Levels 3 and 4.
    assert {kind for kind in shown_types if kind.startswith("Custom::")} == {"Custom::RagIngestionCleanup"}
    assert {kind for kind in shown_types if kind.startswith("AWS::ApiGateway::")} == {"AWS::ApiGateway::RestApi"}
    # Only the kit's two functions: the custom-resource providers (auto-delete, notifications, deployment) and the
    # cleanup's own function fold away.
    functions = [node for node in diagram.nodes if node in resources(template, "AWS::Lambda::Function")]
    assert sorted(functions) == sorted(lid for lid in functions if lid.startswith(("IngestionIngest", "QueryQuery")))
    assert len(functions) == 2
    assert diagram.folded["AWS::IAM::Policy"] == len(resources(template, "AWS::IAM::Policy"))


def test_cluster_diagram_shows_the_network_path_and_the_cluster_groups(sandbox: Any) -> None:
    template = sandbox.templates["GenAiKit-4-Pretrain-Cluster"]
    diagram = build_diagram("GenAiKit-4-Pretrain-Cluster", template)
    cluster, _ = only(template, "AWS::SageMaker::Cluster")
    vpc, _ = only(template, "AWS::EC2::VPC")
    nat, _ = only(template, "AWS::EC2::NatGateway")
    assert edge(diagram, cluster, vpc).reference  # its subnets fold into the VPC
    assert edge(diagram, vpc, nat).reference  # the private subnets' default route
    assert "controller: ml.t3.medium x1" in diagram.nodes[cluster].label
    assert diagram.nodes[nat].group == "network"


def test_output_is_deterministic_whatever_the_resource_order(sandbox: Any) -> None:
    template = sandbox.templates["GenAiKit-2-Rag"]
    shuffled = {**template, "Resources": dict(reversed(list(template["Resources"].items())))}
    first = to_mermaid(build_diagram("GenAiKit-2-Rag", template))
    assert to_mermaid(build_diagram("GenAiKit-2-Rag", shuffled)) == first


def test_mermaid_uses_safe_ids_and_quoted_labels(sandbox: Any) -> None:
    for page in render_all(sandbox.templates).values():
        block = page.split("```mermaid\n", 1)[1].split("```", 1)[0]
        for line in block.splitlines()[1:]:
            assert re.fullmatch(
                r'  subgraph \w+\["[^"]+"\]|  end|    \w+\["[^"]+"\]|  \w+ (-->|-\.->)(\|"[^"]+"\|)? \w+', line
            ), line


def test_committed_diagrams_match_the_current_templates(sandbox: Any) -> None:
    problems = stale_files(render_all(sandbox.templates), DIAGRAMS)
    assert not problems, "run `kit diagram` (or `.venv/bin/python -m kit diagram`) and commit: " + "; ".join(problems)


def test_a_stale_missing_or_orphaned_page_is_named(sandbox: Any, tmp_path: Path) -> None:
    pages = render_all(sandbox.templates)
    write_all(pages, tmp_path)
    assert stale_files(pages, tmp_path) == []
    (tmp_path / "GenAiKit-1-Prompt.md").write_text("edited by hand\n")
    (tmp_path / "GenAiKit-2-Rag.md").unlink()
    (tmp_path / "GenAiKit-0-Gone.md").write_text("an old stack\n")
    assert stale_files(pages, tmp_path) == [
        f"{tmp_path / 'GenAiKit-1-Prompt.md'} is out of date",
        f"{tmp_path / 'GenAiKit-2-Rag.md'} is missing",
        f"{tmp_path / 'GenAiKit-0-Gone.md'} has no stack any more",
    ]
