"""Level 3 dataset check: the streaming validator, its family rules, the Lambda handler (moto S3) and the CLI."""

from __future__ import annotations

import copy
import dataclasses
import io
import json
import os
import subprocess
import sys
import tracemalloc
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.response import StreamingBody
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from moto import mock_aws

from finetune_validate import formats, handler
from finetune_validate.__main__ import main as cli_main
from finetune_validate.names import LOGS_SOURCE, S3_SOURCE
from finetune_validate.validator import (
    FIRST_ERRORS_PER_KIND,
    BlockReader,
    DatasetValidator,
    RequestRefused,
    iter_lines,
    on_demand_problem,
    readable_media_prefix,
    run_teacher,
    summarize,
    teacher_invocable_problem,
    validate_dataset,
    validate_files,
    validation_set_problem,
)
from stacks.shared.python_function import stage_function_code
from tests.lambda_helpers import FakeContext

from .finetune_data import (
    CLAUDE,
    FAMILIES,
    INVALID_SAMPLES,
    LLAMA_31,
    LLAMA_32,
    LLAMA_32_VISION,
    NOVA_LITE,
    NOVA_MICRO,
    SAMPLE_DIRS,
    TITAN_EXPRESS,
    TITAN_LITE,
    TRAIN_SAMPLE,
    VALIDATION_SAMPLE,
    Family,
    chunked,
    claude,
    conversations,
    converse,
    errors_by_line,
    image,
    jsonl,
    kinds,
    line,
    prompt,
    reserved_tokens,
    stream,
    usable_on,
    video,
)

# The function's asset as Lambda sees it: its package and lambdas/common side by side.
ASSET_DIR = stage_function_code("finetune_validate")
HP_SETTINGS = hsettings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def check(data: bytes, model: str = NOVA_LITE, *, validation: bytes | None = None, **kw: Any) -> dict[str, Any]:
    """Validate in-memory JSON Lines (split into odd-sized chunks, so lines straddle chunk boundaries), on a day the
    model could still be customized."""
    kw.setdefault("today", usable_on(model))
    return validate_dataset(
        chunked(data, 4099),
        base_model_id=model,
        validation=chunked(validation, 4099) if validation is not None else None,
        **kw,
    )


def nova(count: int = 8, **replace: Any) -> list[dict[str, Any]]:
    """``count`` valid Nova records; ``replace={line: record}`` swaps in records at 1-based lines."""
    records: list[Any] = [converse("Which level changes tone?", "Level 1, prompt engineering.") for _ in range(count)]
    for key, record in replace.items():
        records[int(key.removeprefix("line")) - 1] = record
    return records


# --- model ids and families ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model_id", "family"),
    [
        ("amazon.nova-micro-v1:0:128k", formats.NOVA),
        ("amazon.nova-lite-v1:0:300k", formats.NOVA),
        ("amazon.nova-pro-v1:0:300k", formats.NOVA),
        ("anthropic.claude-3-haiku-20240307-v1:0:200k", formats.CLAUDE_3_HAIKU),
        ("meta.llama3-1-8b-instruct-v1:0:128k", formats.LLAMA_3_1),
        ("meta.llama3-1-70b-instruct-v1:0:128k", formats.LLAMA_3_1),
        ("meta.llama3-2-1b-instruct-v1:0:128k", formats.LLAMA_3_2),
        ("meta.llama3-2-3b-instruct-v1:0:128k", formats.LLAMA_3_2),
        ("meta.llama3-2-11b-instruct-v1:0:128k", formats.LLAMA_3_2),
        ("meta.llama3-2-90b-instruct-v1:0:128k", formats.LLAMA_3_2),
        ("amazon.titan-text-lite-v1:0:4k", formats.TITAN_TEXT),
        ("amazon.titan-text-express-v1:0:8k", formats.TITAN_TEXT),
        ("arn:aws:bedrock:us-east-1::foundation-model/amazon.nova-lite-v1:0:300k", formats.NOVA),
    ],
)
def test_family_is_detected_from_the_customization_base_model_id(model_id: str, family: str) -> None:
    assert formats.resolve_model(model_id).family == family


def test_base_model_id_without_its_context_suffix_gets_a_suggestion() -> None:
    with pytest.raises(formats.UnsupportedBaseModel, match=r"Did you mean 'amazon\.nova-lite-v1:0:300k'\?"):
        formats.resolve_model("amazon.nova-lite-v1:0")


@pytest.mark.parametrize(
    "model_id", ["anthropic.claude-3-5-sonnet-20240620-v1:0", "", "amazon.nova-premier-v1:0:1000k"]
)
def test_unsupported_base_model_is_a_clear_error_listing_the_supported_ids(model_id: str) -> None:
    with pytest.raises(formats.UnsupportedBaseModel) as raised:
        DatasetValidator(model_id)
    assert isinstance(raised.value, ValueError)
    if model_id:
        assert "Supported: amazon.nova-micro-v1:0:128k" in str(raised.value)


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_a_valid_dataset_passes_for_every_family(name: str) -> None:
    family = FAMILIES[name]
    report = check(jsonl(family.records(family.min_records)), family.model_id)
    assert report["valid"], report
    assert report["errorCount"] == 0
    assert report["training"]["records"] == family.min_records
    assert report["validation"] is None
    assert json.loads(json.dumps(report)) == report  # JSON-serializable as is


def test_report_shape() -> None:
    report = check(jsonl(nova(8)), validation=jsonl(nova(2)), hyperparameters={"epochCount": "2"})
    assert set(report) >= {"valid", "family", "baseModelId", "training", "validation", "hyperparameters", "checkedAt"}
    assert (report["family"], report["baseModelId"]) == (formats.NOVA, NOVA_LITE)
    assert report["training"]["records"] == 8 and report["validation"]["records"] == 2
    assert report["training"]["bytes"] == len(jsonl(nova(8)))
    assert report["hyperparameters"] == {"errors": []}
    assert report["checkedAt"].endswith("Z")
    assert report["limits"] == {"minTrainingRecords": 8, "maxTotalRecords": 20_000, "validationAllowed": True}
    assert report["warningCount"] == 0 and report["warnings"] == []


@pytest.mark.parametrize(
    ("model_id", "limits", "chars"),
    [
        (NOVA_MICRO, {"minTrainingRecords": 8, "maxTotalRecords": 20_000}, None),
        (CLAUDE, {"minTrainingRecords": 32, "maxTrainingRecords": 10_000, "maxValidationRecords": 1_000,
                  "maxTotalRecords": 10_000, "maxTrainingBytes": 10**10, "maxValidationBytes": 10**9}, 192_000),
        (LLAMA_31, {"minTrainingRecords": 1, "minTotalRecords": 100, "maxTotalRecords": 10_000}, 96_000),
        (LLAMA_32, {"minTrainingRecords": 1, "maxTrainingRecords": 10_000, "maxValidationRecords": 1_000,
                    "minTotalRecords": 100, "maxTotalRecords": 10_000}, 96_000),
        ("meta.llama3-2-90b-instruct-v1:0:128k", None, 60_000),
        (TITAN_EXPRESS, {"minTrainingRecords": 1, "maxTrainingBytes": 10**9, "maxValidationBytes": 10**8}, 24_576),
        (TITAN_LITE, None, 24_576),
    ],
)  # fmt: skip
def test_documented_limits(model_id: str, limits: dict[str, int] | None, chars: int | None) -> None:
    spec = formats.resolve_model(model_id)
    if limits is not None:
        assert spec.limits.to_dict() == limits
    assert spec.max_record_chars() == chars


# --- the sample files ---------------------------------------------------------------------------------------


def test_the_samples_are_valid_nova_data_in_the_house_style() -> None:
    report = validate_files(str(TRAIN_SAMPLE), base_model_id=NOVA_LITE, validation_path=str(VALIDATION_SAMPLE))
    assert report["valid"], report
    assert report["training"]["records"] >= 8  # Nova's minimum
    for path in (TRAIN_SAMPLE, VALIDATION_SAMPLE):
        for raw in path.read_text(encoding="utf-8").splitlines():
            record = json.loads(raw)
            answers = [m["content"][0]["text"] for m in record["messages"] if m["role"] == "assistant"]
            assert all(answer.startswith("**Level ") and "Idle cost" in answer for answer in answers)


@pytest.mark.parametrize(
    ("name", "kind", "lines"),
    [
        ("invalid_json.jsonl", "invalid_json", [3]),
        ("role_order.jsonl", "role_order", [5, 5]),
        ("reserved_string.jsonl", "reserved_string", [2]),
        ("missing_key.jsonl", "missing_key", [4]),
        ("unexpected_key.jsonl", "unexpected_key", [6]),
        ("empty_text.jsonl", "empty_text", [7]),
        ("blank_line.jsonl", "blank_line", [5]),
        ("invalid_utf8.jsonl", "invalid_utf8", [3]),
        ("too_few_records.jsonl", "too_few_records", [None]),
    ],
)
def test_each_invalid_sample_shows_exactly_its_error_kind_and_line(
    name: str, kind: str, lines: list[int | None]
) -> None:
    report = validate_files(str(INVALID_SAMPLES / name), base_model_id=NOVA_LITE)
    assert not report["valid"]
    assert kinds(report["training"]) == {kind: lines}


# --- line handling ------------------------------------------------------------------------------------------


def test_blank_lines_are_errors_and_not_records_and_line_numbers_stay_physical() -> None:
    good = jsonl(nova(8)).split(b"\n")[:8]
    data = b"\n".join(good[:3]) + b"\n\n   \n" + b"\n".join(good[3:]) + b"\n\n"
    report = check(data)
    assert kinds(report["training"]) == {"blank_line": [4, 5, 11]}
    assert (report["training"]["records"], report["training"]["lines"]) == (8, 11)


def test_crlf_and_a_final_line_without_newline_are_fine() -> None:
    lines = jsonl(nova(8)).split(b"\n")[:8]
    assert check(b"\r\n".join(lines))["valid"]
    assert check(b"\n".join(lines))["training"]["records"] == 8


