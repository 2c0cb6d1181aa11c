"""kit l2 (Level 2, RAG), offline: uploads under the documents prefix, the ingestion pipeline's pending changes
and jobs (moto SQS, a Stubber on Bedrock Agent), the signed calls to the RAG API, and the Bedrock rate quotas
``kit doctor --level 2`` checks (a Stubber on Service Quotas)."""

from __future__ import annotations

import json
import os
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber

from kit import level2_rag
from kit.aws import Target
from kit.doctor import FIX, OK, WARN, Check, DeployNeeds, QuotaBook
from kit.level2_rag import l2
from stacks.level2_rag.names import DOCUMENTS_PREFIX_OUTPUT, WHOLE_BUCKET
from tests.conftest import Synth
from tests.infra.helpers import resources
from tests.kit.operator_helpers import (  # each *_fixture registers its fixture for this module
    API_URL,
    CONFIG,
    REGION,
    FakeApi,
    FakeCloudFormation,
    InterruptedTime,
    api_fixture,  # noqa: F401
    cloudformation_fixture,  # noqa: F401
    fresh_clients_fixture,  # noqa: F401
    mocked_fixture,  # noqa: F401
    run,
    stack,
    stubbed,
)


def rag_stack(
    fake: FakeCloudFormation, bucket: str = "docs-bucket", vector_store: str = "s3vectors", prefix: str | None = "docs/"
) -> tuple[str, str]:
    """The Level 2 stack's outputs and its two ingestion queues (real moto queues); returns their URLs."""
    sqs = boto3.client("sqs", region_name=REGION)
    changes = sqs.create_queue(QueueName="changes")["QueueUrl"]
    dead = sqs.create_queue(QueueName="dead-letters")["QueueUrl"]
    fake.deploy(
        stack("2"),
        {
            "DocumentsBucketName": bucket,
            "KnowledgeBaseId": "KB12345678",
            "DataSourceId": "DS12345678",
            "ApiUrl": API_URL,
            "VectorStore": vector_store,
        }
        | ({DOCUMENTS_PREFIX_OUTPUT: prefix} if prefix is not None else {}),
        resources={
            "IngestionChangesD5FB1EC5": ("AWS::SQS::Queue", changes),
            "IngestionDeadLetters84B2DF1E": ("AWS::SQS::Queue", dead),
            "IngestionIngestFunction39DE1FF1": ("AWS::Lambda::Function", "ingest"),
        },
    )
    return changes, dead


def test_l2_upload_puts_files_and_folders_under_the_documents_prefix(
    mocked: FakeCloudFormation, tmp_path: Path
) -> None:
    boto3.client("s3", region_name=REGION).create_bucket(Bucket="docs-bucket")
    rag_stack(mocked)
    (tmp_path / "guide.md").write_text("# Guide")
    folder = tmp_path / "policies"
    (folder / "hr").mkdir(parents=True)
    (folder / "hr" / "leave.txt").write_text("leave")
    (folder / ".hidden").write_text("skip me")
    result = run(l2, "upload", str(tmp_path / "guide.md"), str(folder), "--prefix", "team-a")
    assert result.exit_code == 0, result.output
    objects = boto3.client("s3", region_name=REGION).list_objects_v2(Bucket="docs-bucket")["Contents"]
    assert sorted(o["Key"] for o in objects) == ["docs/team-a/guide.md", "docs/team-a/hr/leave.txt"]
    head = boto3.client("s3", region_name=REGION).head_object(Bucket="docs-bucket", Key="docs/team-a/guide.md")
    assert head["ContentType"] == "text/markdown"
    assert "uploaded s3://docs-bucket/docs/team-a/guide.md" in result.output
    assert "kit l2 sync --wait" in result.output


def test_l2_upload_to_a_whole_bucket_data_source_writes_at_the_root_and_needs_the_prefix_output(
    mocked: FakeCloudFormation, tmp_path: Path
) -> None:
    s3 = boto3.client("s3", region_name=REGION)
    s3.create_bucket(Bucket="docs-bucket")
    (tmp_path / "guide.md").write_text("# Guide")
    rag_stack(mocked, prefix=WHOLE_BUCKET)
    assert run(l2, "upload", str(tmp_path / "guide.md")).exit_code == 0
    assert [o["Key"] for o in s3.list_objects_v2(Bucket="docs-bucket")["Contents"]] == ["guide.md"]
    # Before: a stack without the output was taken for a whole-bucket one, and the file landed outside the prefix
    # the data source reads ("uploaded", never ingested).
    rag_stack(mocked, prefix=None)
    result = run(l2, "upload", str(tmp_path / "guide.md"), "--prefix", "b")
    assert result.exit_code != 0
    assert f"has no output {DOCUMENTS_PREFIX_OUTPUT}" in result.output
    assert [o["Key"] for o in s3.list_objects_v2(Bucket="docs-bucket")["Contents"]] == ["guide.md"]


def test_l2_upload_hint_carries_the_options_it_was_given(mocked: FakeCloudFormation, tmp_path: Path) -> None:
    """Before: `kit l2 sync --wait`, which reads cdk.json's stage and the default region and profile."""
    boto3.client("s3", region_name=REGION).create_bucket(Bucket="docs-bucket")
    rag_stack(mocked)
    (tmp_path / "guide.md").write_text("# Guide")
    result = run(l2, "--region", REGION, "upload", str(tmp_path / "guide.md"))
    assert result.exit_code == 0, result.output
    assert f"follow it with: kit l2 --region {REGION} sync --wait" in " ".join(result.output.split())


@pytest.mark.parametrize(
    ("code", "told"),
    [
        ("ExpiredTokenException", "the AWS credentials have expired: refresh them (aws sso login"),
        ("AccessDenied", "access denied while uploading"),
    ],
)
def test_l2_upload_explains_an_aws_refusal_as_every_command_does(
    mocked: FakeCloudFormation, tmp_path: Path, code: str, told: str
) -> None:
    """Before: boto3's S3UploadFailedError text ('Failed to upload ... An error occurred (ExpiredTokenException)
    when calling the PutObject operation'), not the kit's one-line advice."""
    rag_stack(mocked)
    (tmp_path / "guide.md").write_text("# Guide")
    with stubbed("s3") as s3:
        s3.add_client_error("put_object", code, "no", 403 if code == "AccessDenied" else 400)
        result = run(l2, "upload", str(tmp_path / "guide.md"))
    assert result.exit_code == 1, result.output
    text = " ".join(result.output.split())
    assert told in text and "S3UploadFailedError" not in text and "Failed to upload" not in text


