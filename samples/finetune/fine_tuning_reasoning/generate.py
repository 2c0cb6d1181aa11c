"""Writes train.jsonl beside this file: the kit's Amazon Nova 2 Lite fine-tuning sample with reasoning.

Nova 2 Lite fine-tuning takes 200 to 20,000 records (NOVA_2_0_LITE_SAMPLE_BOUNDS in AWS's dataset validator,
the script https://docs.aws.amazon.com/nova/latest/nova2-userguide/nova-data-preparation.html recommends), so the
sample holds 240: the kit's eight customization-level questions, then worked cost, unit-conversion and rate
problems. Every assistant turn is a reasoningContent trace followed by the final answer (the Converse format of
https://docs.aws.amazon.com/bedrock/latest/userguide/nova-2-sft-data-prep.html). Deterministic: run it again and
the file is the same.

    python samples/finetune/fine_tuning_reasoning/generate.py
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from decimal import Decimal
from fractions import Fraction
from pathlib import Path

TARGET = Path(__file__).with_name("train.jsonl")
RECORDS = 240
SCHEMA = "bedrock-conversation-2024"
LEVEL_SYSTEM = (
    "You are the genai-spectrum-kit support assistant. Recommend a customization level, give the reason in one "
    "sentence and name the idle cost."
)
MATH_SYSTEM = (
    "You are a careful assistant for cost, unit and rate questions. Work the problem step by step, then give the "
    "final answer in bold followed by one short sentence."
)
LOWEST = "pick the lowest level that solves it."

# (question, the reason, the answer): the kit's own customization-level guidance.
LEVELS = (
    ("Our bot must answer in a friendlier tone.", "Tone is an instruction, not knowledge",
     "**Level 1, prompt engineering.** Tone is an instruction, so a system prompt changes it. Idle cost: none."),
    ("The bot must cite our 400-page product manual.", "The facts change and must be cited",
     "**Level 2, RAG.** The manual changes and answers need citations, so retrieve at question time. "
     "Idle cost: S3 Vectors storage only."),
    ("Answers must always be valid JSON in our schema.", "A fixed output format is learned best from examples",
     "**Level 3, fine-tuning.** A fixed format is learned from examples. Idle cost: about $1.95 a month of model "
     "storage."),
    ("We want a cheaper model with the quality of a large one.", "A teacher can label prompts for a smaller student",
     "**Level 3, distillation.** A large teacher answers your prompts and a small student learns them. "
     "Idle cost: model storage."),
    ("Our legal team uses vocabulary no model knows.", "Unlabeled domain text teaches vocabulary",
     "**Level 3, continued pre-training.** Raw domain text teaches the vocabulary. Idle cost: model storage."),
    ("We need a model trained from scratch on our own corpus.", "Only pre-training builds a new base model",
     "**Level 4, pre-training.** A new base model needs a training cluster. Idle cost: the cluster's controller "
     "and storage."),
    ("Support answers must follow our 12-step refund policy.", "A policy that can be retrieved is knowledge",
     "**Level 2, RAG.** Retrieve the policy so updates apply at once. Idle cost: S3 Vectors storage only."),
    ("The model must solve our pricing arithmetic correctly.", "Answers that can be checked can be graded",
     "**Level 3, reinforcement fine-tuning.** A grader checks each answer and rewards correct ones. "
     "Idle cost: model storage."),
)  # fmt: skip


def money(cents: int) -> str:
    return f"${cents // 100:,}.{cents % 100:02d}"


def number(value: Fraction | int) -> str:
    """A value with at most two decimals and thousands separators (every problem below divides evenly to cents)."""
    hundredths = value * 100
    if hundredths.denominator != 1:
        raise ValueError(f"{value} has more than two decimals")
    whole, part = divmod(int(hundredths), 100)
    return f"{whole:,}" if part == 0 else f"{whole:,}.{part:02d}".rstrip("0")


def storage() -> Iterator[tuple[str, str, str]]:
    """Model storage over months: price x models x months."""
    for price in (195, 240, 310):
        for models in (1, 2, 3, 4, 5):
            for months in (2, 3, 6, 9, 12):
                if (price + models + months) % 2:
                    continue
                total = price * models * months
                yield (
                    f"A custom model costs {money(price)} a month to store. What do {models} custom models cost "
                    f"over {months} months?",
                    f"Monthly storage for all models is {models} x {money(price)} = {money(price * models)}. "
                    f"Over {months} months that is {money(price * models)} x {months} = {money(total)}.",
                    f"**{money(total)}.** {models} models x {months} months x {money(price)} a month.",
                )


def training() -> Iterator[tuple[str, str, str]]:
    """Training cost: tokens x epochs at a price per 1,000 tokens."""
    for thousands in (250, 400, 600, 1_200, 2_500, 4_000):
        for epochs in (1, 2, 3, 5):
            for price_tenths in (8, 15, 40):  # cents per 1,000 tokens, in tenths of a cent
                tokens = thousands * 1_000
                billed = thousands * epochs
                cents = Fraction(billed * price_tenths, 10)
                if cents.denominator != 1:
                    continue
                price = str(Decimal(price_tenths) / 1_000)
                yield (
                    f"A fine-tuning job trains on {tokens:,} tokens for {epochs} epoch{'s' * (epochs > 1)} at "
                    f"${price} per 1,000 tokens. What does the training cost?",
                    f"Each epoch processes every token, so billed tokens are {tokens:,} x {epochs} = "
                    f"{tokens * epochs:,}, which is {billed:,} thousand. The cost is {billed:,} x ${price} = "
                    f"{money(int(cents))}.",
                    f"**{money(int(cents))}.** {billed:,} thousand billed tokens at ${price} per thousand.",
                )


def compute() -> Iterator[tuple[str, str, str]]:
    """A training cluster's cost: instances x hours x hourly price."""
    for instances in (2, 4, 8):
        for hours in (3, 6, 10, 24):
            for price in (121, 410, 3_277):
                per_hour = instances * price
                total = per_hour * hours
                yield (
                    f"A training cluster of {instances} instances runs for {hours} hours at {money(price)} an hour "
                    "per instance. What does the run cost?",
                    f"The cluster costs {instances} x {money(price)} = {money(per_hour)} an hour. For {hours} hours "
                    f"that is {money(per_hour)} x {hours} = {money(total)}.",
                    f"**{money(total)}.** {instances} instances for {hours} hours at {money(price)} an hour each.",
                )