@pytest.mark.parametrize("after", ["\u00a0", "\u2028", "\x0b", "\x0c", "\x1f"])
def test_only_json_whitespace_may_follow_a_record_on_its_line(after: str) -> None:
    """str.isspace() takes these, json (and AWS's validator, json.loads per line) does not: "Extra data". Before:
    the fast path accepted them, and the verdict depended on where the file was cut into chunks."""
    lines = jsonl(nova(8)).split(b"\n")[:8]
    lines[4] += after.encode()
    lines[5] = after.encode()  # a line of only that character is not blank either
    report = check(b"\n".join(lines))
    assert kinds(report["training"]) == {"invalid_json": [5, 6]}
    assert validate_dataset(chunked(b"\n".join(lines), 300), base_model_id=NOVA_LITE)["training"] == report["training"]


def test_a_file_of_another_kind_is_named_in_the_message() -> None:
    """Before: a gzip file, lone CR line endings and a NUL byte each gave only the JSON or UTF-8 position."""
    import gzip

    data = jsonl(nova(8))
    packed = check(gzip.compress(data))["training"]["errors"]["invalid_utf8"]["first"][0]["message"]
    assert packed.endswith("The file looks gzip-compressed: upload the uncompressed JSON Lines.")
    old_mac = check(data.replace(b"\n", b"\r"))["training"]["errors"]["invalid_json"]["first"][0]["message"]
    assert "(a carriage return alone ends no line here: save the file with \\n or \\r\\n line endings)" in old_mac
    nul = check(data.replace(b"}\n", b"}\x00\n", 1))["training"]["errors"]["invalid_json"]["first"][0]["message"]
    assert "(a NUL byte, which a text file does not hold" in nul


def test_a_byte_order_mark_is_reported_and_line_one_is_still_checked() -> None:
    report = check(b"\xef\xbb\xbf" + jsonl(nova(8, line1={"messages": "nope"})))
    assert kinds(report["training"]) == {"utf8_bom": [1], "wrong_type": [1]}


def test_invalid_utf8_is_reported_on_its_line_even_inside_a_json_string() -> None:
    lines = jsonl(nova(8)).split(b"\n")
    lines[5] = lines[5].replace(b"tone", b"t\xc3\x28ne")  # a broken 2-byte sequence inside a text
    lines[6] = lines[6].replace(b"Level", b"Lev\xffel")
    report = check(b"\n".join(lines))
    assert kinds(report["training"]) == {"invalid_utf8": [6, 7]}
    assert "Byte" in report["training"]["errors"]["invalid_utf8"]["first"][0]["message"]


@pytest.mark.parametrize(
    ("raw", "kind"),
    [
        (b'{"messages": [}', "invalid_json"),
        (b'{"schemaVersion": NaN, "messages": []}', "invalid_json"),
        (b"{} {}", "invalid_json"),
        (b"[" * 50_000, "invalid_json"),
        (b"[1, 2]", "not_an_object"),
        (b'"just a string"', "not_an_object"),
    ],
)
def test_lines_that_are_not_json_objects(raw: bytes, kind: str) -> None:
    lines = jsonl(nova(8)).split(b"\n")[:8]
    report = check(b"\n".join([*lines[:2], raw, *lines[2:]]) + b"\n")
    assert kinds(report["training"]) == {kind: [3]}
    assert report["training"]["records"] == 9


def test_json_spanning_lines_is_invalid_on_each_line_and_numbering_continues() -> None:
    lines = jsonl(nova(8)).split(b"\n")[:8]
    pretty = json.dumps(converse("a", "b"), indent=1).encode().split(b"\n")
    report = check(b"\n".join([lines[0], *pretty, *lines[1:]]) + b"\n")
    assert set(kinds(report["training"])) == {"invalid_json"}
    assert report["training"]["errors"]["invalid_json"]["count"] == len(pretty)
    assert errors_by_line(report["training"]).keys() == set(range(2, 2 + min(len(pretty), FIRST_ERRORS_PER_KIND)))


@pytest.mark.parametrize("chunk", [7, 100, 5_000, 1 << 20])
def test_a_line_over_the_memory_bound_is_skipped_not_buffered(chunk: int) -> None:
    lines = jsonl(nova(8)).split(b"\n")[:8]
    huge = b'{"messages": "' + b"x" * 6_000 + b'"}'
    data = b"\n".join([*lines[:3], huge, *lines[3:]]) + b"\n"
    validator = DatasetValidator(NOVA_LITE, max_line_bytes=2_000)
    section = validator.check_training(chunked(data, chunk))
    assert kinds(validator.report()["training"]) == {"line_too_long": [4]}
    assert (section.records, section.lines, section.bytes) == (9, 9, len(data))


def test_block_reader_never_splits_characters_and_counts_every_byte() -> None:
    data = "é中😀\n".encode() * 3 + "last 😀".encode()
    for size in range(1, 12):
        blocks = list(BlockReader(chunked(data, size)))
        assert all(not dirty for _text, dirty in blocks)
        assert "".join(text or "" for text, _ in blocks) == data.decode()
        assert list(iter_lines(chunked(data, size))) == ["é中😀", "é中😀", "é中😀", "last 😀"]


@given(data=st.data())
@HP_SETTINGS
def test_chunk_boundaries_never_change_the_report(data: st.DataObject) -> None:
    lines = jsonl(nova(8, line3={"messages": []}, line6=converse("é 中 😀 User: hi", "ok"))).split(b"\n")
    lines[4] = b"\xef" + lines[4]  # invalid UTF-8 on line 5
    raw = b"\n".join(lines)
    whole = validate_dataset([raw], base_model_id=NOVA_LITE)
    cuts = sorted(data.draw(st.lists(st.integers(min_value=0, max_value=len(raw)), max_size=25)))
    pieces = [raw[start:end] for start, end in zip([0, *cuts], [*cuts, len(raw)], strict=True)]
    again = validate_dataset(pieces, base_model_id=NOVA_LITE)
    assert again["training"] == whole["training"]
    assert kinds(whole["training"]) == {"role_order": [3], "invalid_utf8": [5], "reserved_string": [6]}


def test_error_lists_are_bounded_but_counts_are_exact() -> None:
    bad = [b"{nope"] * 1_000
    report = check(b"\n".join(bad) + b"\n")
    entry = report["training"]["errors"]["invalid_json"]
    assert entry["count"] == 1_000
    assert [item["line"] for item in entry["first"]] == list(range(1, FIRST_ERRORS_PER_KIND + 1))
    assert report["training"]["invalidRecords"] == 1_000


# --- Nova rules ---------------------------------------------------------------------------------------------


def _nova_text_record(text: str, where: str = "user") -> dict[str, Any]:
    return converse(text, "fine") if where == "user" else converse("fine", text)


@pytest.mark.parametrize("token", formats.NOVA_RESERVED)
@pytest.mark.parametrize("where", ["user", "assistant", "system"])
def test_nova_rejects_every_reserved_string_in_any_case_anywhere(token: str, where: str) -> None:
    text = f"Read this {token.swapcase()} then answer."
    record = converse("q", "a", system=text) if where == "system" else _nova_text_record(text, where)
    report = check(jsonl(nova(8, line2=record)))
    assert kinds(report["training"]) == {"reserved_string": [2]}
    assert token in report["training"]["errors"]["reserved_string"]["first"][0]["message"]


# The reserved keywords "Preparing data for fine-tuning Understanding models" lists: a user or system prompt that
# starts with or contains one fails the training job.
# https://docs.aws.amazon.com/nova/latest/userguide/fine-tune-prepare-data-understanding.html
NOVA_GUIDE_RESERVED = ("User:", "Bot:", "Assistant:", "System:", "<image>", "<video>", "[EOS]")
# AWS's dataset validator the kit follows refuses two more (INVALID_TOKENS_TEXT in aws-samples/amazon-nova-samples,
# customization/bedrock-finetuning/understanding/dataset_validation/nova_ft_dataset_validator.py).
NOVA_VALIDATOR_RESERVED = ("Thought:", "<unk>")


@pytest.mark.parametrize("token", NOVA_GUIDE_RESERVED + NOVA_VALIDATOR_RESERVED)
@pytest.mark.parametrize("where", ["user", "system"])
@pytest.mark.parametrize("at", ["start", "inside"])
def test_nova_refuses_every_keyword_aws_reserves(token: str, where: str, at: str) -> None:
    # Independent of formats.NOVA_RESERVED: dropping an entry there fails here.
    text = f"{token} what changes tone?" if at == "start" else f"Which level, {token} changes tone?"
    record = converse("q", "a", system=text) if where == "system" else _nova_text_record(text)
    report = check(jsonl(nova(8, line2=record)))
    assert kinds(report["training"]) == {"reserved_string": [2]}, (token, where, at)


def test_nova_allows_colons_and_brackets_that_are_not_reserved() -> None:
    record = converse("Users: who are they? Use <b> and [x].", "Level 1: prompt engineering; superuser rights.")
    assert check(jsonl(nova(8, line1=record)))["valid"]


@given(
    text=st.text(
        alphabet=st.sampled_from(list("userUSERsystemSYSTEMbotassistantthoughtimagevideounkeosEOS:<>[] .İK")),
        max_size=40,
    )
)
@HP_SETTINGS
def test_reserved_finder_matches_a_plain_case_insensitive_search(text: str) -> None:
    find = formats._reserved_finder(formats.NOVA_RESERVED)
    assert find is not None
    naive = [token for token in formats.NOVA_RESERVED if token.lower() in text.lower()]
    found = find(text)
    assert (found is not None) == bool(naive), (text, found, naive)
    if found is not None:
        at, token = found
        assert token in naive
        assert text[at : at + len(token)].lower() == token.lower() or not text.isascii()


@given(
    text=st.text(
        alphabet=st.sampled_from(list("userUSERsystemSYSTEMbotassistantthoughtimagevideounkeosEOS:<>[] .K")),
        max_size=40,
    ),
    padding=st.sampled_from(["", "x" * formats.PREFILTER_CHARS, ":" * formats.PREFILTER_CHARS]),
)
@HP_SETTINGS
def test_short_and_long_texts_take_different_paths_to_the_same_answer(text: str, padding: str) -> None:
    """Texts past PREFILTER_CHARS are ruled out by a lowered search first; shorter ones go to their markers."""
    find = formats._reserved_finder(formats.NOVA_RESERVED)
    assert find is not None
    whole = padding + text
    naive = [token for token in formats.NOVA_RESERVED if token.lower() in whole.lower()]
    assert (find(whole) is not None) == bool(naive), (text, naive)


