"""The Level 3 page states model facts only through its generated reference (scripts/finetune_reference.py)."""

from __future__ import annotations

import dataclasses
import re

import pytest

from finetune_validate import formats
from scripts import finetune_reference
from tests.conftest import ROOT

PAGE = ROOT / "docs" / "level-3-finetune.md"
# A Bedrock model id as the page would write it: provider.name-vN:M with an optional context suffix.
MODEL_ID = re.compile(r"\b(?:amazon|anthropic|meta|mistral|cohere|ai21)\.[a-z0-9.-]+-v\d+:\d+(?::\d+k)?")


def _generated_and_hand_written() -> tuple[str, str]:
    page = PAGE.read_text()
    before, rest = page.split(finetune_reference.START, 1)
    generated, after = rest.split(finetune_reference.END, 1)
    return generated, before + after


def test_the_model_reference_is_current() -> None:
    """When the model table or kit/prices.json changes, run `python scripts/finetune_reference.py`."""
    assert finetune_reference.main(["--check"]) == 0


def test_the_check_fails_when_the_table_changes(monkeypatch: pytest.MonkeyPatch) -> None:
    nova = formats.MODELS["amazon.nova-micro-v1:0:128k"]
    wider = tuple(dataclasses.replace(hp, maximum=7) if hp.name == "epochCount" else hp for hp in nova.hyperparameters)
    monkeypatch.setitem(formats.MODELS, nova.base_model_id, dataclasses.replace(nova, hyperparameters=wider))
    assert "| `epochCount` | an integer from 1 to 7 |" in finetune_reference.render()
    assert finetune_reference.main(["--check"]) == 1


def test_the_reference_covers_every_model_type_and_teacher() -> None:
    generated, _ = _generated_and_hand_written()
    for spec in formats.MODELS.values():
        assert f"`{spec.base_model_id}`" in generated
        for region in spec.regions:
            assert region in generated
    for kind in formats.CUSTOMIZATION_TYPES:
        assert f"(`{kind}`)" in generated
    for teacher in formats.TEACHERS.values():
        assert f"`{teacher.model_id}`" in generated
        if teacher.lifecycle.end_of_life is not None:
            assert teacher.lifecycle.end_of_life.isoformat() in generated


def test_the_token_thresholds_are_the_validators() -> None:
    """Titan Text G1 - Express: 4,096 tokens at batch size 1 -> warning over 4,096 x 0.9 x 3 characters, error over
    4,096 x 6 (the RecordChecker's own figures)."""
    express = formats.MODELS["amazon.titan-text-express-v1:0:8k"]
    checker = formats.RecordChecker(express, 4_096)
    text = finetune_reference.tokens_text(express, formats.FINE_TUNING)
    assert f"4,096 at batch size 1 (warning over {checker.warn_chars:,} characters, error over " in text
    assert f"error over {checker.error_chars:,})" in text


def test_hand_written_text_names_only_models_of_the_table() -> None:
    """Examples may name a model, but only one the table holds (a model dropped from it fails here)."""
    _, hand_written = _generated_and_hand_written()
    known = set(formats.MODELS) | set(formats.TEACHERS)
    named = set(MODEL_ID.findall(hand_written))
    assert named, "the examples name no model: the pattern no longer matches the page"
    assert named <= known, named - known


def test_hand_written_commands_use_samples_that_exist() -> None:
    _, hand_written = _generated_and_hand_written()
    paths = set(re.findall(r"samples/finetune/[\w/.-]+\.jsonl", hand_written))
    assert paths
    for path in paths:
        assert (ROOT / path).is_file(), path


def test_the_token_rule_on_the_page_matches_the_validator() -> None:
    _, hand_written = _generated_and_hand_written()
    prose = " ".join(hand_written.split()).replace("*", "")
    assert f"conservative: {formats.CONSERVATIVE_CHARS_PER_TOKEN} characters per token" in prose
    assert f"({formats.TITAN_CHARS_PER_TOKEN} for Titan Text:" in prose
    assert "https://github.com/aws-samples/amazon-bedrock-workshop/issues/224" in prose
    assert f"within {round((1 - formats.TOKEN_WARNING_MARGIN) * 100)}% of the model's token quota" in prose
    assert f"over the quota even at {formats.PLANNING_CHARS_PER_TOKEN} characters per token" in prose


def test_a_row_says_where_it_goes_beyond_aws_pages() -> None:
    """A model served on demand on a source other than AWS's page says so, and a lifecycle note (such as a model
    Bedrock's current table no longer lists) is printed beside its state."""
    generated, _ = _generated_and_hand_written()
    rows = {
        spec.base_model_id: row
        for spec in formats.MODELS.values()
        for row in generated.splitlines()
        if row.startswith(f"| {spec.name} | `{spec.base_model_id}` |")
    }
    assert set(rows) == set(formats.MODELS)
    beyond = [
        spec
        for spec in formats.MODELS.values()
        if spec.on_demand_deploy and spec.on_demand_source != formats.DOC_ON_DEMAND
    ]
    assert beyond, "no model's on-demand serving rests on another source: the check below checks nothing"
    for spec in formats.MODELS.values():
        if spec in beyond:
            assert f"([reported to work]({spec.on_demand_source}), not on [AWS's list]" in rows[spec.base_model_id]
        elif spec.on_demand_deploy:
            assert f"[on-demand deployment]({formats.DOC_ON_DEMAND})" in rows[spec.base_model_id]
        if spec.lifecycle.note:
            assert spec.lifecycle.note.rstrip(".") in rows[spec.base_model_id], spec.base_model_id


def _row(generated: str, name: str, after: str = "") -> str:
    rest = generated.split(after, 1)[1] if after else generated
    return next(row for row in rest.splitlines() if row.startswith(f"| {name} | ["))


def test_the_reference_says_which_limits_are_adjustable_warnings_and_where_caps_come_from() -> None:
    """Llama 3.1's record total and epochCount are default quotas AWS marks adjustable (warned about); Llama 3.2's
    per-file caps come from AWS's sample validator, not the prepare page; Titan warns from 2 characters per token
    (4,096 x 0.9 x 2 = 7,372 characters)."""
    generated, hand_written = _generated_and_hand_written()
    llama31 = _row(generated, "Meta Llama 3.1 8B Instruct")
    assert "training + validation 100 to 10,000 (a default quota, adjustable in Service Quotas" in llama31
    assert "another key or an empty prompt or completion is a warning" in llama31
    assert (
        "| `epochCount` | an integer from 1, at most 10 by default (a quota adjustable in Service Quotas" in generated
    )
    llama32 = _row(generated, "Meta Llama 3.2 1B Instruct")
    assert f"validation ≤ 1,000 ([AWS's sample validator]({formats.LLAMA_VALIDATOR_LIMITS}), not the page)" in llama32
    assert "4,096 at batch size 1-2 (warning over 7,372 characters, error over 24,576)" in _row(
        generated, "Amazon Titan Text G1 - Lite", "(`CONTINUED_PRE_TRAINING`)"
    )
    prose = " ".join(hand_written.split())
    assert "(`over_default_quota`) that names the quota to raise, not an error" in prose
