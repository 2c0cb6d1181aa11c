"""The SageMaker training container's side of a job, which both training programs read (train.py here and
workloads/finetune_sagemaker/sft_train.py, whose source directory ships this module too) and their launchers'
CreateTrainingJob requests set (sagemaker_job.py in each folder, read by the stacks): one copy for both sides.
Standard library only, so that the stacks import it at synthesis without torch.

The SageMaker training toolkit puts each input channel's local directory in ``SM_CHANNEL_<NAME>``, the channel's
name upper-cased (https://github.com/aws/sagemaker-training-toolkit/blob/master/ENVIRONMENT_VARIABLES.md), and
SageMaker syncs ``CheckpointConfig.LocalPath``, by default /opt/ml/checkpoints, to its S3 URI
(https://docs.aws.amazon.com/sagemaker/latest/dg/model-checkpoints.html).
"""

from __future__ import annotations

CHECKPOINT_DIR = "/opt/ml/checkpoints"  # CheckpointConfig.LocalPath, the default the programs resume from
TRAIN_CHANNEL = "train"  # the training data
MODEL_CHANNEL = "model"  # the fine-tuning program's base model files, when a run names baseModelKey
# A training job runs at most 28 days, MaxRuntimeInSeconds and MaxWaitTimeInSeconds alike
# (https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_StoppingCondition.html).
MAX_RUNTIME_DAYS = 28


def channel_variable(channel: str) -> str:
    """The environment variable that holds ``channel``'s local directory in the container."""
    return f"SM_CHANNEL_{channel.upper()}"
