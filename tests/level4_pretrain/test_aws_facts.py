"""Level 4's AWS facts (HyperPod's volume bound, FSx for Lustre's smallest size), held to botocore's service
models: a fact AWS changes fails here, not in an account. The kit-wide ones are in
tests/infra/test_facts_from_sources.py."""

from __future__ import annotations

import botocore.session


def test_the_hyperpod_volume_bound_is_the_apis() -> None:
    """hp_ebs_volume_gb allows what ClusterEbsVolumeConfig.VolumeSizeInGB allows (botocore sagemaker)."""
    from annotated_types import Ge, Le

    from stacks.level4_pretrain.settings import PretrainSettings

    rules = PretrainSettings.model_fields["ebs_volume_gb"].metadata
    bounds = {type(rule): rule for rule in rules if isinstance(rule, Ge | Le)}
    shape = botocore.session.get_session().get_service_model("sagemaker").shape_for("ClusterEbsVolumeConfig")
    limits = shape.members["VolumeSizeInGB"].metadata
    assert (bounds[Ge].ge, bounds[Le].le) == (limits["min"], limits["max"])


def test_the_fsx_size_is_the_smallest_persistent_2_ssd_size() -> None:
    """ "1200 GiB, 2400 GiB, and increments of 2400 GiB" for PERSISTENT_2 SSD (botocore fsx StorageCapacity)."""
    from stacks.level4_pretrain.storage import FSX_STORAGE_GIB

    shape = botocore.session.get_session().get_service_model("fsx").shape_for("CreateFileSystemRequest")
    text = shape.members["StorageCapacity"].documentation
    assert (
        f"<code>PERSISTENT_2</code>, and <code>PERSISTENT_1</code> deployment types using SSD storage type, the "
        f"valid values are {FSX_STORAGE_GIB} GiB" in text
    )