def test_l2_upload_refuses_files_over_the_knowledge_base_limit(mocked: FakeCloudFormation, tmp_path: Path) -> None:
    big = tmp_path / "big.pdf"
    with big.open("wb") as handle:
        handle.truncate(50 * 1024 * 1024 + 1)  # sparse: no 50 MB written
    result = run(l2, "upload", str(big))
    assert result.exit_code == 2
    assert "a knowledge base ingests files up to 50 MB; too large: " in result.output and "big.pdf" in result.output


def uploaded_keys() -> list[str]:
    listing = boto3.client("s3", region_name=REGION).list_objects_v2(Bucket="docs-bucket")
    return sorted(o["Key"] for o in listing.get("Contents", []))


def sidecar(folder: Path, document: str, attributes: Any, *, write_document: bool = True) -> Path:
    """``<document>.metadata.json`` beside the document (s3-data-source-connector.html's naming)."""
    if write_document:
        (folder / document).write_text("text")
    path = folder / f"{document}.metadata.json"
    path.write_text(json.dumps({"metadataAttributes": attributes}) if not isinstance(attributes, str) else attributes)
    return path


def test_l2_upload_refuses_a_metadata_file_over_10_kb_or_not_a_metadata_object(
    mocked: FakeCloudFormation, tmp_path: Path
) -> None:
    """s3-data-source-connector.html: the metadata file "must not exceed the limit of 10 KB"; its content is a JSON
    object with "metadataAttributes". Before: any *.metadata.json was uploaded, and ingestion refused it later."""
    boto3.client("s3", region_name=REGION).create_bucket(Bucket="docs-bucket")
    rag_stack(mocked, vector_store="opensearch-serverless")  # limits of every store, not only S3 Vectors'
    big = sidecar(tmp_path, "big.md", {"notes": "x" * level2_rag.SIDECAR_MAX_BYTES})
    listed = sidecar(tmp_path, "listed.md", "[1, 2]")
    bare = sidecar(tmp_path, "bare.md", '{"title": "no metadataAttributes"}')
    broken = sidecar(tmp_path, "broken.md", "{not json")
    result = run(l2, "upload", str(tmp_path))
    assert result.exit_code == 2, result.output
    text = " ".join(result.output.split())
    assert f"{big}: {big.stat().st_size:,} bytes; a metadata file must not exceed 10 KB (10,240 bytes)" in text
    assert f'{listed}: not a JSON object with a "metadataAttributes" object' in text
    assert f'{bare}: not a JSON object with a "metadataAttributes" object' in text
    assert f"{broken}: not UTF-8 JSON" in text
    assert uploaded_keys() == []  # refused before anything is uploaded
    # 10 KB exactly is within the limit
    big.write_text(json.dumps({"metadataAttributes": {"notes": ""}}).ljust(level2_rag.SIDECAR_MAX_BYTES))
    for path in (listed, bare, broken):
        path.unlink()
    assert run(l2, "upload", str(tmp_path)).exit_code == 0


def test_l2_upload_refuses_names_s3_cannot_store_before_uploading_anything(
    mocked: FakeCloudFormation, tmp_path: Path
) -> None:
    """object-keys.html: a key is UTF-8, at most 1,024 bytes. Before: the files sorted first were uploaded, a name
    that is not UTF-8 ended the command in "unexpected UnicodeEncodeError", and a document whose key fitted was
    uploaded while its metadata file's (14 bytes longer) was refused: ingested without its metadata."""
    boto3.client("s3", region_name=REGION).create_bucket(Bucket="docs-bucket")
    rag_stack(mocked)
    (tmp_path / "a.md").write_text("first in the upload order")
    # docs/ + four 250-byte folders + a 15-byte name: a 1,024-byte key, whose metadata file's key is 1,038 bytes
    deep = tmp_path.joinpath(*["x" * 250] * 4)
    deep.mkdir(parents=True)
    name = "b" * 12 + ".md"
    document = sidecar(deep, name, {"team": "a"}).with_name(name)
    assert len(f"docs/{document.relative_to(tmp_path).as_posix()}".encode()) == 1024
    latin1 = tmp_path / os.fsdecode(b"caf\xe9.md")  # a name in Latin-1, not UTF-8, as Linux hands it to Python
    latin1.write_text("text")
    result = run(l2, "upload", str(tmp_path))
    assert result.exit_code == 2, result.output
    text = " ".join(result.output.split())
    assert "files S3 cannot store (nothing was uploaded)" in text
    assert "its key is 1,038 bytes of UTF-8; S3 takes at most 1,024" in text
    assert f"{tmp_path}/caf\\xe9.md: its name is not UTF-8 text" in text
    assert uploaded_keys() == []
    # The document alone (its key 1,024 bytes) is stored
    latin1.unlink()
    document.with_name(f"{name}.metadata.json").unlink()
    assert run(l2, "upload", str(tmp_path)).exit_code == 0
    assert len(uploaded_keys()) == 2


def test_l2_upload_holds_metadata_to_the_s3_vectors_limits_of_the_deployed_store(
    mocked: FakeCloudFormation, tmp_path: Path
) -> None:
    """knowledge-base-setup.html#metadata-support: on S3 Vectors "up to 1 KB of custom metadata ... and 35 metadata
    keys per vector"; over them "the ingestion job will throw an exception"."""
    boto3.client("s3", region_name=REGION).create_bucket(Bucket="docs-bucket")
    assert (level2_rag.S3VECTORS_METADATA_MAX_BYTES, level2_rag.S3VECTORS_METADATA_MAX_KEYS) == (1024, 35)
    many = sidecar(tmp_path, "many.md", {f"k{i}": i for i in range(36)})
    # {"note":"<1,014 x>"} is 1,025 bytes of compact JSON (1,024 is within the limit)
    long = sidecar(tmp_path, "long.md", {"note": "x" * 1014})
    rag_stack(mocked)
    result = run(l2, "upload", str(tmp_path))
    assert result.exit_code == 2, result.output
    text = " ".join(result.output.split())
    assert f"{many}: 36 metadata keys; S3 Vectors takes at most 35 per vector" in text
    assert f"{long}: 1,025 bytes of metadata (keys and values as compact JSON); S3 Vectors takes at most 1 KB" in text
    assert uploaded_keys() == []
    # At the limits exactly, S3 Vectors takes them
    sidecar(tmp_path, "many.md", {f"k{i}": i for i in range(35)})
    sidecar(tmp_path, "long.md", {"note": "x" * 1013})
    assert run(l2, "upload", str(tmp_path)).exit_code == 0
    sidecar(tmp_path, "many.md", {f"k{i}": i for i in range(36)})
    sidecar(tmp_path, "long.md", {"note": "x" * 1014})
    # OpenSearch Serverless (the deployed stack's VectorStore output, whatever the configuration says) has no such limit
    rag_stack(mocked, vector_store="opensearch-serverless")
    assert run(l2, "upload", str(tmp_path)).exit_code == 0
    assert "docs/many.md.metadata.json" in uploaded_keys()


