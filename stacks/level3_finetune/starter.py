"""The start of a run from an uploaded job request: one pipeline execution per upload, however often S3's event
arrives.

S3 delivers its events to EventBridge at least once
(https://docs.aws.amazon.com/eventbridge/latest/userguide/event-delivery-level.html), and each pipeline execution
creates a paid customization job named after its own execution ARN. So the upload rule does not start the pipeline
itself but this small Express state machine, which starts it under a name derived from the upload:

    S3 "Object Created" (jobs/*.json) ──► rule ──► starter (Express)
        (undelivered after EventBridge's retries ──► the teardown backstop's alarmed dead-letter queue)
        HasSequencer? ──► NameByUpload: upload- + SHA-256 of bucket/key/sequencer
                     └──► NameByExecution (no sequencer): upload- + SHA-256 of the starter's execution ARN
        HasVersion? ──► the upload's version-id too (a versioned bucket's event carries it)
        StartPipeline (states:startExecution, input: the bucket, the key and the version only)
            duplicate (StepFunctions.ExecutionAlreadyExistsException) ──► AlreadyStarted (succeeds quietly)
            other errors, after retries ──► dead letter (the teardown backstop's alarmed queue) ──► notify
                ──► CouldNotStart

A STANDARD execution's name is unique per state machine for 90 days after it closes; StartExecution with the name
and the input of a running execution returns that execution, and with the name of a closed one (or other input)
fails with ExecutionAlreadyExists
(https://docs.aws.amazon.com/step-functions/latest/apireference/API_StartExecution.html). The sequencer changes with
every PUT of a key and a redelivered event keeps it
(https://docs.aws.amazon.com/AmazonS3/latest/userguide/ev-events.html), so a redelivery finds its run and an upload
of the same key again starts a new one. The input holds only what the pipeline reads from an S3 event
(``RequestFromFile?`` and ``ReadJobRequest``: the bucket name, the key and the upload's version), never the event's
id or time, which a redelivery changes: the same upload always sends the same input.
"""

from __future__ import annotations

import hashlib
from typing import Any

from aws_cdk import Duration
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sqs as sqs
from aws_cdk import aws_stepfunctions as sfn
from aws_cdk import aws_stepfunctions_tasks as tasks
from constructs import Construct

from stacks.level3_finetune.pipeline import UPLOAD_VERSION_FIELD, UPLOAD_VERSION_PATH, notification
from stacks.shared.deployment import Deployment
from stacks.shared.failures import reported_fail
from stacks.shared.stage import state_machine_log_group

# What the pipeline's executions started from an upload are named: this prefix and 64 hex digits, 71 characters of
# the 80 a name may have (botocore's StartExecution.name); letters, digits and '-' only, which CloudWatch Logs also
# needs (API_StartExecution.html).
UPLOAD_EXECUTION_PREFIX = "upload-"
UPLOAD_NAME_HASH = "SHA-256"
# The error the optimized states:startExecution integration raises for StartExecution's ExecutionAlreadyExists:
# the "StepFunctions." prefix of the optimized integration, not the "Sfn." of aws-sdk:sfn. No AWS page names it;
# public code catches it as below, and the code without the "Exception" suffix is caught too, so that a duplicate
# is never retried and reported as a failed start, whichever spelling the service uses.
DUPLICATE = "StepFunctions.ExecutionAlreadyExistsException"
DUPLICATE_ERRORS = [DUPLICATE, "StepFunctions.ExecutionAlreadyExists"]
START_RETRY_INTERVAL = Duration.seconds(2)
START_RETRY_ATTEMPTS = 5  # 2 to 32 s apart: about a minute, throttling and transient errors
# The dead letter of a start that kept failing: sent with retries 2, 4 and 8 s apart, well within the Express limit.
DEAD_LETTER_RETRY_INTERVAL = Duration.seconds(2)
DEAD_LETTER_RETRY_ATTEMPTS = 3
# What the dead letter's outcome says, so that its reader (and the queue's alarm) can tell it from an event
# EventBridge could not deliver.
NOT_STARTED = "not started: the uploaded job request did not start the pipeline; upload it again, then delete this"
# An Express execution runs for at most five minutes
# (https://docs.aws.amazon.com/step-functions/latest/dg/choosing-workflow-type.html).
STARTER_TIMEOUT = Duration.minutes(5)
# The upload rule's retry policy: EventBridge's longest (24 hours, 185 attempts; its default, set so it stays).
# A late start is harmless, as the run's name is the upload's; an event still undelivered then, or refused at
# once (no permission, no target), goes to the dead-letter queue and raises its alarm instead of being dropped
# (https://docs.aws.amazon.com/eventbridge/latest/userguide/eb-rule-dlq.html).
UPLOAD_EVENT_MAX_AGE = Duration.hours(24)
UPLOAD_EVENT_RETRIES = 185

