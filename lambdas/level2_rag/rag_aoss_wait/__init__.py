"""Level 2, OpenSearch Serverless option: a custom resource that waits until the collection lets the kit in."""
