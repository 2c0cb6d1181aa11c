"""Level 3 on SageMaker (``GenAiKit-3-FineTune-SageMaker``) settings: the base model, the training job's
instances and limits, how long the pipeline waits for Custom Model Import, and the Hub token's secret."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import Field, ValidationInfo, field_validator

from stacks.level3_finetune.names import HUB_ID
from stacks.shared.settings import Allowed, Flag, Invalid, Problem, Settings, Text, TrainingInstanceType, Whole
from stacks.shared.training_jobs import MAX_JOB_HOURS

# A Secrets Manager secret name ("1-512 characters: letters, digits, /_+=.@-") or its complete ARN, whose
# name ends in the hyphen and six characters Secrets Manager adds:
# https://docs.aws.amazon.com/secretsmanager/latest/apireference/API_CreateSecret.html
# Bedrock Custom Model Import, which serves the fine-tuned model, is offered in these regions only: "Custom model
# import is supported in the following regions: eu-central-1, us-east-1, us-east-2, us-west-2"
# (https://docs.aws.amazon.com/bedrock/latest/userguide/model-customization-import-model.html).
IMPORT_REGIONS = ("eu-central-1", "us-east-1", "us-east-2", "us-west-2")
SECRET_NAME = re.compile(r"[A-Za-z0-9/_+=.@-]{1,512}")
SECRET_ARN = re.compile(
    r"arn:aws[a-z-]*:secretsmanager:[a-z]{2}(-[a-z]+)+-\d:\d{12}:secret:[A-Za-z0-9/_+=.@-]{1,512}-[A-Za-z0-9]{6}"
)


class SageMakerFineTuneSettings(Settings):
    base_model: Annotated[Text, Allowed("a Hugging Face Hub id such as Qwen/Qwen2.5-0.5B-Instruct")] = Field(
        alias="sm_base_model",
        description=(
            "The open-weights base model (a Hub id of an architecture Custom Model Import supports); a run may "
            "name another with `baseModel`"
        ),
    )
    instance_type: TrainingInstanceType = Field(
        alias="sm_instance_type", description="The fine-tuning job's instance type"
    )
    instance_count: Whole = Field(
        alias="sm_instance_count", description="The fine-tuning job's instance count", ge=1, le=16
    )
    max_runtime_hours: Whole = Field(
        alias="sm_max_runtime_hours", description="The fine-tuning job's maximum runtime", ge=1, le=MAX_JOB_HOURS
    )
    spot: Flag = Field(alias="sm_spot", description="Managed spot training for the fine-tuning job")
    max_wait_hours: Whole = Field(
        alias="sm_max_wait_hours",
        description="The longest wait for the fine-tuning job with managed spot (at least the runtime)",
        ge=1,
        le=MAX_JOB_HOURS,
    )
    import_max_minutes: Whole = Field(
        alias="sm_import_max_minutes",
        description="The longest wait for the Custom Model Import job before the run is failed and cleaned up",
        ge=10,
        le=24 * 60,
    )

    hub_token_secret: Annotated[
        Text, Allowed('"" (none), or the name or complete ARN of a Secrets Manager secret holding a Hub token')
    ] = Field(
        alias="sm_hub_token_secret",
        description=(
            "The Secrets Manager secret (name or complete ARN) holding a Hugging Face Hub token for gated base "
            'models; the training role may read only this secret, and the job fetches it at start ("": none)'
        ),
    )

    @field_validator("hub_token_secret")
    @classmethod
    def _secret(cls, secret: str) -> str:
        if secret and not (SECRET_NAME.fullmatch(secret) or SECRET_ARN.fullmatch(secret)):
            raise ValueError("not a secret name or a complete secret ARN")
        return secret

    @field_validator("base_model")
    @classmethod
    def _hub_id(cls, model: str) -> str:
        if not HUB_ID.fullmatch(model):
            raise ValueError("not a Hub id")
        return model

    @field_validator("max_wait_hours")
    @classmethod
    def _spot_waits_for_the_runtime(cls, wait: int, info: ValidationInfo) -> int:
        runtime = info.data.get("max_runtime_hours", 0)
        if info.data.get("spot") and wait < runtime:
            raise Invalid(f"at least sm_max_runtime_hours ({runtime}) with managed spot")
        return wait

    @property
    def job_hours(self) -> int:
        """The longest the training job can take: the spot wait bounds the runtime when spot is on."""
        return self.max_wait_hours if self.spot else self.max_runtime_hours


def region_problems(region: str) -> list[Problem]:
    """What ``region`` cannot do for the SageMaker path: import the trained model into Bedrock (the training image
    is stacks/shared/training_jobs.training_image_problems). Only this stack is refused for it
    (stacks/shared/regions.py)."""
    if region in IMPORT_REGIONS:
        return []
    return [Problem("region", region, "a region with Bedrock Custom Model Import: " + ", ".join(IMPORT_REGIONS))]
