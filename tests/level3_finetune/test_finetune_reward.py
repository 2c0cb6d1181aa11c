"""The sample RFT grader: the documented request and response shape, and scores for checkable answers."""

from __future__ import annotations

import json
from typing import Any

import pytest

from finetune_reward import handler
from finetune_validate import formats
from finetune_validate.validator import validate_dataset

from .finetune_data import SAMPLE_DIRS


def sample(answer: Any, reference: Any, sample_id: str = "s-1") -> dict[str, Any]:
    """A sample as Bedrock sends it: the prompt, the generated response appended as the assistant turn, an id, and
    the record's reference_answer inside metadata ("Input structure",
    https://docs.aws.amazon.com/bedrock/latest/userguide/reward-functions.html)."""
    return {
        "id": sample_id,
        "messages": [
            {"role": "system", "content": "Answer with the result only."},
            {"role": "user", "content": "Solve: 2x + 5 = 13"},
            {"role": "assistant", "content": answer},
        ],
        "metadata": {"reference_answer": reference},
    }


def bedrock_payload(record: dict[str, Any], response: str, sample_id: str) -> dict[str, Any]:
    """What Bedrock sends the grader for one dataset record: the response appended to the record's messages, and
    the record's other fields (reference_answer among them) in metadata (reward-functions.html)."""
    fields = {key: value for key, value in record.items() if key != "messages"}
    messages = [*record["messages"], {"role": "assistant", "content": response}]
    return {"id": sample_id, "messages": messages, "metadata": fields}


@pytest.mark.parametrize(
    ("answer", "reference", "score"),
    [
        ("x = 4", 4, 1.0),
        ("The answer is 4.000000001", "4", 1.0),  # within the numeric tolerance
        ("x = 5", 4, 0.0),
        ("So x = 4", {"x": 4}, 1.0),
        ("1,234.5 total", 1234.5, 1.0),
        ("Paris", "paris.", 1.0),  # case and punctuation folded
        ("I think it is Paris, France.", "Paris", 0.5),  # contained, not the answer itself
        ("Lyon", "Paris", 0.0),
        ("x = 4, y = 7", {"x": 4, "y": 2}, 0.5),  # half of the fields
        ([{"type": "text", "text": "x = 4"}], 4, 1.0),  # content as a list of text parts
        # Hedging earns nothing: a number is scored as the response's final one, not any number it lists...
        ("Try 4. Actually 7", 4, 0.0),
        ("4, no wait, 5", "4", 0.0),
        # ...and partial credit needs the expected text as whole words, not inside another word.
        ("Parisian cuisine", "Paris", 0.0),
    ],
)
def test_checkable_answers_are_scored_against_the_reference(answer: Any, reference: Any, score: float) -> None:
    [result] = handler.handler([sample(answer, reference)], None)
    assert result["id"] == "s-1"
    assert result["aggregate_reward_score"] == pytest.approx(score)


def test_the_response_has_the_documented_shape_one_result_per_sample_in_order() -> None:
    results = handler.handler([sample("4", 4, "a"), sample("5", 4, "b")], None)
    assert [r["id"] for r in results] == ["a", "b"]
    for result in results:
        assert set(result) == {"id", "aggregate_reward_score", "metrics_list"}
        assert all(set(m) == {"name", "value", "type"} for m in result["metrics_list"])
        assert {m["type"] for m in result["metrics_list"]} <= {"Reward", "Metric"}


@pytest.mark.parametrize(
    "bad",
    [
        {"id": "x", "messages": [{"role": "user", "content": "q"}], "metadata": {"reference_answer": 4}},  # no response
        {"id": "x", "messages": [{"role": "assistant", "content": "4"}]},  # no reference_answer
        {"id": "x", "messages": [{"role": "assistant", "content": "4"}], "metadata": {"task": "t"}},
        {"id": "x", "messages": [{"role": "assistant", "content": "4"}], "metadata": "not an object"},
        {"id": "x", "messages": "not a list", "reference_answer": 4},
        "not an object",
    ],
)
def test_an_unreadable_sample_scores_zero_without_failing_the_batch(bad: Any) -> None:
    results = handler.handler([bad, sample("4", 4)], None)
    assert [r["aggregate_reward_score"] for r in results] == [0.0, 1.0]
    assert {"name": "readable", "value": 0.0, "type": "Metric"} in results[0]["metrics_list"]


BIG = 10**400  # past float's range: float(BIG) raises OverflowError


@pytest.mark.parametrize(
    ("answer", "reference", "score"),
    [
        (str(BIG), BIG, 1.0),  # an integer answer too big for a float is compared by its digits
        ("0", BIG, 0.0),
        (str(BIG + 1), BIG, 0.0),  # as floats both would be inf, and "close"
        ("1e309", BIG, 0.0),
        ("9" * 500, BIG, 0.0),
        (f"{BIG:,}", BIG, 1.0),  # thousands separators, as for other numbers
        (f"x = {BIG}, y = 1", {"x": BIG, "y": 1}, 1.0),  # a field is found anywhere in the response
    ],
    ids=["its-digits", "another-answer", "one-more", "inf-written", "other-digits", "separators", "object-fields"],
)
def test_an_integer_reference_past_float_range_is_scored_and_fails_nothing(
    answer: str, reference: Any, score: float
) -> None:
    """Before: OverflowError from math.isfinite, and no score for any sample of the batch."""
    results = handler.handler([sample(answer, reference), sample("4", 4)], None)
    assert [r["aggregate_reward_score"] for r in results] == [score, 1.0]


