"""Snapshots of every template (asset hashes masked): they catch drift nobody meant, nothing more.

Regenerate after an intended change with: UPDATE_SNAPSHOTS=1 make test
"""

from __future__ import annotations

import json
import os
import re
from typing import Any

import pytest

from tests.conftest import ROOT, SNAPSHOT_SYNTHS

SNAPSHOTS = ROOT / "tests" / "snapshots"
_ASSET_HASH = re.compile(r"\b[0-9a-f]{64}\b")


def masked(template: dict[str, Any]) -> dict[str, Any]:
    text = _ASSET_HASH.sub("<asset-hash>", json.dumps(template, sort_keys=True))
    data = json.loads(text)
    data.get("Resources", {}).pop("CDKMetadata", None)  # CLI analytics, varies with the CDK version
    data.get("Conditions", {}).pop("CDKMetadataAvailable", None)
    return data


@pytest.mark.parametrize("stage", SNAPSHOT_SYNTHS)
def test_templates_match_their_snapshots(request: pytest.FixtureRequest, stage: str) -> None:
    synth = request.getfixturevalue(stage)
    for stack_id, template in synth.templates.items():
        if stage == "sandbox_oss" and stack_id != "GenAiKit-2-Rag":
            continue  # the vector-store switch changes Level 2 only
        if stage == "sandbox_fsx" and not stack_id.startswith(("GenAiKit-4-", "GenAiKit-0-")):
            continue  # the Level 4 options and the opt-in logging stack change only those
        path = SNAPSHOTS / f"{stack_id}.{stage}.json"
        current = masked(template)
        if os.environ.get("UPDATE_SNAPSHOTS") == "1":
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(current, indent=1, sort_keys=True) + "\n")
        assert path.exists(), f"no snapshot {path.name}; create it with UPDATE_SNAPSHOTS=1 make test"
        assert current == json.loads(path.read_text()), f"{path.name} drifted; review, then UPDATE_SNAPSHOTS=1"


def test_masking_hides_asset_hashes_only() -> None:
    template = {"Resources": {"F": {"Properties": {"Code": {"S3Key": "a" * 64 + ".zip"}, "Name": "kit"}}}}
    assert masked(template)["Resources"]["F"]["Properties"] == {"Code": {"S3Key": "<asset-hash>.zip"}, "Name": "kit"}