def test_reserved_strings_are_nova_only() -> None:
    family = FAMILIES["llama32"]
    records = family.records(100, ["User: hi", "Assistant: hello"])
    assert check(jsonl(records), family.model_id)["valid"]


ANSWER = {"role": "assistant", "content": [{"text": "Level 1."}]}


def asked(content: Any, role: str = "user", **extra: Any) -> dict[str, Any]:
    """A record whose first turn has this content (and role), followed by a valid answer."""
    return {"messages": [{"role": role, "content": content, **extra}, ANSWER]}


@pytest.mark.parametrize(
    ("record", "expected"),
    [
        ({"messages": []}, {"role_order"}),
        (converse("only a question"), {"role_order"}),
        (converse("q", "a", "q2"), {"role_order"}),
        ({"schemaVersion": 2, "messages": converse("q", "a")["messages"]}, {"wrong_type"}),
        ({"system": "plain", "messages": converse("q", "a")["messages"]}, {"wrong_type"}),
        ({"system": [{"txt": "x"}], "messages": converse("q", "a")["messages"]}, {"missing_key", "unexpected_key"}),
        (asked("q"), {"wrong_type"}),
        (asked([{"text": "q"}], role="system"), {"invalid_value"}),
        (asked([]), {"empty_text"}),
        (asked([{"text": "q", "image": {}}]), {"unexpected_key"}),
        (asked([{"txt": "q"}]), {"missing_key"}),
        (asked([{"text": 5}]), {"wrong_type"}),
        (asked([{"text": "q"}], name="x"), {"unexpected_key"}),
        ({"messages": ["q", "a"]}, {"wrong_type"}),
    ],
)
def test_nova_record_rules(record: dict[str, Any], expected: set[str]) -> None:
    report = check(jsonl(nova(8, line4=record)))
    assert errors_by_line(report["training"]) == {4: expected}


def test_nova_schema_version_may_be_any_string_and_system_is_optional() -> None:
    record = converse("q", "a", system=None)
    record["schemaVersion"] = "anything"
    assert check(jsonl(nova(8, line1=record, line2={"messages": record["messages"]})))["valid"]


def test_nova_media_rules() -> None:
    picture = {"role": "user", "content": [{"text": "What does this show?"}, image()]}
    answer = {"role": "assistant", "content": [{"text": "A diagram."}]}
    with_image = {"messages": [picture, answer]}
    assert check(jsonl(nova(8, line1=with_image)))["valid"]
    micro = check(jsonl(nova(8, line1=with_image)), NOVA_MICRO)
    assert kinds(micro["training"]) == {"unsupported_content": [1]}
    in_answer = {
        "messages": [{"role": "user", "content": [{"text": "q"}]}, {"role": "assistant", "content": [image()]}]
    }
    bad_format = {"messages": [{"role": "user", "content": [image("bmp", "https://x")]}, answer]}
    clip = {"messages": [{"role": "user", "content": [video()]}, answer]}
    two_videos = {"messages": [{"role": "user", "content": [video(), video()]}, answer]}
    eleven = {"messages": [{"role": "user", "content": [image() for _ in range(11)]}, answer]}
    report = check(jsonl(nova(8, line2=in_answer, line3=bad_format, line4=eleven, line5=clip, line6=two_videos)))
    assert errors_by_line(report["training"]) == {
        2: {"unsupported_content"},
        3: {"invalid_value", "invalid_s3_uri"},  # bmp, and an https:// location
        4: {"unsupported_content"},
        5: {"unsupported_content"},  # videos after images elsewhere in the dataset
        6: {"unsupported_content"},
    }


def test_llama_32_images_only_for_vision_models() -> None:
    answer = {"role": "assistant", "content": [{"text": "A diagram."}]}
    record = {"messages": [{"role": "user", "content": [{"text": "What is it?"}, image("webp")]}, answer]}
    records = [*FAMILIES["llama32"].records(99), record]
    assert check(jsonl(records), LLAMA_32_VISION)["valid"]
    assert kinds(check(jsonl(records), LLAMA_32)["training"]) == {"unsupported_content": [100]}


# --- Claude 3 Haiku and prompt/completion rules --------------------------------------------------------------