_BUCKET, _KEY, _SEQUENCER = "$.detail.bucket.name", "$.detail.object.key", "$.detail.object.sequencer"
# The version the upload created: a versioned bucket's Object Created event carries it
# (https://docs.aws.amazon.com/AmazonS3/latest/userguide/ev-events.html), and a redelivery keeps it. The run reads
# that version, not whatever the key holds when it gets there: S3 "returns the current version of an object" to a
# GET without one (https://docs.aws.amazon.com/AmazonS3/latest/userguide/RetrievingObjectsfromVersioningSuspendedBuckets.html),
# so two uploads of one key in quick succession would otherwise both run the second request.
_VERSION = UPLOAD_VERSION_PATH


def upload_execution_name(bucket: str, key: str, sequencer: str) -> str:
    """The name the starter gives the pipeline execution of this upload, as States.Hash computes it (lowercase hex,
    https://docs.aws.amazon.com/step-functions/latest/dg/intrinsic-functions.html). A bucket name and a sequencer
    hold no '/', so bucket/key/sequencer names one upload whatever its key."""
    digest = hashlib.new(UPLOAD_NAME_HASH.replace("-", "").lower(), f"{bucket}/{key}/{sequencer}".encode())
    return f"{UPLOAD_EXECUTION_PREFIX}{digest.hexdigest()}"


def _named(data: str) -> str:
    return sfn.JsonPath.format(f"{UPLOAD_EXECUTION_PREFIX}{{}}", sfn.JsonPath.hash(data, UPLOAD_NAME_HASH))


