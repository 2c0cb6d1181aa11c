"""CloudFormation custom resource (sandbox stage): on stack deletion, leave nothing of the SageMaker path billing."""
