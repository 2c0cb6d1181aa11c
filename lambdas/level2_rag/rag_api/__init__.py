"""Level 2 query API: answers with citations from a Bedrock knowledge base (retrieve-and-generate, retrieve)."""