def test_l2_upload_measures_what_the_vector_stores_of_a_typed_attribute(
    mocked: FakeCloudFormation, tmp_path: Path
) -> None:
    """The typed form ({"value": {"type", "stringValue"}, "includeForEmbedding"}) stores the value, not its wrapper:
    35 typed attributes fit though their sidecar is far over 1 KB."""
    boto3.client("s3", region_name=REGION).create_bucket(Bucket="docs-bucket")
    rag_stack(mocked)
    typed = {
        f"k{i:02}": {"value": {"type": "NUMBER", "numberValue": i}, "includeForEmbedding": True} for i in range(35)
    }
    path = sidecar(tmp_path, "typed.md", typed)
    assert path.stat().st_size > 2048
    result = run(l2, "upload", str(tmp_path))
    assert result.exit_code == 0, result.output
    assert uploaded_keys() == ["docs/typed.md", "docs/typed.md.metadata.json"]
    text = {f"k{i:02}": {"value": {"type": "STRING", "stringValue": "y" * 50}} for i in range(20)}
    sidecar(tmp_path, "typed.md", text)
    result = run(l2, "upload", str(tmp_path))
    assert result.exit_code == 2 and "S3 Vectors takes at most 1 KB" in " ".join(result.output.split())


def test_l2_upload_warns_of_a_metadata_file_without_its_document(mocked: FakeCloudFormation, tmp_path: Path) -> None:
    boto3.client("s3", region_name=REGION).create_bucket(Bucket="docs-bucket")
    rag_stack(mocked)
    alone = sidecar(tmp_path, "guide.md", {"team": "a"}, write_document=False)
    result = run(l2, "upload", str(alone), "--prefix", "team-a")
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert (
        f"warning: {alone} has no document guide.md in this upload: Bedrock applies it only to "
        "s3://docs-bucket/docs/team-a/guide.md" in text
    )
    assert "not a type Bedrock parses" not in text
    # with its document beside it, no warning
    (tmp_path / "guide.md").write_text("# Guide")
    result = run(l2, "upload", str(tmp_path))
    assert result.exit_code == 0 and "warning" not in result.output


def test_l2_upload_names_the_formats_of_the_knowledge_base_page(mocked: FakeCloudFormation, tmp_path: Path) -> None:
    """knowledge-base-ds.html lists HTML as .html only, and plain text as .txt (ASCII only)."""
    boto3.client("s3", region_name=REGION).create_bucket(Bucket="docs-bucket")
    rag_stack(mocked)
    (tmp_path / "page.htm").write_text("<p>old</p>")
    (tmp_path / "page.html").write_text("<p>new</p>")
    result = run(l2, "upload", str(tmp_path))
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    [htm] = [line for line in lines if "page.htm " in line or line.endswith("page.htm")]
    assert "not a type Bedrock parses by default: .txt (ASCII only) .md .html .doc(x) .csv .xls(x) .pdf" in " ".join(
        " ".join(lines).split()
    )
    assert "docs/page.htm" in htm
    [html] = [line for line in lines if "page.html" in line]
    assert "not a type" not in html


JOB_STATS = {
    "numberOfDocumentsScanned": 7,
    "numberOfNewDocumentsIndexed": 2,
    "numberOfModifiedDocumentsIndexed": 1,
    "numberOfDocumentsDeleted": 0,
    "numberOfDocumentsFailed": 0,
    "numberOfDocumentsSkipped": 4,
}


def ingestion_job(status: str, job_id: str = "JOB0000001", **extra: Any) -> dict[str, Any]:
    """A job the pipeline started after the command began to wait (``startedAt`` later than now), unless ``extra``
    says otherwise."""
    now = datetime.now(UTC) + timedelta(minutes=1)
    return {
        "knowledgeBaseId": "KB12345678",
        "dataSourceId": "DS12345678",
        "ingestionJobId": job_id,
        "status": status,
        "statistics": JOB_STATS,
        "startedAt": now,
        "updatedAt": now,
        **extra,
    }


def before_the_wait() -> dict[str, Any]:
    """The newest job when the command begins to wait: an earlier, finished one (another id than what follows)."""
    return ingestion_job("COMPLETE", "JOB0000000", startedAt=datetime.now(UTC) - timedelta(hours=1))


def expect_newest(agent: Stubber, job: dict[str, Any] | None) -> None:
    listing = {"knowledgeBaseId": "KB12345678", "dataSourceId": "DS12345678"}
    params = {**listing, "sortBy": {"attribute": "STARTED_AT", "order": "DESCENDING"}, "maxResults": 1}
    summaries = [] if job is None else [{k: v for k, v in job.items() if k != "failureReasons"}]
    agent.add_response("list_ingestion_jobs", {"ingestionJobSummaries": summaries}, params)
    if job is not None:
        agent.add_response(
            "get_ingestion_job", {"ingestionJob": job}, {**listing, "ingestionJobId": job["ingestionJobId"]}
        )


