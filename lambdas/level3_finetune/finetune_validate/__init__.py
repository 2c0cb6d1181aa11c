"""Level 3 pre-flight check: validate Bedrock fine-tuning datasets (JSON Lines) before a customization job."""
