"""The cleanup resource's Mode values and the slot of its ImportSourceUri, which the SageMaker stack sets
(stacks/level3_finetune/sagemaker_cleanup.py) and the function reads: one copy for both sides."""

STOP_AND_DELETE = "StopAndDelete"  # sandbox: also wait for the imports and delete the imported models
STOP_ONLY = "StopOnly"  # prod: only stop the pipeline and its jobs
MODES = (STOP_AND_DELETE, STOP_ONLY)
NAME_SLOT = "{name}"  # where ImportSourceUri takes the training job's name
