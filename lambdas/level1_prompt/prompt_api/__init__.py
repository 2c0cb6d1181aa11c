"""Level 1 prompt API: prompt engineering on Amazon Bedrock behind API Gateway."""
