"""CloudFormation custom resource (every stage): on stack deletion, stop the knowledge base's ingestion jobs first."""
