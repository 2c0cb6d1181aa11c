"""Level 3 on SageMaker: the pipeline's data check (sagemaker_validate) reads exactly what the training job's
train channel copies, streams it line by line, and applies the one copy of the record rules (chat_records) that
the training program and ``kit l3sm`` apply too."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.response import StreamingBody
from botocore.stub import Stubber
from moto import mock_aws

from common.clients import bounded_client
from sagemaker_validate import handler as h
from stacks.shared.python_function import module_file, stage_function_code
from tests.conftest import ROOT
from tests.kit.doctor_helpers import IMPORTED_MODELS_CODE, imported_models, imported_models_quota
from tests.lambda_helpers import FakeContext
from workloads.finetune_sagemaker import chat_records

BUCKET = "sft-data-bucket"
SAMPLE = ROOT / "samples" / "finetune-sagemaker" / "train.jsonl"
USER = {"role": "user", "content": "Which level for tone?"}
ASSISTANT = {"role": "assistant", "content": "Level 1."}


def line(record: Any) -> bytes:
    return json.dumps(record).encode() + b"\n"


GOOD = line({"messages": [USER, ASSISTANT]})


@pytest.fixture
def s3() -> Iterator[Any]:
    with mock_aws():
        bounded_client.cache_clear()
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket=BUCKET)
        yield client
    bounded_client.cache_clear()


QUOTA_CODE = IMPORTED_MODELS_CODE  # test data: the stack sets the real code (stacks/shared/facts.py)


@pytest.fixture(autouse=True)
def quotas(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Stubber, Stubber]]:
    """Stubbed Service Quotas and Bedrock clients for the import-slot check (moto has neither
    ListImportedModels nor GetAWSDefaultServiceQuota); a test queues the answers it needs. A check with none
    queued finds the quota unreadable and lets the run go on."""
    monkeypatch.setenv(h.QUOTA_CODE_ENV, QUOTA_CODE)
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    quota_client = boto3.client("service-quotas", region_name="us-east-1")
    bedrock_client = boto3.client("bedrock", region_name="us-east-1")
    monkeypatch.setattr(h, "get_quotas_client", lambda: quota_client)
    monkeypatch.setattr(h, "get_bedrock_client", lambda: bedrock_client)
    with Stubber(quota_client) as quota_stub, Stubber(bedrock_client) as bedrock_stub:
        yield quota_stub, bedrock_stub


def quota_answer(value: float) -> dict[str, Any]:
    """GetServiceQuota's (or GetAWSDefaultServiceQuota's) answer for the imported-models quota."""
    return {"Quota": imported_models_quota(value)}


def run(training_key: str) -> dict[str, Any]:
    context = FakeContext(function_name="sagemaker-validate", remaining_ms=900_000)  # a fresh 15-minute run
    return h.handler({"bucket": BUCKET, "trainingKey": training_key}, context)


def test_the_sample_records_are_valid(s3: Any) -> None:
    s3.put_object(Bucket=BUCKET, Key="datasets/train.jsonl", Body=SAMPLE.read_bytes())
    result = run("datasets/train.jsonl")
    records = sum(1 for text in SAMPLE.read_text(encoding="utf-8").splitlines() if text.strip())
    assert result["valid"] is True and result["problems"] == [], result
    assert (result["records"], result["files"], result["complete"]) == (records, 1, True)
    json.dumps(result)  # what Step Functions receives


@pytest.mark.parametrize(
    ("record", "reason"),
    [
        (["x"], "a record must be a JSON object with a 'messages' list"),
        ({"text": "x"}, "'messages' must be a non-empty list"),
        ({"messages": []}, "'messages' must be a non-empty list"),
        ({"messages": ["hi", ASSISTANT]}, "messages[0] must be an object with 'role' and 'content'"),
        ({"messages": [{"role": "tool", "content": "q"}]}, "messages[0].role must be one of system, user, assistant"),
        ({"messages": [{"role": "user", "content": " "}, ASSISTANT]}, "messages[0].content must be a non-empty"),
        ({"messages": [{"role": "user", "content": 3}, ASSISTANT]}, "messages[0].content must be a non-empty"),
        ({"messages": [USER, {"role": "system", "content": "s"}, ASSISTANT]}, "messages[1]: a system message may only"),
        ({"messages": [ASSISTANT, USER]}, "the conversation must start with a user message"),
        ({"messages": [USER]}, "the conversation holds no assistant message to learn from"),
    ],
)
def test_each_kind_of_bad_record_is_named_by_file_line_and_reason(s3: Any, record: Any, reason: str) -> None:
    s3.put_object(Bucket=BUCKET, Key="datasets/chat.jsonl", Body=GOOD + b"\n" + line(record) + GOOD)
    result = run("datasets/chat.jsonl")
    assert result["valid"] is False
    [problem] = result["problems"]
    assert problem.startswith(f"datasets/chat.jsonl:3: {reason}"), problem  # the blank line 2 still counts
    assert problem == f"datasets/chat.jsonl:3: {chat_records.record_problem(record)}"  # the one rule module
    assert problem in result["summary"] and f"s3://{BUCKET}/datasets/chat.jsonl" in result["summary"]


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (b'{"messages": [}\n', "datasets/bad.jsonl:1: not valid JSON (Expecting value)"),
        (GOOD + b"\xef\xbb\xbf" + GOOD, "datasets/bad.jsonl:2: not valid JSON (Unexpected UTF-8 BOM"),
        (GOOD + b'{"messages": "\xff"}\n', "datasets/bad.jsonl:2: not UTF-8 text (byte 15 of the line)"),
        (b"[" * 100_000 + b"\n", "datasets/bad.jsonl:1: not valid JSON (nested too deeply)"),
        # json.loads raises a plain ValueError past 4,300 digits (Python's int_max_str_digits), not JSONDecodeError
        (GOOD + b'{"n": ' + b"1" * 5000 + b"}\n", "datasets/bad.jsonl:2: not valid JSON (Exceeds the limit"),
        # Lines end as Python's text files end them: a lone \r too, so the training program sees 2 lines here.
        (GOOD.rstrip(b"\n") + b"\r" + b"{}\r\n", "datasets/bad.jsonl:2: 'messages' must be a non-empty list"),
    ],
)
def test_a_line_that_is_not_a_json_record_is_a_problem(s3: Any, body: bytes, problem: str) -> None:
    s3.put_object(Bucket=BUCKET, Key="datasets/bad.jsonl", Body=body)
    result = run("datasets/bad.jsonl")
    assert result["valid"] is False
    [found] = result["problems"]
    assert found.startswith(problem), found


def test_an_empty_file_alone_holds_no_records_but_beside_others_is_skipped_as_the_program_skips_it(s3: Any) -> None:
    s3.put_object(Bucket=BUCKET, Key="datasets/empty/a.jsonl", Body=b"\n  \n")
    alone = run("datasets/empty/")
    assert alone["valid"] is False and alone["records"] == 0
    assert alone["problems"] == [
        f"datasets/empty/: the .jsonl files under s3://{BUCKET}/datasets/empty/ hold no records"
    ]
    s3.put_object(Bucket=BUCKET, Key="datasets/empty/b.jsonl", Body=GOOD)
    beside = run("datasets/empty/")
    assert (beside["valid"], beside["records"], beside["files"]) == (True, 1, 2)


def test_a_prefix_is_read_as_the_train_channel_copies_it(s3: Any) -> None:
    """S3Prefix: every object whose key starts with the prefix (not only a folder's), of which the program reads the
    *.jsonl files at any depth; other objects are copied by the job but not read, so they are not checked."""
    objects = {
        "datasets/chat/a.jsonl": GOOD * 2,
        "datasets/chat/sub/b.jsonl": GOOD,
        "datasets/chat/readme.txt": b"not records",
        "datasets/chat/notes.jsonl.bak": b"{",
        "datasets/chat/folder.jsonl/": b"",
        "datasets/chat-old.jsonl": GOOD,  # the prefix "datasets/chat" matches it too
        "datasets/other.jsonl": b"{",  # outside the prefix
    }
    for key, body in objects.items():
        s3.put_object(Bucket=BUCKET, Key=key, Body=body)
    result = run("datasets/chat")
    assert (result["valid"], result["records"], result["files"]) == (True, 4, 3), result
    folder = run("datasets/chat/")
    assert (folder["valid"], folder["records"], folder["files"]) == (True, 3, 2), folder
    s3.put_object(Bucket=BUCKET, Key="datasets/chat/sub/c.jsonl", Body=GOOD + b"{}\n")
    broken = run("datasets/chat/")
    assert broken["problems"] == ["datasets/chat/sub/c.jsonl:2: 'messages' must be a non-empty list"]


def test_the_check_stops_after_max_problems(s3: Any) -> None:
    s3.put_object(Bucket=BUCKET, Key="datasets/a.jsonl", Body=b"{}\n" * (h.MAX_PROBLEMS + 5))
    s3.put_object(Bucket=BUCKET, Key="datasets/b.jsonl", Body=b"{}\n")
    result = run("datasets/")
    assert len(result["problems"]) == h.MAX_PROBLEMS and result["complete"] is False
    assert result["problems"][-1].startswith(f"datasets/a.jsonl:{h.MAX_PROBLEMS}: ")
    assert f"stopped after {h.MAX_PROBLEMS} problems" in result["summary"]


def test_a_reason_quoting_the_data_is_bounded(s3: Any) -> None:
    role = "r" * 100_000
    s3.put_object(Bucket=BUCKET, Key="datasets/a.jsonl", Body=line({"messages": [{"role": role, "content": "c"}]}))
    [problem] = run("datasets/a.jsonl")["problems"]
    assert len(problem) < len("datasets/a.jsonl:1: ") + h.MAX_REASON_CHARS + 1


def test_a_full_imported_models_quota_stops_the_run_before_training(s3: Any, quotas: tuple[Stubber, Stubber]) -> None:
    """Before: the training job ran (and billed), and only its import was refused, retried for hours, then failed."""
    quota_stub, bedrock_stub = quotas
    s3.put_object(Bucket=BUCKET, Key="datasets/train.jsonl", Body=GOOD)
    quota_stub.add_response("get_service_quota", quota_answer(3), {"ServiceCode": "bedrock", "QuotaCode": QUOTA_CODE})
    imported_models(bedrock_stub, ["sft-a", "sft-b"], ["sft-c", "sft-d"])  # every page is counted
    result = run("datasets/train.jsonl")
    assert result["valid"] is True
    slot = result["importSlot"]
    assert slot["free"] is False, slot
    summary = slot["summary"]
    assert "4 models imported against a quota of 3 ('Imported models per account', L-IMPORT01) in us-east-1" in summary
    assert "(sft-a, sft-b, sft-c and 1 more)" in summary and "No training job was started" in summary
    assert "aws bedrock delete-imported-model --region us-east-1 --model-identifier <name>" in summary
    quota_stub.assert_no_pending_responses()
    bedrock_stub.assert_no_pending_responses()


@pytest.mark.parametrize(("imported", "free"), [(2, True), (3, False)], ids=["one-slot-left", "exactly-full"])
def test_a_quota_holding_exactly_its_value_has_no_room_for_this_runs_import(
    s3: Any, quotas: tuple[Stubber, Stubber], imported: int, free: bool
) -> None:
    """The run's import needs one more slot than the models already imported take: at the quota, none is left."""
    quota_stub, bedrock_stub = quotas
    s3.put_object(Bucket=BUCKET, Key="datasets/train.jsonl", Body=GOOD)
    quota_stub.add_response("get_service_quota", quota_answer(3), {"ServiceCode": "bedrock", "QuotaCode": QUOTA_CODE})
    imported_models(bedrock_stub, [f"sft-{i}" for i in range(imported)])
    slot = run("datasets/train.jsonl")["importSlot"]
    assert slot["free"] is free, slot
    assert f"{imported} models imported against a quota of 3" in slot["summary"]


def test_a_quota_with_no_applied_value_is_read_from_its_default(s3: Any, quotas: tuple[Stubber, Stubber]) -> None:
    quota_stub, bedrock_stub = quotas
    s3.put_object(Bucket=BUCKET, Key="datasets/train.jsonl", Body=GOOD)
    quota_stub.add_client_error("get_service_quota", "NoSuchResourceException", "no applied value")
    quota_stub.add_response(
        "get_aws_default_service_quota", quota_answer(3), {"ServiceCode": "bedrock", "QuotaCode": QUOTA_CODE}
    )
    imported_models(bedrock_stub, ["sft-a", "sft-b"])
    slot = run("datasets/train.jsonl")["importSlot"]
    assert slot == {
        "free": True,
        "summary": (
            "2 models imported against a quota of 3 ('Imported models per account', L-IMPORT01): room for this run's "
            "import"
        ),
    }
    quota_stub.assert_no_pending_responses()


@pytest.mark.parametrize("code", ["AccessDeniedException", "TooManyRequestsException"])
def test_a_quota_that_cannot_be_read_lets_the_run_go_on(s3: Any, quotas: tuple[Stubber, Stubber], code: str) -> None:
    """The check only saves a paid job: a read it may not make, or that stays throttled, is no reason to refuse."""
    quota_stub, _ = quotas
    s3.put_object(Bucket=BUCKET, Key="datasets/train.jsonl", Body=GOOD)
    quota_stub.add_client_error("get_service_quota", code, "no")
    slot = run("datasets/train.jsonl")["importSlot"]
    assert slot["free"] is True and f"was not checked ({code})" in slot["summary"]


def test_a_run_with_too_little_time_left_skips_the_quota_check(s3: Any, quotas: tuple[Stubber, Stubber]) -> None:
    """The reads may take up to QUOTA_CHECK_BUDGET_MS; a check that timed the function out would fail the run."""
    s3.put_object(Bucket=BUCKET, Key="datasets/train.jsonl", Body=GOOD)
    context = FakeContext(function_name="sagemaker-validate", remaining_ms=h.QUOTA_CHECK_BUDGET_MS - 1)
    result = h.handler({"bucket": BUCKET, "trainingKey": "datasets/train.jsonl"}, context)
    assert result["valid"] is True
    assert result["importSlot"] == {"free": True, "summary": "not checked: the data check used the function's time"}


def test_invalid_data_is_refused_without_reading_the_quota(s3: Any, quotas: tuple[Stubber, Stubber]) -> None:
    s3.put_object(Bucket=BUCKET, Key="datasets/bad.jsonl", Body=b"{}\n")
    result = run("datasets/bad.jsonl")
    assert result["valid"] is False
    assert result["importSlot"] == {"free": True, "summary": "not checked: the data is refused first"}


def test_a_missing_key_is_invalid_data_naming_the_location(s3: Any) -> None:
    s3.put_object(Bucket=BUCKET, Key="datasets/train.json", Body=GOOD)  # not *.jsonl: the program would skip it
    for key in ("datasets/none.jsonl", "datasets/train.json"):
        result = run(key)
        assert result["valid"] is False and result["files"] == 0
        [problem] = result["problems"]
        assert problem.startswith(f"{key}: no object under s3://{BUCKET}/{key} is named *.jsonl")


def test_a_missing_bucket_is_an_error_not_a_verdict(s3: Any) -> None:
    with pytest.raises(Exception, match="NoSuchBucket"):
        h.handler({"bucket": "no-such-bucket", "trainingKey": "datasets/"}, FakeContext())


@pytest.mark.parametrize(
    ("event", "field"),
    [
        ([], "event"),
        ({"trainingKey": "k"}, "bucket"),
        ({"bucket": "Not_A_Bucket", "trainingKey": "k"}, "bucket"),
        ({"bucket": BUCKET + "\n", "trainingKey": "k"}, "bucket"),  # the whole name, not a line of it
        ({"bucket": BUCKET}, "trainingKey"),
        ({"bucket": BUCKET, "trainingKey": 7}, "trainingKey"),
        ({"bucket": BUCKET, "trainingKey": "k" * 1025}, "trainingKey"),
        ({"bucket": BUCKET, "trainingKey": "\u00e9" * 513}, "trainingKey"),  # 1,026 bytes of UTF-8
        ({"bucket": BUCKET, "trainingKey": "a\ud800"}, "trainingKey"),
    ],
)
def test_a_malformed_event_is_an_invalid_request_naming_the_field(event: Any, field: str) -> None:
    with pytest.raises(h.InvalidRequest) as err:
        h.handler(event, FakeContext())
    assert err.value.field == field and str(err.value).startswith(f"{field}: ")
    str(err.value).encode("utf-8")  # printable, even for a lone surrogate


# --- streaming ----------------------------------------------------------------------------------------------


class DiskS3:
    """get_object streams a local file through botocore's StreamingBody, as S3's socket would: nothing of the
    object is in memory before the handler reads it (moto would hold the whole body)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def get_object(self, Bucket: str, Key: str) -> dict[str, Any]:
        size = self.path.stat().st_size
        return {"Body": StreamingBody(open(self.path, "rb"), size)}  # closed by the handler


def test_a_large_file_is_streamed_in_bounded_memory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    big = tmp_path / "big.jsonl"
    record = line({"messages": [USER, {"role": "assistant", "content": "x" * 2000}]})
    with big.open("wb") as handle:
        for _ in range((4 << 20) // len(record) + 1):  # about 4 MB
            handle.write(record)
    size = big.stat().st_size
    monkeypatch.setattr(h, "get_s3_client", lambda: DiskS3(big))
    check = h.Check()
    tracemalloc.start()
    try:
        check.check_file("big.jsonl", h.split_lines(h.object_chunks(BUCKET, "big.jsonl")))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert check.problems == [] and check.records == size // len(record)
    assert peak < size / 4, (peak, size)  # a whole read would hold the object at least once
    assert peak < 2 * h.CHUNK_BYTES + 64 * len(record)


def test_an_over_long_line_is_reported_not_held(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(h, "MAX_LINE_BYTES", 1000)
    chunks = [GOOD, b"x" * 700, b"y" * 700, b"z\r", b"\n", GOOD]
    check = h.Check()
    check.check_file("k.jsonl", h.split_lines(chunks, max_line_bytes=1000))
    assert check.problems == ["k.jsonl:2: longer than 0 MiB, too long to check"] and check.records == 3


def test_lines_split_as_python_text_files_split_them() -> None:
    data = b"a\r\nb\rc\n\n\rd\r"
    expected = [text.rstrip("\r\n") for text in io.TextIOWrapper(io.BytesIO(data), encoding="utf-8")]
    for size in range(1, len(data) + 1):
        chunks = [data[i : i + size] for i in range(0, len(data), size)]
        assert [part.decode() for part in h.split_lines(chunks) if isinstance(part, bytes)] == expected, size


# --- one copy of the rules ----------------------------------------------------------------------------------


def test_the_function_asset_ships_the_one_copy_of_the_record_rules() -> None:
    asset = stage_function_code("sagemaker_validate", ["workloads.finetune_sagemaker.chat_records"])
    shipped = asset / "workloads" / "finetune_sagemaker" / "chat_records.py"
    assert shipped.read_bytes() == (ROOT / "workloads" / "finetune_sagemaker" / "chat_records.py").read_bytes()
    assert sorted(p.name for p in asset.iterdir()) == ["common", "sagemaker_validate", "workloads"]
    assert [p.name for p in (asset / "workloads").rglob("*") if p.is_file()] == ["chat_records.py"]
    # In that asset alone (as Lambda imports it), the handler and its rules import.
    probe = (
        "import sys\nsys.path[:0] = [sys.argv[1]]\nimport sagemaker_validate.handler as h\n"
        "from workloads.finetune_sagemaker import chat_records\nprint(chat_records.__file__)"
    )
    env = {**os.environ, "PYTHONPATH": ""}
    out = subprocess.run(
        [sys.executable, "-I", "-c", probe, str(asset)], capture_output=True, text=True, env=env, check=False
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == str(shipped)


def test_without_extra_modules_an_asset_is_unchanged_and_a_bad_module_name_is_refused() -> None:
    plain = stage_function_code("sagemaker_validate")
    assert sorted(p.name for p in plain.iterdir()) == ["common", "sagemaker_validate"]
    assert module_file("rag_ingest.names") == ROOT / "lambdas" / "level2_rag" / "rag_ingest" / "names.py"
    bad_names = ("workloads.finetune_sagemaker.nosuch", "common.clients", "lambdas.common.clients", "../x")
    for bad in (*bad_names, "rag_ingest.nosuch", "rag_ingest"):
        with pytest.raises(ValueError, match="extra module"):
            module_file(bad)


def test_the_cold_import_loads_no_torch_nor_boto3() -> None:
    probe = (
        "import json, sys\nimport sagemaker_validate.handler\n"
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules} & "
        "{'torch', 'boto3', 'pydantic', 'aws_cdk', 'transformers', 'chat_data'})))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == []


SAMPLE_FILES = sorted((ROOT / "samples").rglob("*.jsonl"))


def _sample_lines() -> list[tuple[str, str]]:
    """Every non-blank UTF-8 line of every sample (the Bedrock samples are, for this format, bad records)."""
    found = []
    for path in SAMPLE_FILES:
        for number, raw in enumerate(path.read_bytes().split(b"\n"), start=1):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                continue  # not a record rule: test_a_line_that_is_not_a_json_record_is_a_problem
            if text.strip():
                found.append((f"{path.relative_to(ROOT)}:{number}", text))
    return found


@pytest.mark.parametrize(("where", "text"), _sample_lines())
def test_the_kit_the_function_and_the_training_program_judge_every_sample_line_alike(where: str, text: str) -> None:
    from kit.level3_finetune import sm_record_problem

    assert sm_record_problem is chat_records.record_problem  # the kit holds no copy of its own
    expected = chat_records.line_problem(text)
    check = h.Check()
    check.check_file("f.jsonl", [text.encode("utf-8")])
    assert check.problems == ([] if expected is None else [f"f.jsonl:1: {h.short_reason(expected)}"]), where
    chat_data = pytest.importorskip("chat_data")  # the training program's module (needs torch)
    assert Path(chat_data.chat_records.__file__).resolve() == Path(chat_records.__file__).resolve()
    try:
        record = json.loads(text)
    except ValueError:
        return
    try:
        chat_data.validate_record(record)
        program = None
    except chat_data.DataError as err:
        program = str(err)
    assert program == sm_record_problem(record), where


@pytest.mark.parametrize("path", SAMPLE_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_the_kit_and_the_training_program_stop_at_the_same_line_of_every_sample_file(path: Path) -> None:
    from kit.level3_finetune import sm_check_file

    chat_data = pytest.importorskip("chat_data")
    problems = sm_check_file(path)
    try:
        chat_data.load_conversations(path)
        program = None
    except chat_data.DataError as err:
        program = str(err).replace(str(path), path.name, 1)
    assert (problems[0] if problems else None) == program
