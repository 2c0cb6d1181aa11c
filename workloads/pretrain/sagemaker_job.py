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

from workloads.pretrain import sagemaker_container

# The AWS Deep Learning Containers registry account of each region, from the DLC region table
# (https://github.com/aws/deep-learning-containers/blob/master/docs/reference/region_availability.md):
# 763104351884 serves most regions, opt-in regions and China have their own. The stack's image URI and its ECR
# grant both come from here.
DLC_REGISTRY_ACCOUNTS: Mapping[str, str] = {
    **dict.fromkeys(
        (
            "us-east-1",
            "us-east-2",
            "us-west-1",
            "us-west-2",
            "ap-south-1",
            "ap-northeast-1",
            "ap-northeast-2",
            "ap-southeast-1",
            "ap-southeast-2",
            "ca-central-1",
            "eu-central-1",
            "eu-west-1",
            "eu-west-2",
            "eu-west-3",
            "eu-north-1",
            "sa-east-1",
        ),
        "763104351884",
    ),
    "af-south-1": "626614931356",
    "ap-east-1": "871362719292",
    "ap-east-2": "975050140332",
    "ap-south-2": "772153158452",
    "ap-southeast-3": "907027046896",
    "ap-southeast-4": "457447274322",
    "ap-southeast-5": "550225433462",
    "ap-southeast-6": "633930458069",
    "ap-southeast-7": "590183813437",
    "ap-northeast-3": "364406365360",
    "ca-west-1": "204538143572",
    "eu-south-1": "692866216735",
    "eu-south-2": "503227376785",
    "eu-central-2": "380420809688",
    "il-central-1": "780543022126",
    "mx-central-1": "637423239942",
    "me-south-1": "217643126080",
    "me-west-1": "124382933778",
    "me-central-1": "914824155844",
    "cn-north-1": "727897471807",
    "cn-northwest-1": "727897471807",
}
IMAGE_REPOSITORY = "pytorch"  # Amazon Linux 2023 family; ships torch 2.13.0 like requirements.txt
GPU_TAG = "2.13.0-cu133-amzn2023-sagemaker"
CPU_TAG = "2.13.0-cpu-amzn2023-sagemaker"
ENTRY_POINT = "train.py"
TRAIN_CHANNEL = sagemaker_container.TRAIN_CHANNEL  # -> SM_CHANNEL_TRAIN=/opt/ml/input/data/train
CHECKPOINT_LOCAL_PATH = sagemaker_container.CHECKPOINT_DIR
MODEL_DIR = "/opt/ml/model"  # SM_MODEL_DIR, uploaded to OutputDataConfig.S3OutputPath


def image_account(region: str) -> str:
    """The account whose ECR registry holds the Deep Learning Containers in ``region``.

    Raises ``ValueError`` for a region the DLC table does not list (no image to pull there)."""
    try:
        return DLC_REGISTRY_ACCOUNTS[region]
    except KeyError:
        raise ValueError(f"the AWS Deep Learning Containers list no registry in {region}") from None


def image_uri(region: str, *, gpu: bool = True) -> str:
    """The PyTorch 2.13 SageMaker training image in ``region`` (GPU, or CPU for small tests)."""
    tag = GPU_TAG if gpu else CPU_TAG
    domain = "amazonaws.com.cn" if region.startswith("cn-") else "amazonaws.com"  # ECR's China endpoints
    return f"{image_account(region)}.dkr.ecr.{region}.{domain}/{IMAGE_REPOSITORY}:{tag}"


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