class UploadStarter(Construct):
    """The Express state machine the job-request rule targets: it starts ``pipeline`` once per upload."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        deployment: Deployment,
        pipeline: sfn.StateMachine,
        topic: sns.ITopic,
        dead_letters: sqs.IQueue,
    ) -> None:
        super().__init__(scope, construct_id)
        # The run's name goes under $.run, so the event stays for what follows.
        by_upload = sfn.Pass(
            self,
            "NameByUpload",
            parameters={
                "name": _named(
                    sfn.JsonPath.format(
                        "{}/{}/{}",
                        sfn.JsonPath.string_at(_BUCKET),
                        sfn.JsonPath.string_at(_KEY),
                        sfn.JsonPath.string_at(_SEQUENCER),
                    )
                ),
            },
            result_path="$.run",
        )
        # S3 documents a sequencer in every Object Created event; without one, one run per start (as before).
        by_execution = sfn.Pass(
            self,
            "NameByExecution",
            parameters={"name": _named(sfn.JsonPath.string_at("$$.Execution.Id"))},
            result_path="$.run",
        )

        def started_with(state_id: str, obj: dict[str, Any]) -> sfn.Pass:
            """The run's name, and its input: what the pipeline reads of an S3 event, nothing else (the same input
            for every delivery)."""
            return sfn.Pass(
                self,
                state_id,
                parameters={
                    "name": sfn.JsonPath.string_at("$.run.name"),
                    "bucket": sfn.JsonPath.string_at(_BUCKET),
                    "key": sfn.JsonPath.string_at(_KEY),
                    "input": {
                        "detail": {
                            "bucket": {"name": sfn.JsonPath.string_at(_BUCKET)},
                            "object": {"key": sfn.JsonPath.string_at(_KEY), **obj},
                        }
                    },
                },
            )

        of_version = started_with("OfItsVersion", {UPLOAD_VERSION_FIELD: sfn.JsonPath.string_at(_VERSION)})
        of_key = started_with("OfItsKey", {})
        start = tasks.StepFunctionsStartExecution(
            self,
            "StartPipeline",
            state_machine=pipeline,
            integration_pattern=sfn.IntegrationPattern.REQUEST_RESPONSE,
            name=sfn.JsonPath.string_at("$.name"),
            # No parent association, which would add this starter's execution id to the input.
            input=sfn.TaskInput.from_json_path_at("$.input"),
            associate_with_parent=False,
            result_path="$.started",
        )
        # A duplicate is not retried; anything else is, and a retry of a start that did land returns that run.
        start.add_retry(errors=DUPLICATE_ERRORS, max_attempts=0)
        start.add_retry(
            errors=["States.ALL"], interval=START_RETRY_INTERVAL, max_attempts=START_RETRY_ATTEMPTS, backoff_rate=2.0
        )
        already = sfn.Succeed(self, "AlreadyStarted", comment="A redelivered event: its upload's run exists")
        start.add_catch(already, errors=DUPLICATE_ERRORS, result_path="$.duplicate")
        not_started = notification(
            self,
            "NotifyNotStarted",
            topic,
            {
                "outcome": "failed: the uploaded job request did not start the pipeline; upload it again",
                "execution": sfn.JsonPath.string_at("$$.Execution.Id"),
                "request": {"bucket": sfn.JsonPath.string_at("$.bucket"), "key": sfn.JsonPath.string_at("$.key")},
                "detail": sfn.JsonPath.object_at("$.error"),
            },
            reported_fail(
                self,
                "CouldNotStart",
                error="PipelineNotStarted",
                summary="The uploaded job request did not start the pipeline; upload it again",
                details=["$.error"],
            ),
        )
        # A start that kept failing is kept in the alarmed dead-letter queue, not only notified: the topic has no
        # subscriber until alarm_email is set and keeps nothing, and an Express execution keeps no history
        # (https://docs.aws.amazon.com/step-functions/latest/dg/choosing-workflow-type.html).
        dead_letter = tasks.SqsSendMessage(
            self,
            "DeadLetterNotStarted",
            queue=dead_letters,
            message_body=sfn.TaskInput.from_object(
                {
                    "outcome": NOT_STARTED,
                    "starter": sfn.JsonPath.string_at("$$.Execution.Id"),
                    "request": {"bucket": sfn.JsonPath.string_at("$.bucket"), "key": sfn.JsonPath.string_at("$.key")},
                    "pipelineExecutionName": sfn.JsonPath.string_at("$.name"),
                    "pipelineInput": sfn.JsonPath.object_at("$.input"),
                    "error": sfn.JsonPath.object_at("$.error"),
                }
            ),
            result_path=sfn.JsonPath.DISCARD,
        )
        dead_letter.add_retry(
            errors=["States.ALL"],
            interval=DEAD_LETTER_RETRY_INTERVAL,
            max_attempts=DEAD_LETTER_RETRY_ATTEMPTS,
            backoff_rate=2.0,
        )
        # A queue that stays unreachable still leaves the notification and the failed end.
        dead_letter.add_catch(not_started, errors=["States.ALL"], result_path="$.deadLetterError")
        dead_letter.next(not_started)
        start.add_catch(dead_letter, errors=["States.ALL"], result_path="$.error")
        start.next(sfn.Succeed(self, "Started"))
        version = sfn.Choice(self, "HasVersion?").when(sfn.Condition.is_present(_VERSION), of_version).otherwise(of_key)
        of_version.next(start)
        of_key.next(start)
        by_upload.next(version)
        by_execution.next(version)
        definition = (
            sfn.Choice(self, "HasSequencer?")
            .when(
                sfn.Condition.and_(
                    sfn.Condition.is_present(_BUCKET),
                    sfn.Condition.is_present(_KEY),
                    sfn.Condition.is_present(_SEQUENCER),
                ),
                by_upload,
            )
            .when(sfn.Condition.and_(sfn.Condition.is_present(_BUCKET), sfn.Condition.is_present(_KEY)), by_execution)
            .otherwise(sfn.Fail(self, "NotAnUpload", error="NotAnUploadEvent", cause="No S3 bucket name and key"))
        )
        self.logs = state_machine_log_group(self, "Logs", deployment, deployment.resource_name("finetune-start"))
        self.state_machine = sfn.StateMachine(
            self,
            "StateMachine",
            state_machine_name=deployment.resource_name("finetune-start"),
            state_machine_type=sfn.StateMachineType.EXPRESS,
            definition_body=sfn.DefinitionBody.from_chainable(definition),
            timeout=STARTER_TIMEOUT,
            tracing_enabled=True,
            logs=sfn.LogOptions(destination=self.logs, level=sfn.LogLevel.ALL, include_execution_data=False),
        )
