"""Update safety: every documented configuration change either applies to a deployed stack or is said to need a new one.

For each kit key, the app is synthesized with the default and with a changed value, and the effect on each
stack is computed from the registry schemas' createOnlyProperties (tests/infra/update_safety.py). The README's
configuration table states the effect per key in its "On a deployed stack" column, written from
stacks/updates.py (the same table `make synth` prints). A row fails when a replaced resource keeps its
explicit name, when a logical id changes type, when the service refuses the update (update_safety.SERVICE_RULES),
or when data-holding resources are replaced or removed and the row does not name exactly those.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from stacks.config import CONFIG_KEYS
from stacks.shared.facts import STACK_IDS
from stacks.shared.registry import config_errors, name_findings
from stacks.updates import ADDS_STACK, IN_PLACE, NEW_STACK, UPDATES, replaced_words
from tests.conftest import ROOT, SYNTHS, VARIANTS, cdk_json_context, masked_json, once_per_run, run_folder, variant
from tests.infra.config_reads import keys_of, reach, stacks_reading
from tests.infra.update_safety import UpdateEffect, update_effect

# key -> (the configuration the change is made on, the changed value). The base turns on what the key
# acts on, so that the change is not a no-op (hierarchical settings are tested with hierarchical chunking).
CHANGES: Mapping[str, tuple[Mapping[str, Any], Any]] = {
    "stage": ({}, "prod"),
    "name_prefix": ({}, "kit2"),
    "region": ({}, "us-west-2"),
    "account": ({}, "123456789012"),
    "text_model_id": ({}, "us.amazon.nova-lite-v1:0"),
    "text_temperature": ({}, 0.2),
    "text_max_tokens": ({}, 1024),
    "guardrail_content_filter_strength": ({}, "MEDIUM"),
    "guardrail_prompt_attack_strength": ({}, "MEDIUM"),
    "guardrail_pii_anonymize": ({}, ["EMAIL"]),
    "guardrail_pii_block": ({}, ["US_SOCIAL_SECURITY_NUMBER"]),
    "guardrail_deny_investment_advice": ({}, False),
    "guardrail_tier": ({}, "standard"),
    "api_throttle_rate": ({}, 50),
    "api_throttle_burst": ({}, 100),
    "log_retention_days": ({}, 30),
    "powertools_layer_version": ({}, 37),
    "alarm_email": ({}, "ops@example.com"),
    # Tags are create-only on an OpenSearch Serverless collection: the stricter store is the base.
    "tags": ({"rag_vector_store": "opensearch-serverless"}, {"owner": "team"}),
    "rag_vector_store": ({}, "opensearch-serverless"),
    "rag_embedding_model_id": ({}, "cohere.embed-english-v3"),
    "rag_embedding_dimensions": ({}, 512),
    "rag_chunking": ({}, "hierarchical"),
    "rag_chunk_max_tokens": ({}, 500),
    "rag_chunk_overlap_percent": ({}, 10),
    "rag_hierarchical_parent_tokens": ({"rag_chunking": "hierarchical"}, 2000),
    "rag_hierarchical_child_tokens": ({"rag_chunking": "hierarchical"}, 200),
    "rag_hierarchical_overlap_tokens": ({"rag_chunking": "hierarchical"}, 40),
    "rag_semantic_buffer_size": ({"rag_chunking": "semantic"}, 1),
    "rag_semantic_breakpoint_percentile": ({"rag_chunking": "semantic"}, 90),
    "rag_documents_prefix": ({}, "kb/"),
    "rag_sample_corpus": ({}, False),
    "rag_sync_interval_minutes": ({}, 10),
    "rag_max_results": ({}, 8),
    "rag_answer_max_tokens": ({}, 2048),
    "rag_opensearch_standby_replicas": ({"rag_vector_store": "opensearch-serverless"}, True),
    "ft_base_model_id": ({}, "amazon.nova-lite-v1:0:300k"),
    # Continued pre-training is offered for the Titan Text base models only.
    "ft_customization_type": ({"ft_base_model_id": "amazon.titan-text-express-v1:0:8k"}, "CONTINUED_PRE_TRAINING"),
    "ft_hyperparameters": ({}, {"epochCount": "3", "learningRate": "0.00001"}),
    "ft_deploy": ({}, "provisioned"),
    "ft_provisioned_hours": ({"ft_deploy": "provisioned"}, 4),
    "ft_max_job_hours": ({}, 12),
    "ft_poll_minutes": ({}, 5),
    "ft_teacher_model_id": ({}, "us.amazon.nova-pro-v1:0"),
    "ft_teacher_max_response_tokens": ({}, 2000),
    "ft_distillation_source": ({"invocation_logging": True}, "invocation-logs"),
    "hp_nat_gateways": ({}, 2),
    # HyperPod keeps an existing group's instance type (update_safety.SERVICE_RULES): the controller's and an
    # existing login node's type changes are refused updates, documented as a new stack (not synthesized).
    "hp_controller_instance_type": ({}, "ml.m5.xlarge"),
    "hp_login_instance_type": ({"hp_login_instance_type": "ml.t3.medium"}, "ml.t3.large"),
    # The two documented compute changes at once: the default group scaled up, and a type change made as a new
    # group under a new name, added with 1 or more instances (a new group at 0 is refused).
    "hp_compute_groups": (
        {},
        [
            {"name": "gpu", "instance_type": "ml.g5.8xlarge", "count": 2},
            {"name": "gpu-g6", "instance_type": "ml.g6.8xlarge", "count": 1},
        ],
    ),
    "hp_ebs_volume_gb": ({}, 200),
    "hp_fsx": ({}, True),
    "hp_fsx_throughput": ({"hp_fsx": True}, 250),
    "sm_base_model": ({}, "Qwen/Qwen2.5-1.5B-Instruct"),
    "sm_instance_type": ({}, "ml.g5.2xlarge"),
    "sm_instance_count": ({}, 2),
    "sm_max_runtime_hours": ({}, 8),
    "sm_spot": ({}, True),
    "sm_max_wait_hours": ({"sm_spot": True}, 12),
    "sm_import_max_minutes": ({}, 60),
    "sm_hub_token_secret": ({}, "genai-kit/hf-token"),
    "tj_instance_type": ({}, "ml.g5.2xlarge"),
    "tj_instance_count": ({}, 4),
    "tj_max_runtime_hours": ({}, 8),
    "tj_spot": ({}, True),
    "tj_max_wait_hours": ({"tj_spot": True}, 12),
    "tj_in_cluster_vpc": ({}, True),
    "invocation_logging": ({}, True),
}

README = ROOT / "README.md"
_SYNTHS: dict[str, dict[str, dict[str, Any]]] = {}


def _synthesize(overrides: Mapping[str, Any], stack_ids: list[str], outdir: Path) -> dict[str, dict[str, Any]]:
    """The templates of ``stack_ids`` (and the stacks they need) for ``overrides``, synthesized without cdk-nag
    and without CDK's built-in CloudFormation validation (off in the whole suite, see conftest). The literal
    values are still checked against the registry schemas here, with the kit's own reader
    (stacks/shared/registry.py), as `cdk synth` reports them."""
    import aws_cdk as cdk

    from app import build_app

    context = {**cdk_json_context(), **overrides}
    app, _ = build_app(context, outdir=str(outdir), nag=False, schema_validation=False, only=stack_ids)
    assembly = app.synth()
    found = {
        child.node.id: assembly.get_stack_artifact(child.artifact_id).template
        for child in app.node.children
        if isinstance(child, cdk.Stack)
    }
    assert config_errors(name_findings(found, context), context) == []
    return found


# A configuration that is one of conftest's variants is not synthesized again: the variant's whole app holds every
# stack a subset would build, with the same templates (cdk-nag only reports; guarded by
# test_a_variant_holds_the_templates_update_safety_would_synthesize).
_VARIANT_NAMED = {json.dumps(overrides, sort_keys=True): name for name, overrides in VARIANTS.items()}


def templates(
    overrides: Mapping[str, Any], stack_ids: list[str], factory: pytest.TempPathFactory
) -> dict[str, dict[str, Any]]:
    """Templates by stack id for the cdk.json context plus ``overrides`` (no cdk-nag), synthesized once per
    test run: the configurations several keys start from are shared by every xdist worker (conftest). A
    variant's configuration comes with more stacks than ``stack_ids``; only stacks on both sides are compared."""
    if (name := _VARIANT_NAMED.get(json.dumps(overrides, sort_keys=True))) is not None:
        return variant(name, factory).templates
    cache_key = json.dumps([overrides, stack_ids], sort_keys=True)
    if cache_key not in _SYNTHS:
        folder = run_folder(factory)
        outdir = folder / f"update-safety-{hashlib.sha256(cache_key.encode()).hexdigest()[:16]}"
        _SYNTHS[cache_key] = once_per_run(
            folder, f"update-safety:{cache_key}", lambda: _synthesize(overrides, stack_ids, outdir)
        )
    return _SYNTHS[cache_key]


