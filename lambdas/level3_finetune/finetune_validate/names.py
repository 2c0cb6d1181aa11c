"""Where the validator reports a run's training data comes from (its ``trainingSource``), on which the Level 3 state
machine chooses the customization job to create (stacks/level3_finetune/pipeline.py): one copy for both sides."""

S3_SOURCE = "s3"  # a training file in the data bucket
LOGS_SOURCE = "invocation-logs"  # distillation from the account's model invocation logs
