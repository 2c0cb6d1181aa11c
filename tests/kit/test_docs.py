"""The documentation's idle costs are the figures `kit cost` computes from the templates."""

from __future__ import annotations

import re
from typing import Any

from kit.costs import analyze_stack, load_prices
from tests.conftest import ROOT

DOCS_INDEX = ROOT / "docs" / "README.md"
README = ROOT / "README.md"


def _idle(synth: Any, stack_id: str) -> float:
    return analyze_stack(stack_id, synth.templates[stack_id], load_prices("us-east-1")).idle_usd


def _row(text: str, label: str) -> str:
    [row] = [line for line in text.splitlines() if line.startswith("|") and label in line]
    return row


def _amounts(row: str) -> list[float]:
    return [float(a.replace(",", "")) for a in re.findall(r"\$([0-9][0-9,]*(?:\.[0-9]+)?)", row)]


def test_docs_index_idle_costs_match_kit_cost(sandbox: Any, sandbox_oss: Any) -> None:
    text = DOCS_INDEX.read_text()
    assert round(_idle(sandbox, "GenAiKit-1-Prompt"), 2) in _amounts(_row(text, "1. Prompt engineering"))
    level2 = _amounts(_row(text, "2. RAG"))
    assert round(_idle(sandbox, "GenAiKit-2-Rag"), 2) in level2
    assert round(_idle(sandbox_oss, "GenAiKit-2-Rag"), 2) in level2
    assert round(_idle(sandbox, "GenAiKit-3-FineTune"), 2) in _amounts(_row(text, "3. Fine-tuning"))
    assert round(_idle(sandbox, "GenAiKit-3-FineTune-SageMaker"), 2) in _amounts(_row(text, "3. Fine-tuning"))
    level4 = _amounts(_row(text, "4. Pre-training"))
    assert round(_idle(sandbox, "GenAiKit-4-Pretrain-Jobs")) in level4
    assert round(_idle(sandbox, "GenAiKit-4-Pretrain-Cluster")) in level4


def test_readme_spectrum_table_links_every_level_page_and_states_the_same_costs(sandbox: Any) -> None:
    text = README.read_text()
    for page in ("level-1-prompt", "level-2-rag", "level-3-finetune", "level-4-pretrain"):
        assert f"(docs/{page}.md)" in text
        assert (ROOT / "docs" / f"{page}.md").is_file()
    assert round(_idle(sandbox, "GenAiKit-1-Prompt"), 2) in _amounts(_row(text, "1. Prompt engineering"))
    assert round(_idle(sandbox, "GenAiKit-3-FineTune"), 2) in _amounts(_row(text, "3. Fine-tuning"))
    assert round(_idle(sandbox, "GenAiKit-4-Pretrain-Cluster")) in _amounts(_row(text, "4. Pre-training"))


def test_every_stack_has_a_committed_diagram_linked_from_its_page(sandbox: Any) -> None:
    pages = " ".join(p.read_text() for p in (ROOT / "docs").glob("level-*.md"))
    for stack_id in sandbox.templates:
        assert (ROOT / "docs" / "diagrams" / f"{stack_id}.md").is_file()
        assert f"diagrams/{stack_id}.md" in pages


def test_level3_idle_cost_says_the_rotated_key_grows(sandbox: Any) -> None:
    # KMS bills each of a key's first two rotations $1/month more (https://aws.amazon.com/kms/pricing/): where a
    # rotated key's $1.00 idle figure is stated, so is its growth.
    template = sandbox.templates["GenAiKit-3-FineTune"]
    keys = [r for r in template["Resources"].values() if r["Type"] == "AWS::KMS::Key"]
    assert keys and all(key["Properties"].get("EnableKeyRotation") is True for key in keys)
    page = (ROOT / "docs" / "level-3-finetune.md").read_text()
    rows = [
        _row(README.read_text(), "3. Fine-tuning"),
        _row(DOCS_INDEX.read_text(), "3. Fine-tuning"),
        _row(page, "| Idle |"),
    ]
    rotated = round(_idle(sandbox, "GenAiKit-3-FineTune") + 2.0, 2)  # two rotations, $1/month each
    for row in rows:
        assert "rotation" in row and rotated in _amounts(row), row
