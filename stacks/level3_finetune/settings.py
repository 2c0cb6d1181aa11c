"""Level 3 (fine-tuning) settings: the base model, the customization and how the custom model is served.

The model table is the validator's (lambdas/level3_finetune/finetune_validate/formats.py): which customization
types, regions, hyperparameters and serving each base model offers. The function checks the same table again
at run time, for requests that override these settings.
"""

from __future__ import annotations

from typing import Annotated, Literal, get_args

from pydantic import BeforeValidator, Field, ValidationInfo, field_validator

from finetune_validate import formats
from stacks.shared.facts import HISTORY_EVENT_QUOTA
from stacks.shared.settings import (
    Allowed,
    Invalid,
    OneOf,
    Problem,
    Settings,
    Stripped,
    Text,
    Whole,
    json_or_text,
    parse_model_id,
    profile_region_problems,
)

CUSTOMIZATION_TYPES = formats.CUSTOMIZATION_TYPES
DeployMode = Literal["none", "on-demand", "provisioned"]
DEPLOY_MODES: tuple[str, ...] = get_args(DeployMode)
DistillationSource = Literal["prompts", "invocation-logs"]
DISTILLATION_SOURCES: tuple[str, ...] = get_args(DistillationSource)

# Step Functions fails a Standard execution whose history reaches HISTORY_EVENT_QUOTA events, and the teardown
# would then stop a healthy job. One job poll (Wait, Task, Choice, Pass, Choice) writes JOB_POLL_EVENTS; the rest of
# a run at most RUN_EVENTS (every retry spent, the deployment's polls); a tenth of the quota is kept for retried polls
# (throttled or failing, see test_history.py).
# tests/level3_finetune/test_history.py derives both counts from the synthesized definition.
JOB_POLL_EVENTS = 13
RUN_EVENTS = 1_000
HISTORY_MARGIN = HISTORY_EVENT_QUOTA // 10
MAX_JOB_POLLS = (HISTORY_EVENT_QUOTA - HISTORY_MARGIN - RUN_EVENTS) // JOB_POLL_EVENTS