@pytest.mark.parametrize(
    ("record", "expected"),
    [
        (claude("q", "a", system=None), set()),
        ({"system": ["x"], "messages": claude("q", "a")["messages"]}, {"wrong_type"}),
        ({"messages": [{"role": "user", "content": [{"text": "q"}]}, {"role": "assistant", "content": "a"}]},
         {"wrong_type"}),
        ({"messages": [{"role": "assistant", "content": "a"}, {"role": "user", "content": "q"}]}, {"role_order"}),
        ({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": " "}]}, {"empty_text"}),
        ({"messages": claude("q", "a")["messages"], "id": 7}, {"unexpected_key"}),
        ({"system": "s"}, {"missing_key"}),
    ],
)  # fmt: skip
def test_claude_record_rules(record: dict[str, Any], expected: set[str]) -> None:
    records = FAMILIES["claude"].records(32)
    records[9] = record
    report = check(jsonl(records), CLAUDE)
    assert errors_by_line(report["training"]) == ({10: expected} if expected else {})


@pytest.mark.parametrize("model", [LLAMA_31, TITAN_EXPRESS])
@pytest.mark.parametrize(
    ("record", "expected"),
    [
        ({"prompt": "q"}, {"missing_key"}),
        ({"prompt": "q", "completion": 3}, {"wrong_type"}),
    ],
)
def test_prompt_completion_record_rules(model: str, record: dict[str, Any], expected: set[str]) -> None:
    records: list[Any] = [prompt() for _ in range(100)]
    records[41] = record
    report = check(jsonl(records), model)
    assert errors_by_line(report["training"]) == {42: expected}


def _warnings_by_line(section: dict[str, Any]) -> dict[int | None, set[str]]:
    found: dict[int | None, set[str]] = {}
    for kind, entry in section["warnings"].items():
        for item in entry["first"]:
            found.setdefault(item["line"], set()).add(kind)
    return found


@pytest.mark.parametrize(
    ("record", "titan_errors", "llama_errors", "llama_warnings"),
    [
        ({"prompt": "q", "completion": "a", "label": 1}, {"unexpected_key"}, set(), {"extra_key"}),
        ({"prompt": "", "completion": "a"}, {"empty_text"}, set(), {"empty_prompt_or_completion"}),
        ({"prompt": "q", "completion": " \n"}, {"empty_text"}, set(), {"empty_prompt_or_completion"}),
        (converse("q", "a"), {"missing_key", "unexpected_key"}, {"missing_key"}, {"extra_key"}),
    ],
)
def test_llama_31_warns_where_titan_refuses(
    record: dict[str, Any], titan_errors: set[str], llama_errors: set[str], llama_warnings: set[str]
) -> None:
    """Llama 3.1 prompt/completion: input and output tokens have a minimum of 0 (model-customization-prepare.html,
    "Meta Llama 3.1") and AWS's own Llama validator sets "additionalProperties": True with no minLength
    (aws-samples/amazon-bedrock-workshop .../meta-llama/dataset_validation/utils/schema.py): another key and an
    empty side are warnings. Titan keeps them errors; a missing key stays an error for both."""
    records: list[Any] = [prompt() for _ in range(100)]
    records[41] = record
    titan = check(jsonl(records), TITAN_EXPRESS)
    assert errors_by_line(titan["training"]) == {42: titan_errors}
    llama = check(jsonl(records), LLAMA_31)
    assert errors_by_line(llama["training"]) == ({42: llama_errors} if llama_errors else {})
    assert _warnings_by_line(llama["training"]) == {42: llama_warnings}
    assert llama["valid"] is not llama_errors


def test_a_llama_31_record_awss_validator_accepts_keeps_the_file_valid() -> None:
    records: list[Any] = [prompt() for _ in range(99)] + [{"prompt": "", "completion": "a", "id": "7"}]
    report = check(jsonl(records), LLAMA_31)
    assert report["valid"] is True and report["training"]["invalidRecords"] == 0
    messages = [item["message"] for entry in report["training"]["warnings"].values() for item in entry["first"]]
    assert any("'id'" in message and "Llama 3.1" in message for message in messages)
    assert any("minimum is 0 tokens" in message for message in messages)


def test_six_characters_per_token_is_not_a_limit_records_near_the_quota_are_warned_about() -> None:
    # Llama 3.1: 16,000 tokens. The documents' 6 characters per token would allow 96,000 characters, but records
    # cut at that rate fail real jobs: the estimate is 3 characters per token, a warning within 10% of the quota
    # (43,200 characters and more), an error only over 96,000 characters (over even at 6 per token).
    fine = prompt("p" * 20_000, "c" * 23_200)  # 43,200 characters: 14,400 estimated tokens, not yet near
    near = prompt("p" * 20_000, "c" * 23_201)  # one more: within the margin
    at_planning_rate = prompt("p" * 48_000, "c" * 48_000)  # passed the old check; now a warning, not silence
    over = prompt("p" * 48_000, "c" * 48_001)
    report = check(jsonl([prompt()] * 96 + [fine, near, at_planning_rate, over]), LLAMA_31)
    assert kinds(report["training"]) == {"record_too_long": [100]}
    assert {k: [i["line"] for i in v["first"]] for k, v in report["training"]["warnings"].items()} == {
        "tokens_near_limit": [98, 99]
    }
    message = report["training"]["warnings"]["tokens_near_limit"]["first"][0]["message"]
    assert "estimated 14,401 tokens" in message and "16,000-token limit" in message
    assert report["limits"]["maxRecordTokens"] == 16_000
    assert not report["valid"] and report["warningCount"] == 2


def test_a_dataset_with_only_token_warnings_stays_valid() -> None:
    near = prompt("p" * 40_000, "c" * 10_000)
    report = check(jsonl([prompt()] * 99 + [near]), LLAMA_31)
    assert report["valid"] and report["training"]["invalidRecords"] == 0 and report["warningCount"] == 1
    assert "1 warning" in summarize(report)


@pytest.mark.parametrize("model", [TITAN_LITE, TITAN_EXPRESS])
def test_titan_warns_about_records_like_those_that_failed_a_real_job(model: str) -> None:
    """10,000-character records failed a Titan continued pre-training job over its 4,096 tokens
    (https://github.com/aws-samples/amazon-bedrock-workshop/issues/224): Titan's warning band is derived from 2
    characters per token (4,096 x 0.9 x 2 = 7,372 characters), a warning only."""
    data = line({"input": "x" * 10_000}) + b"\n"
    report = check(data, model, customization_type=formats.CONTINUED_PRE_TRAINING, hyperparameters={"batchSize": "1"})
    assert report["valid"] and kinds(report["training"]) == {}
    assert list(report["training"]["warnings"]) == ["tokens_near_limit"]
    message = report["training"]["warnings"]["tokens_near_limit"]["first"][0]["message"]
    assert "estimated 5,000 tokens at 2 characters per token" in message and "over the 4,096-token limit" in message
    assert report["limits"]["tokenEstimate"].startswith("characters / 2 ")
    fine_tuning = check(jsonl([prompt("p" * 5_000, "c" * 2_373)]), model, hyperparameters={"batchSize": "1"})
    assert list(fine_tuning["training"]["warnings"]) == ["tokens_near_limit"]  # 7,373 characters
    assert check(jsonl([prompt("p" * 5_000, "c" * 2_372)]), model)["training"]["warnings"] == {}
    # The other families keep 3 characters per token: Llama 3.1 warns only over 43,200 characters.
    assert formats.RecordChecker(formats.MODELS[LLAMA_31], 16_000).warn_chars == 43_200


def test_titan_token_quota_follows_the_batch_size() -> None:
    record = prompt("p" * 10_000, "c" * 3_000)  # 13,000 characters: about 4,334 tokens at 3 per token
    data = jsonl([prompt()] * 7 + [record])
    express = check(data, TITAN_EXPRESS)  # batch size 1: 4,096 tokens
    assert express["valid"] and "tokens_near_limit" in express["training"]["warnings"]
    small = check(data, TITAN_EXPRESS, hyperparameters={"batchSize": "2"})  # 2,048 tokens: 12,288 chars at 6
    assert kinds(small["training"]) == {"record_too_long": [8]}
    assert check(data, TITAN_LITE, hyperparameters={"batchSize": "2"})["valid"]  # Lite keeps 4,096 up to 2


# --- record counts and file sizes ---------------------------------------------------------------------------


def test_claude_record_limits() -> None:
    family = FAMILIES["claude"]
    assert kinds(check(jsonl(family.records(31)), CLAUDE)["training"]) == {"too_few_records": [None]}
    too_many = check(jsonl(family.records(10_001)), CLAUDE)
    assert kinds(too_many["training"]) == {"too_many_records": [10_001]}
    validation = check(jsonl(family.records(100)), CLAUDE, validation=jsonl(family.records(1_001)))
    assert kinds(validation["validation"]) == {"too_many_records": [1_001]}
    total = check(jsonl(family.records(9_500)), CLAUDE, validation=jsonl(family.records(600)))
    assert kinds(total["validation"]) == {"too_many_records": [501]}
    assert "10,100 records" in total["validation"]["errors"]["too_many_records"]["first"][0]["message"]


def test_nova_counts_training_and_validation_together() -> None:
    line_bytes = line(nova(1)[0])
    training = b"".join(stream([line_bytes], 19_995))
    report = check(training, validation=jsonl(nova(10)))
    assert kinds(report["validation"]) == {"too_many_records": [6]}
    assert check(training, validation=jsonl(nova(5)))["valid"]
    assert kinds(check(training + jsonl(nova(6)))["training"]) == {"too_many_records": [20_001]}


def test_llama_needs_100_records_in_total() -> None:
    family = FAMILIES["llama31"]
    short = check(jsonl(family.records(90)), LLAMA_31, validation=jsonl(family.records(9)))
    assert kinds(short["validation"]) == {"too_few_records": [None]}
    assert check(jsonl(family.records(90)), LLAMA_31, validation=jsonl(family.records(10)))["valid"]
    assert check(jsonl(family.records(100)), LLAMA_31)["valid"]
    llama32 = FAMILIES["llama32"]
    rows = check(jsonl(llama32.records(100)), LLAMA_32, validation=jsonl(llama32.records(1_001)))
    assert kinds(rows["validation"]) == {"too_many_records": [1_001]}
    # Llama 3.2's per-file caps are not on AWS's page: the message names where they come from.
    message = rows["validation"]["errors"]["too_many_records"]["first"][0]["message"]
    assert formats.LLAMA_VALIDATOR_LIMITS in message and "does not state" in message


@pytest.mark.parametrize("model", [LLAMA_31, "meta.llama3-1-70b-instruct-v1:0:128k"])
def test_llama_31_records_over_the_adjustable_quota_are_a_warning_naming_it(model: str) -> None:
    """ "Sum of training and validation records | 100 | 10,000 (adjustable using service quotas)"
    (model-customization-prepare.html, "Meta Llama 3.1"): over 10,000 is a warning that names the quota to raise,
    not an error (an account with a raised quota can run it)."""
    record = line(prompt())
    over = check(b"".join(stream([record], 10_001)), model)
    assert over["valid"] is True and over["errorCount"] == 0
    assert list(over["training"]["warnings"]) == ["over_default_quota"]
    first = over["training"]["warnings"]["over_default_quota"]["first"][0]
    name = formats.MODELS[model].name
    assert first["line"] == 10_001
    assert (
        f'"(Model customization) Sum of training and validation records for a {name} Fine-tuning job"'
        in (first["message"])
    )
    assert "Service Quotas" in first["message"] and "10,001" in first["message"]
    assert over["limits"]["maxTotalRecordsQuota"].endswith(f"{name} Fine-tuning job")
    together = check(b"".join(stream([record], 9_950)), model, validation=jsonl([prompt()] * 51))
    assert together["valid"] and kinds(together["validation"]) == {}
    assert [i["line"] for i in together["validation"]["warnings"]["over_default_quota"]["first"]] == [51]
    assert check(b"".join(stream([record], 10_000)), model)["warningCount"] == 0


def test_an_empty_validation_file_is_an_error() -> None:
    report = check(jsonl(nova(8)), validation=b"")
    assert kinds(report["validation"]) == {"too_few_records": [None]}


def test_file_size_limits(monkeypatch: pytest.MonkeyPatch) -> None:
    spec = formats.MODELS[TITAN_EXPRESS]
    tiny = dataclasses.replace(spec.limits, max_training_bytes=1_000, max_validation_bytes=100)
    monkeypatch.setitem(formats.MODELS, TITAN_EXPRESS, dataclasses.replace(spec, limits=tiny))
    report = check(jsonl([prompt()] * 30), TITAN_EXPRESS, validation=jsonl([prompt()] * 3))
    assert kinds(report["training"]) == {"file_too_large": [None]}
    assert kinds(report["validation"]) == {"file_too_large": [None]}
    assert formats.MODELS[TITAN_LITE].limits.max_training_bytes == 1_000_000_000
    # "at most" the limit: a file of exactly the limit's size is not too large.
    exact = jsonl([prompt()] * 30)
    exact_limits = dataclasses.replace(spec.limits, max_training_bytes=len(exact), max_validation_bytes=None)
    monkeypatch.setitem(formats.MODELS, TITAN_EXPRESS, dataclasses.replace(spec, limits=exact_limits))
    assert "file_too_large" not in kinds(check(exact, TITAN_EXPRESS)["training"])


# --- hyperparameters ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "values", "expected"),
    [
        (NOVA_LITE, {"epochCount": "5", "learningRate": "0.0001", "learningRateWarmupSteps": "0"}, []),
        (NOVA_LITE, {"epochCount": "1", "learningRate": "1e-6", "learningRateWarmupSteps": "100"}, []),
        (NOVA_LITE, {"epochCount": "6"}, ["hyperparameter_out_of_range"]),
        (NOVA_LITE, {"learningRate": "2e-4"}, ["hyperparameter_out_of_range"]),
        (NOVA_LITE, {"epochCount": 2}, ["hyperparameter_not_string"]),
        (NOVA_LITE, {"epochCount": "2.5"}, ["hyperparameter_invalid"]),
        # epochCount is of type integer (https://docs.aws.amazon.com/bedrock/latest/userguide/cm-hp-nova-mm.html):
        # a whole number written as a decimal is not sent as one
        (NOVA_LITE, {"epochCount": "2.0"}, ["hyperparameter_invalid"]),
        (NOVA_LITE, {"learningRate": "fast"}, ["hyperparameter_invalid"]),
        (NOVA_LITE, {"learningRate": "nan"}, ["hyperparameter_invalid"]),
        (NOVA_LITE, {"batchSize": "8"}, ["hyperparameter_unknown"]),
        # a trailing newline, full-width or other non-ASCII digits: not the number Bedrock is sent
        (NOVA_LITE, {"epochCount": "2\n", "learningRate": "0.00001\n"}, ["hyperparameter_invalid"] * 2),
        (NOVA_LITE, {"epochCount": "\uff12"}, ["hyperparameter_invalid"]),
        (NOVA_LITE, {"epochCount": "\u0663"}, ["hyperparameter_invalid"]),
        (CLAUDE, {"epochCount": "10", "batchSize": "256", "learningRateMultiplier": "0.1"}, []),
        (CLAUDE, {"earlyStoppingThreshold": "0.1", "earlyStoppingPatience": "1"}, []),
        (CLAUDE, {"batchSize": "3"}, ["hyperparameter_out_of_range"]),
        (CLAUDE, {"learningRateMultiplier": "2.5", "earlyStoppingPatience": "11"}, ["hyperparameter_out_of_range"] * 2),
        (CLAUDE, {"learningRate": "0.001"}, ["hyperparameter_unknown"]),
        (TITAN_EXPRESS, {"epochCount": "10", "batchSize": "64", "learningRate": "0"}, []),
        (TITAN_EXPRESS, {"learningRate": "1", "learningRateWarmupSteps": "250"}, []),
        (TITAN_EXPRESS, {"learningRateWarmupSteps": "251"}, ["hyperparameter_out_of_range"]),
        (LLAMA_31, {"epochCount": "10", "batchSize": "1", "learningRate": "5e-6"}, []),
        (LLAMA_31, {"epochCount": "12"}, []),  # over the adjustable default: a warning (below)
        (LLAMA_31, {"epochCount": "0"}, ["hyperparameter_out_of_range"]),
        (LLAMA_31, {"batchSize": "2"}, ["hyperparameter_out_of_range"]),
        (LLAMA_32, {"epochCount": "11"}, ["hyperparameter_out_of_range"]),  # 3.2's page marks nothing adjustable
        (LLAMA_32, {"learningRate": "0.2"}, ["hyperparameter_out_of_range"]),
        (LLAMA_32, {"learningRateWarmupSteps": "1"}, ["hyperparameter_unknown"]),
    ],
)  # fmt: skip
def test_hyperparameters(model: str, values: dict[str, Any], expected: list[str]) -> None:
    wanted = formats.resolve_model(model).family
    family = next(f for f in FAMILIES.values() if formats.resolve_model(f.model_id).family == wanted)
    report = check(jsonl(family.records(family.min_records)), model, hyperparameters=values)
    errors = report["hyperparameters"]["errors"]
    assert [error["kind"] for error in errors] == expected
    assert report["valid"] is (not expected)
    assert all(error["name"] in values and error["message"] for error in errors)


def test_llama_31_epochs_over_the_adjustable_quota_are_a_warning_naming_it() -> None:
    """ "The epochCount quota is adjustable" (https://docs.aws.amazon.com/bedrock/latest/userguide/cm-hp-meta-llama31.html):
    epochCount over 10 is a warning naming the quota, not hyperparameter_out_of_range; synth's check (errors only)
    accepts it too."""
    family = FAMILIES["llama31"]
    report = check(jsonl(family.records(family.min_records)), LLAMA_31, hyperparameters={"epochCount": "12"})
    assert report["valid"] is True and report["hyperparameters"]["errors"] == []
    warning = next(w for w in report["warnings"] if w["kind"] == "over_default_quota")
    assert warning["name"] == "epochCount"
    assert "epochCount = 12" in warning["message"] and "Service Quotas" in warning["message"]
    assert formats.DOC_LLAMA_31_HP in warning["message"]
    spec = formats.MODELS[LLAMA_31]
    assert formats.check_hyperparameters({"epochCount": "12"}, spec)[0] == []
    assert (
        check(jsonl(family.records(family.min_records)), LLAMA_31, hyperparameters={"epochCount": "10"})["warnings"]
        == []
    )


# --- properties ---------------------------------------------------------------------------------------------


def _mutations(family: Family) -> list[str]:
    names = ["drop_key", "break_json"]
    if formats.resolve_model(family.model_id).family not in formats.LENIENT_PROMPT_COMPLETION:
        names.append("add_key")  # Llama 3.1 warns about another key (test_llama_31_warns_where_titan_refuses)
    if family.shape != formats.PROMPT_COMPLETION:
        names.append("swap_roles")
    if family.name == "nova":
        names.append("reserved")
    return names


def _mutate(record: dict[str, Any], mutation: str, family: Family, token: str) -> tuple[bytes, str]:
    """(the mutated line, the error kind it must produce)."""
    record = copy.deepcopy(record)
    if mutation == "drop_key":
        del record["completion" if family.shape == formats.PROMPT_COMPLETION else "messages"]
        return line(record), "missing_key"
    if mutation == "add_key":
        record["extra"] = {"note": 1}
        return line(record), "unexpected_key"
    if mutation == "swap_roles":
        first, second = record["messages"][0], record["messages"][1]
        first["role"], second["role"] = second["role"], first["role"]
        return line(record), "role_order"
    if mutation == "reserved":
        record["messages"][0]["content"][0]["text"] += f" {token} more"
        return line(record), "reserved_string"
    return line(record)[:-1], "invalid_json"


@pytest.mark.parametrize("name", sorted(FAMILIES))
@given(data=st.data())
@HP_SETTINGS
def test_generated_valid_records_pass(name: str, data: st.DataObject) -> None:
    family = FAMILIES[name]
    base = [family.make(data.draw(conversations())) for _ in range(data.draw(st.integers(1, 4)))]
    records = [base[i % len(base)] for i in range(family.min_records)]
    report = validate_dataset([jsonl(records)], base_model_id=family.model_id, today=family.today)
    assert report["valid"], report


@pytest.mark.parametrize("name", sorted(FAMILIES))
@given(data=st.data())
@HP_SETTINGS
def test_a_single_mutation_is_reported_with_its_kind_on_its_line(name: str, data: st.DataObject) -> None:
    family = FAMILIES[name]
    base = [family.make(data.draw(conversations())) for _ in range(data.draw(st.integers(1, 3)))]
    records = [base[i % len(base)] for i in range(family.min_records)]
    index = data.draw(st.integers(0, len(records) - 1))
    mutation = data.draw(st.sampled_from(_mutations(family)))
    mutated, kind = _mutate(records[index], mutation, family, data.draw(reserved_tokens()))
    lines = [line(record) for record in records]
    lines[index] = mutated
    report = validate_dataset([b"\n".join(lines) + b"\n"], base_model_id=family.model_id, today=family.today)
    assert errors_by_line(report["training"]) == {index + 1: {kind}}
    assert (report["training"]["records"], report["training"]["invalidRecords"]) == (len(records), 1)


# --- memory -------------------------------------------------------------------------------------------------


def _peak_bytes(total: int) -> tuple[int, dict[str, Any]]:
    """tracemalloc peak while validating ``total`` generated records (1 in 97 broken), never held in memory.

    Prompt/completion records (Titan) keep the allocations per record, and so tracemalloc's overhead, low;
    the streaming core under test is the same for every family.
    """
    lines = [
        line(prompt(f"Question {i} about level {i % 4 + 1}?", f"Level {i % 4 + 1}: answer {i}.")) for i in range(96)
    ]
    lines.append(b'{"prompt": "broken')
    validator = DatasetValidator(TITAN_EXPRESS)
    tracemalloc.start()
    try:
        validator.check_training(stream(lines, total))
        report = validator.report()
        return tracemalloc.get_traced_memory()[1], report
    finally:
        tracemalloc.stop()


# The small stream is past the point where the first-errors lists are full (20 broken lines, ~2,000 records); the
# large one is 8 times longer, so even one 8-byte pointer kept per record (+560 KB) breaks the 25 % + 256 KB
# margin, while tracemalloc's cost (about 25 us a record) stays near 2 seconds.
SMALL_STREAM, LARGE_STREAM = 10_000, 80_000


def test_memory_stays_flat_whatever_the_stream_size() -> None:
    small_peak, small = _peak_bytes(SMALL_STREAM)
    large_peak, large = _peak_bytes(LARGE_STREAM)
    assert (small["training"]["records"], large["training"]["records"]) == (SMALL_STREAM, LARGE_STREAM)
    assert large["training"]["errors"]["invalid_json"]["count"] == LARGE_STREAM // 97
    assert len(large["training"]["errors"]["invalid_json"]["first"]) == FIRST_ERRORS_PER_KIND
    assert large_peak < 20 * 1024 * 1024, large_peak
    assert large_peak < small_peak * 1.25 + 256 * 1024, (small_peak, large_peak)


# --- the Lambda handler (moto S3) ---------------------------------------------------------------------------

BUCKET = "genai-kit-sandbox-data"


@pytest.fixture
def s3() -> Iterator[Any]:
    """A moto S3 bucket with default KMS encryption; the handler's lazy client is rebuilt inside the mock."""
    with mock_aws():
        handler.get_s3_client.cache_clear()
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket=BUCKET)
        key_id = boto3.client("kms", region_name="us-east-1").create_key()["KeyMetadata"]["KeyId"]
        client.put_bucket_encryption(
            Bucket=BUCKET,
            ServerSideEncryptionConfiguration={
                "Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": key_id}}]
            },
        )
        client.put_object(Bucket=BUCKET, Key="data/train.jsonl", Body=TRAIN_SAMPLE.read_bytes())
        client.put_object(Bucket=BUCKET, Key="data/validation.jsonl", Body=VALIDATION_SAMPLE.read_bytes())
        client.put_object(Bucket=BUCKET, Key="data/bad.jsonl", Body=(INVALID_SAMPLES / "role_order.jsonl").read_bytes())
        yield client
        handler.get_s3_client.cache_clear()


