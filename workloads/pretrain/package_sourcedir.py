"""Build sourcedir.tar.gz for the SageMaker training job: the training modules at the archive root.

The archive is byte-for-byte reproducible: entries sorted, fixed mtime (0), uid/gid 0, no user
names, mode 0644, and a gzip header with mtime 0 and no file name. The same sources always give the
same bytes, so a CDK file asset built from it keeps its hash until the code really changes.

requirements.txt is left out on purpose: the training toolkit pip-installs a requirements.txt found
in the source directory, and the PyTorch image already ships torch (a job in a VPC without internet
would fail trying). The corpus is not code either: it reaches the job as the ``train`` channel.

    python package_sourcedir.py --output build/sourcedir.tar.gz
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import sys
import tarfile
from collections.abc import Iterable, Mapping
from pathlib import Path

HERE = Path(__file__).resolve().parent
# What the job runs: the entry point and the modules it imports.
RUNTIME_FILES = (
    "byte_corpus.py",
    "checkpoints.py",
    "ddp_runtime.py",
    "sagemaker_container.py",
    "tiny_gpt.py",
    "train.py",
)
FIXED_MTIME = 0


def sourcedir_bytes(
    source_dir: Path = HERE, files: Iterable[str] = RUNTIME_FILES, shared: Mapping[str, Path] | None = None
) -> bytes:
    """The gzip-compressed tar of the given files, each at the archive root; a name in ``shared`` is read from
    the path it maps to (a module another program's folder holds) instead of ``source_dir``."""
    sources = {name: (shared or {}).get(name, source_dir / name) for name in sorted(set(files))}
    missing = [str(path) for path in sources.values() if not path.is_file()]
    if missing:
        raise FileNotFoundError(f"missing: {', '.join(missing)}")
    tar_buffer = io.BytesIO()
    with tarfile.open(fileobj=tar_buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, path in sources.items():
            data = path.read_bytes()
            info = tarfile.TarInfo(name=name)
            info.size = len(data)
            info.mtime = FIXED_MTIME
            info.mode = 0o644
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            tar.addfile(info, io.BytesIO(data))
    gz_buffer = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=gz_buffer, mtime=FIXED_MTIME, compresslevel=9) as gz:
        gz.write(tar_buffer.getvalue())
    return gz_buffer.getvalue()


def write_sourcedir(output: Path, source_dir: Path = HERE) -> Path:
    """Write the archive (only when its bytes change, so file timestamps stay put) and return its path."""
    data = sourcedir_bytes(source_dir)
    if not output.is_file() or output.read_bytes() != data:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_bytes(data)
    return output


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=HERE / "build" / "sourcedir.tar.gz")
    args = parser.parse_args(argv)
    path = write_sourcedir(args.output)
    print(f"{path} sha256={hashlib.sha256(path.read_bytes()).hexdigest()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
