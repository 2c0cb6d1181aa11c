"""Level 2 facts the stack writes and kit l2 reads; no CDK import (the kit's commands load no CDK)."""

from __future__ import annotations

DOCUMENTS_PREFIX_OUTPUT = "DocumentsPrefix"  # the S3 prefix the data source reads, which kit l2 upload writes under
WHOLE_BUCKET = "(whole bucket)"  # that output where the data source reads the whole bucket (an output is never empty)
