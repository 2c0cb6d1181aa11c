"""Lambda entry point of the sample RFT grader (``finetune_reward.handler.handler``).

Bedrock's reinforcement fine-tuning generates responses to each training prompt, appends each as the last
``assistant`` message and calls this function with a list of samples; it returns one score per sample. Bedrock
passes the record's ``reference_answer`` and its other fields inside ``metadata`` ("Input structure" on
https://docs.aws.amazon.com/bedrock/latest/userguide/reward-functions.html; AWS's sample grader
aws-samples/amazon-bedrock-samples .../reward-functions/gsm8k_rew_func.py reads it there)::

    in:  [{"id": str, "messages": [{"role": "system" | "user" | "assistant", "content": str | [parts]}, ...],
           "metadata": {"reference_answer": any, <the record's other fields>...}}, ...]
    out: [{"id": str, "aggregate_reward_score": float,
           "metrics_list": [{"name": str, "value": float, "type": "Reward" | "Metric"}, ...]}, ...]

The Nova RFT recipes on SageMaker send ``reference_answer`` at the top level of the sample instead
(https://docs.aws.amazon.com/nova/latest/nova2-userguide/nova-implementing-reward-functions.html); that shape is
read when a sample has no ``metadata.reference_answer``.

It grades answers that can be checked against the record's ``reference_answer``:

- a number (or a string or object holding one, e.g. ``{"x": 4}``): 1.0 when the response's final number is
  within ``NUMERIC_TOLERANCE`` (relative, or absolute near zero) of it;
- text: 1.0 for the normalized reference (case, punctuation and spaces folded) equal to the normalized
  response or to its final line, 0.5 when the response contains it, else 0.0;
- an object: the share of its fields whose value the response holds (a number anywhere in it, text as above).

A sample it cannot read scores 0.0 with a ``readable`` metric of 0, never an error: one bad sample must not fail
the training batch. Subjective criteria need a judge model instead (the docs' model-as-judge option).
"""

from __future__ import annotations

import math
import re
import unicodedata
from typing import Any

from aws_lambda_powertools import Logger

logger = Logger()

NUMERIC_TOLERANCE = 1e-6
ABSOLUTE_TOLERANCE = 1e-9
PARTIAL_CREDIT = 0.5
_NUMBER = re.compile(r"[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)?(?:\.\d+)?(?:[eE][-+]?\d+)?")
_PUNCTUATION = re.compile(r"[^\w\s]")
_SPACES = re.compile(r"\s+")


def normalize(text: str) -> str:
    """Lower case, punctuation dropped, runs of white space as one space (Unicode-compatible forms first)."""
    folded = unicodedata.normalize("NFKC", text).casefold()
    return _SPACES.sub(" ", _PUNCTUATION.sub(" ", folded)).strip()


def number_tokens(text: str) -> list[str]:
    """Every number written in the text, in order, as written less its thousands separators."""
    return [token.replace(",", "") for token in _NUMBER.findall(text) if any(ch.isdigit() for ch in token)]


def numbers_in(text: str) -> list[float]:
    """Every number written in the text, in order (thousands separators allowed)."""
    found = []
    for token in number_tokens(text):
        try:
            found.append(float(token))
        except ValueError:
            continue
    return found