def event(**overrides: Any) -> dict[str, Any]:
    base = {
        "bucket": BUCKET,
        "trainingKey": "data/train.jsonl",
        "validationKey": "data/validation.jsonl",
        "baseModelId": NOVA_LITE,
        "hyperparameters": {"epochCount": "2", "learningRate": "0.00001"},
        "reportKey": "reports/run-1.json",
    }
    base.update(overrides)
    return {key: value for key, value in base.items() if value is not ...}


def test_handler_writes_the_report_and_returns_its_summary(s3: Any, context: FakeContext) -> None:
    result = handler.handler(event(), context)  # type: ignore[arg-type]

    assert result == {
        "valid": True,
        "reportKey": "reports/run-1.json",
        "family": formats.NOVA,
        "customizationType": "FINE_TUNING",
        "trainingRecords": 24,
        "validationRecords": 8,
        "errorCount": 0,
        "warningCount": 0,
        "summary": f"VALID: 24 training and 8 validation records for {NOVA_LITE} ({formats.NOVA}).",
        "teacherModelId": None,
        "rftHyperParameters": None,
        "trainingSource": S3_SOURCE,
    }
    stored = s3.get_object(Bucket=BUCKET, Key="reports/run-1.json")
    assert stored["ContentType"] == "application/json"
    assert stored["ServerSideEncryption"] == "aws:kms"  # the bucket default, not a parameter of ours
    report = json.loads(stored["Body"].read())
    assert report["valid"] and report["training"]["bytes"] == TRAIN_SAMPLE.stat().st_size
    assert report["dataset"] == {
        "bucket": BUCKET,
        "trainingKey": "data/train.jsonl",
        "validationKey": "data/validation.jsonl",
    }


@pytest.mark.parametrize("field", ["trainingKey", "validationKey"])
def test_a_dataset_key_outside_the_readable_prefix_is_an_invalid_request(
    field: str, s3: Any, context: FakeContext
) -> None:
    """The pipeline names the one prefix the customization role may read; a key elsewhere would fail the job."""
    request = event(datasetsPrefix="datasets/", **{field: "data/train.jsonl"})
    request["trainingKey" if field == "validationKey" else "validationKey"] = None
    if field == "validationKey":
        request["trainingKey"] = "datasets/train.jsonl"
    with pytest.raises(handler.InvalidRequest) as raised:
        handler.handler(request, context)  # type: ignore[arg-type]
    assert raised.value.field == field and "datasets/" in str(raised.value)


