"""The facts a raw CreateTrainingJob needs to run train.py in the AWS PyTorch training image.

SAGEMAKER.md explains each value and where it comes from. In short, the job:

1. runs the region's PyTorch training image (``image_uri``), whose SageMaker training toolkit
   downloads ``sagemaker_submit_directory`` (this folder's sourcedir.tar.gz) into /opt/ml/code;
2. with ``sagemaker_torch_distributed_enabled`` launches ``torchrun --nnodes <instances>
   --nproc_per_node <GPUs per instance, 1 on CPU> train.py --<hyperparameter> <value> ...``;
3. mounts the ``train`` channel at /opt/ml/input/data/train (``SM_CHANNEL_TRAIN``), syncs
   /opt/ml/checkpoints with CheckpointConfig.S3Uri, and uploads /opt/ml/model (``SM_MODEL_DIR``).

CreateTrainingJob hyperparameters are a string-to-string map; like the SageMaker Python SDK, every
value here is JSON-encoded (``"train.py"`` becomes ``"\\"train.py\\""``, ``True`` becomes ``"true"``),
which the toolkit decodes before building the command line.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

IMAGE_ACCOUNT = "763104351884"  # AWS Deep Learning Containers registry (most commercial regions)
IMAGE_REPOSITORY = "pytorch"  # Amazon Linux 2023 family; ships torch 2.13.0 like requirements.txt
GPU_TAG = "2.13.0-cu133-amzn2023-sagemaker"
CPU_TAG = "2.13.0-cpu-amzn2023-sagemaker"
ENTRY_POINT = "train.py"
TRAIN_CHANNEL = "train"  # -> SM_CHANNEL_TRAIN=/opt/ml/input/data/train
CHECKPOINT_LOCAL_PATH = "/opt/ml/checkpoints"  # CheckpointConfig.LocalPath default
MODEL_DIR = "/opt/ml/model"  # SM_MODEL_DIR, uploaded to OutputDataConfig.S3OutputPath


def image_uri(region: str, *, gpu: bool = True) -> str:
    """The PyTorch 2.13 SageMaker training image in ``region`` (GPU, or CPU for small tests)."""
    tag = GPU_TAG if gpu else CPU_TAG
    return f"{IMAGE_ACCOUNT}.dkr.ecr.{region}.amazonaws.com/{IMAGE_REPOSITORY}:{tag}"


def hyperparameters(
    *,
    submit_directory: str,
    region: str,
    train_args: Mapping[str, object] | None = None,
    torch_distributed: bool = True,
    instance_type: str | None = None,
) -> dict[str, str]:
    """CreateTrainingJob ``HyperParameters``: the toolkit's settings plus train.py's arguments.

    ``train_args`` keys are train.py option names without dashes, e.g. ``{"steps": 500,
    "batch-size": 16}``; the toolkit turns each into ``--steps 500 --batch-size 16``.
    """
    framework: dict[str, object] = {
        "sagemaker_program": ENTRY_POINT,
        "sagemaker_submit_directory": submit_directory,
        "sagemaker_region": region,
        "sagemaker_container_log_level": 20,
    }
    if torch_distributed:
        framework["sagemaker_torch_distributed_enabled"] = True
        if instance_type:
            framework["sagemaker_instance_type"] = instance_type
    user = dict(train_args or {})
    clash = sorted(k for k in user if k.startswith("sagemaker_"))
    if clash:
        raise ValueError(f"train_args may not set toolkit settings: {', '.join(clash)}")
    return {key: json.dumps(value) for key, value in {**framework, **user}.items()}