def test_a_sample_the_grader_cannot_score_scores_zero_and_the_batch_goes_on(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(sample: Any) -> dict[str, Any]:
        if sample["id"] == "bad":
            raise RuntimeError("a grader bug")
        return real(sample)

    real = handler.score_sample
    monkeypatch.setattr(handler, "score_sample", broken)
    results = handler.handler([sample("4", 4, "bad"), sample("4", 4, "good")], None)
    assert [(r["id"], r["aggregate_reward_score"]) for r in results] == [("bad", 0.0), ("good", 1.0)]
    assert {"name": "readable", "value": 0.0, "type": "Metric"} in results[0]["metrics_list"]


def test_a_single_sample_object_is_scored_as_a_batch_of_one() -> None:
    assert handler.handler(sample("4", 4), None)[0]["aggregate_reward_score"] == 1.0


def test_the_documented_bedrock_payload_is_read_from_metadata() -> None:
    """The "Input structure" example of reward-functions.html, as given: reference_answer (and the record's other
    fields) under metadata, nothing at the top level."""
    documented = [
        {
            "id": "123",
            "messages": [
                {"role": "user", "content": "Do you have a dedicated security team?"},
                {
                    "role": "assistant",
                    "content": "As an AI developed by Amazon, I don not have a dedicated security team...",
                },
            ],
            "metadata": {
                "reference_answer": {
                    "compliant": "No",
                    "explanation": "As an AI developed by Company, I do not have a traditional security team...",
                },
                "my_key": "sample-001",
            },
        }
    ]
    [result] = handler.handler(documented, None)
    assert result["id"] == "123"
    assert {m["name"] for m in result["metrics_list"]} == {"fields_matched", "all_fields"}  # the reference was read
    answer = json.loads(json.dumps(documented))
    answer[0]["messages"][1]["content"] = "No"
    answer[0]["metadata"]["reference_answer"] = {"compliant": "No"}
    assert handler.handler(answer, None)[0]["aggregate_reward_score"] == 1.0


def test_a_top_level_reference_answer_is_read_when_metadata_has_none() -> None:
    """The SageMaker Nova recipes' payload (nova-implementing-reward-functions.html) puts it at the top level."""
    recipe = {
        "id": "r",
        "messages": [{"role": "user", "content": "2 + 2?"}, {"role": "assistant", "content": "4"}],
        "reference_answer": 4,
    }
    assert handler.handler([recipe], None)[0]["aggregate_reward_score"] == 1.0
    both = {**recipe, "metadata": {"reference_answer": 5}}
    assert handler.handler([both], None)[0]["aggregate_reward_score"] == 0.0  # metadata (Bedrock's) wins


def test_the_kits_rft_sample_passes_the_validator_and_its_references_reach_the_grader() -> None:
    """The validator and the grader agree: every record the validator accepts, sent on as Bedrock documents it,
    scores 1.0 for its reference answer and 0.0 for a wrong one."""
    path, model = SAMPLE_DIRS[formats.REINFORCEMENT_FINE_TUNING]
    report = validate_dataset(
        [path.read_bytes()], base_model_id=model, customization_type=formats.REINFORCEMENT_FINE_TUNING
    )
    assert report["valid"], report
    records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    right = [bedrock_payload(r, f"{r['reference_answer']}", f"ok-{i}") for i, r in enumerate(records)]
    wrong = [bedrock_payload(r, "I cannot tell.", f"no-{i}") for i, r in enumerate(records)]
    assert {r["aggregate_reward_score"] for r in handler.handler(right, None)} == {1.0}
    assert {r["aggregate_reward_score"] for r in handler.handler(wrong, None)} == {0.0}


def test_a_multi_turn_sample_is_graded_on_its_last_assistant_message() -> None:
    """Bedrock appends the generated response as the last assistant message (reward-functions.html); an earlier
    assistant turn is part of the prompt, not the answer."""
    multi_turn = {
        "id": "s-1",
        "messages": [
            {"role": "user", "content": "Solve: x + 1 = 8"},
            {"role": "assistant", "content": "7"},
            {"role": "user", "content": "Now solve: 2x + 5 = 13"},
            {"role": "assistant", "content": "4"},
        ],
        "metadata": {"reference_answer": 4},
    }
    [result] = handler.handler([multi_turn], None)
    assert result["aggregate_reward_score"] == 1.0


@pytest.mark.parametrize(
    ("answer", "reference"),
    [
        ("0", 0),  # a falsy reference is still a reference
        ("true", True),  # a boolean is compared as its text, not as the number 1
        ("3, 4", "3, 4"),  # a reference holding two numbers is text, not its first number
        ("Let me think.\nParis", "Paris"),  # the final line is the answer
    ],
)
def test_references_that_are_not_a_single_plain_number_score_a_matching_answer_in_full(
    answer: str, reference: Any
) -> None:
    [result] = handler.handler([sample(answer, reference)], None)
    assert result["aggregate_reward_score"] == 1.0
