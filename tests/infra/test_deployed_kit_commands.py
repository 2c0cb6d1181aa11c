"""A kit command written into a deployed message (an alarm's description, a notification, a run's cause) names the
stage and Region of the stack that wrote it: without them the kit acts on cdk.json's stage, the sandbox, so a prod
alarm's advice read the sandbox's resources (or told the reader to deploy a sandbox stack)."""

from __future__ import annotations

import json
import re
from typing import Any

KIT_COMMAND = re.compile(r"\bkit (l1|l2|l3|l3sm|l4|doctor|cost|diagram)\b([^`'\"]{0,60})")


def test_every_kit_command_in_a_template_names_its_stage_and_region(each_stage: Any) -> None:
    config = each_stage.config
    wanted = f"--stage {config.stage} --region {config.region} "
    found = 0
    for stack_id, template in each_stage.templates.items():
        text = json.dumps(template)
        for match in KIT_COMMAND.finditer(text):
            found += 1
            assert match.group(2).startswith(" " + wanted), f"{stack_id}: {match.group(0)!r}"
    assert found >= 4  # the guard has work: Level 2's alarms, Level 3's causes, Level 4's notification