def job_polls(max_job_hours: int, poll_minutes: int) -> int:
    """How many times the pipeline reads the job's status before it stops the job."""
    return max(1, max_job_hours * 60 // poll_minutes)


class FineTuneSettings(Settings):
    base_model_id: Annotated[Text, OneOf(formats.MODELS)] = Field(
        alias="ft_base_model_id",
        description="The base model to customize (offered in `region`; one past its end of life is refused)",
    )
    customization_type: Annotated[Text, OneOf(CUSTOMIZATION_TYPES)] = Field(
        alias="ft_customization_type", description="The customization type (checked against the base model)"
    )
    teacher_model_id: Annotated[
        Text,
        Allowed(
            f"a distillation teacher of {', '.join(formats.TEACHERS)} (or its cross-Region profile) not past its end "
            "of life"
        ),
    ] = Field(
        alias="ft_teacher_model_id",
        description=(
            "The distillation teacher (a model or cross-Region profile id paired with the base model; one past its "
            "end of life is refused); a run may name another with `teacherModelId`"
        ),
    )
    teacher_max_response_tokens: Whole = Field(
        alias="ft_teacher_max_response_tokens",
        description="Distillation: the most tokens the job asks of the teacher per response",
        ge=1,
        le=10_000,  # the API documents no range (TeacherModelConfig); this bound catches a typo
    )
    distillation_source: Annotated[DistillationSource, Stripped] = Field(
        alias="ft_distillation_source",
        description=(
            "Distillation data: `prompts` (a JSONL under datasets/) or `invocation-logs` (also lets a run without "
            "a trainingKey distill from the logs the invocation-logging stack collects; needs invocation_logging=true)"
        ),
    )
    # Bedrock takes hyperparameters as strings.
    hyperparameters: Annotated[
        dict[str, str],
        BeforeValidator(json_or_text),
        Allowed('a JSON object of string values, e.g. {"epochCount": "2"}'),
    ] = Field(
        alias="ft_hyperparameters",
        description=(
            "Default hyperparameters (strings) of ft_customization_type's runs; a request's own replace them, "
            "and a run of another type starts from none (the service's defaults)"
        ),
    )
    deploy: Annotated[DeployMode, Stripped] = Field(
        alias="ft_deploy",
        description=(
            "Deploy the custom model: `none`, `on-demand` (Amazon Nova) or `provisioned` (Provisioned Throughput)"
        ),
    )
    provisioned_hours: Whole = Field(
        alias="ft_provisioned_hours",
        description="How long Provisioned Throughput lives before the state machine deletes it",
        ge=1,
        le=72,
    )
    max_job_hours: Whole = Field(
        alias="ft_max_job_hours", description="The longest wait for a customization job", ge=1, le=72
    )
    poll_minutes: Whole = Field(
        alias="ft_poll_minutes", description="How often the pipeline reads the job's status", ge=1, le=60
    )

    @field_validator("distillation_source")
    @classmethod
    def _logs_collected_by_the_kit(cls, source: str, info: ValidationInfo) -> str:
        """The stack reads the logs bucket from the invocation-logging stack's SSM parameter as a deploy-time
        parameter, which must already exist (https://docs.aws.amazon.com/AWSCloudFormation/latest/UserGuide/cloudformation-supplied-parameter-types.html):
        without that stack, the first deploy fails at its change set."""
        if source == "invocation-logs" and (info.context or {}).get("invocation_logging") is False:
            raise Invalid(
                "prompts unless invocation_logging=true (invocation-logs reads the bucket of the invocation-logging "
                "stack, GenAiKit-0-InvocationLogging, which that key adds and deploys first)"
            )
        return source

    @field_validator("base_model_id")
    @classmethod
    def _not_past_its_end_of_life(cls, base: str) -> str:
        """A model past its end-of-life date: Bedrock refuses it, so every run would fail at validation."""
        problem = formats.MODELS[base].lifecycle.problem(base)
        if problem is not None and problem[0] == "refused":
            usable = [m for m, spec in formats.MODELS.items() if (spec.lifecycle.problem(m) or ("",))[0] != "refused"]
            raise Invalid(f"a model Bedrock still customizes ({problem[1]} Still offered: {', '.join(usable)})")
        return base

    @field_validator("customization_type")
    @classmethod
    def _offered_for_the_model(cls, kind: str, info: ValidationInfo) -> str:
        base = info.data.get("base_model_id")
        if base and kind not in formats.MODELS[base].customization_types:
            raise Invalid(f"one of {', '.join(formats.MODELS[base].customization_types)} for {base}")
        problem = formats.check_pipeline_type(kind)
        if problem:
            raise Invalid(f"one of {', '.join(formats.PIPELINE_TYPES)} ({problem})")
        return kind

    @field_validator("teacher_model_id")
    @classmethod
    def _paired_with_the_student(cls, teacher: str, info: ValidationInfo) -> str:
        base = info.data.get("base_model_id")
        if formats.resolve_teacher(teacher) is None:
            raise Invalid(f"a distillation teacher of {', '.join(formats.TEACHERS)} (or a cross-Region profile of one)")
        if base and formats.DISTILLATION in formats.MODELS[base].customization_types:
            problem = formats.check_distillation_pair(teacher, formats.MODELS[base])
            if problem:
                raise Invalid(f"a teacher paired with {base}: {problem}")
        return teacher

    @field_validator("hyperparameters")
    @classmethod
    def _accepted_by_the_model(cls, values: dict[str, str], info: ValidationInfo) -> dict[str, str]:
        base = info.data.get("base_model_id")
        kind = info.data.get("customization_type", formats.FINE_TUNING)
        problems = formats.check_hyperparameters(values, formats.MODELS[base], kind)[0] if base else []
        if problems:  # every refused hyperparameter, not only the first
            raise Invalid(f"values {base} accepts: {'; '.join(problem['message'] for problem in problems)}")
        return values

    @field_validator("deploy")
    @classmethod
    def _served_on_demand(cls, deploy: str, info: ValidationInfo) -> str:
        base = info.data.get("base_model_id")
        if base and deploy == "on-demand" and not formats.MODELS[base].on_demand_deploy:
            raise Invalid(f"'none' or 'provisioned' for {base} (on-demand serves Amazon Nova)")
        return deploy

    @field_validator("poll_minutes")
    @classmethod
    def _polls_fit_the_execution_history(cls, minutes: int, info: ValidationInfo) -> int:
        hours = info.data.get("max_job_hours")
        if hours is None or job_polls(hours, minutes) <= MAX_JOB_POLLS:
            return minutes
        least = next((m for m in range(minutes, 61) if job_polls(hours, m) <= MAX_JOB_POLLS), 60)
        raise Invalid(
            f"at least {least} with ft_max_job_hours = {hours}: {job_polls(hours, minutes)} polls would write "
            f"{job_polls(hours, minutes) * JOB_POLL_EVENTS:,} history events, and Step Functions fails an execution "
            f"at {HISTORY_EVENT_QUOTA:,}; at most {MAX_JOB_POLLS} polls (ft_max_job_hours * 60 / ft_poll_minutes)"
        )

    @property
    def invocable_teachers(self) -> tuple[str, ...]:
        """The teachers a run may name: those the customization role may invoke (FineTuneStack grants them). The
        configured teacher as given (a cross-Region profile is granted only as configured) and the active teachers'
        in-Region model ids (a legacy one only when configured)."""
        active = (model for model, spec in formats.TEACHERS.items() if spec.lifecycle.status == formats.ACTIVE)
        return tuple(dict.fromkeys((self.teacher_model_id, *sorted(active))))

    @property
    def job_polls(self) -> int:
        return job_polls(self.max_job_hours, self.poll_minutes)

    @property
    def family(self) -> str:
        return formats.MODELS[self.base_model_id].family

    @property
    def foundation_model_id(self) -> str:
        """The base model's foundation-model id (the customization id without its context suffix)."""
        return ":".join(self.base_model_id.split(":")[:2])


def region_problems(settings: FineTuneSettings, region: str) -> list[Problem]:
    """What ``region`` cannot do for the Bedrock fine-tuning stack: customize the base model (the model table's
    regions), or call a cross-Region teacher profile. Only this stack is refused for them (stacks/shared/regions.py),
    so a region without model customization still deploys the other levels."""
    problems = []
    regions = formats.MODELS[settings.base_model_id].regions
    if region not in regions:
        problems.append(
            Problem(
                "ft_base_model_id",
                settings.base_model_id,
                f"a model customizable in region {region}; {settings.base_model_id} is offered in {', '.join(regions)}",
            )
        )
    teacher = parse_model_id("ft_teacher_model_id", settings.teacher_model_id)
    return problems + profile_region_problems("ft_teacher_model_id", teacher, region)
