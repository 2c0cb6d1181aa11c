"""Level 2, RAG: a Bedrock knowledge base over documents in S3, lossless ingestion, a cited query API."""