def as_number(value: Any) -> float | None:
    """The reference as a number: a JSON number, or a string that is exactly one number."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        try:
            number = float(value)
        except OverflowError:  # an integer past float's range (a factorial, say): compared as text instead
            return None
        return number if math.isfinite(number) else None
    if isinstance(value, str):
        numbers = numbers_in(value)
        if len(numbers) == 1 and normalize(_NUMBER.sub("", value)) == "" and math.isfinite(numbers[0]):
            return numbers[0]
    return None


def close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=NUMERIC_TOLERANCE, abs_tol=ABSOLUTE_TOLERANCE)


def response_text(sample: dict[str, Any]) -> str | None:
    """The text of the last assistant message: a string, or the text parts of a content list."""
    messages = sample.get("messages")
    if not isinstance(messages, list):
        return None
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role") == "assistant":
            content = message.get("content")
            if isinstance(content, str):
                return content
            if isinstance(content, list):
                parts = [p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str)]
                return "\n".join(str(part) for part in parts)
            return None
    return None


def score_value(reference: Any, response: str, anywhere: bool = False) -> float:
    """1.0, PARTIAL_CREDIT or 0.0 for one expected value against the response: a number must be the response's
    final number (or, for one field of an object, ``anywhere``: any number it writes)."""
    number = as_number(reference)
    if number is not None:
        numbers = numbers_in(response)
        candidates = numbers if anywhere else numbers[-1:]
        return 1.0 if any(close(found, number) for found in candidates) else 0.0
    if isinstance(reference, str):
        expected = normalize(reference)
        if not expected:
            return 0.0
        got = normalize(response)
        lines = [normalize(line) for line in response.strip().splitlines() if line.strip()]
        if got == expected or (lines and lines[-1] == expected):
            return 1.0
        return PARTIAL_CREDIT if f" {expected} " in f" {got} " else 0.0
    if isinstance(reference, bool):
        return score_value("true" if reference else "false", response)
    if isinstance(reference, int):  # past float's range (as_number gave None): compared digit for digit
        try:
            expected = str(reference)
        except ValueError:  # over Python's 4,300-digit limit for int-to-text conversion
            return 0.0
        written = [token.lstrip("+") for token in number_tokens(response)]
        return 1.0 if expected in (written if anywhere else written[-1:]) else 0.0
    return 0.0


def reference_answer(sample: dict[str, Any]) -> Any:
    """The sample's reference answer: ``metadata.reference_answer`` (Bedrock), else ``reference_answer`` (the
    SageMaker recipes' shape); None when neither is there."""
    metadata = sample.get("metadata")
    if isinstance(metadata, dict) and metadata.get("reference_answer") is not None:
        return metadata["reference_answer"]
    return sample.get("reference_answer")


def score_sample(sample: Any) -> dict[str, Any]:
    """The documented per-sample result for one sample."""
    sample_id = str(sample.get("id", "")) if isinstance(sample, dict) else ""
    response = response_text(sample) if isinstance(sample, dict) else None
    reference = reference_answer(sample) if isinstance(sample, dict) else None
    if response is None or reference is None:
        return _result(sample_id, 0.0, [("readable", 0.0, "Metric")])
    if isinstance(reference, dict) and reference:
        fields = [score_value(value, response, anywhere=True) for value in reference.values()]
        score = sum(fields) / len(fields)
        exact = float(all(value == 1.0 for value in fields))
        return _result(sample_id, score, [("fields_matched", score, "Reward"), ("all_fields", exact, "Metric")])
    score = score_value(reference, response)
    return _result(sample_id, score, [("answer_match", score, "Reward"), ("readable", 1.0, "Metric")])


def _result(sample_id: str, score: float, metrics: list[tuple[str, float, str]]) -> dict[str, Any]:
    return {
        "id": sample_id,
        "aggregate_reward_score": score,
        "metrics_list": [{"name": name, "value": value, "type": kind} for name, value, kind in metrics],
    }


def _scored(sample: Any) -> dict[str, Any]:
    """score_sample, with a sample it cannot score (a bug the samples tried did not show) scored 0 as unreadable,
    so that one sample never fails the training batch."""
    try:
        return score_sample(sample)
    except Exception:
        logger.exception("Could not score a sample")
        sample_id = str(sample.get("id", "")) if isinstance(sample, dict) else ""
        return _result(sample_id, 0.0, [("readable", 0.0, "Metric")])


def handler(event: Any, context: Any) -> list[dict[str, Any]]:
    """Score a batch of samples (a list; a single sample object is scored as a batch of one)."""
    samples = event if isinstance(event, list) else [event]
    results = [_scored(sample) for sample in samples]
    logger.info(
        "Scored samples",
        extra={
            "samples": len(results),
            "mean_reward": sum(r["aggregate_reward_score"] for r in results) / max(1, len(results)),
        },
    )
    return results
