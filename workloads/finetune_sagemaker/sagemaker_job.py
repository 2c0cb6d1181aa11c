"""The facts a raw CreateTrainingJob needs to run sft_train.py in the AWS PyTorch training image.

The image is Level 4's pin (``workloads/pretrain/sagemaker_job.py``: one copy of the repository, tags and
account); the training toolkit in it downloads ``sagemaker_submit_directory`` (this folder's sourcedir.tar.gz,
requirements.txt included so the toolkit pip-installs the pinned transformers/peft on top of the image's torch),
and with ``sagemaker_torch_distributed_enabled`` launches ``torchrun ... sft_train.py --<hyperparameter> <value>``.
Hyperparameter values are JSON-encoded strings, as the SageMaker Python SDK sends them.
"""

from __future__ import annotations

import json
from pathlib import Path

from workloads.finetune_sagemaker import import_check
from workloads.pretrain import sagemaker_container
from workloads.pretrain import sagemaker_job as pretrain_job
from workloads.pretrain.package_sourcedir import sourcedir_bytes as _archive

HERE = Path(__file__).resolve().parent
ENTRY_POINT = "sft_train.py"
# What the job runs (the README's packaging list): the entry point, the modules it imports, the pins.
RUNTIME_FILES = (
    "chat_data.py",
    "checkpoints.py",
    "chat_records.py",
    "ddp_runtime.py",
    "import_check.py",
    "merge_adapter.py",
    "requirements.txt",
    "sagemaker_container.py",
    "sft_train.py",
)
# Modules the pre-training program's folder holds and this program uses as they are.
SHARED_FILES = {
    name: HERE.parent / "pretrain" / name for name in ("checkpoints.py", "ddp_runtime.py", "sagemaker_container.py")
}
TRAIN_CHANNEL = sagemaker_container.TRAIN_CHANNEL  # -> SM_CHANNEL_TRAIN
MODEL_CHANNEL = sagemaker_container.MODEL_CHANNEL  # -> SM_CHANNEL_MODEL: the base model's files, when a run names one
CHECKPOINT_LOCAL_PATH = sagemaker_container.CHECKPOINT_DIR
MERGED_DIR = (
    import_check.MERGED_DIR
)  # sft_train.py writes SM_MODEL_DIR/merged/: the directory Custom Model Import reads
IMAGE_REPOSITORY = pretrain_job.IMAGE_REPOSITORY
image_uri = pretrain_job.image_uri


def sourcedir_bytes() -> bytes:
    """sourcedir.tar.gz: the runtime files at the archive root, byte-for-byte reproducible."""
    return _archive(HERE, RUNTIME_FILES, SHARED_FILES)


def hyperparameters(
    *, submit_directory: str, region: str, instance_type: str, hub_token_secret: str = ""
) -> dict[str, str]:
    """The toolkit's settings (every value JSON-encoded); the base model is added per execution.

    ``hub_token_secret`` names the Secrets Manager secret sft_train.py reads the Hub token from: the name is
    all DescribeTrainingJob shows, never the token.
    """
    values: dict[str, object] = {
        "sagemaker_program": ENTRY_POINT,
        "sagemaker_submit_directory": submit_directory,
        "sagemaker_region": region,
        "sagemaker_container_log_level": 20,
        "sagemaker_torch_distributed_enabled": True,
        "sagemaker_instance_type": instance_type,
    }
    if hub_token_secret:
        values["hub_token_secret"] = hub_token_secret
    return {key: json.dumps(value) for key, value in values.items()}
