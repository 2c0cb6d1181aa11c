"""CloudFormation custom resource that holds an account-wide stack to the stage that created it."""
