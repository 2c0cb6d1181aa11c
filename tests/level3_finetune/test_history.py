"""Level 3's executions stay under Step Functions' history quota (25,000 events) for every setting allowed.

The bounds in stacks/level3_finetune/settings.py (JOB_POLL_EVENTS, RUN_EVENTS) are checked here against the
synthesized definitions: the events of one job poll and the longest run besides (tests/level3_finetune/history.py
counts them per state type). Every loop of a Level 3 state machine must be one of those counted here.
"""

from __future__ import annotations

from typing import Any

import pytest
from annotated_types import Le

from stacks.config import ConfigError
from stacks.level3_finetune import sagemaker_pipeline
from stacks.level3_finetune.pipeline import DEPLOY_POLLS
from stacks.level3_finetune.sagemaker_settings import SageMakerFineTuneSettings
from stacks.level3_finetune.settings import (
    HISTORY_MARGIN,
    JOB_POLL_EVENTS,
    MAX_JOB_POLLS,
    RUN_EVENTS,
    FineTuneSettings,
)
from stacks.shared.facts import HISTORY_EVENT_QUOTA
from tests.infra import asl
from tests.infra.test_config import build
from tests.level3_finetune import history
from tests.level3_finetune.test_paths_types import _synth

# The loops of each deploy mode's pipeline, by their first state: the job's polls, the deployment's polls.
LOOPS = {
    "none": {"WaitForJob"},
    "on-demand": {"WaitForJob", "WaitForDeployment"},
    "provisioned": {"WaitForJob", "WaitForThroughput"},
}


def _bound(model: type[Any], field: str) -> int:
    return next(item.le for item in model.model_fields[field].metadata if isinstance(item, Le))


@pytest.fixture(scope="module", params=sorted(LOOPS))
def pipeline(request: pytest.FixtureRequest) -> tuple[str, dict[str, Any]]:
    # The invocation-logs variant holds every state of the prompts variant and the logs' own.
    variant, _ = _synth(ft_deploy=request.param, ft_distillation_source="invocation-logs", invocation_logging=True)
    return request.param, variant.definition


def test_the_event_counts_follow_the_step_functions_history_events() -> None:
    assert history.visit_events({"Type": "Wait"}) == ["WaitStateEntered", "WaitStateExited"]
    assert history.visit_events({"Type": "Task", "Resource": "arn:aws:states:::aws-sdk:bedrock:getX"}) == [
        "TaskStateEntered",
        "TaskScheduled",
        "TaskStarted",
        "TaskSucceeded",
        "TaskStateExited",
    ]
    assert "TaskSubmitted" in history.visit_events({"Type": "Task", "Resource": "arn:aws:states:::x:y.sync"})
    assert history.visit_events({"Type": "Fail"}) == ["FailStateEntered"]
    assert history.retry_events({"Type": "Task", "Retry": [{"MaxAttempts": 2}, {}]}) == (2 + 3) * 3


def test_one_job_poll_writes_the_events_the_settings_count(pipeline: tuple[str, dict[str, Any]]) -> None:
    mode, definition = pipeline
    assert set(history.loops(definition)) == LOOPS[mode], "a new loop: bound it and count it here"
    assert history.loop_events(definition, "WaitForJob") == JOB_POLL_EVENTS


def test_the_rest_of_the_longest_run_fits_what_the_settings_reserve(pipeline: tuple[str, dict[str, Any]]) -> None:
    mode, definition = pipeline
    rest = history.longest_run_events(definition)  # each loop passed once, every retry spent
    for head in LOOPS[mode] - {"WaitForJob"}:
        rest += (DEPLOY_POLLS - 1) * history.loop_events(definition, head)
    assert rest <= RUN_EVENTS, (mode, rest)


def test_the_most_polls_allowed_stay_under_the_quota_with_the_margin() -> None:
    assert MAX_JOB_POLLS * JOB_POLL_EVENTS + RUN_EVENTS + HISTORY_MARGIN <= HISTORY_EVENT_QUOTA
    assert (MAX_JOB_POLLS + 1) * JOB_POLL_EVENTS + RUN_EVENTS + HISTORY_MARGIN > HISTORY_EVENT_QUOTA
    # The longest wait at the least poll interval would not fit: the combination is refused, not the keys.
    longest = _bound(FineTuneSettings, "max_job_hours") * 60 // 1
    assert longest > MAX_JOB_POLLS


# A poll writes retry events only when its call fails, so JOB_POLL_EVENTS counts none; HISTORY_MARGIN pays for
# them. It must hold every retrier of a poll spent (each retry adds TaskScheduled, TaskStarted and TaskFailed;
# history.py) on one poll in RETRIED_POLL_SHARE of the most polls allowed, under the 25,000-event quota
# (https://docs.aws.amazon.com/step-functions/latest/dg/service-quotas.html). More failing polls than that
# and the execution ends at the quota (its teardown then cleans up), as it would fail sooner without retries.
RETRIED_POLL_SHARE = 20


