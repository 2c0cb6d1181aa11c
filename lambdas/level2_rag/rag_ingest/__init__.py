"""Level 2 ingestion: coalesce queued S3 document changes into one knowledge-base ingestion job at a time."""
