"""The one folder the app writes to while it synthesizes (besides cdk.out): ``build/``, git-ignored.

``cdk watch`` redeploys on any file event it does not exclude, and its own synth runs this app again, so a file
rewritten on every synth would redeploy for ever. ``cdk.json``'s ``watch.exclude`` names ``build``, and a file here
is written only when its bytes change (tests/infra/test_build_dir.py replays the pinned CLI's matcher).
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BUILD_DIR = ROOT / "build"


def sourcedir_asset(folder: str, prefix: str, data: bytes) -> str:
    """``build/<folder>``, holding ``<prefix>/sourcedir.tar.gz`` with ``data``: an asset folder for a training job."""
    out = BUILD_DIR / folder
    tarball = out / prefix / "sourcedir.tar.gz"
    if not tarball.is_file() or tarball.read_bytes() != data:
        tarball.parent.mkdir(parents=True, exist_ok=True)
        tarball.write_bytes(data)
    return str(out)
