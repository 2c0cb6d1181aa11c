#!/usr/bin/env python3
"""The kit's CDK app: configuration enters here once, is validated, and is passed down to each level."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any

import aws_cdk as cdk
from cdk_nag import AwsSolutionsChecks

from stacks.config import ConfigError, KitConfig, load_config
from stacks.invocation_logging import InvocationLoggingStack
from stacks.level1_prompt import PromptEngineeringStack
from stacks.level2_rag import RagStack
from stacks.level3_finetune import FineTuneStack
from stacks.level4_pretrain import PretrainClusterStack, PretrainJobsStack
from stacks.prompt_templates import load_templates

# The Powertools for AWS Lambda (Python) v3 managed layer version this kit release is tested with.
PINNED_POWERTOOLS_LAYER = 38

STACK_IDS = {
    "1": "GenAiKit-1-Prompt",
    "2": "GenAiKit-2-Rag",
    "3": "GenAiKit-3-FineTune",
    "4-jobs": "GenAiKit-4-Pretrain-Jobs",
    "4-cluster": "GenAiKit-4-Pretrain-Cluster",
    "0-logging": "GenAiKit-0-InvocationLogging",
}


def build_app(context: Mapping[str, Any] | None = None, *, outdir: str | None = None) -> tuple[cdk.App, KitConfig]:
    """Build the app; ``context`` (tests) replaces the CLI's context. Raises ConfigError on bad config."""
    app = cdk.App(context=dict(context) if context is not None else None, outdir=outdir)
    raw = app.node.get_all_context()
    config = load_config({k: v for k, v in raw.items() if v is not None}, pinned_layer_version=PINNED_POWERTOOLS_LAYER)
    env = cdk.Environment(region=config.region, account=config.account)
    PromptEngineeringStack(
        app,
        STACK_IDS["1"],
        stack_name=f"{STACK_IDS['1']}-{config.stage}",
        env=env,
        config=config,
        templates=load_templates(),
    )
    RagStack(app, STACK_IDS["2"], stack_name=f"{STACK_IDS['2']}-{config.stage}", env=env, config=config)
    FineTuneStack(app, STACK_IDS["3"], stack_name=f"{STACK_IDS['3']}-{config.stage}", env=env, config=config)
    # Level 4: the zero-idle training-job path stands alone unless told to run inside the cluster's VPC.
    cluster = PretrainClusterStack(
        app, STACK_IDS["4-cluster"], stack_name=f"{STACK_IDS['4-cluster']}-{config.stage}", env=env, config=config
    )
    PretrainJobsStack(
        app,
        STACK_IDS["4-jobs"],
        stack_name=f"{STACK_IDS['4-jobs']}-{config.stage}",
        env=env,
        config=config,
        network=cluster.network if config.pretrain.job_in_cluster_vpc else None,
    )
    if config.invocation_logging:  # opt-in: one account-level setting per account and region
        InvocationLoggingStack(
            app, STACK_IDS["0-logging"], stack_name=f"{STACK_IDS['0-logging']}-{config.stage}", env=env, config=config
        )
    cdk.Aspects.of(app).add(AwsSolutionsChecks(verbose=True))
    return app, config


def main() -> int:
    try:
        app, _ = build_app()
    except ConfigError as err:
        print(err, file=sys.stderr)
        return 1
    app.synth()
    return 0


if __name__ == "__main__":
    sys.exit(main())