def test_l2_sync_shows_pending_changes_and_the_newest_job(mocked: FakeCloudFormation) -> None:
    changes, dead = rag_stack(mocked)
    sqs = boto3.client("sqs", region_name=REGION)
    for key in ("docs/a.md", "docs/b.md"):
        sqs.send_message(QueueUrl=changes, MessageBody=json.dumps({"key": key}))
    sqs.send_message(QueueUrl=dead, MessageBody="{}")
    with stubbed("bedrock-agent") as agent:
        expect_newest(agent, ingestion_job("COMPLETE"))
        result = run(l2, "sync")
        agent.assert_no_pending_responses()
    assert result.exit_code == 0, result.output
    minutes = CONFIG.rag.sync_interval_minutes
    assert f"2 change(s) waiting: the pipeline starts a job every {minutes} min" in result.output
    assert "JOB0000001 COMPLETE · scanned 7 · new 2 · modified 1 · deleted 0 · failed 0 · skipped 4" in result.output
    assert "1 message(s) in the dead-letter queue" in result.output
    # CloudWatch notifies on the alarm's change of state only: the row says to clear what was handled
    assert "delete each once handled" in " ".join(result.output.split())
    assert "s3://docs-bucket/docs/" in result.output


def test_l2_sync_wait_follows_the_job_until_it_completes(mocked: FakeCloudFormation) -> None:
    rag_stack(mocked)
    with stubbed("bedrock-agent") as agent:
        expect_newest(agent, before_the_wait())
        expect_newest(agent, ingestion_job("STARTING"))
        expect_newest(agent, ingestion_job("IN_PROGRESS"))
        expect_newest(agent, ingestion_job("COMPLETE"))
        result = run(l2, "sync", "--wait", "--poll-seconds", "0")
        agent.assert_no_pending_responses()
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if "JOB0000001" in line]
    assert [s for s in ("STARTING", "IN_PROGRESS", "COMPLETE") if any(s in line for line in lines)] == [
        "STARTING",
        "IN_PROGRESS",
        "COMPLETE",
    ]


def test_l2_sync_wait_keeps_waiting_while_changes_are_pending(
    mocked: FakeCloudFormation, monkeypatch: pytest.MonkeyPatch
) -> None:
    changes, _ = rag_stack(mocked)
    sqs = boto3.client("sqs", region_name=REGION)
    sqs.send_message(QueueUrl=changes, MessageBody="{}")

    class PipelineClock:
        """Between two checks the pipeline drains the queue, as the ingest function does once a job started."""

        monotonic = staticmethod(time.monotonic)

        @staticmethod
        def sleep(_: float) -> None:
            for message in sqs.receive_message(QueueUrl=changes, MaxNumberOfMessages=10).get("Messages", []):
                sqs.delete_message(QueueUrl=changes, ReceiptHandle=message["ReceiptHandle"])

    monkeypatch.setattr(level2_rag, "time", PipelineClock)
    with stubbed("bedrock-agent") as agent:
        expect_newest(agent, ingestion_job("COMPLETE", "JOB0000001"))  # an older job: done, but a change waits
        expect_newest(agent, ingestion_job("IN_PROGRESS", "JOB0000002"))
        expect_newest(agent, ingestion_job("COMPLETE", "JOB0000002"))
        result = run(l2, "sync", "--wait")
        agent.assert_no_pending_responses()
    assert result.exit_code == 0, result.output
    assert "waiting for the pipeline to start a job for 1 pending change(s)" in result.output
    assert "JOB0000002 COMPLETE" in result.output


class FakeClock:
    """time for kit.level2_rag: each sleep advances the clock and runs ``on_sleep`` (what the pipeline does)."""

    def __init__(self, on_sleep: Any = None) -> None:
        self.now, self.on_sleep, self.sleeps = 1000.0, on_sleep, 0

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds
        self.sleeps += 1
        if self.on_sleep is not None:
            self.on_sleep(self.sleeps)


def test_l2_sync_counts_a_change_requeued_with_a_delay_as_pending(mocked: FakeCloudFormation) -> None:
    # The ingest function re-queues a change it received a 3rd time with a delay: SQS counts it as delayed only.
    changes, _ = rag_stack(mocked)
    boto3.client("sqs", region_name=REGION).send_message(QueueUrl=changes, MessageBody="{}", DelaySeconds=300)
    with stubbed("bedrock-agent") as agent:
        expect_newest(agent, ingestion_job("COMPLETE"))
        result = run(l2, "sync")
    assert result.exit_code == 0, result.output
    assert "1 change(s) waiting" in result.output


