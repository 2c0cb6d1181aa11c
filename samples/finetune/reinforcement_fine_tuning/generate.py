"""Writes train.jsonl beside this file: the kit's reinforcement fine-tuning sample (Amazon Nova 2 Lite).

Reinforcement fine-tuning takes at least 100 records (https://docs.aws.amazon.com/bedrock/latest/userguide/
rft-prepare-data.html), each an OpenAI-style chat prompt with a ``reference_answer`` the grader scores against
(lambdas/level3_finetune/finetune_reward). The sample holds 100 distinct prompts, one per count of custom models
(1 to 10) and of months (1 to 10), so no prompt is trained twice. Deterministic: run it again and the file is the
same.

    python samples/finetune/reinforcement_fine_tuning/generate.py
"""

from __future__ import annotations

import json
import sys
from decimal import Decimal
from pathlib import Path

TARGET = Path(__file__).with_name("train.jsonl")
SYSTEM = "Answer with the dollar amount only, two decimals."
MONTHLY = Decimal("1.95")  # a custom model's storage a month (docs/level-3-finetune.md, kit/prices.json)
COUNTS = range(1, 11)
MONTHS = range(1, 11)


def record(models: int, months: int) -> dict[str, object]:
    question = (
        f"A custom model is stored for ${MONTHLY} a month. What do {models} custom model(s) cost over "
        f"{months} month(s)?"
    )
    return {
        "messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": question}],
        "reference_answer": f"{MONTHLY * models * months:.2f}",
        "task": "idle_cost",
    }


def render() -> str:
    """The file's text: one JSON record per line, months varying fastest."""
    lines = [json.dumps(record(models, months)) for models in COUNTS for months in MONTHS]
    return "".join(f"{line}\n" for line in lines)


def main() -> int:
    TARGET.write_text(render(), encoding="utf-8")
    print(f"wrote {TARGET} ({len(COUNTS) * len(MONTHS)} records)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
