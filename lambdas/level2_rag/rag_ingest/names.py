"""The metrics the ingest function writes, which the Level 2 stack alarms on (stacks/level2_rag/stack.py), and the
ingestion-job statuses it, the stack's cleanup function and kit l2 read as running: one copy for every side."""

OLDEST_CHANGE_AGE = "OldestChangeAge"  # seconds the oldest change a run holds has waited since first queued
INGESTION_JOB_FAILED = "IngestionJobFailed"  # 1 while the newest ingestion job failed
DOCUMENTS_FAILED = "DocumentsFailed"  # documents an ended job failed to ingest

# IngestionJobStatus values (botocore bedrock-agent) of a job that still runs; the others (COMPLETE, FAILED, STOPPED)
# have ended. Bedrock runs one job at a time per data source.
INGESTION_RUNNING = ("STARTING", "IN_PROGRESS", "STOPPING")
COMPLETE = "COMPLETE"  # the job ingested every change it was given (some documents may still have failed)
