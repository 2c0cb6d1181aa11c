"""Level 3 settings: the base model's table decides types, regions, hyperparameters and serving."""

from __future__ import annotations

from typing import Any

import pytest

from finetune_validate import formats
from stacks.config import ConfigError
from tests.infra.test_config import build


@pytest.mark.parametrize(
    ("base_model", "allowed"),
    [("amazon.nova-lite-v1:0:300k", False), ("amazon.titan-text-express-v1:0:8k", True)],
)
def test_continued_pre_training_only_for_base_models_that_offer_it(base_model: str, allowed: bool) -> None:
    overrides = {
        "ft_base_model_id": base_model,
        "ft_customization_type": "CONTINUED_PRE_TRAINING",
        "ft_hyperparameters": {},
    }
    if allowed:
        assert build(**overrides).finetune.customization_type == "CONTINUED_PRE_TRAINING"
        return
    with pytest.raises(ConfigError) as caught:
        build(**overrides)
    assert str(caught.value) == (
        "config error: ft_customization_type = 'CONTINUED_PRE_TRAINING' is not allowed; "
        f"expected one of FINE_TUNING, DISTILLATION for {base_model}"
    )


@pytest.mark.parametrize(
    ("base_model", "kind", "hyperparameters"),
    [
        ("amazon.nova-lite-v1:0:300k", "DISTILLATION", {}),
        ("amazon.nova-2-lite-v1:0:256k", "REINFORCEMENT_FINE_TUNING", {"epochCount": "2", "batchSize": "16"}),
        # AWS's own Nova 2 Lite sample's hyperparameters (formats.DOC_NOVA_2_HP)
        (
            "amazon.nova-2-lite-v1:0:256k",
            "FINE_TUNING",
            {"epochCount": "2", "batchSize": "1", "learningRate": "0.00001"},
        ),
    ],
)
def test_every_customization_type_is_accepted_at_synth(base_model: str, kind: str, hyperparameters: Any) -> None:
    """Every type runs through the pipeline now (it refused DISTILLATION and REINFORCEMENT_FINE_TUNING)."""
    ft = build(ft_base_model_id=base_model, ft_customization_type=kind, ft_hyperparameters=hyperparameters).finetune
    assert ft.customization_type == kind


def test_per_type_hyperparameters_are_checked_at_synth() -> None:
    with pytest.raises(ConfigError) as caught:
        build(
            ft_base_model_id="amazon.nova-2-lite-v1:0:256k",
            ft_customization_type="REINFORCEMENT_FINE_TUNING",
            ft_hyperparameters={"batchSize": "8"},
        )
    assert [p.key for p in caught.value.problems] == ["ft_hyperparameters"]
    assert "batchSize" in str(caught.value)


def test_every_refused_hyperparameter_is_named_at_once() -> None:
    """Before: only the first ({"epochCount": "999", "learningRate": "5"} named epochCount; learningRate came on
    the next run)."""
    with pytest.raises(ConfigError) as caught:
        build(ft_hyperparameters={"epochCount": "999", "learningRate": "5"})
    [problem] = caught.value.problems
    assert problem.key == "ft_hyperparameters"
    assert "epochCount" in problem.allowed and "learningRate" in problem.allowed