def _polls(definition: dict[str, Any]) -> list[dict[str, Any]]:
    """The Task states of the definition's loops: the status polls."""
    states = definition["States"]
    members = {name for loop in history.loops(definition).values() for name in loop}
    return [states[name] for name in sorted(members) if states[name]["Type"] == "Task"]


def test_the_margin_pays_for_retried_polls(pipeline: tuple[str, dict[str, Any]]) -> None:
    mode, definition = pipeline
    polls = _polls(definition)
    assert len(polls) == len(LOOPS[mode])
    most_polls = MAX_JOB_POLLS + (DEPLOY_POLLS if mode != "none" else 0)
    worst = max(history.retry_events(poll) for poll in polls)
    assert worst > 0
    assert most_polls // RETRIED_POLL_SHARE * worst <= HISTORY_MARGIN, (mode, worst)


def test_a_poll_interval_that_would_overflow_the_history_is_refused_naming_both_keys() -> None:
    with pytest.raises(ConfigError) as caught:
        build(ft_max_job_hours=72, ft_poll_minutes=1)
    assert [p.key for p in caught.value.problems] == ["ft_poll_minutes"]
    line = str(caught.value)
    assert line.startswith("config error: ft_poll_minutes = 1 is not allowed; expected at least 3 with ")
    assert "ft_max_job_hours = 72" in line and f"at most {MAX_JOB_POLLS} polls" in line and "25,000" in line
    assert build(ft_max_job_hours=72, ft_poll_minutes=3).finetune.job_polls == 1440
    hours = MAX_JOB_POLLS // 60  # the longest wait that still polls every minute
    assert build(ft_max_job_hours=hours, ft_poll_minutes=1).finetune.job_polls == hours * 60
    with pytest.raises(ConfigError):
        build(ft_max_job_hours=hours + 1, ft_poll_minutes=1)


def test_the_sagemaker_import_wait_stays_under_the_quota(sandbox: Any) -> None:
    definition = asl.definition_from_template(sandbox.templates["GenAiKit-3-FineTune-SageMaker"], "StateMachine")
    assert set(history.loops(definition)) == {"WaitForImport"}, "a new loop: bound it and count it here"
    # The training job is one .sync Task: Step Functions watches it without writing events per poll.
    polls = _bound(SageMakerFineTuneSettings, "import_max_minutes") * 60 // sagemaker_pipeline.POLL_SECONDS
    most = polls * history.loop_events(definition, "WaitForImport") + history.longest_run_events(definition)
    assert most + HISTORY_MARGIN <= HISTORY_EVENT_QUOTA, most
    [poll] = _polls(definition)
    assert polls // RETRIED_POLL_SHARE * history.retry_events(poll) <= HISTORY_MARGIN


def test_the_teardowns_loop_only_while_an_import_runs_and_within_the_quota(sandbox: Any) -> None:
    definition = asl.definition_from_template(sandbox.templates["GenAiKit-3-FineTune"], "Teardown")
    assert history.loops(definition) == {}
    assert history.longest_run_events(definition) + HISTORY_MARGIN <= HISTORY_EVENT_QUOTA
    # The SageMaker teardown waits for the run's import job, at most IMPORT_CHECKS times (sagemaker_teardown.py).
    definition = asl.definition_from_template(sandbox.templates["GenAiKit-3-FineTune-SageMaker"], "Teardown")
    assert set(history.loops(definition)) == {"ReadItsImportJob"}, "a new loop: bound it and count it here"
    checks = sagemaker_pipeline.IMPORT_CHECKS
    most = checks * history.loop_events(definition, "ReadItsImportJob") + history.longest_run_events(definition)
    assert most + HISTORY_MARGIN <= HISTORY_EVENT_QUOTA, most


def test_the_teardowns_time_out_only_after_their_longest_path(sandbox: Any) -> None:
    """A teardown that timed out would leave what it was about to delete, and nothing reports its timeout. Its
    TimeoutSeconds must exceed what its longest path can wait: every Wait, every retrier's whole back-off, the
    import wait's every pass, plus 10 s per call attempt (an SDK call answers in about a second). Before, the
    SageMaker teardown's 3 hours were less than the roughly 4 its import wait with throttled reads could take."""
    for stack, loop_passes in (
        ("GenAiKit-3-FineTune", {}),
        ("GenAiKit-3-FineTune-SageMaker", {"ReadItsImportJob": sagemaker_pipeline.IMPORT_CHECKS}),
    ):
        definition = asl.definition_from_template(sandbox.templates[stack], "Teardown")
        assert set(history.loops(definition)) == set(loop_passes), stack
        waits = history.longest_run_seconds(definition) + sum(
            (passes - 1) * history.loop_seconds(definition, head) for head, passes in loop_passes.items()
        )
        calls = history.longest_run_events(definition) // 5 + sum(
            (passes - 1) * history.loop_events(definition, head) for head, passes in loop_passes.items()
        )  # a Task writes at least 5 events a visit: an upper bound on its visits and attempts
        assert waits + 10 * calls <= definition["TimeoutSeconds"], (stack, waits, calls)
