"""Level 3, fine-tuning: validate training data, run a Bedrock customization job, optionally deploy and report."""