def units() -> Iterator[tuple[str, str, str]]:
    """Conversions with the factor named in the trace."""
    for gb in (Fraction(3, 2), Fraction(7, 2), Fraction(9, 4), 6, 12, Fraction(25, 2), 40, Fraction(3, 4)):
        mb = gb * 1_000
        yield (
            f"Convert {number(Fraction(gb))} GB to MB, with 1 GB = 1,000 MB.",
            f"Multiply by the factor: {number(Fraction(gb))} x 1,000 = {number(mb)}.",
            f"**{number(mb)} MB.** Each gigabyte is 1,000 megabytes.",
        )
    for hours in (Fraction(3, 4), Fraction(5, 2), Fraction(11, 4), 4, Fraction(13, 2), 9, Fraction(1, 4), 18):
        minutes = hours * 60
        yield (
            f"How many minutes are {number(Fraction(hours))} hours?",
            f"An hour is 60 minutes, so {number(Fraction(hours))} x 60 = {number(minutes)}.",
            f"**{number(minutes)} minutes.** Multiply the hours by 60.",
        )
    for celsius in (-40, -10, 0, 15, 25, 37, 60, 100):
        fahrenheit = Fraction(celsius * 9, 5) + 32
        yield (
            f"What is {celsius} degrees Celsius in Fahrenheit?",
            f"Use F = C x 9/5 + 32. {celsius} x 9/5 = {number(Fraction(celsius * 9, 5))}, plus 32 is "
            f"{number(fahrenheit)}.",
            f"**{number(fahrenheit)} degrees Fahrenheit.** Scale by 9/5, then add 32.",
        )
    for km in (Fraction(1, 2), 2, Fraction(21, 4), 10, 42, Fraction(3, 5), 75, 120):
        metres = km * 1_000
        yield (
            f"A route is {number(Fraction(km))} km long. How many metres is that?",
            f"A kilometre is 1,000 metres, so {number(Fraction(km))} x 1,000 = {number(metres)}.",
            f"**{number(metres)} metres.** Multiply the kilometres by 1,000.",
        )
    for days in (2, 3, 7, 10, 14, 30):
        hours = days * 24
        yield (
            f"An endpoint runs for {days} days without stopping. How many hours is that?",
            f"A day has 24 hours, so {days} x 24 = {hours}.",
            f"**{hours} hours.** {days} days of 24 hours each.",
        )


