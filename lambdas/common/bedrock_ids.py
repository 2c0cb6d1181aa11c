"""Formats of the Bedrock identifiers a function's environment carries, each matched whole (``env_matching``).
botocore's models give them (tests/common/test_common.py holds each to its shape): bedrock-agent ``Id`` (a knowledge
base's and a data source's id), bedrock ``GuardrailId`` and ``GuardrailVersion``."""

from __future__ import annotations

import re

BEDROCK_ID = re.compile(r"[0-9a-zA-Z]{10}")
GUARDRAIL_ID = re.compile(r"[a-z0-9]{1,64}")
GUARDRAIL_VERSION = re.compile(r"DRAFT|[1-9][0-9]{0,7}")
