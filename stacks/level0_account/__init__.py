"""Level 0, account settings the levels share: API Gateway's logging role, opt-in Bedrock invocation logging."""