def test_images_and_videos_must_sit_in_the_datasets_bucket_under_the_readable_prefix(
    s3: Any, context: FakeContext
) -> None:
    """Nova reads a dataset's media only from the dataset's own bucket, and the role only under datasets/."""
    answer = {"role": "assistant", "content": [{"text": "A diagram."}]}

    def asking(uri: str) -> dict[str, Any]:
        return {"messages": [{"role": "user", "content": [{"text": "What is it?"}, image("png", uri)]}, answer]}

    inside = f"s3://{BUCKET}/datasets/images/a.png"
    records = nova(8, line2=asking(inside), line3=asking("s3://another-bucket/datasets/a.png"))
    records += [asking(f"s3://{BUCKET}/images/b.png")]
    s3.put_object(Bucket=BUCKET, Key="datasets/media.jsonl", Body=jsonl(records))
    request = event(trainingKey="datasets/media.jsonl", validationKey=None, datasetsPrefix="datasets/")
    result = handler.handler(request, context)  # type: ignore[arg-type]
    assert not result["valid"]
    report = json.loads(s3.get_object(Bucket=BUCKET, Key="reports/run-1.json")["Body"].read())
    assert errors_by_line(report["training"]) == {3: {"invalid_s3_uri"}, 9: {"invalid_s3_uri"}}
    # Without the prefix (a local check, kit l3 validate) the location is not known and not checked.
    assert check(jsonl(records))["valid"]


def test_handler_reports_an_invalid_dataset_without_failing(s3: Any, context: FakeContext) -> None:
    result = handler.handler(
        event(trainingKey="data/bad.jsonl", validationKey=None, hyperparameters={"epochCount": 3}), context
    )  # type: ignore[arg-type]
    assert (result["valid"], result["errorCount"], result["validationRecords"]) == (False, 3, None)
    assert "role_order x2" in result["summary"] and "first: training line 5 (role_order)" in result["summary"]
    report = json.loads(s3.get_object(Bucket=BUCKET, Key="reports/run-1.json")["Body"].read())
    assert [error["kind"] for error in report["hyperparameters"]["errors"]] == ["hyperparameter_not_string"]


def test_handler_streams_in_chunks_and_puts_without_acl_or_encryption_parameters(
    s3: Any, context: FakeContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    reads: list[int | None] = []
    original = StreamingBody.read

    def read(self: StreamingBody, amt: int | None = None) -> bytes:
        reads.append(amt)
        return original(self, amt)

    monkeypatch.setattr(StreamingBody, "read", read)
    monkeypatch.setattr(handler, "CHUNK_BYTES", 4096)
    puts: list[dict[str, Any]] = []
    client = handler.get_s3_client()
    client.meta.events.register("provide-client-params.s3.PutObject", lambda params, **_: puts.append(dict(params)))

    handler.handler(event(), context)  # type: ignore[arg-type]

    assert reads and None not in reads  # never a whole-body read
    assert len([amt for amt in reads if amt]) >= TRAIN_SAMPLE.stat().st_size // 4096
    [put] = puts
    assert set(put) == {"Bucket", "Key", "Body", "ContentType"}


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"bucket": ...}, "bucket"),
        ({"bucket": 5}, "bucket"),
        ({"bucket": "Not_A_Bucket"}, "bucket"),
        ({"trainingKey": ...}, "trainingKey"),
        ({"trainingKey": "  "}, "trainingKey"),
        ({"validationKey": 3}, "validationKey"),
        ({"baseModelId": ...}, "baseModelId"),
        ({"baseModelId": "amazon.nova-lite-v1:0"}, "baseModelId"),
        ({"hyperparameters": ...}, "hyperparameters"),
        ({"hyperparameters": ["epochCount", "2"]}, "hyperparameters"),
        ({"reportKey": ...}, "reportKey"),
        ({"reportKey": "data/train.jsonl"}, "reportKey"),
        ({"reportKey": "k" * 1025}, "reportKey"),
        # 513 characters, 1,026 bytes of UTF-8: S3's key limit is 1,024 bytes (before, characters were counted)
        ({"trainingKey": "\u00e9" * 513}, "trainingKey"),
        ({"reportKey": "\u00e9" * 513}, "reportKey"),
    ],
)
def test_handler_rejects_a_bad_event_naming_the_field(
    overrides: dict[str, Any], field: str, context: FakeContext
) -> None:
    with pytest.raises(handler.InvalidRequest) as raised:
        handler.handler(event(**overrides), context)  # type: ignore[arg-type]
    assert isinstance(raised.value, ValueError)
    assert raised.value.field == field
    assert str(raised.value).startswith(f"{field}: ")


def test_handler_rejects_an_event_that_is_not_an_object(context: FakeContext) -> None:
    with pytest.raises(handler.InvalidRequest, match=r"^event: must be an object"):
        handler.handler(["bucket"], context)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        ({"trainingKey": "data/missing.jsonl"}, "trainingKey s3://genai-kit-sandbox-data/data/missing.jsonl"),
        ({"validationKey": "data/missing.jsonl"}, "validationKey s3://genai-kit-sandbox-data/data/missing.jsonl"),
        ({"bucket": "no-such-bucket-here"}, "s3://no-such-bucket-here/"),
    ],
)
def test_handler_raises_dataset_not_found_naming_the_key(
    s3: Any, context: FakeContext, overrides: dict[str, Any], named: str
) -> None:
    gets: list[str] = []
    handler.get_s3_client().meta.events.register(
        "provide-client-params.s3.GetObject", lambda params, **_: gets.append(params["Key"])
    )
    with pytest.raises(handler.DatasetNotFound, match=named.replace(".", r"\.")):
        handler.handler(event(**overrides), context)  # type: ignore[arg-type]
    if "validationKey" in overrides:
        assert gets == []  # checked before the training file is streamed
    assert "reports/run-1.json" not in [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET).get("Contents", [])]


def test_handler_imports_without_environment_or_boto3() -> None:
    code = "import sys, finetune_validate.handler as h; assert 'boto3' not in sys.modules; print(h.handler.__name__)"
    env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(ASSET_DIR)}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "handler"


# --- the local command --------------------------------------------------------------------------------------


