"""CloudFormation custom resource (every stage): on stack deletion, stop the SageMaker path's executions and training
jobs; in the sandbox also delete its imported models."""
