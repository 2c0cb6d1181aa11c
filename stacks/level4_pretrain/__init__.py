"""Level 4, pre-training: a HyperPod Slurm cluster skeleton and zero-idle-cost multi-node SageMaker training jobs."""