@pytest.mark.parametrize(
    ("base_model", "teacher", "fragment"),
    [
        ("amazon.nova-micro-v1:0:128k", "anthropic.claude-3-haiku-20240307-v1:0", "a distillation teacher of"),
        ("amazon.nova-pro-v1:0:300k", "amazon.nova-pro-v1:0", "does not teach amazon.nova-pro-v1:0:300k"),
    ],
)
def test_a_teacher_not_paired_with_the_student_is_refused_at_synth(
    base_model: str, teacher: str, fragment: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        build(ft_base_model_id=base_model, ft_teacher_model_id=teacher)
    assert [p.key for p in caught.value.problems] == ["ft_teacher_model_id"]
    assert fragment in str(caught.value)


def test_the_teacher_may_be_a_cross_region_profile_and_the_source_is_one_of_two() -> None:
    logs = {"ft_distillation_source": "invocation-logs", "invocation_logging": True}
    ft = build(ft_teacher_model_id="us.amazon.nova-pro-v1:0", **logs).finetune
    assert (ft.teacher_model_id, ft.distillation_source) == ("us.amazon.nova-pro-v1:0", "invocation-logs")
    with pytest.raises(ConfigError) as caught:
        build(ft_distillation_source="logs")
    assert [p.key for p in caught.value.problems] == ["ft_distillation_source"]


@pytest.mark.parametrize("logging", [False, "false"])
def test_distilling_from_invocation_logs_needs_the_invocation_logging_stack(logging: object) -> None:
    """The Level 3 stack reads the logging stack's bucket from an SSM parameter at deploy time; without that stack
    the parameter does not exist and the first deploy fails at its change set. Before: synth let it through."""
    with pytest.raises(ConfigError) as caught:
        build(ft_distillation_source="invocation-logs", invocation_logging=logging)
    assert [p.key for p in caught.value.problems] == ["ft_distillation_source"]
    assert "prompts unless invocation_logging=true" in str(caught.value)


def test_an_invalid_invocation_logging_value_is_reported_once_by_its_own_key() -> None:
    with pytest.raises(ConfigError) as caught:
        build(ft_distillation_source="invocation-logs", invocation_logging="maybe")
    assert [p.key for p in caught.value.problems] == ["invocation_logging"]


def test_the_customization_type_is_checked_with_the_other_mistakes() -> None:
    with pytest.raises(ConfigError) as caught:
        build(
            ft_base_model_id="amazon.nova-lite-v1:0:300k",
            ft_customization_type="CONTINUED_PRE_TRAINING",
            ft_hyperparameters={"epochCount": "9"},
            ft_poll_minutes=0,
        )
    assert [p.key for p in caught.value.problems] == ["ft_customization_type", "ft_hyperparameters", "ft_poll_minutes"]


@pytest.mark.parametrize(
    ("key", "raw", "read", "expected"),
    [
        ("ft_hyperparameters", '{"epochCount": "3"}', lambda ft: dict(ft.hyperparameters), {"epochCount": "3"}),
        ("ft_provisioned_hours", "12", lambda ft: ft.provisioned_hours, 12),
        ("ft_deploy", "on-demand", lambda ft: ft.deploy, "on-demand"),
        ("ft_customization_type", " FINE_TUNING ", lambda ft: ft.customization_type, "FINE_TUNING"),
    ],
)
def test_string_overrides_from_the_command_line_are_coerced(key: str, raw: str, read: Any, expected: Any) -> None:
    assert read(build(**{key: raw}).finetune) == expected


def test_family_and_foundation_model_come_from_the_model_table() -> None:
    ft = build().finetune
    assert ft.family == formats.MODELS[ft.base_model_id].family
    assert ft.foundation_model_id == "amazon.nova-micro-v1:0"


def test_a_base_model_past_its_end_of_life_is_a_config_error() -> None:
    """Before: Claude 3 Haiku (end of life 2026-09-10) and Llama 3.2 (2026-07-07) passed synth, and every run was then
    refused at validation or by Bedrock."""
    from datetime import UTC, datetime

    past = [
        m
        for m, spec in formats.MODELS.items()
        if (spec.lifecycle.problem(m, datetime.now(UTC).date()) or ("",))[0] == "refused"
    ]
    assert "anthropic.claude-3-haiku-20240307-v1:0:200k" in past
    assert {f"meta.llama3-2-{size}-instruct-v1:0:128k" for size in ("1b", "3b", "11b", "90b")} <= set(past)
    for model in past:
        with pytest.raises(ConfigError) as caught:
            build(ft_base_model_id=model, region="us-west-2")
        message = str(caught.value)
        assert message.startswith(
            f"config error: ft_base_model_id = '{model}' is not allowed; expected a model Bedrock"
        )
        assert "reached its end of life on" in message and "amazon.nova-micro-v1:0:128k" in message