def run_cli(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = cli_main(list(args), out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def test_cli_module_exits_0_for_the_valid_samples_and_writes_the_report(tmp_path: Any) -> None:
    report_path = tmp_path / "report.json"
    args = [
        "-m", "finetune_validate", str(TRAIN_SAMPLE), "--base-model", NOVA_LITE, "--validation", str(VALIDATION_SAMPLE),
        "--hyperparameters", '{"epochCount": "2"}', "--report", str(report_path),
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ASSET_DIR)}
    done = subprocess.run([sys.executable, *args], env=env, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith(f"VALID: 24 training and 8 validation records for {NOVA_LITE} (amazon-nova).")
    assert json.loads(report_path.read_text())["valid"] is True


@pytest.mark.parametrize("path", sorted(INVALID_SAMPLES.glob("*.jsonl")), ids=lambda path: path.stem)
def test_cli_exits_1_for_each_invalid_sample_and_names_kind_and_line(path: Any) -> None:
    code, out, _ = run_cli(str(path))
    assert code == 1
    kind = path.stem
    assert f"  {kind} (" in out
    assert "INVALID:" in out.splitlines()[-1]
    if kind != "too_few_records":
        assert "    line " in out


def test_a_hyperparameter_with_spaces_around_its_digits_shows_the_spaces() -> None:
    # Bedrock takes the string as it is: " 2 " is not "2", and the message must not read as if it were.
    wanted = formats.resolve_model(NOVA_LITE).family
    family = next(f for f in FAMILIES.values() if formats.resolve_model(f.model_id).family == wanted)
    report = check(jsonl(family.records(family.min_records)), NOVA_LITE, hyperparameters={"epochCount": " 2 "})
    [error] = report["hyperparameters"]["errors"]
    assert error["kind"] == "hyperparameter_invalid" and "epochCount = ' 2 ' is not an integer" in error["message"]


def test_cli_shows_hyperparameter_errors_and_limits_the_lines_per_kind() -> None:
    code, out, _ = run_cli(
        str(INVALID_SAMPLES / "role_order.jsonl"), "--hyperparameters", '{"epochCount": "9"}', "--show", "1"
    )
    assert code == 1
    assert "hyperparameter_out_of_range: epochCount = 9 is out of range" in out
    assert "    ... and 1 more" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([str(TRAIN_SAMPLE), "--base-model", "amazon.nova-lite-v1:0"], "Did you mean"),
        (["missing.jsonl"], "cannot read missing.jsonl"),
        ([str(TRAIN_SAMPLE), "--validation", "missing.jsonl"], "cannot read missing.jsonl"),
        ([str(TRAIN_SAMPLE), "--hyperparameters", "{epochCount}"], "not valid JSON"),
        ([str(TRAIN_SAMPLE), "--hyperparameters", '["epochCount"]'], "must be a JSON object"),
        ([str(TRAIN_SAMPLE), "--report", "/nonexistent-dir/report.json"], "cannot write"),
        ([], "required"),
    ],
)
def test_cli_usage_errors_exit_2(args: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(*args)
    assert code == 2
    assert message in err + capsys.readouterr().err


def test_summary_line_names_the_first_error() -> None:
    report = check(jsonl(nova(8, line7={"messages": []}, line3={"messages": [], "x": 1})))
    assert summarize(report) == (
        f"INVALID: 3 error(s) in 8 training records for {NOVA_LITE} (amazon-nova): role_order x2, "
        "unexpected_key x1; first: training line 3 (role_order)."
    )


# --- lone surrogates, deep nesting, customization types -----------------------------------------------------

# JSON may escape a lone surrogate ("\ud800"); it decodes to a str that cannot be encoded as UTF-8.
SURROGATE_KEY = b'{"\\ud800": 1, "messages": [{"role": "user", "content": [{"text": "q"}]}, ' + (
    b'{"role": "assistant", "content": [{"text": "a"}]}]}'
)
SURROGATE_ROLE = b'{"messages": [{"role": "\\udfff", "content": [{"text": "q"}]}, ' + (
    b'{"role": "assistant", "content": [{"text": "a"}]}]}'
)


def _dataset_with(tmp_path: Any, bad: bytes) -> str:
    path = tmp_path / "train.jsonl"
    path.write_bytes(jsonl(nova(8)) + bad + b"\n")
    return str(path)


@pytest.mark.parametrize("bad", [SURROGATE_KEY, SURROGATE_ROLE], ids=["key", "role"])
def test_a_lone_surrogate_in_the_data_is_reported_in_full_by_the_command(tmp_path: Any, bad: bytes) -> None:
    """Run as a user would (stdout encoded as UTF-8): exit 1, the whole report, no traceback."""
    path = _dataset_with(tmp_path, bad)
    report_path = tmp_path / "report.json"
    args = [sys.executable, "-m", "finetune_validate", path, "--report", str(report_path)]
    env = {**os.environ, "PYTHONPATH": str(ASSET_DIR), "PYTHONIOENCODING": "utf-8"}
    done = subprocess.run(args, env=env, capture_output=True, text=True, check=False)
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    assert done.stdout.strip().splitlines()[-1].startswith("INVALID:")
    assert "\\ud800" in done.stdout or "\\udfff" in done.stdout  # shown as its escape
    assert json.loads(report_path.read_text(encoding="utf-8"))["valid"] is False


def test_a_lone_surrogate_in_a_hyperparameter_name_is_reported_by_the_command(tmp_path: Any) -> None:
    code, out, err = run_cli(str(TRAIN_SAMPLE), "--hyperparameters", '{"\\ud800": "1"}')
    assert code == 1, err
    out.encode("utf-8")  # printable: the escape, not the surrogate
    assert "hyperparameter_unknown: '\\ud800' is not a hyperparameter of amazon-nova for FINE_TUNING" in out


def test_a_lone_surrogate_in_the_event_never_raises_in_lambda(s3: Any, context: FakeContext) -> None:
    result = handler.handler(event(hyperparameters={"\ud800": "1"}), context)  # type: ignore[arg-type]
    assert result["valid"] is False and "hyperparameter_unknown x1" in result["summary"]
    report = json.loads(s3.get_object(Bucket=BUCKET, Key="reports/run-1.json")["Body"].read())
    assert report["hyperparameters"]["errors"][0]["name"] == "\\ud800"
    s3.put_object(Bucket=BUCKET, Key="data/surrogate.jsonl", Body=jsonl(nova(8)) + SURROGATE_KEY + b"\n")
    result = handler.handler(event(trainingKey="data/surrogate.jsonl", validationKey=None), context)  # type: ignore[arg-type]
    assert result["valid"] is False and "unexpected_key x1" in result["summary"]


@pytest.mark.parametrize("field", ["trainingKey", "validationKey", "reportKey"])
def test_a_dataset_key_with_a_lone_surrogate_is_an_invalid_request(field: str, context: FakeContext) -> None:
    with pytest.raises(handler.InvalidRequest) as raised:
        handler.handler(event(**{field: "data/\ud800.jsonl"}), context)  # type: ignore[arg-type]
    assert raised.value.field == field
    str(raised.value).encode("utf-8")


def test_deeply_nested_hyperparameters_are_a_usage_error() -> None:
    nested = "[" * 100_000 + "]" * 100_000
    code, _, err = run_cli(str(TRAIN_SAMPLE), "--hyperparameters", '{"epochCount": ' + nested + "}")
    assert code == 2 and "--hyperparameters is nested too deeply" in err


def test_a_nested_hyperparameter_value_is_reported_not_raised() -> None:
    value: Any = "2"
    for _ in range(5_000):
        value = [value]
    report = check(jsonl(nova(8)), hyperparameters={"epochCount": value})
    [error] = report["hyperparameters"]["errors"]
    assert error["kind"] == "hyperparameter_not_string"


@pytest.mark.parametrize(
    ("model", "expected"),
    [(NOVA_LITE, "customizationType"), (TITAN_EXPRESS, None)],
)
def test_a_request_for_continued_pre_training_is_checked_against_the_base_model(
    model: str, expected: str | None, context: FakeContext, s3: Any
) -> None:
    """A request may override the customization type; only Titan Text offers continued pre-training."""
    s3.put_object(
        Bucket=BUCKET, Key="data/cpt.jsonl", Body=jsonl([{"input": "AWS stands for Amazon Web Services."}] * 8)
    )
    request = event(
        baseModelId=model,
        customizationType="CONTINUED_PRE_TRAINING",
        trainingKey="data/cpt.jsonl",
        validationKey=None,
        hyperparameters={},
    )
    if expected is None:
        result = handler.handler(request, context)  # type: ignore[arg-type]
        assert result["valid"] is True, result["summary"]
        return
    with pytest.raises(handler.InvalidRequest) as raised:
        handler.handler(request, context)  # type: ignore[arg-type]
    assert raised.value.field == expected and "FINE_TUNING" in str(raised.value)


def test_continued_pre_training_records_hold_one_input_text() -> None:
    records = [{"input": "Plain domain text."}] * 4 + [{"input": ""}, {"prompt": "p", "completion": "c"}, {"input": 3}]
    report = check(jsonl(records), TITAN_EXPRESS, customization_type="CONTINUED_PRE_TRAINING")
    assert errors_by_line(report["training"]) == {
        5: {"empty_text"},
        6: {"unexpected_key", "missing_key"},
        7: {"wrong_type"},
    }
    assert report["customizationType"] == "CONTINUED_PRE_TRAINING"


@pytest.mark.parametrize(("model", "batch", "limit"), [(TITAN_EXPRESS, "1", 4_096), (TITAN_LITE, "3", 2_048)])
def test_continued_pre_training_records_are_held_to_the_models_token_quota(model: str, batch: str, limit: int) -> None:
    """The requirements page gives continued pre-training the model's fine-tuning token quota per record; Bedrock
    fails a job with a longer record hours after it starts."""
    over = {"input": "word " * (limit * 6 // 5 + 1)}  # over the quota even at 6 characters per token
    data = jsonl([{"input": "Plain domain text."}] * 3 + [over])
    report = check(data, model, customization_type="CONTINUED_PRE_TRAINING", hyperparameters={"batchSize": batch})
    assert kinds(report["training"]) == {"record_too_long": [4]}
    assert report["limits"]["maxRecordTokens"] == limit


def test_continued_pre_training_takes_a_training_file_of_up_to_10_gb() -> None:
    for model in (TITAN_EXPRESS, TITAN_LITE):
        spec = formats.resolve_model(model)
        assert spec.for_type("CONTINUED_PRE_TRAINING").limits.to_dict() == {
            "minTrainingRecords": 1,
            "maxTrainingBytes": 10**10,
            "maxValidationBytes": 10**8,
        }
        assert spec.limits.to_dict()["maxTrainingBytes"] == 10**9  # fine-tuning keeps 1 GB


def test_cli_checks_the_customization_type() -> None:
    code, _, err = run_cli(str(TRAIN_SAMPLE), "--customization-type", "CONTINUED_PRE_TRAINING")
    assert code == 2 and "--customization-type" in err


# --- one verdict: the pipeline's request rules offline (the handler, the command and kit l3 call one function) ---

DISTILL_SAMPLE = SAMPLE_DIRS[formats.DISTILLATION][0]
TEACHER = "amazon.nova-pro-v1:0"


def _asking(uri: str) -> dict[str, Any]:
    answer = {"role": "assistant", "content": [{"text": "A diagram."}]}
    return {"messages": [{"role": "user", "content": [{"text": "What is it?"}, image("png", uri)]}, answer]}


@pytest.mark.parametrize(
    ("name", "records"),
    [
        ("text only", nova(8)),
        ("image under datasets/", nova(8, line2=_asking(f"s3://{BUCKET}/datasets/images/a.png"))),
        ("image outside datasets/", nova(8, line2=_asking(f"s3://{BUCKET}/images/a.png"))),
        ("image in another bucket", nova(8, line2=_asking("s3://another-bucket/datasets/a.png"))),
    ],
)
def test_the_local_check_gives_the_pipelines_verdict_on_media_locations(
    name: str, records: list[Any], s3: Any, tmp_path: Any, context: FakeContext
) -> None:
    """Before: the command and kit l3 validate / start --upload passed no media prefix, so an image outside
    s3://<data bucket>/datasets/ was VALID offline and INVALID (invalid_s3_uri) in the pipeline."""
    s3.put_object(Bucket=BUCKET, Key="datasets/media.jsonl", Body=jsonl(records))
    request = event(trainingKey="datasets/media.jsonl", validationKey=None, datasetsPrefix="datasets/")
    pipeline = handler.handler(request, context)["valid"]  # type: ignore[arg-type]
    path = tmp_path / "media.jsonl"
    path.write_bytes(jsonl(records))
    prefix = readable_media_prefix(BUCKET, "datasets/")
    hyperparameters = request["hyperparameters"]
    local = validate_files(str(path), base_model_id=NOVA_LITE, hyperparameters=hyperparameters, media_prefix=prefix)
    code, _, _ = run_cli(str(path), "--base-model", NOVA_LITE, "--datasets-uri", prefix)
    assert local["valid"] == pipeline == (code == 0), name
    assert pipeline == (name in ("text only", "image under datasets/"))


@pytest.mark.parametrize("kind", [formats.DISTILLATION, formats.REINFORCEMENT_FINE_TUNING])
def test_a_validation_file_the_pipeline_would_not_pass_on_is_invalid_offline(kind: str) -> None:
    """Before: Nova Lite's DISTILLATION (and Nova 2 Lite's RFT) model table allows a validation set, so the local
    check said VALID while the pipeline refuses the request (validationKey, VALIDATION_SET_TYPES)."""
    path, model = SAMPLE_DIRS[kind]
    data = path.read_bytes()
    validation = b"".join(data.splitlines(keepends=True)[:10])
    teacher = TEACHER if kind == formats.DISTILLATION else None
    report = check(data, model, validation=validation, customization_type=kind, teacher_model_id=teacher)
    assert not report["valid"]
    [message] = [e["message"] for e in report["validation"]["errors"]["validation_not_allowed"]["first"]]
    assert message.startswith("The pipeline passes a validation set for FINE_TUNING and CONTINUED_PRE_TRAINING only")
    # The pipeline refuses the same request, with the same rule's words.
    problem = validation_set_problem(kind)
    assert problem is not None and problem.removeprefix("the ") in message
    assert validation_set_problem(formats.FINE_TUNING) is None
    assert validation_set_problem(formats.CONTINUED_PRE_TRAINING) is None


def test_the_command_applies_the_pipelines_request_rules(tmp_path: Any) -> None:
    validation = tmp_path / "val.jsonl"
    validation.write_bytes(b"".join(DISTILL_SAMPLE.read_bytes().splitlines(keepends=True)[:10]))
    distill = [str(DISTILL_SAMPLE), "--base-model", NOVA_LITE, "--customization-type", "DISTILLATION"]
    assert run_cli(*distill, "--teacher-model", TEACHER)[0] == 0
    # A validation set the pipeline would refuse (it passes none to a distillation job).
    code, out, _ = run_cli(*distill, "--teacher-model", TEACHER, "--validation", str(validation))
    assert code == 1 and "validation_not_allowed" in out
    # The pipeline always distills from a teacher it checks against the student (its own, or ft_teacher_model_id).
    code, _, err = run_cli(*distill)
    assert code == 2 and "--teacher-model is required for DISTILLATION" in err
    # This command reads no config: before, it said to set ft_teacher_model_id, which it never reads.
    assert "ft_teacher_model_id" not in err and "(give --teacher-model ID:" in err, err
    code, _, err = run_cli(str(TRAIN_SAMPLE), "--teacher-model", TEACHER)
    assert code == 2 and "--teacher-model is for DISTILLATION only" in err
    # A base model the stack's on-demand deployment cannot serve (ft_deploy on-demand).
    code, _, err = run_cli(str(TRAIN_SAMPLE), "--base-model", LLAMA_31, "--on-demand-deploy")
    assert code == 2 and "--base-model" in err and "on-demand deployment" in err
    assert run_cli(str(TRAIN_SAMPLE), "--base-model", NOVA_LITE, "--on-demand-deploy")[0] == 0
    code, _, err = run_cli(str(TRAIN_SAMPLE), "--base-model", NOVA_LITE, "--datasets-uri", "s3://b/datasets")
    assert code == 2 and "--datasets-uri" in err


def test_the_handler_refuses_what_the_shared_rules_refuse() -> None:
    """The handler's refusals are the shared functions' (validator.py), word for word."""
    base = {"bucket": BUCKET, "trainingKey": "datasets/t.jsonl", "hyperparameters": {}, "reportKey": "reports/r.json"}
    with pytest.raises(handler.InvalidRequest) as raised:
        handler.parse_request({**base, "baseModelId": LLAMA_31, "onDemandDeploy": True})
    assert str(raised.value) == f"baseModelId: {on_demand_problem(LLAMA_31)}"
    with pytest.raises(handler.InvalidRequest) as raised:
        handler.parse_request({**base, "baseModelId": NOVA_LITE, "customizationType": "DISTILLATION"})
    with pytest.raises(RequestRefused) as shared:
        run_teacher(formats.DISTILLATION, None, None)
    assert (raised.value.field, str(raised.value)) == (shared.value.field, str(shared.value))
    event_ = {**base, "baseModelId": NOVA_LITE, "customizationType": "DISTILLATION", "teacherModelId": TEACHER}
    with pytest.raises(handler.InvalidRequest) as raised:
        handler.parse_request({**event_, "validationKey": "datasets/v.jsonl"})
    assert str(raised.value) == f"validationKey: {validation_set_problem(formats.DISTILLATION)}"
    assert run_teacher(formats.FINE_TUNING, None, TEACHER) is None  # the configured teacher: distillation only
    assert run_teacher(formats.DISTILLATION, None, TEACHER) == TEACHER
    # A run's own teacher outside invocableTeacherModelIds, with the shared rule's words.
    profile = "us.amazon.nova-pro-v1:0"
    with pytest.raises(handler.InvalidRequest) as raised:
        handler.parse_request({**event_, "teacherModelId": profile, "invocableTeacherModelIds": [TEACHER]})
    problem = teacher_invocable_problem(profile, [TEACHER], None)
    assert problem is not None and str(raised.value) == f"teacherModelId: {problem}"


# --- a dataset stream S3 drops (the state machines retry these error names: stacks/level3_finetune/pipeline.py) ---


class _DroppingStream(io.RawIOBase):
    """A body whose second read fails as urllib3 fails a dropped connection (``error``), or, with ``error`` None,
    one that ends before its Content-Length."""

    def __init__(self, data: bytes, error: Exception | None) -> None:
        self._data, self._error, self._reads = data, error, 0

    def read(self, amt: int | None = -1) -> bytes:  # type: ignore[override]
        self._reads += 1
        if self._reads == 1:
            return self._data[: amt or None]
        if self._error is not None:
            raise self._error
        return b""


def _dropped(error: Exception | None, monkeypatch: pytest.MonkeyPatch) -> str:
    """The class name (the Lambda errorType) of what handler.validate raises when S3 drops the stream so."""
    data = TRAIN_SAMPLE.read_bytes()

    class Client:
        def get_object(self, **_: Any) -> dict[str, Any]:
            return {"Body": StreamingBody(_DroppingStream(data[:100], error), len(data))}

    monkeypatch.setattr(handler, "get_s3_client", Client)
    request = handler.parse_request(event(validationKey=None))
    with pytest.raises(Exception) as raised:  # the class is the point
        handler.validate(request)
    return type(raised.value).__name__


def test_a_dropped_dataset_stream_raises_an_error_the_state_machines_retry(monkeypatch: pytest.MonkeyPatch) -> None:
    """botocore raises these from StreamingBody.read (botocore/response.py), after get_object returned and outside the
    client's retries; Lambda reports the class name as the error, and ValidateData retries exactly these names."""
    import urllib3.exceptions

    from stacks.level3_finetune.pipeline import VALIDATOR_STREAM_ERRORS

    monkeypatch.setattr(handler, "CHUNK_BYTES", 100)
    drops: list[Exception | None] = [
        urllib3.exceptions.ProtocolError("Connection broken", ConnectionResetError(104, "reset")),
        urllib3.exceptions.ProtocolError("Connection broken", urllib3.exceptions.IncompleteRead(100, 50)),
        urllib3.exceptions.ReadTimeoutError(None, None, "Read timed out."),  # type: ignore[arg-type]
        urllib3.exceptions.SSLError("decryption failed or bad record mac"),
        None,  # the body ended before its Content-Length
    ]
    raised = {_dropped(drop, monkeypatch) for drop in drops}
    assert (
        raised
        == set(VALIDATOR_STREAM_ERRORS)
        == {
            "ResponseStreamingError",
            "ReadTimeoutError",
            "SSLError",
            "IncompleteReadError",
        }
    )


# --- the request's type, teacher and source in the handler's answer -------------------------------------------


def test_a_nova_record_with_two_videos_is_refused_even_in_a_video_only_dataset() -> None:
    """A Nova sample may hold one video at most (https://docs.aws.amazon.com/nova/latest/userguide/
    fine-tune-prepare-data-understanding.html); no image elsewhere, so only the video count can refuse it."""
    answer = {"role": "assistant", "content": [{"text": "A demo."}]}
    one = {"messages": [{"role": "user", "content": [{"text": "What happens?"}, video()]}, answer]}
    two = {"messages": [{"role": "user", "content": [{"text": "What happens?"}, video(), video()]}, answer]}
    assert check(jsonl(nova(8, line1=one, line2=one)))["valid"]
    report = check(jsonl(nova(8, line1=one, line2=two)))
    assert kinds(report["training"]) == {"unsupported_content": [2]}


def _logs_event(**overrides: Any) -> dict[str, Any]:
    """A distillation from the account's invocation logs: no trainingKey, no validationKey, default hyperparameters."""
    logs = {"trainingKey": None, "validationKey": None, "invocationLogs": True, "hyperparameters": {}}
    return event(**{**logs, "customizationType": formats.DISTILLATION, "defaultTeacherModelId": TEACHER, **overrides})


def test_an_invocation_logs_distillation_reports_the_logs_as_its_training_source(s3: Any, context: FakeContext) -> None:
    result = handler.handler(_logs_event(), context)  # type: ignore[arg-type]
    assert result["valid"] and result["teacherModelId"] == TEACHER
    assert result["trainingSource"] == LOGS_SOURCE != S3_SOURCE


def test_an_invocation_logs_distillation_with_an_unknown_hyperparameter_is_invalid(
    s3: Any, context: FakeContext
) -> None:
    result = handler.handler(_logs_event(hyperparameters={"bogus": "1"}), context)  # type: ignore[arg-type]
    assert (result["valid"], result["errorCount"]) == (False, 1)
    report = json.loads(s3.get_object(Bucket=BUCKET, Key="reports/run-1.json")["Body"].read())
    assert report["valid"] is False and "bogus" in result["summary"]


def test_an_rft_request_with_an_invalid_hyperparameter_is_reported_not_raised(s3: Any, context: FakeContext) -> None:
    """The typed RFT hyperparameters are built for a valid report only: an epochCount of "x" cannot be typed."""
    path, model = SAMPLE_DIRS[formats.REINFORCEMENT_FINE_TUNING]
    s3.put_object(Bucket=BUCKET, Key="data/rft.jsonl", Body=path.read_bytes())
    rft = {"trainingKey": "data/rft.jsonl", "validationKey": None, "baseModelId": model}
    request = event(**rft, customizationType=formats.REINFORCEMENT_FINE_TUNING, hyperparameters={"epochCount": "x"})
    result = handler.handler(request, context)  # type: ignore[arg-type]
    assert (result["valid"], result["rftHyperParameters"]) == (False, None)
    good = handler.handler({**request, "hyperparameters": {"epochCount": "2"}}, context)  # type: ignore[arg-type]
    assert good["valid"] and good["rftHyperParameters"] == {"EpochCount": 2}


def test_a_teacher_not_paired_with_the_student_is_an_invalid_request_naming_the_teacher() -> None:
    unpaired = "anthropic.claude-3-5-sonnet-20241022-v2:0"
    assert formats.check_distillation_pair(unpaired, formats.MODELS[NOVA_LITE]) is not None
    request = handler.parse_request(
        event(customizationType=formats.DISTILLATION, validationKey=None, teacherModelId=unpaired)
    )
    with pytest.raises(handler.InvalidRequest) as raised:
        handler.validate(request)
    assert raised.value.field == "teacherModelId"
    assert str(raised.value).startswith("teacherModelId: ")
