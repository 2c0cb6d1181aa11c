"""CloudFormation custom resource that turns on Bedrock model invocation logging for the account and region."""
