"""What changing each configuration key does to a deployed stack: one table, read by `make synth` and the README test.

Four answers: "in place" (CloudFormation updates the stack, nothing that holds data is replaced),
"replaces: <what>" (the update works but replaces resources that hold data; the README says what to do after),
"new stack" (destroy the stack and deploy it again: the change renames everything, moves it to another
account or region, changes the type of a resource, which CloudFormation refuses on update, or makes an update the
service refuses), and ADDS_STACK for an opt-in that adds a stack of its own. An "in place" answer may go on to
say which values the service refuses.
tests/infra/test_update_safety.py synthesizes each change and checks the table against what CloudFormation
would do, from the createOnlyProperties of each resource type's registry schema, and against the update rules a
service adds (tests/infra/update_safety.py SERVICE_RULES).
"""

from __future__ import annotations

from collections.abc import Mapping

IN_PLACE = "in place"
NEW_STACK = "new stack"
REPLACES = "replaces: "
# What to do after Level 2's vectors are replaced: nothing, the ingest function starts the full sync itself.
REINDEX = "the ingest function re-indexes; follow it with kit l2 sync --wait"
# An opt-in key that adds a stack to the app: turned off, the app no longer has that stack, and `cdk deploy` never
# deletes a stack the app does not have (https://docs.aws.amazon.com/cdk/v2/guide/ref-cli-cmd-destroy.html: destroy
# takes "the construct ID of the CDK stack from your app"), so it is destroyed while the key is still on.
ADDS_STACK = (
    "in place to turn on; to turn off, make destroy its stack with the key still true first "
    "(once false, the app no longer has the stack and a deploy leaves it running)"
)
NEW_VECTORS = REPLACES + "vector index, knowledge base, data source (" + REINDEX + ")"
# HyperPod's UpdateCluster keeps an existing instance group's type and adds a group only with 1 or more instances
# (https://docs.aws.amazon.com/sagemaker/latest/dg/sagemaker-hyperpod-operate-slurm-cli-command.html).
HP_COMPUTE_GROUPS = (
    IN_PLACE + " for counts, with a new group at 1 or more instances (scale it to 0 in a later deploy); a group keeps "
    "its instance type: for another type, give the group a new name (the update adds the new group and deletes the "
    "old one with its nodes)"
)