@pytest.fixture(scope="module")
def key_reach(tmp_path_factory: pytest.TempPathFactory) -> dict[str, set[str]]:
    """stack id -> the keys it reads, in any of the synthesized variants (conftest records what each reads)."""
    found: dict[str, set[str]] = {}
    for name in SYNTHS:
        synth = variant(name, tmp_path_factory)
        for stack_id, keys in reach(synth.config, synth.reads, synth.templates).items():
            found.setdefault(stack_id, set()).update(keys)
    return found


# Keys that are "new stack" by what they are, which no template comparison shows: they name or place every stack
# (another stage, prefix, account or Region is another set of stacks), or the service applies them only when a node
# is provisioned (HyperPod mounts FSx on a node at its creation: docs/level-4-pretrain.md).
NEW_STACK_BY_DEFINITION = {
    "account": "another account is another set of stacks",
    "region": "another Region is another set of stacks",
    "stage": "another stage is another set of stacks",
    "name_prefix": "another prefix renames every stack's resources",
    "hp_fsx": "HyperPod mounts FSx only on a node it provisions, and the controller and login nodes stay",
}


def problems(key: str, stated: str, effect: UpdateEffect) -> list[str]:
    """What is wrong with the stated behaviour of ``key`` given the computed effect."""
    if stated == NEW_STACK:
        return []  # the README and `make synth` tell the user to destroy and deploy again
    found = [f"{key}: CloudFormation refuses a type change: {change}" for change in effect.type_changes]
    found += [f"{key}: name collision on replacement: {collision}" for collision in effect.collisions]
    found += [f"{key}: the service refuses the update: {refusal}" for refusal in effect.refused]
    lost = effect.lost_data
    if stated == IN_PLACE and lost:
        found.append(f"{key}: said 'in place' but replaces or removes {sorted(lost)}")
    elif stated != IN_PLACE and lost != replaced_words(stated):
        found.append(f"{key}: said {stated!r} but replaces or removes {sorted(lost) or 'nothing that holds data'}")
    return found


