"""The metrics the ingest function writes, which the Level 2 stack alarms on
(stacks/level2_rag/stack.py): one copy for both sides."""

OLDEST_CHANGE_AGE = "OldestChangeAge"  # seconds the oldest change a run holds has waited since first queued
INGESTION_JOB_FAILED = "IngestionJobFailed"  # 1 while the newest ingestion job failed
DOCUMENTS_FAILED = "DocumentsFailed"  # documents an ended job failed to ingest
