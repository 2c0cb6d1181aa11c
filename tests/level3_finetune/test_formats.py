"""The model table (formats.MODELS, formats.TEACHERS) and the per-type data checks built on it."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import math
import subprocess
import sys
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from finetune_validate import formats, handler
from finetune_validate.validator import DatasetValidator, validate_dataset, validate_files
from tests.conftest import ROOT
from tests.level3_finetune.finetune_data import (
    INVALID_SAMPLES,
    LLAMA_31,
    LLAMA_32_VISION,
    NOVA_LITE,
    NOVA_MICRO,
    SAMPLE_DIRS,
    TITAN_EXPRESS,
    TRAIN_SAMPLE,
    chunked,
    converse,
    image,
    jsonl,
    kinds,
    realistic_records,
    usable_on,
    video,
)

NOVA_2 = "amazon.nova-2-lite-v1:0:256k"
NOVA_PRO = "amazon.nova-pro-v1:0:300k"
BEFORE_PREMIER_EOL = date(2026, 9, 1)
AFTER_PREMIER_EOL = date(2026, 11, 30)


def check(data: bytes, model: str, **kw: Any) -> dict[str, Any]:
    return validate_dataset(chunked(data, 4099), base_model_id=model, **kw)


# --- the table --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("model_id", sorted(formats.MODELS))
def test_every_model_offers_known_types_each_with_a_format_limits_and_documented_hyperparameters(model_id: str) -> None:
    spec = formats.MODELS[model_id]
    assert spec.customization_types and set(spec.customization_types) <= set(formats.CUSTOMIZATION_TYPES)
    assert spec.regions and spec.name and spec.family
    assert {kind for kind, _ in spec.other_types} <= set(spec.customization_types)
    for kind in spec.customization_types:
        type_spec = spec.for_type(kind)
        assert type_spec.shape in formats.SHAPES
        assert type_spec.doc.startswith("https://docs.aws.amazon.com/")
        for hp in type_spec.hyperparameters:
            if hp.choices:
                continue
            assert hp.minimum <= hp.maximum
            if hp.default is not None:  # the documented default is a value the table accepts
                assert hp.minimum <= float(hp.default) <= hp.maximum, (model_id, kind, hp)
        defaults = {hp.name: hp.default for hp in type_spec.hyperparameters if hp.default is not None}
        assert formats.check_hyperparameters(defaults, spec, kind)[0] == []
    with pytest.raises(KeyError):
        spec.for_type("IMPORTED")


def test_customization_types_are_the_apis_minus_imported() -> None:
    import botocore.session

    model = botocore.session.get_session().get_service_model("bedrock")
    assert set(model.shape_for("CustomizationType").enum) - {"IMPORTED"} == set(formats.CUSTOMIZATION_TYPES)


def test_rft_hyperparameter_ranges_match_the_api_model() -> None:
    import botocore.session

    members = botocore.session.get_session().get_service_model("bedrock").shape_for("RFTHyperParameters").members
    rft = {hp.name: hp for hp in formats.MODELS[NOVA_2].for_type(formats.REINFORCEMENT_FINE_TUNING).hyperparameters}
    assert set(rft) == set(members)
    for name, shape in members.items():
        if getattr(shape, "enum", None):
            assert rft[name].choices == tuple(shape.enum)
        elif "min" in shape.metadata:
            assert (rft[name].minimum, rft[name].maximum) == (shape.metadata["min"], shape.metadata["max"])
        else:  # no range in the model: the type's, a 32-bit integer (botocore "integer"); a float has none
            assert shape.type_name in ("integer", "float"), name
            assert rft[name].maximum == (formats.INT32_MAX if shape.type_name == "integer" else math.inf)


def test_distillation_pairs_name_table_models_that_offer_distillation() -> None:
    for teacher in formats.TEACHERS.values():
        assert teacher.students
        for student in teacher.students:
            assert formats.DISTILLATION in formats.MODELS[student].customization_types
    students = {s for t in formats.TEACHERS.values() for s in t.students}
    offering = {m for m, spec in formats.MODELS.items() if formats.DISTILLATION in spec.customization_types}
    assert offering == students  # every model offering distillation has a teacher


def test_nova_2_lite_is_customizable_with_reasoning_and_rft() -> None:
    spec = formats.resolve_model(NOVA_2)
    assert spec.customization_types == (formats.FINE_TUNING, formats.REINFORCEMENT_FINE_TUNING)
    assert spec.regions == ("us-east-1",) and spec.reasoning and not spec.validation_allowed


def test_nova_2_lite_fine_tuning_takes_the_batch_size_aws_sample_sends_and_nova_1_does_not() -> None:
    # AWS's Nova 2 Lite sample fine-tunes with these three (formats.DOC_NOVA_2_HP) and its job completed
    sample = {"epochCount": "2", "batchSize": "1", "learningRate": "0.00001"}
    assert formats.check_hyperparameters(sample, formats.resolve_model(NOVA_2)) == (
        [],
        {"epochCount": 2.0, "batchSize": 1.0, "learningRate": 0.00001},
    )
    errors, _ = formats.check_hyperparameters({"batchSize": "0"}, formats.resolve_model(NOVA_2))
    assert [error["kind"] for error in errors] == [formats.HYPERPARAMETER_OUT_OF_RANGE]
    # The first Nova models' page lists no batchSize: still refused for them
    errors, _ = formats.check_hyperparameters(sample, formats.resolve_model("amazon.nova-lite-v1:0:300k"))
    assert [error["kind"] for error in errors] == [formats.HYPERPARAMETER_UNKNOWN]


# --- samples ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(SAMPLE_DIRS))
def test_every_types_sample_is_valid(name: str) -> None:
    path, model = SAMPLE_DIRS[name]
    kind = formats.FINE_TUNING if name == "FINE_TUNING_REASONING" else name
    teacher = "amazon.nova-pro-v1:0" if kind == formats.DISTILLATION else None
    report = validate_files(str(path), base_model_id=model, customization_type=kind, teacher_model_id=teacher)
    assert report["valid"], report["training"]["errors"]
    assert report["customizationType"] == kind and report["errorCount"] == 0


def test_the_distillation_sample_holds_enough_distinct_prompts() -> None:
    """Bedrock refuses fewer than 100 prompts (custom-distill-prepare.html); the docs upload this very file."""
    records = [json.loads(line) for line in SAMPLE_DIRS[formats.DISTILLATION][0].read_text("utf-8").splitlines()]
    prompts = {record["messages"][0]["content"][0]["text"] for record in records}
    assert len(records) >= 100 and len(prompts) == len(records)


def generated_sample(folder: Path) -> list[Any]:
    """The records of ``folder``/train.jsonl, after checking the file is what ``folder``/generate.py writes."""
    spec = importlib.util.spec_from_file_location(f"{folder.name}_sample", folder / "generate.py")
    assert spec is not None and spec.loader is not None
    generator = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generator)
    text = (folder / "train.jsonl").read_text("utf-8")
    assert text == generator.render(), f"run python {(folder / 'generate.py').relative_to(ROOT)}"
    return [json.loads(line) for line in text.splitlines()]


def test_the_reinforcement_sample_is_what_its_generator_writes_and_holds_enough_distinct_prompts() -> None:
    """Bedrock takes at least 100 records (rft-prepare-data.html); the docs upload this very file. Before: 100
    records of only 60 distinct prompts, so 40 trained twice (and fewer than 100 if Bedrock counts distinct ones)."""
    records = generated_sample(SAMPLE_DIRS[formats.REINFORCEMENT_FINE_TUNING][0].parent)
    prompts = {record["messages"][-1]["content"] for record in records}
    assert len(records) >= 100 and len(prompts) == len(records)


REASONING_DIR = SAMPLE_DIRS["FINE_TUNING_REASONING"][0].parent


def test_the_reasoning_sample_is_what_its_generator_writes_and_holds_enough_distinct_records() -> None:
    """Nova 2 Lite fine-tuning needs 200 records; the docs validate and upload this very file."""
    records = generated_sample(REASONING_DIR)
    prompts = {record["messages"][0]["content"][0]["text"] for record in records}
    minimum = formats.MODELS[NOVA_2].for_type(formats.FINE_TUNING).limits.min_training_records
    assert len(records) >= minimum and len(prompts) == len(records)
    assert all("reasoningContent" in record["messages"][-1]["content"][0] for record in records)


INVALID = [
    # (file, model, type, kind, lines, a fragment of the message)
    ("distillation/invalid_value.jsonl", NOVA_LITE, formats.DISTILLATION, "invalid_value", [4],
     "bedrock-conversation-2024"),
    ("reinforcement_fine_tuning/missing_key.jsonl", NOVA_2, formats.REINFORCEMENT_FINE_TUNING, "missing_key", [7],
     "reference_answer"),
    ("fine_tuning_reasoning/unsupported_content.jsonl", NOVA_2, formats.FINE_TUNING, "unsupported_content", [2],
     "only in assistant turns"),
    ("fine_tuning_reasoning/tool_use.jsonl", NOVA_2, formats.FINE_TUNING, "unsupported_content", [5],
     "'toolUse' block"),
    ("continued_pre_training/unexpected_key.jsonl", TITAN_EXPRESS, formats.CONTINUED_PRE_TRAINING, "unexpected_key",
     [3], "Allowed: input"),
    ("odd_files/trailing_comma.jsonl", NOVA_LITE, formats.FINE_TUNING, "invalid_json", [2], "trailing comma"),
    ("odd_files/media_uri.jsonl", NOVA_LITE, formats.FINE_TUNING, "invalid_s3_uri", [3], "s3://My Bucket"),
    ("utf8_bom.jsonl", NOVA_LITE, formats.FINE_TUNING, "utf8_bom", [1], "save it without one"),
]  # fmt: skip


@pytest.mark.parametrize(("name", "model", "kind", "error", "lines", "fragment"), INVALID, ids=[i[0] for i in INVALID])
def test_each_invalid_sample_is_rejected_with_its_rule_line_and_doc(
    name: str, model: str, kind: str, error: str, lines: list[int], fragment: str
) -> None:
    report = validate_files(str(INVALID_SAMPLES / name), base_model_id=model, customization_type=kind)
    assert not report["valid"]
    expected: dict[str, list[int | None]] = {error: lines}
    if report["training"]["records"] < formats.MODELS[model].for_type(kind).limits.min_training_records:
        expected["too_few_records"] = [None]  # a short file (Nova 2 Lite fine-tuning needs 200 records)
    assert kinds(report["training"]) == expected
    entry = report["training"]["errors"][error]
    assert fragment in entry["first"][0]["message"]
    assert entry["doc"] == formats.MODELS[model].for_type(kind).doc


def test_every_invalid_sample_file_is_covered() -> None:
    covered = {name for name, *_ in INVALID}
    on_disk = {
        str(p.relative_to(INVALID_SAMPLES)) for p in INVALID_SAMPLES.rglob("*.jsonl") if p.parent != INVALID_SAMPLES
    }
    assert on_disk <= covered


# --- lifecycle ----------------------------------------------------------------------------------------------


def test_a_base_model_past_its_end_of_life_is_refused_naming_the_date(monkeypatch: pytest.MonkeyPatch) -> None:
    ended = dataclasses.replace(
        formats.MODELS[NOVA_MICRO], lifecycle=formats.Lifecycle(formats.LEGACY, date(2026, 6, 30))
    )
    monkeypatch.setitem(formats.MODELS, NOVA_MICRO, ended)
    with pytest.raises(formats.UnsupportedBaseModel, match="end of life on 2026-06-30"):
        DatasetValidator(NOVA_MICRO, today=date(2026, 7, 1))
    report = check(jsonl([converse("q", "a")] * 8), NOVA_MICRO, today=date(2026, 6, 29))
    assert report["valid"] and report["warnings"][0]["kind"] == formats.MODEL_LEGACY
    assert "2026-06-30" in report["warnings"][0]["message"]


def test_claude_3_haiku_is_refused_from_its_end_of_life() -> None:
    """Its "Model EOL date: September 10, 2026" holds in us-west-2, its one customization Region
    (https://docs.aws.amazon.com/bedrock/latest/userguide/model-card-anthropic-claude-3-haiku.html)."""
    claude = "anthropic.claude-3-haiku-20240307-v1:0:200k"
    assert formats.MODELS[claude].regions == ("us-west-2",)
    for today in (date(2026, 9, 10), date(2026, 11, 30)):
        with pytest.raises(formats.UnsupportedBaseModel, match="end of life on 2026-09-10"):
            DatasetValidator(claude, today=today)
    before = DatasetValidator(claude, today=date(2026, 9, 9))
    assert [warning["kind"] for warning in before.warnings] == [formats.MODEL_LEGACY]


def test_a_legacy_model_is_warned_about_and_the_data_stays_valid() -> None:
    report = check(jsonl([{"prompt": "p", "completion": "c"}] * 8), TITAN_EXPRESS)
    assert report["valid"] and report["warningCount"] == 1
    assert report["warnings"][0]["kind"] == formats.MODEL_LEGACY
    assert "no end-of-life date is published yet" in report["warnings"][0]["message"]


def test_a_teacher_past_its_end_of_life_is_refused_and_warned_about_before() -> None:
    data = SAMPLE_DIRS[formats.DISTILLATION][0].read_bytes()
    premier = "us.amazon.nova-premier-v1:0"
    with pytest.raises(formats.UnsupportedCustomizationType, match="end of life on 2026-09-14"):
        check(
            data, NOVA_LITE, customization_type=formats.DISTILLATION, teacher_model_id=premier, today=AFTER_PREMIER_EOL
        )
    before = check(
        data, NOVA_LITE, customization_type=formats.DISTILLATION, teacher_model_id=premier, today=BEFORE_PREMIER_EOL
    )
    assert before["valid"] and "2026-09-14" in before["warnings"][0]["message"]


@pytest.mark.parametrize(
    ("teacher", "student", "fragment"),
    [
        ("amazon.nova-pro-v1:0", NOVA_PRO, "does not teach"),
        ("anthropic.claude-3-5-sonnet-20241022-v2:0", NOVA_LITE, "not a distillation teacher"),
    ],
)
def test_distillation_refuses_a_pair_the_docs_do_not_list(teacher: str, student: str, fragment: str) -> None:
    with pytest.raises(formats.UnsupportedCustomizationType, match=fragment):
        DatasetValidator(student, customization_type=formats.DISTILLATION, teacher_model_id=teacher)


def test_a_teacher_is_for_distillation_only() -> None:
    with pytest.raises(formats.UnsupportedCustomizationType, match="DISTILLATION only"):
        DatasetValidator(NOVA_LITE, teacher_model_id="amazon.nova-pro-v1:0")


# --- per-type record rules --------------------------------------------------------------------------------


def _nova2(*extra: dict[str, Any], user: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {
        "schemaVersion": formats.CONVERSATION_SCHEMA,
        "messages": [
            {"role": "user", "content": user or [{"text": "Which level?"}]},
            {"role": "assistant", "content": [*extra, {"text": "Level 1."}]},
        ],
    }


def _reasoning(value: Any) -> dict[str, Any]:
    return {"reasoningContent": value}


@pytest.mark.parametrize(
    ("record", "expected"),
    [
        (_nova2(_reasoning({"reasoningText": {"text": "Tone is an instruction."}})), set()),
        (_nova2(_reasoning({"reasoningText": {"text": " "}})), {"empty_text"}),
        (_nova2(_reasoning({"reasoningText": "plain"})), {"wrong_type"}),
        (_nova2(_reasoning({"redactedContent": "eA=="})), {"wrong_type"}),
        # AWS's Nova dataset validator: reasoning text is held to the reserved strings, and a turn needs a text
        (_nova2(_reasoning({"reasoningText": {"text": "Thought: the user asks"}})), {"reserved_string"}),
        (
            {
                **_nova2(),
                "messages": [
                    {"role": "user", "content": [{"text": "q"}]},
                    {"role": "assistant", "content": [_reasoning({"reasoningText": {"text": "t"}})]},
                ],
            },
            {"empty_text"},
        ),
        (_nova2(user=[{"text": "q"}, image("webp")]), {"invalid_value"}),  # Nova 2 takes png, jpeg, gif
        (_nova2(user=[{"text": "q"}, {"document": {"format": "pdf"}}]), {"unsupported_content"}),
    ],
)
def test_nova_2_reasoning_and_content_rules(record: dict[str, Any], expected: set[str]) -> None:
    report = check(jsonl([_nova2()] * 199 + [record]), NOVA_2)
    assert set(report["training"]["errors"]) == expected


@pytest.mark.parametrize(
    ("path", "char"),
    [("images/my diagram.png", " "), ("images/a+b.png", "+"), ("images/chart(1).png", "("), ("images/it's.png", "'")],
)
def test_nova_refuses_media_uris_outside_its_path_characters(path: str, char: str) -> None:
    """AWS's validator checks media URI paths with ^[\\w\\-/\\.]+$ (is_valid_path in
    aws-samples/amazon-nova-samples .../nova_ft_dataset_validator.py); S3Location's own pattern allows any path."""
    record = _nova2(user=[{"text": "q"}, image(uri=f"s3://kit-data/{path}")])
    for model, padding in ((NOVA_2, 199), (NOVA_LITE, 7)):
        report = check(jsonl([_nova2()] * padding + [record]), model)
        assert kinds(report["training"]) == {"invalid_s3_uri": [padding + 1]}
        message = report["training"]["errors"]["invalid_s3_uri"]["first"][0]["message"]
        assert message.startswith("messages[0].content[1].image.source.s3Location.uri is ")
        assert f"holds '{char}'" in message and "letters, digits and _ - / . only" in message
    fine = _nova2(user=[{"text": "q"}, video(uri="s3://kit-data/videos/Demo_2026-v1.mp4")])
    assert check(jsonl([_nova2()] * 7 + [fine]), NOVA_LITE)["valid"]


@pytest.mark.parametrize("uri", ["s3://kit-data", "s3://kit-data/", "s3://kit-data/images/", "s3://kit-data/x.png\n"])
def test_a_media_uri_must_name_a_file(uri: str) -> None:
    """Before: a bucket, a "folder" ending in / and a key with a trailing newline passed."""
    record = _nova2(user=[{"text": "q"}, image(uri=uri)])
    report = check(jsonl([_nova2()] * 7 + [record]), NOVA_LITE)
    assert kinds(report["training"]) == {"invalid_s3_uri": [8]}
    assert "s3://bucket/key naming a file" in report["training"]["errors"]["invalid_s3_uri"]["first"][0]["message"]


def test_llama_keeps_the_s3_location_rule_for_media_paths() -> None:
    record = _nova2(user=[{"text": "q"}, image(uri="s3://kit-data/images/chart (1)+a.png")])
    report = check(jsonl([_nova2()] * 99 + [record]), LLAMA_32_VISION, today=usable_on(LLAMA_32_VISION))
    assert report["valid"], report["training"]["errors"]


def test_reasoning_content_is_refused_for_nova_1() -> None:
    report = check(jsonl([_nova2(_reasoning({"reasoningText": {"text": "t"}}))] * 8), NOVA_LITE)
    assert set(report["training"]["errors"]) == {"unsupported_content"}


def test_nova_2_takes_no_validation_set() -> None:
    data = jsonl([_nova2()] * 8)
    report = check(data, NOVA_2, validation=chunked(data, 100))
    assert kinds(report["validation"]) == {"validation_not_allowed": [None]}
    assert "drop the validation file" in report["validation"]["errors"]["validation_not_allowed"]["first"][0]["message"]


@pytest.mark.parametrize(
    ("model", "kind", "count", "expected"),
    [
        (NOVA_2, formats.FINE_TUNING, 199, "too_few_records"),
        (NOVA_2, formats.FINE_TUNING, 200, None),
        (NOVA_2, formats.FINE_TUNING, 20_000, None),
        (NOVA_2, formats.FINE_TUNING, 20_001, "too_many_records"),
        (NOVA_2, formats.REINFORCEMENT_FINE_TUNING, 99, "too_few_records"),
        (NOVA_2, formats.REINFORCEMENT_FINE_TUNING, 100, None),
        (NOVA_LITE, formats.FINE_TUNING, 7, "too_few_records"),
        (NOVA_LITE, formats.FINE_TUNING, 8, None),
    ],
)
def test_nova_record_bounds_follow_awss_validator_per_model_and_type(
    model: str, kind: str, count: int, expected: str | None
) -> None:
    """NOVA_2_0_LITE_SAMPLE_BOUNDS = {"SFT": (200, 20000), "RFT": (100, 20000)}; (8, 20000) for Nova 1
    (aws-samples/amazon-nova-samples .../dataset_validation/nova_ft_dataset_validator.py, the validator
    https://docs.aws.amazon.com/nova/latest/nova2-userguide/nova-data-preparation.html recommends)."""
    one = _rft() if kind == formats.REINFORCEMENT_FINE_TUNING else _nova2()
    report = check(jsonl([one] * count), model, customization_type=kind)
    assert set(report["training"]["errors"]) == ({expected} if expected else set())
    if expected == "too_few_records":
        minimum = formats.MODELS[model].for_type(kind).limits.min_training_records
        assert f"needs at least {minimum:,}" in report["training"]["errors"][expected]["first"][0]["message"]


def test_nova_2_lite_fine_tuning_minimum_is_200_records() -> None:
    limits = formats.MODELS[NOVA_2].for_type(formats.FINE_TUNING).limits
    assert (limits.min_training_records, limits.max_total_records) == (200, 20_000)
    rft = formats.MODELS[NOVA_2].for_type(formats.REINFORCEMENT_FINE_TUNING).limits
    assert (rft.min_training_records, rft.max_total_records) == (100, 20_000)


def _prompt(*texts: str) -> dict[str, Any]:
    return converse(*texts, system=None)


@pytest.mark.parametrize(
    ("record", "expected"),
    [
        (_prompt("Which level?"), set()),  # prompt only
        (_prompt("Which level?", "Level 1.", "And for facts?"), set()),  # multi-turn, ends on a prompt
        ({**_prompt("Which level?"), "schemaVersion": "bedrock-conversation-2023"}, {"invalid_value"}),
        ({"messages": _prompt("q")["messages"]}, {"invalid_value"}),  # no schemaVersion
        ({**_prompt("q"), "messages": []}, {"role_order"}),
        (_prompt("q") | {"messages": [{"role": "assistant", "content": [{"text": "a"}]}]}, {"role_order"}),
        ({"schemaVersion": formats.CONVERSATION_SCHEMA, "messages": [{"role": "user", "content": [image()]}]},
         {"unsupported_content"}),  # distillation is text to text
        # the Nova student trains on the prompts: Nova's reserved strings fail it (before: accepted)
        (_prompt("User: hi\nBot: <image> [EOS]"), {"reserved_string"}),
    ],
)  # fmt: skip
def test_distillation_prompt_rules(record: dict[str, Any], expected: set[str]) -> None:
    report = check(jsonl([_prompt("q")] * 99 + [record]), NOVA_LITE, customization_type=formats.DISTILLATION)
    assert set(report["training"]["errors"]) == expected


@pytest.mark.parametrize(
    ("count", "expected"), [(99, "too_few_records"), (100, None), (15_000, None), (15_001, "too_many_records")]
)
def test_distillation_takes_100_to_15000_prompts(count: int, expected: str | None) -> None:
    """Prompts: minimum 100, maximum 15K (https://docs.aws.amazon.com/nova/latest/userguide/custom-distill-prepare.html)."""
    report = check(jsonl([_prompt("q")] * count), NOVA_LITE, customization_type=formats.DISTILLATION)
    assert set(report["training"]["errors"]) == ({expected} if expected else set())


def _rft(**changes: Any) -> dict[str, Any]:
    record: dict[str, Any] = {
        "messages": [{"role": "system", "content": "Answer with a number."}, {"role": "user", "content": "2+2?"}],
        "reference_answer": "4",
    }
    record.update(changes)
    return {key: value for key, value in record.items() if value is not ...}


@pytest.mark.parametrize(
    ("record", "expected"),
    [
        (_rft(), set()),
        (_rft(reference_answer={"value": 4, "tolerance": 0}, id="q1"), set()),  # any shape; extra keys for the grader
        (_rft(reference_answer=...), {"missing_key"}),
        (_rft(reference_answer=" "), {"missing_key"}),  # empty: nothing to grade against
        (_rft(reference_answer={}), {"missing_key"}),
        (_rft(reference_answer=0), set()),  # any other value: the reward function reads it
        # Nova's reserved strings, in RFT messages too (AWS's Nova dataset validator, RFTMessage)
        (_rft(messages=[{"role": "user", "content": "User: 2+2? Assistant:"}]), {"reserved_string"}),
        (_rft(messages=[{"role": "assistant", "content": "4"}]), {"role_order"}),
        (_rft(messages=[{"role": "user", "content": "q"}, {"role": "system", "content": "s"}]), {"role_order"}),
        (_rft(messages=[{"role": "tool", "content": "q"}, {"role": "user", "content": "q"}]), {"invalid_value"}),
        (_rft(messages=[{"role": "user", "content": [{"text": "q"}]}]), {"wrong_type"}),
        (_rft(messages=[]), {"wrong_type"}),
    ],
)
def test_rft_record_rules(record: dict[str, Any], expected: set[str]) -> None:
    data = jsonl([_rft()] * 99 + [record])
    report = check(data, NOVA_2, customization_type=formats.REINFORCEMENT_FINE_TUNING)
    assert set(report["training"]["errors"]) == expected


def test_rft_needs_100_records() -> None:
    report = check(jsonl([_rft()] * 99), NOVA_2, customization_type=formats.REINFORCEMENT_FINE_TUNING)
    assert kinds(report["training"]) == {"too_few_records": [None]}


def test_rft_takes_at_most_20000_prompts() -> None:
    """At most 20,000 prompts (https://docs.aws.amazon.com/bedrock/latest/userguide/rft-prepare-data.html)."""
    rft = formats.REINFORCEMENT_FINE_TUNING
    assert check(jsonl([_rft()] * 20_000), NOVA_2, customization_type=rft)["valid"]
    report = check(jsonl([_rft()] * 20_001), NOVA_2, customization_type=rft)
    assert kinds(report["training"]) == {"too_many_records": [20_001]}


@pytest.mark.parametrize(
    ("kind", "values", "expected"),
    [
        (formats.REINFORCEMENT_FINE_TUNING, {"epochCount": "50", "reasoningEffort": "high", "batchSize": "16"}, []),
        (formats.REINFORCEMENT_FINE_TUNING, {"reasoningEffort": "max"}, ["hyperparameter_invalid"]),
        (formats.REINFORCEMENT_FINE_TUNING, {"batchSize": "8"}, ["hyperparameter_out_of_range"]),
        (formats.REINFORCEMENT_FINE_TUNING, {"inferenceMaxTokens": "0"}, ["hyperparameter_out_of_range"]),
        (formats.FINE_TUNING, {"reasoningEffort": "high"}, ["hyperparameter_unknown"]),
    ],
)
def test_hyperparameters_are_checked_per_type(kind: str, values: dict[str, str], expected: list[str]) -> None:
    errors, _ = formats.check_hyperparameters(values, formats.MODELS[NOVA_2], kind)
    assert [error["kind"] for error in errors] == expected


def test_distillation_takes_no_hyperparameters() -> None:
    errors, _ = formats.check_hyperparameters({"epochCount": "2"}, formats.MODELS[NOVA_LITE], formats.DISTILLATION)
    assert "takes no hyperparameters" in errors[0]["message"]


@pytest.mark.parametrize(
    ("value", "fragment"),
    [("fine_tuning", "Did you mean 'FINE_TUNING'?"), ("SFT", "is not a customization type"), (3, "a number")],
)
def test_an_unknown_customization_type_says_what_to_pass(value: Any, fragment: str) -> None:
    message = formats.check_customization_type(value, formats.MODELS[NOVA_LITE])
    assert message is not None and fragment in message and "FINE_TUNING, CONTINUED_PRE_TRAINING" in message


# --- entry points -------------------------------------------------------------------------------------------


def _event(**overrides: Any) -> dict[str, Any]:
    base = {
        "bucket": "genai-kit-sandbox-data",
        "trainingKey": "datasets/train.jsonl",
        "baseModelId": NOVA_LITE,
        "hyperparameters": {},
        "reportKey": "reports/r.json",
    }
    base.update(overrides)
    return base


def test_the_event_without_a_type_is_fine_tuning_and_the_type_and_teacher_are_read() -> None:
    assert handler.parse_request(_event()).customization_type == formats.FINE_TUNING
    with pytest.raises(handler.InvalidRequest, match="customizationType"):
        handler.parse_request(_event(customizationType=None))
    # The teacher is read with the type (tests/level3_finetune/test_paths.py runs fine-tuning, distillation and
    # reinforcement fine-tuning through the pipeline; continued pre-training only as a refused request).
    request = handler.parse_request(
        _event(customizationType=formats.DISTILLATION, teacherModelId="us.amazon.nova-pro-v1:0")
    )
    assert (request.customization_type, request.teacher_model_id) == (formats.DISTILLATION, "us.amazon.nova-pro-v1:0")


@pytest.mark.parametrize(
    ("overrides", "field", "fragment"),
    [
        ({"trainingKey": "datasets/my train.jsonl"}, "trainingKey", "rename spaces"),
        ({"validationKey": "datasets/val#1.jsonl"}, "validationKey", "'#'"),
        ({"trainingKey": "datasets//train.jsonl"}, "trainingKey", "empty path segment"),
        ({"customizationType": "fine-tuning"}, "customizationType", "Did you mean 'FINE_TUNING'"),
        ({"teacherModelId": "amazon.nova-pro-v1:0"}, "teacherModelId", "DISTILLATION only"),
    ],
)
def test_the_handler_names_the_field_and_what_to_do(overrides: dict[str, Any], field: str, fragment: str) -> None:
    with pytest.raises(handler.InvalidRequest) as raised:
        handler.parse_request(_event(**overrides))
    assert raised.value.field == field and fragment in str(raised.value)


def test_a_data_key_bedrock_accepts_passes() -> None:
    assert formats.check_data_key("genai-kit-data", "datasets/train-v2_(final).jsonl") is None
    # botocore's S3Uri pattern takes no newline: before, `$` let one through at the end
    assert formats.check_data_key("genai-kit-data", "datasets/train.jsonl\n", "meta-llama-3.1") is not None
    for family in (formats.LLAMA_3_1, formats.TITAN_TEXT, formats.CLAUDE_3_HAIKU):
        assert formats.check_data_key("genai-kit-data", "datasets/train-v2_(final).jsonl", family) is None


@pytest.mark.parametrize("family", [formats.NOVA, formats.NOVA_2])
@pytest.mark.parametrize(("key", "char"), [("datasets/train(1).jsonl", "("), ("datasets/it's.jsonl", "'"),
                                          ("datasets/a!b.jsonl", "!"), ("datasets/v*.jsonl", "*")])  # fmt: skip
def test_nova_refuses_data_keys_outside_its_file_name_characters(family: str, key: str, char: str) -> None:
    """Nova file names: "alphanumeric characters, underscores, hyphens, slashes, and dots" only (item 3 of
    https://docs.aws.amazon.com/nova/latest/userguide/fine-tune-prepare-data-understanding.html), though
    CreateModelCustomizationJob's S3Uri pattern allows ! * ' ( )."""
    message = formats.check_data_key("genai-kit-data", key, family)
    assert message is not None
    assert f"holds '{char}'" in message and "letters, digits and _ - / . only" in message
    assert formats.DOC_NOVA_FT in message
    assert formats.check_data_key("genai-kit-data", "datasets/train_v2-final.jsonl", family) is None


def test_the_handler_refuses_a_nova_data_key_naming_the_field(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(handler.InvalidRequest) as raised:
        handler.parse_request(_event(trainingKey="datasets/train(final).jsonl"))
    assert raised.value.field == "trainingKey" and "letters, digits and _ - / . only" in str(raised.value)
    monkeypatch.setenv("AWS_REGION", "us-west-2")  # where Llama 3.1 is customized
    llama = handler.parse_request(_event(trainingKey="datasets/train(final).jsonl", baseModelId=LLAMA_31))
    assert llama.training_key == "datasets/train(final).jsonl"


def _cli(*args: str) -> tuple[int, str, str]:
    done = subprocess.run(
        [sys.executable, "-m", "finetune_validate", *args], capture_output=True, text=True, check=False, timeout=120
    )
    return done.returncode, done.stdout, done.stderr


def test_the_command_takes_the_type_and_the_teacher() -> None:
    path = str(SAMPLE_DIRS[formats.DISTILLATION][0])
    code, out, err = _cli(path, "--customization-type", "DISTILLATION", "--teacher-model", "amazon.nova-pro-v1:0")
    assert code == 0, (out, err)
    assert "DISTILLATION" in out.splitlines()[0]
    code, _, err = _cli(path, "--customization-type", "DISTILLATION", "--teacher-model", "amazon.nova-premier-v1:0")
    assert code == 2 and "end of life on 2026-09-14" in err
    code, _, err = _cli(str(TRAIN_SAMPLE), "--customization-type", "fine_tuning")
    assert code == 2 and "Did you mean 'FINE_TUNING'" in err


# --- realistic data -----------------------------------------------------------------------------------------


def test_realistic_records_are_valid_and_full_of_markers() -> None:
    records = list(realistic_records(40, seed=3))
    report = check(jsonl(records), NOVA_LITE)
    assert report["valid"], report["training"]["errors"]
    text = json.dumps(records)
    assert text.count(":") > 5_000 and len(text) > 200_000


def test_reserved_finder_rules_out_json_heavy_text_without_walking_its_markers() -> None:
    # A tool specification holds a ':' after every key; the finder must not step through each one in Python.
    spec = json.dumps([{"name": f"tool_{i}", "inputSchema": {"type": "object"}} for i in range(2_000)])
    find = formats._reserved_finder(formats.NOVA_RESERVED)
    assert find is not None

    class Counting(str):
        finds = 0

        def find(self, *args: Any) -> int:  # type: ignore[override]
            Counting.finds += 1
            return super().find(*args)

    assert find(Counting(spec)) is None
    assert Counting.finds == 0
    assert find(Counting(spec + " User: hi")) == (len(spec) + 1, "User:")


def test_path_helpers_exist() -> None:
    assert Path(SAMPLE_DIRS[formats.FINE_TUNING][0]) == TRAIN_SAMPLE


def test_distillation_falls_back_to_the_configured_teacher_and_needs_one() -> None:
    kind = {"customizationType": formats.DISTILLATION}
    request = handler.parse_request(_event(**kind, defaultTeacherModelId="amazon.nova-pro-v1:0"))
    assert request.teacher_model_id == "amazon.nova-pro-v1:0"
    own = handler.parse_request(
        _event(**kind, teacherModelId="us.amazon.nova-pro-v1:0", defaultTeacherModelId="amazon.nova-pro-v1:0")
    )
    assert own.teacher_model_id == "us.amazon.nova-pro-v1:0"
    with pytest.raises(handler.InvalidRequest) as missing:
        handler.parse_request(_event(**kind))
    assert missing.value.field == "teacherModelId"
    # The configured teacher is not a teacher of fine-tuning runs: ignored there, not refused.
    assert handler.parse_request(_event(defaultTeacherModelId="amazon.nova-pro-v1:0")).teacher_model_id is None


def test_a_runs_own_teacher_must_be_one_the_customization_role_may_invoke(monkeypatch: pytest.MonkeyPatch) -> None:
    """The role invokes in-Region teachers and the configured cross-Region profile only (FineTuneStack): another
    profile would fail the job after it started, so the request is refused before."""
    kind = {"customizationType": formats.DISTILLATION, "defaultTeacherModelId": "amazon.nova-pro-v1:0"}
    invocable = {"invocableTeacherModelIds": ["amazon.nova-pro-v1:0"]}
    with pytest.raises(handler.InvalidRequest) as refused:
        handler.parse_request(_event(**kind, **invocable, teacherModelId="us.amazon.nova-pro-v1:0"))
    assert refused.value.field == "teacherModelId"
    assert str(refused.value).startswith(
        "teacherModelId: 'us.amazon.nova-pro-v1:0' is not a teacher the customization role may invoke; "
        "allowed: amazon.nova-pro-v1:0 (ft_teacher_model_id as configured"
    )
    assert handler.parse_request(_event(**kind, **invocable, teacherModelId="amazon.nova-pro-v1:0")).teacher_model_id
    profile = {"invocableTeacherModelIds": ["us.amazon.nova-pro-v1:0", "amazon.nova-pro-v1:0"]}
    own = handler.parse_request(_event(**kind, **profile, teacherModelId="us.amazon.nova-pro-v1:0"))
    assert own.teacher_model_id == "us.amazon.nova-pro-v1:0"
    with pytest.raises(handler.InvalidRequest, match="invocableTeacherModelIds"):
        handler.parse_request(_event(**kind, invocableTeacherModelIds="amazon.nova-pro-v1:0", teacherModelId="x"))
    # The ARN of an invocable teacher in the function's Region is that teacher; in another Region it is not.
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    arn = "arn:aws:bedrock:{}::foundation-model/amazon.nova-pro-v1:0"
    assert handler.parse_request(_event(**kind, **invocable, teacherModelId=arn.format("us-east-1"))).teacher_model_id
    with pytest.raises(handler.InvalidRequest, match="may invoke"):
        handler.parse_request(_event(**kind, **invocable, teacherModelId=arn.format("eu-west-1")))


def test_only_a_distillation_from_the_invocation_logs_goes_without_a_training_key() -> None:
    base = {"customizationType": formats.DISTILLATION, "defaultTeacherModelId": "amazon.nova-pro-v1:0"}
    request = handler.parse_request(_event(**base, trainingKey=None, invocationLogs=True))
    assert request.training_key is None
    with pytest.raises(handler.InvalidRequest) as refused:
        handler.parse_request(_event(**base, trainingKey=None))
    assert refused.value.field == "trainingKey" and "invocation-logs" in str(refused.value)
    with pytest.raises(handler.InvalidRequest, match="trainingKey"):
        handler.parse_request(_event(trainingKey=None, invocationLogs=True))  # fine-tuning


@pytest.mark.parametrize("kind", [formats.DISTILLATION, formats.REINFORCEMENT_FINE_TUNING])
def test_a_validation_set_for_a_type_whose_job_takes_none_from_the_pipeline_is_refused(kind: str) -> None:
    event = _event(
        customizationType=kind,
        baseModelId="amazon.nova-2-lite-v1:0:256k" if kind == formats.REINFORCEMENT_FINE_TUNING else NOVA_LITE,
        defaultTeacherModelId="amazon.nova-pro-v1:0",
        validationKey="datasets/validation.jsonl",
    )
    with pytest.raises(handler.InvalidRequest) as refused:
        handler.parse_request(event)
    assert refused.value.field == "validationKey"


def test_rft_hyperparameters_are_typed_as_the_api_takes_them() -> None:
    typed = formats.rft_hyperparameters(
        {"epochCount": "3", "learningRate": "0.00001", "reasoningEffort": "high", "batchSize": "64"}
    )
    # Under the PascalCase names Step Functions' SDK integration requires for a structure's members (an RFT run
    # with camelCase hyperparameters failed at CreateModelCustomizationJob).
    assert typed == {"EpochCount": 3, "LearningRate": 0.00001, "ReasoningEffort": "high", "BatchSize": 64}
    assert [type(v) for v in typed.values()] == [int, float, str, int]


def test_the_teachers_offered_say_which_reach_their_end_of_life() -> None:
    # The list an unknown teacher gets, and the config's allowed text, must not offer a teacher past its end of
    # life as if it were usable.
    message = formats.check_distillation_pair("anthropic.claude-3-5-sonnet-20241022-v2:0", formats.MODELS[NOVA_LITE])
    assert message is not None
    for teacher in formats.TEACHERS.values():
        if teacher.lifecycle.end_of_life is not None:
            assert f"end of life {teacher.lifecycle.end_of_life.isoformat()}" in message, message
    from stacks.level3_finetune.settings import FineTuneSettings

    field = FineTuneSettings.model_fields["teacher_model_id"]
    assert "end of life is refused" in str(field.description)


@pytest.mark.parametrize(
    ("overrides", "field", "says"),
    [
        # Llama 3.1 is customized in us-west-2 only (custom-model-supported.html); the stack runs in us-east-1
        ({"baseModelId": LLAMA_31}, "baseModelId", "is customized in us-west-2, not in us-east-1"),
        (
            {"baseModelId": "arn:aws:bedrock:us-west-2::foundation-model/amazon.nova-micro-v1:0:128k"},
            "baseModelId",
            "names a model in us-west-2; this stack runs in us-east-1",
        ),
        # the pipeline sends the value on as it is, and Bedrock's identifier patterns are anchored
        ({"baseModelId": " amazon.nova-micro-v1:0:128k "}, "baseModelId", "has blanks around it"),
    ],
)
def test_a_create_bedrock_would_refuse_is_refused_by_the_validator_first(
    monkeypatch: pytest.MonkeyPatch, overrides: dict[str, str], field: str, says: str
) -> None:
    """Before: each passed validation (and the whole dataset was read), then CreateModelCustomizationJob refused."""
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    with pytest.raises(handler.InvalidRequest) as raised:
        handler.parse_request(_event(**overrides))
    assert raised.value.field == field and says in str(raised.value)


def test_rft_lengths_beyond_a_32_bit_integer_are_refused() -> None:
    """Before: no upper bound, so a length the API's integer cannot hold passed validation and failed the create."""
    spec, rft = formats.MODELS[NOVA_2], formats.REINFORCEMENT_FINE_TUNING
    assert formats.check_hyperparameters({"maxPromptLength": str(formats.INT32_MAX)}, spec, rft)[0] == []
    [error] = formats.check_hyperparameters({"inferenceMaxTokens": str(formats.INT32_MAX + 1)}, spec, rft)[0]
    assert "inferenceMaxTokens" in str(error)
