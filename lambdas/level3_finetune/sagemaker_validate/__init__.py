"""Level 3 on SageMaker: check the chat records a run names before the training job starts."""
