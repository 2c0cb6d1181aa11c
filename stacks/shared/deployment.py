"""What every construct may know of the kit-wide settings: where it deploys, under which names, and the stage's
defaults (retention, removal, tags, the Powertools layer, the alarm address).

Built once from the configuration (``KitConfig.deployment``) by each stack, and handed to the shared building
blocks and the level constructs in place of the whole configuration; a level construct receives its own
level's settings object beside it (``rag: RagSettings``) or narrower values, never another level's settings.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from stacks.shared.facts import PROD


@dataclass(frozen=True)
class Deployment:
    """The stage, the names and the kit-wide defaults a construct reads."""

    stage: str
    name_prefix: str
    region: str
    log_retention_days: int
    powertools_layer_version: int
    alarm_email: str | None = None
    tags: Mapping[str, str] = field(default_factory=dict)

    @property
    def is_prod(self) -> bool:
        return self.stage == PROD

    def resource_name(self, *parts: str) -> str:
        """A physical name that carries the prefix and the stage, e.g. ``genai-kit-sandbox-prompts``."""
        return "-".join((self.name_prefix, self.stage, *parts))

    @property
    def kit_options(self) -> str:
        """The kit's target options for this stage and Region (a kit group's --stage and --region)."""
        return f"--stage {self.stage} --region {self.region}"

    def kit_command(self, group: str, command: str) -> str:
        """A kit command a deployed message (an alarm, a notification, a run's cause) tells the reader to run, for
        this stage and Region: without them the kit acts on the configured stage, the sandbox by default."""
        return f"kit {group} {self.kit_options} {command}"

    @property
    def metrics_namespace(self) -> str:
        """The CloudWatch namespace the kit's functions publish their metrics under (Powertools)."""
        return self.resource_name("kit")