def test_every_key_has_a_change_and_a_stated_behaviour() -> None:
    assert set(CHANGES) == set(CONFIG_KEYS)
    assert set(UPDATES) == set(CONFIG_KEYS)


@pytest.mark.parametrize("key", sorted(CHANGES))
def test_a_documented_change_applies_to_a_deployed_stack(
    key: str, key_reach: dict[str, set[str]], tmp_path_factory: pytest.TempPathFactory
) -> None:
    stated = UPDATES[key]
    if key in NEW_STACK_BY_DEFINITION:
        assert stated == NEW_STACK, key
        pytest.skip(f"{key}: {NEW_STACK_BY_DEFINITION[key]}")
    base, changed = CHANGES[key]
    # Only the stacks that read the key can change with it (tests/infra/config_reads.py).
    stack_ids = stacks_reading(key, key_reach)
    assert stack_ids, f"{key}: no stack reads it"
    before = templates(base, stack_ids, tmp_path_factory)
    after = templates({**base, key: changed}, stack_ids, tmp_path_factory)
    effect = update_effect(before, after)
    if stated == NEW_STACK:
        # Any other key is "new stack" only because the update model sees the change refused or colliding.
        assert effect.refused or effect.type_changes or effect.collisions, f"{key}: said {NEW_STACK!r}, applies"
        return
    assert problems(key, stated, effect) == []
    # A change that adds a stack (or takes one out of the app) says how to remove it again
    toggled = sorted(s for s in stack_ids if (s in before) != (s in after))
    assert bool(toggled) == (stated == ADDS_STACK), (key, toggled, stated)


