"""CloudFormation custom resource (every stage): on stack deletion, stop Level 4's running training jobs first."""