UPDATES: Mapping[str, str] = {
    "stage": NEW_STACK,
    "name_prefix": NEW_STACK,
    "region": NEW_STACK,
    "account": NEW_STACK,
    "text_model_id": IN_PLACE,
    "text_temperature": IN_PLACE,
    "text_max_tokens": IN_PLACE,
    "guardrail_content_filter_strength": IN_PLACE,
    "guardrail_prompt_attack_strength": IN_PLACE,
    "guardrail_pii_anonymize": IN_PLACE,
    "guardrail_pii_block": IN_PLACE,
    "guardrail_deny_investment_advice": IN_PLACE,
    # The tier configs and CrossRegionConfig of AWS::Bedrock::Guardrail update in place (none is create-only in its
    # registry schema); the guardrail version is republished, as for every guardrail setting.
    "guardrail_tier": IN_PLACE,
    "api_throttle_rate": IN_PLACE,
    "api_throttle_burst": IN_PLACE,
    "log_retention_days": IN_PLACE,
    "tags": REPLACES
    + "collection, vector index, knowledge base, data source (OpenSearch Serverless only; "
    + REINDEX
    + ")",
    "rag_vector_store": REPLACES + "vector bucket, vector index, knowledge base, data source (" + REINDEX + ")",
    "rag_embedding_model_id": NEW_VECTORS,
    "rag_embedding_dimensions": NEW_VECTORS,
    "rag_chunking": NEW_VECTORS,
    "rag_chunk_max_tokens": NEW_VECTORS,
    "rag_chunk_overlap_percent": NEW_VECTORS,
    "rag_hierarchical_parent_tokens": NEW_VECTORS,
    "rag_hierarchical_child_tokens": NEW_VECTORS,
    "rag_hierarchical_overlap_tokens": NEW_VECTORS,
    "rag_semantic_buffer_size": NEW_VECTORS,
    "rag_semantic_breakpoint_percentile": NEW_VECTORS,
    "rag_documents_prefix": IN_PLACE,
    "rag_sample_corpus": IN_PLACE,
    "rag_sync_interval_minutes": IN_PLACE,
    "rag_answer_max_tokens": IN_PLACE,
    "rag_max_results": IN_PLACE,
    "rag_opensearch_standby_replicas": REPLACES
    + "collection, vector index, knowledge base, data source ("
    + REINDEX
    + ")",
    "ft_base_model_id": IN_PLACE,
    "ft_customization_type": IN_PLACE,
    "ft_hyperparameters": IN_PLACE,
    "ft_teacher_model_id": IN_PLACE,
    "ft_teacher_max_response_tokens": IN_PLACE,
    "ft_distillation_source": IN_PLACE,
    "ft_deploy": IN_PLACE,
    "ft_provisioned_hours": IN_PLACE,
    "ft_max_job_hours": IN_PLACE,
    "ft_poll_minutes": IN_PLACE,
    "sm_base_model": IN_PLACE,
    "sm_instance_type": IN_PLACE,
    "sm_instance_count": IN_PLACE,
    "sm_max_runtime_hours": IN_PLACE,
    "sm_spot": IN_PLACE,
    "sm_max_wait_hours": IN_PLACE,
    "sm_import_max_minutes": IN_PLACE,
    "sm_hub_token_secret": IN_PLACE,
    "hp_nat_gateways": IN_PLACE,
    # An existing group keeps its instance type (HP_COMPUTE_GROUPS). The cluster has exactly one Controller group, so
    # no second group can take over with a new type. The login group holds exactly one node: in place, a new type
    # would take a deploy without it and another with it, which no HyperPod page describes for a Login group.
    "hp_controller_instance_type": NEW_STACK,
    "hp_login_instance_type": NEW_STACK,
    "hp_compute_groups": HP_COMPUTE_GROUPS,
    # HyperPod applies a group's instance storage when it provisions a node: "FSx configuration changes only apply
    # during node provisioning. Existing nodes retain their original FSx configuration"
    # (https://docs.aws.amazon.com/sagemaker/latest/dg/sagemaker-hyperpod-ref.html). No page says otherwise for the
    # EBS volume in the same InstanceStorageConfigs, and none says a running node's volume is resized.
    "hp_ebs_volume_gb": IN_PLACE
    + " for the nodes HyperPod provisions after it (added or replaced ones); running nodes, the controller's and "
    "the login node's included, keep the size they were created with",
    # HyperPod applies FSx configuration only when it provisions a node, and the controller and login groups cannot
    # be scaled to 0 and back: turning FSx on never reaches them, turning it off deletes the file system under
    # their mounts (https://docs.aws.amazon.com/sagemaker/latest/dg/sagemaker-hyperpod-ref.html, Slurm FSx).
    "hp_fsx": NEW_STACK,
    "hp_fsx_throughput": IN_PLACE,
    "tj_instance_type": IN_PLACE,
    "tj_instance_count": IN_PLACE,
    "tj_max_runtime_hours": IN_PLACE,
    "tj_spot": IN_PLACE,
    "tj_max_wait_hours": IN_PLACE,
    "tj_in_cluster_vpc": IN_PLACE,
    "invocation_logging": ADDS_STACK,
    "powertools_layer_version": IN_PLACE,
    "alarm_email": IN_PLACE,
}


def replaced_words(stated: str) -> set[str]:
    """The data-holding resources a "replaces: a, b (note)" answer names."""
    if not stated.startswith(REPLACES):
        return set()
    names = stated.removeprefix(REPLACES).split("(", 1)[0]
    return {name.strip() for name in names.replace(" and ", ", ").split(",") if name.strip()}


def new_stack_keys() -> list[str]:
    return [key for key, stated in UPDATES.items() if stated == NEW_STACK]