def _readme_column() -> dict[str, str]:
    """key -> the README's "On a deployed stack" cell, for every key named in the configuration table."""
    section = README.read_text().split("## Configuration reference", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    column: dict[str, str] = {}
    for row in rows:
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        keys = re.findall(r"`([a-z_]+)`", cells[0])
        for name in keys:
            full = name if name in CONFIG_KEYS else _expand(name, keys[0])
            column[full] = cells[-1]
    return column


def _expand(short: str, first: str) -> str:
    """`rag_hierarchical_parent_tokens` / `_child_tokens`: a cell may abbreviate the keys after the first."""
    stem = first.rsplit("_", 2)[0] if short.startswith("_") else ""
    return stem + short


def test_readme_states_each_keys_update_behaviour_as_the_table_does() -> None:
    column = _readme_column()
    assert set(column) == set(CONFIG_KEYS)
    assert {key: cell for key, cell in column.items()} == {key: UPDATES[key] for key in column}


def test_a_variant_holds_the_templates_update_safety_would_synthesize(
    sandbox: Any, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """The update-safety synth (no cdk-nag, a subset of stacks) writes the same templates as the variant with the
    same configuration (cdk-nag on, the whole app), so a variant can stand in for it (see templates())."""
    every_stack = sorted(STACK_IDS.values())
    own = _synthesize({}, every_stack, run_folder(tmp_path_factory) / "update-safety-vs-variant")
    assert sorted(own) == sorted(sandbox.templates)  # the stacks the sandbox builds (no opt-in logging stack)
    for stack_id, template in own.items():
        assert masked_json(template) == masked_json(sandbox.templates[stack_id]), stack_id
    # One stack alone, as a key that only it reads gets it, is the same stack as in the whole app.
    alone = _synthesize({}, [STACK_IDS["2"]], run_folder(tmp_path_factory) / "update-safety-vs-variant-l2")
    assert masked_json(alone[STACK_IDS["2"]]) == masked_json(sandbox.templates[STACK_IDS["2"]])


def test_the_guard_sees_collisions_type_changes_and_lost_data() -> None:
    # Canary: a data source replaced (chunking is create-only) under the same name, and a type change.
    def data_source(chunking: str, name: str) -> dict[str, Any]:
        return {
            "Type": "AWS::Bedrock::DataSource",
            "Properties": {
                "Name": name,
                "KnowledgeBaseId": "kb",
                "DataSourceConfiguration": {"Type": "S3"},
                "VectorIngestionConfiguration": {"ChunkingConfiguration": {"ChunkingStrategy": chunking}},
            },
        }

    old = {"S": {"Resources": {"Ds": data_source("NONE", "docs"), "Ix": {"Type": "AWS::S3Vectors::Index"}}}}
    new = {
        "S": {
            "Resources": {"Ds": data_source("FIXED_SIZE", "docs"), "Ix": {"Type": "AWS::OpenSearchServerless::Index"}}
        }
    }
    effect = update_effect(old, new)
    assert effect.collisions == ["S/Ds (AWS::Bedrock::DataSource) is replaced but keeps Name='docs'"]
    assert effect.type_changes == ["S/Ix: AWS::S3Vectors::Index -> AWS::OpenSearchServerless::Index"]
    assert problems("k", "replaces: data source", effect) != []
    # A new name per chunking configuration removes the collision; the lost data source is still reported.
    renamed = {"S": {"Resources": {"Ds": data_source("FIXED_SIZE", "docs-2"), "Ix": old["S"]["Resources"]["Ix"]}}}
    effect = update_effect(old, renamed)
    assert effect.collisions == [] and effect.lost_data == {"data source"}
    assert problems("k", IN_PLACE, effect) == ["k: said 'in place' but replaces or removes ['data source']"]
    assert problems("k", "replaces: data source", effect) == []


def test_the_guard_sees_a_name_that_moves_to_a_new_logical_id() -> None:
    """A construct swap that keeps a physical name: the new resource is created before the old one is deleted."""
    queue = {"Type": "AWS::SQS::Queue", "Properties": {"QueueName": "kit-changes"}}
    old = {"S": {"Resources": {"Old": queue, "Other": {"Type": "AWS::SNS::Topic", "Properties": {"TopicName": "t"}}}}}
    moved = {"S": {"Resources": {"New": queue, "Topic": {"Type": "AWS::SNS::Topic", "Properties": {"TopicName": "u"}}}}}
    effect = update_effect(old, moved)
    assert effect.collisions == ["S/New (AWS::SQS::Queue) is added with the QueueName='kit-changes' of removed Old"]
    renamed = {"S": {"Resources": {"New": {**queue, "Properties": {"QueueName": "kit-changes-2"}}}}}
    assert update_effect(old, renamed).collisions == []


def test_the_guard_sees_what_hyperpod_refuses_to_update() -> None:
    """UpdateCluster keeps an existing group's instance type and adds a group only with 1 or more instances
    (sagemaker-hyperpod-operate-slurm-cli-command.html); nothing in the registry schema says so."""

    def cluster(*groups: tuple[str, str, int], name: str = "kit-hyperpod") -> dict[str, Any]:
        specs = [{"InstanceGroupName": g, "InstanceType": t, "InstanceCount": c} for g, t, c in groups]
        properties = {"ClusterName": name, "InstanceGroups": specs}
        return {"S": {"Resources": {"C": {"Type": "AWS::SageMaker::Cluster", "Properties": properties}}}}

    base = cluster(("controller", "ml.t3.medium", 1), ("gpu", "ml.g5.8xlarge", 0))
    # An existing group's type: refused, for the controller as for a compute group.
    effect = update_effect(base, cluster(("controller", "ml.m5.xlarge", 1), ("gpu", "ml.g5.8xlarge", 0)))
    assert effect.refused == [
        "S/C (AWS::SageMaker::Cluster): instance group 'controller' changes InstanceType ml.t3.medium -> "
        "ml.m5.xlarge (an existing group keeps its type)"
    ]
    assert problems("k", IN_PLACE, effect) == [f"k: the service refuses the update: {effect.refused[0]}"]
    assert problems("k", NEW_STACK, effect) == []
    assert update_effect(base, cluster(("controller", "ml.t3.medium", 1), ("gpu", "ml.g6.8xlarge", 0))).refused
    # A new group at 0 is refused; at 1 (or scaling an existing group, even to 0) it is an update.
    added_empty = cluster(
        ("controller", "ml.t3.medium", 1), ("gpu", "ml.g5.8xlarge", 0), ("gpu-g6", "ml.g6.8xlarge", 0)
    )
    assert [r.split(": ", 1)[1] for r in update_effect(base, added_empty).refused] == [
        "instance group 'gpu-g6' is added with InstanceCount 0 (a new group needs 1 or more)"
    ]
    renamed = cluster(("controller", "ml.t3.medium", 1), ("gpu-g6", "ml.g6.8xlarge", 1))
    scaled = cluster(("controller", "ml.t3.medium", 1), ("gpu", "ml.g5.8xlarge", 4))
    assert update_effect(base, renamed).refused == [] and update_effect(scaled, base).refused == []
    # A replaced cluster (a create-only ClusterName changes) is created anew: no update rule applies.
    other = cluster(("controller", "ml.m5.xlarge", 1), ("gpu-g6", "ml.g6.8xlarge", 0), name="kit-hyperpod-2")
    effect = update_effect(base, other)
    assert effect.refused == [] and effect.lost_data == {"cluster"}


def test_the_guard_sees_a_schedule_moved_to_another_group() -> None:
    """UpdateSchedule finds a schedule by its group, so an in-place update cannot move it; a new logical id (a new
    schedule, the old one deleted) can (update_safety._schedule_refusals)."""

    def schedule(lid: str, group: str | None) -> dict[str, Any]:
        properties = {"ScheduleExpression": "rate(1 hour)", **({"GroupName": group} if group else {})}
        return {"S": {"Resources": {lid: {"Type": "AWS::Scheduler::Schedule", "Properties": properties}}}}

    moved = update_effect(schedule("Sweep", None), schedule("Sweep", "kit-sweep"))
    assert moved.refused == [
        "S/Sweep (AWS::Scheduler::Schedule): moves the schedule from group 'default' to 'kit-sweep' "
        "(UpdateSchedule finds it by its group)"
    ]
    assert update_effect(schedule("Sweep", None), schedule("GroupedSweep", "kit-sweep")).refused == []
    assert update_effect(schedule("Sweep", "kit-sweep"), schedule("Sweep", "kit-sweep")).refused == []


# --- The stacks a key reaches (tests/infra/config_reads.py) ---------------------------------------------------


def test_each_config_attribute_maps_to_the_keys_it_is_built_from() -> None:
    """Change one key at a time: every KitConfig attribute that changes is traced to that key (keys_of), so a
    stack that reads the attribute is synthesized when the key changes."""
    from stacks.config import load_config
    from stacks.shared.facts import PINNED_POWERTOOLS_LAYER

    def loaded(overrides: Mapping[str, Any]) -> Any:
        return load_config({**cdk_json_context(), **overrides}, pinned_layer_version=PINNED_POWERTOOLS_LAYER)

    for key, (base, changed) in CHANGES.items():
        if UPDATES[key] == NEW_STACK:
            continue  # not synthesized (and a region alone may leave the default models unoffered)
        before, after = loaded(base), loaded({**base, key: changed})
        differing = [name for name in vars(before) if getattr(before, name) != getattr(after, name)]
        assert differing, f"{key}: the change {changed!r} changes nothing in the configuration"
        for name in differing:
            assert key in keys_of(before, [name]), f"{key} changes config.{name}, which keys_of does not trace to it"


def test_the_stacks_read_the_same_settings_in_every_variant(tmp_path_factory: pytest.TempPathFactory) -> None:
    """The update-safety synths follow the reads of the variants: they must not depend on the configuration."""
    seen = {name: variant(name, tmp_path_factory).reads.by_stack for name in SYNTHS}
    first = seen[SYNTHS[0]]
    for name, reads in seen.items():
        common = set(reads) & set(first)
        assert {s: reads[s] for s in common} == {s: first[s] for s in common}, name


def test_the_recorder_sees_each_level_read_its_own_settings(key_reach: dict[str, set[str]]) -> None:
    assert stacks_reading("rag_chunking", key_reach) == [STACK_IDS["2"]]
    assert stacks_reading("sm_spot", key_reach) == [STACK_IDS["3-sagemaker"]]
    assert stacks_reading("tj_spot", key_reach) == [STACK_IDS["4-cluster"], STACK_IDS["4-jobs"]]
    assert stacks_reading("stage", key_reach) == sorted(STACK_IDS.values())  # the app reads it for every stack
    # A read through a property is traced to what the property reads (deployment -> name_prefix).
    assert "name_prefix" in key_reach[STACK_IDS["3"]]