def rates() -> Iterator[tuple[str, str, str]]:
    """Time from a rate, and records per part of a split."""
    for rate in (400, 800, 1_200, 2_500):
        for records in (36_000, 90_000, 150_000, 600_000):
            seconds = Fraction(records, rate)
            if seconds.denominator != 1:
                continue
            minutes = seconds / 60
            trace = f"Time is records divided by rate: {records:,} / {rate:,} = {number(seconds)} seconds."
            if minutes.denominator == 1 or (minutes * 100).denominator == 1:
                trace += f" Divided by 60 that is {number(minutes)} minutes."
                answer = f"**{number(seconds)} seconds ({number(minutes)} minutes).**"
            else:
                answer = f"**{number(seconds)} seconds.**"
            yield (
                f"A validator checks {rate:,} records a second. How long does it take for {records:,} records?",
                trace,
                f"{answer} {records:,} records at {rate:,} a second.",
            )
    for total in (1_000, 2_400, 5_000, 8_000, 12_500):
        for share in (80, 90, 95):
            train = Fraction(total * share, 100)
            if train.denominator != 1:
                continue
            held_out = total - int(train)
            yield (
                f"A dataset of {total:,} records is split {share}/{100 - share} into training and validation. How "
                "many records go to each?",
                f"Training gets {share}% of {total:,} = {int(train):,}. Validation gets the rest: "
                f"{total:,} - {int(train):,} = {held_out:,}.",
                f"**{int(train):,} training and {held_out:,} validation records.** They add up to {total:,}.",
            )
    for bill in (120, 480, 950, 2_000):
        for percent in (5, 10, 15, 20, 25):
            change = Fraction(bill * percent, 100)
            cents = int(change * 100)
            if change * 100 != cents:
                continue
            new = bill * 100 + cents
            yield (
                f"A monthly bill of {money(bill * 100)} rises by {percent}%. What is the new bill?",
                f"The increase is {percent}% of {money(bill * 100)} = {money(cents)}. Adding it gives "
                f"{money(bill * 100)} + {money(cents)} = {money(new)}.",
                f"**{money(new)}.** The old bill plus {percent}%.",
            )


def averages() -> Iterator[tuple[str, str, str]]:
    """The mean of a few job durations."""
    runs = ((42, 57, 66), (18, 25, 29, 36), (90, 110, 130), (12, 14, 19, 23, 32), (45, 45, 60), (61, 73, 88, 98))
    for durations in runs:
        total = sum(durations)
        mean = Fraction(total, len(durations))
        if (mean * 100).denominator != 1:
            continue
        listed = ", ".join(map(str, durations[:-1])) + f" and {durations[-1]}"
        yield (
            f"{len(durations)} training jobs ran {listed} minutes. What is the average run time?",
            f"Add the durations: {' + '.join(map(str, durations))} = {total}. Divide by the {len(durations)} jobs: "
            f"{total} / {len(durations)} = {number(mean)}.",
            f"**{number(mean)} minutes.** The total of {total} minutes over {len(durations)} jobs.",
        )


def record(system: str, question: str, reasoning: str, answer: str) -> dict[str, object]:
    return {
        "schemaVersion": SCHEMA,
        "system": [{"text": system}],
        "messages": [
            {"role": "user", "content": [{"text": question}]},
            {
                "role": "assistant",
                "content": [{"reasoningContent": {"reasoningText": {"text": reasoning}}}, {"text": answer}],
            },
        ],
    }


def records() -> list[dict[str, object]]:
    """The sample's records: the level questions, then the problems interleaved by kind, RECORDS in all."""
    rows = [record(LEVEL_SYSTEM, question, f"{reason}; {LOWEST}", answer) for question, reason, answer in LEVELS]
    sources = [list(kind()) for kind in (storage, training, compute, units, rates, averages)]
    seen: set[str] = set()
    while len(rows) < RECORDS and any(sources):
        for source in sources:
            if source and len(rows) < RECORDS:
                question, reasoning, answer = source.pop(0)
                if question not in seen:
                    seen.add(question)
                    rows.append(record(MATH_SYSTEM, question, reasoning, answer))
    if len(rows) < RECORDS:
        raise SystemExit(f"only {len(rows)} distinct records; add problems")
    return rows


def render() -> str:
    return "".join(json.dumps(row) + "\n" for row in records())


if __name__ == "__main__":
    TARGET.write_text(render(), encoding="utf-8")
    sys.stdout.write(f"wrote {RECORDS} records to {TARGET}\n")
