"""The sample RFT grader: the documented request and response shape, and scores for checkable answers."""

from __future__ import annotations

from typing import Any

import pytest

from finetune_reward import handler


def sample(answer: Any, reference: Any, sample_id: str = "s-1") -> dict[str, Any]:
    """A sample as Bedrock sends it: the prompt, the generated response appended as the assistant turn, an id."""
    return {
        "id": sample_id,
        "messages": [
            {"role": "system", "content": "Answer with the result only."},
            {"role": "user", "content": "Solve: 2x + 5 = 13"},
            {"role": "assistant", "content": answer},
        ],
        "reference_answer": reference,
    }


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
        {"id": "x", "messages": [{"role": "user", "content": "q"}], "reference_answer": 4},  # no response
        {"id": "x", "messages": [{"role": "assistant", "content": "4"}]},  # no reference_answer
        {"id": "x", "messages": "not a list", "reference_answer": 4},
        "not an object",
    ],
)
def test_an_unreadable_sample_scores_zero_without_failing_the_batch(bad: Any) -> None:
    results = handler.handler([bad, sample("4", 4)], None)
    assert [r["aggregate_reward_score"] for r in results] == [0.0, 1.0]
    assert {"name": "readable", "value": 0.0, "type": "Metric"} in results[0]["metrics_list"]


def test_a_single_sample_object_is_scored_as_a_batch_of_one() -> None:
    assert handler.handler(sample("4", 4), None)[0]["aggregate_reward_score"] == 1.0