def test_l2_sync_wait_right_after_an_upload_waits_for_the_change_s3_delivers_late(
    mocked: FakeCloudFormation, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: the newest job was an older COMPLETE one and the queue still empty (S3 events "can sometimes take
    a minute or longer"), so --wait said done before the upload was indexed."""
    changes, _ = rag_stack(mocked)
    sqs = boto3.client("sqs", region_name=REGION)
    older = ingestion_job("COMPLETE", "JOB0000001", startedAt=datetime.now(UTC) - timedelta(hours=1))

    def pipeline(sleeps: int) -> None:
        if sleeps == 3:  # 30 s after the command began, the upload's event reaches the queue
            sqs.send_message(QueueUrl=changes, MessageBody="{}")
        if sleeps == 5:  # the ingest function starts a job and deletes the message
            for message in sqs.receive_message(QueueUrl=changes, MaxNumberOfMessages=10).get("Messages", []):
                sqs.delete_message(QueueUrl=changes, ReceiptHandle=message["ReceiptHandle"])

    monkeypatch.setattr(level2_rag, "time", FakeClock(pipeline))
    with stubbed("bedrock-agent") as agent:
        for _ in range(5):
            expect_newest(agent, older)
        expect_newest(agent, ingestion_job("IN_PROGRESS", "JOB0000002"))
        expect_newest(agent, ingestion_job("COMPLETE", "JOB0000002"))
        result = run(l2, "sync", "--wait", "--poll-seconds", "10")
        agent.assert_no_pending_responses()
    assert result.exit_code == 0, result.output
    assert f"no change pending: watching {level2_rag.SETTLE_S} s" in result.output
    assert "waiting for the pipeline to start a job for 1 pending change(s)" in result.output
    assert "JOB0000002 COMPLETE" in result.output


@pytest.mark.parametrize("started", [timedelta(hours=-1), timedelta(minutes=5)], ids=["earlier", "stamped-later"])
def test_l2_sync_wait_on_an_idle_pipeline_returns_after_watching_it(
    mocked: FakeCloudFormation, monkeypatch: pytest.MonkeyPatch, started: timedelta
) -> None:
    """The job newest when the wait begins has to be followed by another one, or by SETTLE_S of an idle pipeline.
    Before, a job counted as new when Bedrock's startedAt was later than this machine's clock, so a slow laptop
    clock ("stamped-later") took the job already there for a new one and returned before the upload was indexed."""
    rag_stack(mocked)
    clock = FakeClock()
    monkeypatch.setattr(level2_rag, "time", clock)
    newest = ingestion_job("COMPLETE", startedAt=datetime.now(UTC) + started)
    polls = level2_rag.SETTLE_S // 10 + 1
    with stubbed("bedrock-agent") as agent:
        for _ in range(polls):
            expect_newest(agent, newest)
        result = run(l2, "sync", "--wait", "--poll-seconds", "10")
        agent.assert_no_pending_responses()
    assert result.exit_code == 0, result.output
    assert clock.sleeps == polls - 1 and (polls - 1) * 10 >= level2_rag.SETTLE_S


def test_l2_sync_wait_exits_1_at_once_when_the_queue_may_not_be_read(
    mocked: FakeCloudFormation, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: a denied sqs:GetQueueAttributes counted as 0 pending, so the wait settled on the previous COMPLETE
    job after SETTLE_S and exited 0 while changes may still have been waiting."""
    rag_stack(mocked)
    monkeypatch.setattr(level2_rag, "time", FakeClock())
    older = ingestion_job("COMPLETE", startedAt=datetime.now(UTC) - timedelta(hours=1))
    denied = "User: arn:aws:iam::123456789012:user/op is not authorized to perform: sqs:GetQueueAttributes"
    with stubbed("bedrock-agent") as agent, stubbed("sqs") as sqs:
        for _ in range(level2_rag.SETTLE_S // 10 + 2):
            expect_newest(agent, older)
            sqs.add_client_error("get_queue_attributes", "AccessDenied", denied)
        result = run(l2, "sync", "--wait", "--poll-seconds", "10")
    assert result.exit_code == 1, result.output
    text = " ".join(result.output.split())
    assert "Error: cannot tell whether document changes are pending: access denied while reading the ingestion" in text
    assert "sqs:GetQueueAttributes" in text


def test_l2_sync_wait_keeps_polling_an_unreadable_queue_and_fails_at_the_timeout(
    mocked: FakeCloudFormation, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A throttled read may clear: the wait polls on (never settling while it cannot see the queue) and, if it
    never clears, exits 1 at the timeout naming why. Before: it settled on the older job and exited 0."""
    rag_stack(mocked)
    clock = FakeClock()
    monkeypatch.setattr(level2_rag, "time", clock)
    older = ingestion_job("COMPLETE", startedAt=datetime.now(UTC) - timedelta(hours=1))
    timeout = 2 * level2_rag.SETTLE_S
    with stubbed("bedrock-agent") as agent, stubbed("sqs") as sqs:
        for _ in range(timeout // 10 + 2):
            expect_newest(agent, older)
            sqs.add_client_error("get_queue_attributes", "RequestThrottled", "Rate exceeded")
        result = run(l2, "sync", "--wait", "--poll-seconds", "10", "--timeout", str(timeout))
    assert result.exit_code == 1, result.output
    text = " ".join(result.output.split())
    assert f"Error: cannot tell whether document changes are pending after {timeout} s" in text
    assert "RequestThrottled: Rate exceeded" in text
    assert clock.sleeps * 10 >= timeout  # it kept polling to the end


def test_l2_sync_wait_on_a_new_stack_waits_for_the_first_full_sync(mocked: FakeCloudFormation) -> None:
    # Given a data source with no job yet and nothing queued (a stack just deployed)
    rag_stack(mocked)
    with stubbed("bedrock-agent") as agent:
        expect_newest(agent, None)
        expect_newest(agent, ingestion_job("IN_PROGRESS"))
        expect_newest(agent, ingestion_job("COMPLETE"))
        result = run(l2, "sync", "--wait", "--poll-seconds", "0")
        agent.assert_no_pending_responses()
    # Then --wait does not return at once: it follows the pipeline's first job to the end
    assert result.exit_code == 0, result.output
    assert "waiting for the pipeline to start the first (full) sync of this data source" in result.output
    assert "JOB0000001 COMPLETE" in result.output


def test_l2_sync_wait_never_settles_on_a_data_source_that_has_had_no_job(
    mocked: FakeCloudFormation, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With no job yet, nothing is indexed: however long the queue stays empty, the wait is for the first full
    sync, and it ends at the timeout with exit 1, not after SETTLE_S of "idle" with exit 0."""
    rag_stack(mocked)
    clock = FakeClock()
    monkeypatch.setattr(level2_rag, "time", clock)
    timeout = 2 * level2_rag.SETTLE_S
    with stubbed("bedrock-agent") as agent:
        for _ in range(timeout // 10 + 1):
            expect_newest(agent, None)
        result = run(l2, "sync", "--wait", "--poll-seconds", "10", "--timeout", str(timeout))
        agent.assert_no_pending_responses()
    assert result.exit_code == 1, result.output
    text = " ".join(result.output.split())
    first_sync = "waiting for the pipeline to start the first (full) sync of this data source"
    assert f"still {first_sync} after {timeout} s" in text
    assert "no change pending" not in text


def test_l2_sync_wait_exits_1_and_shows_why_a_job_failed(mocked: FakeCloudFormation) -> None:
    rag_stack(mocked)
    failed = ingestion_job("FAILED", failureReasons=["Vector index not found"])
    with stubbed("bedrock-agent") as agent:
        expect_newest(agent, before_the_wait())
        expect_newest(agent, ingestion_job("IN_PROGRESS"))
        expect_newest(agent, failed)
        result = run(l2, "sync", "--wait", "--poll-seconds", "0")
    assert result.exit_code == 1
    assert "failure: Vector index not found" in result.output


# A COMPLETE job can have failed documents: numberOfDocumentsFailed is separate from the job's status
# (https://docs.aws.amazon.com/bedrock/latest/APIReference/API_agent_IngestionJobStatistics.html).
FAILED_DOCUMENTS = {**JOB_STATS, "numberOfDocumentsFailed": 2}
REASONS = [f"s3://docs-bucket/docs/doc-{i}.pdf: file exceeds 50 MB" for i in range(7)]


def test_l2_sync_wait_exits_1_when_the_job_completed_with_failed_documents(mocked: FakeCloudFormation) -> None:
    rag_stack(mocked)
    done = ingestion_job("COMPLETE", statistics=FAILED_DOCUMENTS, failureReasons=REASONS)
    with stubbed("bedrock-agent") as agent:
        expect_newest(agent, before_the_wait())
        expect_newest(agent, ingestion_job("IN_PROGRESS"))
        expect_newest(agent, done)
        result = run(l2, "sync", "--wait", "--poll-seconds", "0")
        agent.assert_no_pending_responses()
    assert result.exit_code == 1, result.output
    text = " ".join(result.output.split())
    assert "2 document(s) failed to be ingested in job JOB0000001" in text
    shown = [reason for reason in REASONS if f"failure: {reason}" in text]
    assert shown == REASONS[: level2_rag.SHOWN_REASONS]
    assert f"{len(REASONS) - level2_rag.SHOWN_REASONS} more reason(s)" in text
    assert (
        f"aws bedrock-agent get-ingestion-job --region {REGION} --knowledge-base-id KB12345678 "
        "--data-source-id DS12345678 --ingestion-job-id JOB0000001" in text
    )


def test_l2_sync_without_wait_shows_failed_documents_and_exits_0(mocked: FakeCloudFormation) -> None:
    rag_stack(mocked)
    with stubbed("bedrock-agent") as agent:
        expect_newest(agent, ingestion_job("COMPLETE", statistics=FAILED_DOCUMENTS, failureReasons=REASONS[:1]))
        result = run(l2, "sync")
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert f"failure: {REASONS[0]}" in text and "2 document(s) failed to be ingested" in text


@pytest.mark.parametrize("taken", [0, 2], ids=["took-none-again", "took-both-again"])
def test_l2_sync_shows_the_failures_a_retry_did_not_take_again(mocked: FakeCloudFormation, taken: int) -> None:
    """Before: a retry of the pipeline that took no failed document again (Bedrock syncs incrementally) showed as a
    clean newest job, while the DocumentsFailed alarm (the reconcile's) still counted them."""
    rag_stack(mocked)
    original = ingestion_job(
        "COMPLETE", "JOB0000000", statistics=FAILED_DOCUMENTS, failureReasons=REASONS[:2], startedAt=datetime.now(UTC)
    )
    retry = ingestion_job(
        "COMPLETE",
        description=f"retry of the documents that failed in job JOB0000000 [revision {'0' * 16}]",
        statistics={**JOB_STATS, "numberOfNewDocumentsIndexed": taken, "numberOfModifiedDocumentsIndexed": 0},
    )
    listing = {"knowledgeBaseId": "KB12345678", "dataSourceId": "DS12345678"}
    with stubbed("bedrock-agent") as agent:
        expect_newest(agent, retry)
        agent.add_response("get_ingestion_job", {"ingestionJob": original}, {**listing, "ingestionJobId": "JOB0000000"})
        result = run(l2, "sync")
        agent.assert_no_pending_responses()
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    shown = "Job JOB0000001 retried the failed documents of job JOB0000000 and did not take 2 of them again"
    assert (shown in text) is (taken == 0)
    assert (f"failure: {REASONS[1]}" in text) is (taken == 0)
    assert ("2 document(s) failed to be ingested in job JOB0000000" in text) is (taken == 0)


def test_l2_sync_wait_interrupted_says_the_pipeline_runs_on_and_exits_130(
    mocked: FakeCloudFormation, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: Ctrl-C printed click's "Aborted!" and exited 1, the code of a failed job, with no word of the pipeline
    (the README says a --wait interrupted so says how to follow it again)."""

    monkeypatch.setattr(level2_rag, "time", InterruptedTime)
    rag_stack(mocked)
    with stubbed("bedrock-agent") as agent:
        expect_newest(agent, ingestion_job("IN_PROGRESS"))
        result = run(l2, "sync", "--wait")
    assert result.exit_code == 130, result.output
    text = " ".join(result.output.split())
    assert "Stopped following; the pipeline keeps running: follow it again with kit l2" in text
    assert "sync --wait" in text.split("follow it again with", 1)[1]


def test_l2_sync_wait_on_expired_credentials_says_the_pipeline_runs_on(mocked: FakeCloudFormation) -> None:
    """Before: only the credentials error, with nothing of the job it was following or how to follow it again."""
    rag_stack(mocked)
    with stubbed("bedrock-agent") as agent:
        expect_newest(agent, ingestion_job("IN_PROGRESS"))
        agent.add_client_error("list_ingestion_jobs", "ExpiredTokenException", "The security token expired.", 400)
        result = run(l2, "sync", "--wait", "--poll-seconds", "0")
    assert result.exit_code == 1, result.output
    text = " ".join(result.output.split())
    assert "expired" in text and "the pipeline keeps running: follow it again with kit l2" in text


def test_l2_sync_wait_is_bounded_by_its_timeout(mocked: FakeCloudFormation) -> None:
    rag_stack(mocked)
    with stubbed("bedrock-agent") as agent:
        expect_newest(agent, ingestion_job("IN_PROGRESS"))
        result = run(l2, "sync", "--wait", "--timeout", "0")
    assert result.exit_code == 1
    assert "Error: still JOB0000001 IN_PROGRESS" in result.output and "after 0 s" in result.output


def test_l2_ask_prints_the_answer_with_its_sources(api: FakeApi, mocked: FakeCloudFormation) -> None:
    rag_stack(mocked)
    source = {"uri": "s3://docs-bucket/docs/rag.md", "snippet": "RAG retrieves chunks"}
    api.answer(
        200,
        {
            "answer": "Choose RAG when answers must come from your documents.",
            "sessionId": "session-1",
            "citations": [{"text": "Choose RAG", "start": 0, "end": 10, "sources": [source, source]}],
            "guardrail": {"intervened": False},
        },
    )
    result = run(
        l2,
        "ask",
        "When RAG?",
        "--session-id",
        "session-0",
        "--results",
        "3",
        "--filter",
        '{"equals": {"key": "team", "value": "a"}}',
    )
    assert result.exit_code == 0, result.output
    assert api.sent() == (
        "POST",
        API_URL + "ask",
        {
            "question": "When RAG?",
            "sessionId": "session-0",
            "numberOfResults": 3,
            "filter": {"equals": {"key": "team", "value": "a"}},
        },
    )
    assert "Choose RAG when answers must come from your documents." in result.output
    assert result.output.count("s3://docs-bucket/docs/rag.md") == 1  # sources are listed once
    assert "--session-id session-1" in result.output


def test_l2_retrieve_tabulates_the_chunks(api: FakeApi, mocked: FakeCloudFormation) -> None:
    rag_stack(mocked)
    api.answer(
        200, {"results": [{"text": "chunk text", "score": 0.8123, "uri": "s3://docs-bucket/docs/a.md", "metadata": {}}]}
    )
    result = run(l2, "retrieve", "chunks", "--json")
    assert json.loads(result.output)["results"][0]["score"] == 0.8123
    api.answer(
        200, {"results": [{"text": "chunk text", "score": 0.8123, "uri": "s3://docs-bucket/docs/a.md", "metadata": {}}]}
    )
    result = run(l2, "retrieve", "chunks", "--results", "2")
    assert api.sent(1) == ("POST", API_URL + "retrieve", {"query": "chunks", "numberOfResults": 2})
    assert "0.812" in result.output and "s3://docs-bucket/docs/a.md" in result.output


def test_l2_a_bad_filter_is_a_usage_error(api: FakeApi) -> None:
    result = run(l2, "ask", "q", "--filter", "[1]")
    assert result.exit_code == 2 and "--filter must be a JSON object" in result.output
    # the example is a filter's (before: --hyperparameters' epochCount)
    assert '"equals"' in result.output and "epochCount" not in result.output


# --- kit doctor: the Bedrock quotas the query API meets at api_throttle_rate ----------------------------------

KB_QUOTAS = level2_rag.KB_RATE_QUOTAS
CALLS_QUOTA = level2_rag.GUARDRAIL_CALLS_QUOTA
UNIT_QUOTAS = (level2_rag.CONTENT_UNITS_QUOTA, level2_rag.TOPIC_UNITS_QUOTA, level2_rag.PII_UNITS_QUOTA)


def rate_checks(monkeypatch: pytest.MonkeyPatch, values: dict[str, float], **context: str) -> dict[str, Check]:
    """Level 2's doctor rows against these applied Bedrock quota values, by quota name (model access stubbed OK)."""
    monkeypatch.setattr(level2_rag, "check_model_access", lambda target, model, label, key: Check(label, OK, ""))
    target = Target(context={"api_throttle_rate": "10", **context})
    answers = [
        {"ServiceCode": "bedrock", "QuotaName": name, "QuotaCode": f"L-{i:08d}", "Value": value}
        for i, (name, value) in enumerate(values.items())
    ]
    looked_for = {row.removeprefix("Quota: ") for row in level2_rag.doctor_rows(target)[1:]}
    with stubbed("service-quotas") as quotas:
        quotas.add_response("list_service_quotas", {"Quotas": answers}, {"ServiceCode": "bedrock"})
        if looked_for - set(values):  # a quota without an applied value is looked up in the AWS defaults
            quotas.add_response("list_aws_default_service_quotas", {"Quotas": []}, {"ServiceCode": "bedrock"})
        checks = level2_rag.doctor_checks(target, QuotaBook(target), DeployNeeds(1, 0, {}))
        quotas.assert_no_pending_responses()
    assert [check.name for check in checks[1:]] == level2_rag.doctor_rows(target)[1:]
    return {check.name.removeprefix("Quota: "): check for check in checks[1:]}


def test_doctor_a_knowledge_base_rate_below_api_throttle_rate_warns_to_lower_the_rate_never_an_increase(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rows = rate_checks(monkeypatch, {**dict.fromkeys(KB_QUOTAS, 5), CALLS_QUOTA: 50, **dict.fromkeys(UNIT_QUOTAS, 200)})
    for name in KB_QUOTAS:
        assert rows[name].status == WARN  # deploys and works; callers beyond 5 a second get 429
        assert "5, the config needs 10: AWS does not raise this quota" in rows[name].detail
        assert "set api_throttle_rate to 5 or less" in rows[name].detail
        # not adjustable: no increase request, no console path to one
        assert "request-service-quota-increase" not in rows[name].detail and "Service Quotas" not in rows[name].detail
    assert all(rows[name].status == OK for name in (CALLS_QUOTA, *UNIT_QUOTAS))


def test_doctor_a_guardrail_quota_below_the_need_is_warn_with_the_increase_and_the_rate_it_admits(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls, units = level2_rag.guardrail_load(Target())
    assert (calls, units) == (1, 6)  # 5 chunks of 300 tokens (cdk.json): 6,000 characters in one call
    values = {**dict.fromkeys(KB_QUOTAS, 20), CALLS_QUOTA: 25, **dict.fromkeys(UNIT_QUOTAS, 25)}
    rows = rate_checks(monkeypatch, values)
    code = f"L-{list(values).index(level2_rag.TOPIC_UNITS_QUOTA):08d}"
    topic = rows[level2_rag.TOPIC_UNITS_QUOTA]
    # Both methods admit api_throttle_rate (API Gateway throttles each method); before, the need was one method's 60.
    detail = topic.detail
    assert topic.status == WARN and "25, the config needs 120: each request needs about 6, and 2 methods" in detail
    assert f"--quota-code {code} --desired-value 120 --region {REGION}" in topic.detail
    assert "or set api_throttle_rate to 2 or less" in topic.detail  # 25 units a second / (6 a request x 2 methods)
    assert all(rows[name].status == OK for name in (*KB_QUOTAS, CALLS_QUOTA))


def test_the_guarded_routes_are_the_query_apis_methods(sandbox: Synth) -> None:
    """The doctor weighs the guardrail quotas for GUARDED_ROUTES, each throttled on its own: the API's methods."""
    template = sandbox.templates["GenAiKit-2-Rag"]
    path_parts = {
        key: r["Properties"]["PathPart"] for key, r in resources(template, "AWS::ApiGateway::Resource").items()
    }
    routes = [
        f"{m['Properties']['HttpMethod']} /{path_parts[m['Properties']['ResourceId']['Ref']]}"
        for m in resources(template, "AWS::ApiGateway::Method").values()
    ]
    assert sorted(routes) == sorted(level2_rag.GUARDED_ROUTES)


def test_doctor_passes_the_default_configuration_at_us_east_1s_default_quotas(monkeypatch: pytest.MonkeyPatch) -> None:
    # us-east-1's defaults (docs/level-2-rag.md, "Quotas and limits"): the denied-topic policy admits 50 text units
    # a second, the defaults need 120 at api_throttle_rate 10 on each of the two methods. The stack deploys and
    # callers beyond about 8 a second in all get 429, so the preflight warns and does not fail.
    values = {
        **dict.fromkeys(KB_QUOTAS, 20),
        CALLS_QUOTA: 50,
        level2_rag.CONTENT_UNITS_QUOTA: 200,
        level2_rag.TOPIC_UNITS_QUOTA: 50,
        level2_rag.PII_UNITS_QUOTA: 200,
    }
    rows = rate_checks(monkeypatch, values)
    assert {name: row.status for name, row in rows.items() if row.status != OK} == {level2_rag.TOPIC_UNITS_QUOTA: WARN}
    assert "or set api_throttle_rate to 4 or less" in rows[level2_rag.TOPIC_UNITS_QUOTA].detail
    assert not any(row.status == FIX for row in rows.values())


def test_doctor_checks_the_text_units_of_the_policies_the_guardrail_enables_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    off = {
        "guardrail_content_filter_strength": "NONE",  # the prompt-attack filter is off on output anyway
        "guardrail_deny_investment_advice": "false",
        "guardrail_pii_anonymize": "",
        "guardrail_pii_block": "",
    }
    rows = rate_checks(monkeypatch, dict.fromkeys((*KB_QUOTAS, CALLS_QUOTA), 20), **off)
    assert list(rows) == [*KB_QUOTAS, CALLS_QUOTA]
    rows = rate_checks(
        monkeypatch, dict.fromkeys((*KB_QUOTAS, CALLS_QUOTA), 20), **{**off, "guardrail_pii_block": "EMAIL"}
    )
    assert list(rows) == [*KB_QUOTAS, CALLS_QUOTA, level2_rag.PII_UNITS_QUOTA]


def test_doctor_checks_the_standard_tiers_own_quotas_for_the_tiered_policies(monkeypatch: pytest.MonkeyPatch) -> None:
    # Content filters and denied topics have tiers (guardrails-tiers.html); the sensitive-information filter does not
    content = f"{level2_rag.CONTENT_UNITS_QUOTA} (standard)"
    topic = f"{level2_rag.TOPIC_UNITS_QUOTA} (standard)"
    values = {**dict.fromkeys((*KB_QUOTAS, CALLS_QUOTA), 20), content: 25, topic: 200, level2_rag.PII_UNITS_QUOTA: 200}
    rows = rate_checks(monkeypatch, values, guardrail_tier="standard")
    assert list(rows) == [*KB_QUOTAS, CALLS_QUOTA, content, topic, level2_rag.PII_UNITS_QUOTA]
    assert rows[content].status == WARN and "25, the config needs 120" in rows[content].detail
    assert rows[topic].status == OK
    # a Region whose Service Quotas list no Standard-tier quota: the row says which name it looked for
    missing = {**dict.fromkeys((*KB_QUOTAS, CALLS_QUOTA), 20), level2_rag.PII_UNITS_QUOTA: 200}
    rows = rate_checks(monkeypatch, missing, guardrail_tier="standard")
    assert rows[topic].status == WARN and f"no Bedrock quota named {topic!r}" in rows[topic].detail


def test_doctor_estimates_a_requests_guardrail_load_as_the_function_batches_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from rag_api import guardrail

    # The estimate reads the function's own batching: another cap or call size changes it.
    large_chunks = {
        "rag_chunk_max_tokens": "8000",
        "rag_max_results": "25",
        "rag_embedding_model_id": "amazon.titan-embed-text-v2:0",
    }
    with monkeypatch.context() as patched:
        patched.setattr(guardrail, "MAX_CALLS", 3)
        assert level2_rag.guardrail_load(Target(context=large_chunks)) == (3, 3 * 32)
    # hierarchical: the parent chunks come back, 1,500 tokens (6,000 characters) each: 4 a call, 5 in 2 calls
    parents = {"rag_chunking": "hierarchical", "rag_hierarchical_parent_tokens": "1500", "rag_max_results": "5"}
    assert level2_rag.guardrail_load(Target(context=parents)) == (2, 24 + 6)
    # chunks over a call's size go one a call, at most MAX_CALLS of them (the rest is withheld unchecked)
    big = {
        "rag_chunk_max_tokens": "8000",
        "rag_max_results": "25",
        "rag_embedding_model_id": "amazon.titan-embed-text-v2:0",
    }
    assert level2_rag.guardrail_load(Target(context=big)) == (8, 8 * 32)
    texts = ["x" * 32_000] * 25
    assert len(guardrail.batches(texts)) >= 8


@pytest.mark.parametrize(
    ("timeout", "given", "minutes", "expected"),
    [(1800, False, 5, 2100), (1800, False, 60, 5400), (600, True, 60, 600), (0, True, 5, 0)],
)
def test_l2_sync_wait_by_default_outlasts_one_sync_interval(
    timeout: int, given: bool, minutes: int, expected: int
) -> None:
    """A change may wait a whole rag_sync_interval_minutes (up to 60) for its job: the default wait covers that;
    a --timeout given is kept."""
    assert level2_rag.sync_wait_timeout(timeout, given, minutes) == expected


def test_l2_sync_wait_without_timeout_waits_the_interval_and_more(
    mocked: FakeCloudFormation, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The default is worked out from rag_sync_interval_minutes (and --help says so); a --timeout given is kept."""
    rag_stack(mocked)
    waited: list[int] = []
    monkeypatch.setattr(level2_rag, "_follow_ingestion", lambda *args, **kwargs: waited.append(kwargs["timeout"]))
    for args in ((), ("--timeout", "90")):
        with stubbed("bedrock-agent") as agent:
            expect_newest(agent, None)
            assert run(l2, "sync", "--wait", *args).exit_code == 0
    assert waited == [CONFIG.rag.sync_interval_minutes * 60 + level2_rag.SYNC_WAIT_S, 90]
    assert "[default: (the sync interval + 1800)" in " ".join(run(l2, "sync", "--help").output.split())
