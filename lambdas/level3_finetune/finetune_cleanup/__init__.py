"""CloudFormation custom resource (sandbox stage): on stack deletion, remove Level 3's custom models first."""
