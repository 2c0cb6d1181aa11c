"""Level 1, prompt engineering: a secured API over Bedrock Converse, managed prompt templates and a guardrail."""
