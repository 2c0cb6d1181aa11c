"""The guardrail on everything the query API returns besides the generated answer.

RetrieveAndGenerate applies the guardrail to the answer only; the retrieved chunks of POST /retrieve and the
citation snippets of POST /ask come back from Bedrock unfiltered. They go through ApplyGuardrail (source
OUTPUT, the stack's guardrail and version) before they are returned:

- texts are de-duplicated and packed into as few calls as the per-call size allows (``MAX_CHARS_PER_CALL``);
- masked text (e.g. ``{EMAIL}``) replaces the original: ApplyGuardrail returns the request's content blocks
  in the same order with the masking applied;
- a blocked text is withheld (the chunk or the citation source is dropped), never replaced by the guardrail's
  canned message. A blocked call answers with that single message for the whole batch, so a blocked batch is
  split in halves and re-checked until each blocked text is found; at most ``MAX_CALLS`` calls are made per
  request and whatever is still unresolved then is withheld. Anything the guardrail answers in an unexpected
  shape is treated as blocked: unchecked text is never returned.

Behaviour of ApplyGuardrail's outputs:
https://docs.aws.amazon.com/bedrock/latest/userguide/guardrails-use-independent-api.html
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from common.clients import bounded_client
from common.errors import is_retryable_aws_error
from common.http import RetryPolicy, call_with_deadline
from rag_api.settings import Settings

SOURCE = "OUTPUT"
INTERVENED = "GUARDRAIL_INTERVENED"
BLOCKED = "BLOCKED"
# ApplyGuardrail answers in well under a second; an attempt waits at most 2 + 5 s, less when time is short.
CONNECT_TIMEOUT_S = 2
READ_TIMEOUT_S = 5
RETRY_POLICY = RetryPolicy(connect_timeout_s=CONNECT_TIMEOUT_S, max_read_timeout_s=READ_TIMEOUT_S)
# A text unit is up to 1,000 characters and is what the guardrail bills (https://aws.amazon.com/bedrock/pricing/).
# The content-policy input size per request is 1,000 text units in most regions but only 25 in some
# (https://docs.aws.amazon.com/general/latest/gr/bedrock.html, "Content policy maximum input size in text
# units"), so a call carries at most 25,000 characters and works in every region. A single longer text is
# sent alone.
MAX_CHARS_PER_CALL = 25_000
MAX_CALLS = 8

Apply = Callable[[dict[str, Any]], dict[str, Any]]


def get_guardrail_client(read_timeout_s: int = READ_TIMEOUT_S) -> Any:
    """The bedrock-runtime client for ApplyGuardrail with this read timeout (created on first use, then cached)."""
    return bounded_client("bedrock-runtime", CONNECT_TIMEOUT_S, read_timeout_s)


@dataclass
class Outcome:
    """What the guardrail made of each distinct text: the text to return (maybe masked) or None (withheld)."""

    verdicts: dict[str, str | None] = field(default_factory=dict)
    calls: int = 0
    usage: Counter[str] = field(default_factory=Counter)

    def text(self, original: str) -> str | None:
        """The text to return in place of ``original`` (None: withhold it). Empty text is returned as is."""
        return self.verdicts.get(original, original) if original else original

    def counts(self, originals: Iterable[str]) -> tuple[int, int]:
        """(masked, blocked) among ``originals`` (each occurrence counts)."""
        masked = blocked = 0
        for original in originals:
            result = self.text(original)
            if result is None:
                blocked += 1
            elif result != original:
                masked += 1
        return masked, blocked


def request(settings: Settings, texts: Sequence[str]) -> dict[str, Any]:
    """ApplyGuardrail parameters that check ``texts`` as model output, one content block each."""
    return {
        "guardrailIdentifier": settings.guardrail_id,
        "guardrailVersion": settings.guardrail_version,
        "source": SOURCE,
        "content": [{"text": {"text": text}} for text in texts],
    }


def batches(texts: Sequence[str], limit: int = MAX_CHARS_PER_CALL) -> list[list[str]]:
    """``texts`` in order, packed into batches of at most ``limit`` characters (a longer text goes alone)."""
    packed: list[list[str]] = []
    size = 0
    for text in texts:
        if packed and size + len(text) <= limit:
            packed[-1].append(text)
            size += len(text)
        else:
            packed.append([text])
            size = len(text)
    return packed


def guard(texts: Iterable[str], settings: Settings, apply: Apply) -> Outcome:
    """Check every distinct non-empty text of ``texts`` with ``apply`` (an ApplyGuardrail call)."""
    outcome = Outcome()
    distinct = list(dict.fromkeys(text for text in texts if text))
    pending: deque[list[str]] = deque(batches(distinct))
    while pending:
        batch = pending.popleft()
        if outcome.calls >= MAX_CALLS:
            outcome.verdicts.update(dict.fromkeys(batch))  # not checked within the call budget: withheld
            continue
        response = apply(request(settings, batch))
        outcome.calls += 1
        outcome.usage.update(
            {k: v for k, v in (response.get("usage") or {}).items() if isinstance(v, int) and not isinstance(v, bool)}
        )
        if response.get("action") != INTERVENED:
            outcome.verdicts.update({text: text for text in batch})
            continue
        outputs = [str((item or {}).get("text", "")) for item in response.get("outputs") or []]
        if not is_blocked(response) and len(outputs) == len(batch):
            outcome.verdicts.update(zip(batch, outputs, strict=True))
        elif len(batch) == 1:
            outcome.verdicts[batch[0]] = None
        else:  # which text was blocked? check each half on its own
            half = len(batch) // 2
            pending.appendleft(batch[half:])
            pending.appendleft(batch[:half])
    return outcome


def is_blocked(response: dict[str, Any]) -> bool:
    """True when any assessment of an ApplyGuardrail response reports the action BLOCKED."""
    return any(_has_blocked(assessment) for assessment in response.get("assessments") or [])


def _has_blocked(value: Any) -> bool:
    if isinstance(value, dict):
        # With outputScope FULL an entry may be listed though not detected; the default scope lists detections only.
        if value.get("action") == BLOCKED and value.get("detected") is not False:
            return True
        return any(_has_blocked(item) for item in value.values())
    if isinstance(value, list):
        return any(_has_blocked(item) for item in value)
    return False


def apply_guardrail(
    params: dict[str, Any],
    *,
    remaining_ms: Callable[[], int] | None,
    on_retry: Callable[[int, BaseException, float], None] | None = None,
) -> dict[str, Any]:
    """One ApplyGuardrail call, every attempt within ``remaining_ms``, with the kit's retries."""
    response: dict[str, Any] = call_with_deadline(
        lambda read_s: get_guardrail_client(read_s).apply_guardrail(**params),
        policy=RETRY_POLICY,
        remaining_ms=remaining_ms,
        retryable=is_retryable_aws_error,
        on_retry=on_retry,
    )
    return response
