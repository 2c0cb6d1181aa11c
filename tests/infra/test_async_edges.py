"""Every asynchronous edge keeps what it cannot deliver, and says so: over every synthesized variant.

EventBridge drops an event it could not deliver after its retries, or at once for an error such as a missing
permission, unless the target has a dead-letter queue
(https://docs.aws.amazon.com/eventbridge/latest/userguide/eb-rule-retry-policy.html); EventBridge Scheduler does the
same for a schedule's target (https://docs.aws.amazon.com/scheduler/latest/UserGuide/configuring-schedule-dlq.html).
A dead letter no alarm watches is as silent as a dropped event.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from tests.infra.helpers import as_list, resources


def _queue_id(arn: Any) -> str | None:
    """The logical id of a queue of the template that ``arn`` names (``Fn::GetAtt [id, Arn]``)."""
    if isinstance(arn, dict) and "Fn::GetAtt" in arn and arn["Fn::GetAtt"][1] == "Arn":
        return str(arn["Fn::GetAtt"][0])
    return None


def _targets(template: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """(rule or schedule id, its type, target) for every EventBridge rule target and Scheduler schedule target."""
    for rule_id, rule in resources(template, "AWS::Events::Rule").items():
        for target in rule["Properties"].get("Targets", []):
            yield rule_id, "AWS::Events::Rule", target
    for schedule_id, schedule in resources(template, "AWS::Scheduler::Schedule").items():
        yield schedule_id, "AWS::Scheduler::Schedule", schedule["Properties"]["Target"]


def _dead_letter_queues(template: dict[str, Any]) -> dict[str, str]:
    """Every queue something dead-letters into: a rule or schedule target's DeadLetterConfig, a queue's redrive
    policy, a Lambda function's on-failure destination; logical id -> what sends to it."""
    found: dict[str, str] = {}
    for owner, _, target in _targets(template):
        if (queue := _queue_id(target.get("DeadLetterConfig", {}).get("Arn"))) is not None:
            found.setdefault(queue, owner)
    for queue_id, queue in resources(template, "AWS::SQS::Queue").items():
        redrive = queue["Properties"].get("RedrivePolicy") or {}
        if (dead := _queue_id(redrive.get("deadLetterTargetArn"))) is not None:
            found.setdefault(dead, queue_id)
    for config_id, config in resources(template, "AWS::Lambda::EventInvokeConfig").items():
        on_failure = config["Properties"].get("DestinationConfig", {}).get("OnFailure", {})
        if (queue := _queue_id(on_failure.get("Destination"))) is not None:
            found.setdefault(queue, config_id)
    return found


def test_every_rule_and_schedule_target_has_a_dead_letter_queue(each_stage: Any) -> None:
    """Before: the four notification rules (L3 job state, L3 SageMaker, L4 cluster health, L4 training jobs) and the
    Level 2 sync and reconcile schedules had none: an event they could not deliver was dropped without a trace."""
    missing = [
        f"{stack_id}/{owner} ({kind}) target {target.get('Id', '')}"
        for stack_id, template in each_stage.templates.items()
        for owner, kind, target in _targets(template)
        if _queue_id(target.get("DeadLetterConfig", {}).get("Arn")) is None
    ]
    assert missing == []


# The one dead-letter queue no alarm watches, by stack and construct id: Level 4's jobs stack costs nothing while idle
# (CloudWatch bills each alarm monthly), and each run's outcome is also published by its state machine, so only the
# progress messages of the job-state rule wait there unannounced (stacks/level4_pretrain/stack.py).
UNALARMED = {("GenAiKit-4-Pretrain-Jobs", "TrainingJobStateChangeDeadLetters")}


def test_every_dead_letter_queue_raises_an_alarm_that_notifies(each_stage: Any) -> None:
    """An alarm on the queue's visible messages (what a dead letter is, however it arrived), with an action on ALARM
    and on OK, and which keeps its state while SQS sends no data for an idle queue (stacks/shared/alarms.py)."""
    unwatched, exempt = [], set()
    for stack_id, template in each_stage.templates.items():
        alarms = resources(template, "AWS::CloudWatch::Alarm").values()
        for queue_id, sender in sorted(_dead_letter_queues(template).items()):
            if any(stack_id == stack and queue_id.startswith(construct) for stack, construct in UNALARMED):
                exempt.add((stack_id, queue_id))
                continue
            watching = [
                alarm["Properties"]
                for alarm in alarms
                if alarm["Properties"].get("Namespace") == "AWS/SQS"
                and alarm["Properties"].get("MetricName") == "ApproximateNumberOfMessagesVisible"
                and alarm["Properties"].get("Dimensions")
                == [{"Name": "QueueName", "Value": {"Fn::GetAtt": [queue_id, "QueueName"]}}]
                and alarm["Properties"].get("AlarmActions")
                and alarm["Properties"].get("OKActions")
                and alarm["Properties"].get("TreatMissingData") == "ignore"
                and alarm["Properties"].get("Threshold") == 1
            ]
            if not watching:
                unwatched.append(f"{stack_id}/{queue_id} (dead letters of {sender})")
    assert unwatched == []
    assert len(exempt) == len(UNALARMED)  # each exemption still names a real queue


def test_eventbridge_may_write_to_each_rule_targets_dead_letter_queue(each_stage: Any) -> None:
    """EventBridge sends a rule's dead letters with the queue policy (events.amazonaws.com, aws:SourceArn = the rule)
    and cannot use the AWS managed aws/sqs key, so the queue uses SSE-SQS
    (https://docs.aws.amazon.com/eventbridge/latest/userguide/eb-rule-dlq.html)."""
    problems = []
    for stack_id, template in each_stage.templates.items():
        allowed: dict[str, list[Any]] = {}
        for policy in resources(template, "AWS::SQS::QueuePolicy").values():
            for queue in policy["Properties"]["Queues"]:
                for statement in policy["Properties"]["PolicyDocument"]["Statement"]:
                    principal = statement.get("Principal", {})
                    if statement["Effect"] == "Allow" and principal == {"Service": "events.amazonaws.com"}:
                        assert "sqs:SendMessage" in as_list(statement["Action"]), statement
                        source = statement.get("Condition", {}).get("ArnEquals", {}).get("aws:SourceArn")
                        allowed.setdefault(json.dumps(queue, sort_keys=True), []).append(source)
        for rule_id, kind, target in _targets(template):
            queue_id = _queue_id(target.get("DeadLetterConfig", {}).get("Arn"))
            if kind != "AWS::Events::Rule" or queue_id is None:
                continue
            queue = template["Resources"][queue_id]["Properties"]
            if queue.get("SqsManagedSseEnabled") is not True or "KmsMasterKeyId" in queue:
                problems.append(f"{stack_id}/{queue_id}: not SSE-SQS")
            sources = allowed.get(json.dumps({"Ref": queue_id}, sort_keys=True), [])
            if {"Fn::GetAtt": [rule_id, "Arn"]} not in sources:
                problems.append(f"{stack_id}/{queue_id}: no queue policy statement for {rule_id}")
    assert problems == []


def test_a_dead_letter_queue_keeps_messages_longer_than_its_source_queue(each_stage: Any) -> None:
    """SQS expires a dead letter by its original enqueue time, so AWS advises a dead-letter queue whose retention is
    longer than its source queue's
    (https://docs.aws.amazon.com/AWSSimpleQueueService/latest/SQSDeveloperGuide/setting-up-dead-letter-queue-retention.html).
    Before: Level 2's change queue and its dead-letter queue both kept 14 days, so a change that waited long in the
    first expired in the second almost at once. SQS's default retention is 4 days (345,600 s)."""
    default = 345_600
    redriven = []
    for stack_id, template in each_stage.templates.items():
        for queue_id, queue in resources(template, "AWS::SQS::Queue").items():
            redrive = queue["Properties"].get("RedrivePolicy") or {}
            if (dead := _queue_id(redrive.get("deadLetterTargetArn"))) is None:
                continue
            kept = queue["Properties"].get("MessageRetentionPeriod", default)
            dead_kept = template["Resources"][dead]["Properties"].get("MessageRetentionPeriod", default)
            redriven.append((f"{stack_id}/{queue_id}", kept, dead_kept))
    assert redriven, "every variant has a queue that redrives (Level 2's change queue)"
    assert [name for name, kept, dead_kept in redriven if dead_kept <= kept] == []
