"""What the app writes while it synthesizes stays out of ``cdk watch``'s way.

``cdk watch`` (and ``deploy --watch``) deploys again on any file event its matcher does not ignore, and every round
runs this app again: a file the synth rewrites and the matcher does not ignore would redeploy for ever. The test
replays the pinned CLI's own matcher (``createIgnoreMatcher`` in its bundle, fed ``cdk.json``'s ``watch`` keys the way
``cdk-toolkit.js`` feeds them) rather than restating its glob rules.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from stacks.level3_finetune import sagemaker
from stacks.level4_pretrain import jobs
from stacks.shared import build_dir
from tests.conftest import ROOT

CLI_BUNDLE = ROOT / "node_modules" / "aws-cdk" / "lib" / "index.js"
# Loads the CLI's bundle with its module-level matcher exported, then answers, per path, whether `cdk watch` ignores
# it (the include and exclude keys of cdk.json, rooted at the app's folder, as cdk-toolkit.js passes them).
MATCHER = """
const Module = require("module"), fs = require("fs"), path = require("path");
const [bundle, cdkJson, root, ...paths] = process.argv.slice(1);
const m = new Module(bundle, module);
m.filename = bundle;
m.paths = Module._nodeModulePaths(path.dirname(bundle));
m._compile(fs.readFileSync(bundle, "utf8") + "\\n;module.exports.__matcher = createIgnoreMatcher;\\n", bundle);
const watch = JSON.parse(fs.readFileSync(cdkJson, "utf8")).watch;
const ignored = m.exports.__matcher({ include: watch.include, exclude: watch.exclude, rootDir: root });
console.log(JSON.stringify(paths.map((p) => ignored(path.join(root, p)))));
"""


def watch_ignores(paths: list[str]) -> dict[str, bool]:
    answer = subprocess.run(
        ["node", "-e", MATCHER, str(CLI_BUNDLE), str(ROOT / "cdk.json"), str(ROOT), *paths],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return dict(zip(paths, json.loads(answer.stdout), strict=True))


def test_cdk_watch_ignores_every_file_the_synth_writes_and_still_watches_the_code() -> None:
    # Given the files the app's asset builders write (the synth calls both)
    sagemaker.sourcedir_asset()
    jobs.sourcedir_asset()
    written = sorted(str(p.relative_to(ROOT)) for p in build_dir.BUILD_DIR.rglob("*") if p.is_file())
    assert any(p.endswith("sourcedir.tar.gz") for p in written)
    # and code whose change must redeploy (the tarballs are built from workloads/)
    code = ["workloads/pretrain/train.py", "lambdas/level1_prompt/prompt_api/handler.py", "stacks/level2_rag/stack.py"]
    assert all((ROOT / p).is_file() for p in code)
    # When the pinned CLI's matcher reads cdk.json's watch keys
    ignored = watch_ignores(written + code)
    # Then nothing the synth writes starts a deployment, and a code change still does
    assert [p for p in written if not ignored[p]] == []
    assert [p for p in code if ignored[p]] == []


def test_a_synth_rewrites_a_sourcedir_tarball_only_when_its_bytes_change(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(build_dir, "BUILD_DIR", tmp_path)
    tarball = Path(build_dir.sourcedir_asset("asset", "code", b"one")) / "code" / "sourcedir.tar.gz"
    os.utime(tarball, ns=(0, 0))  # an old time stamp, so any rewrite shows whatever the file system's granularity
    # A second synth with the same bytes leaves the file alone (no file event for a watcher)
    build_dir.sourcedir_asset("asset", "code", b"one")
    assert tarball.stat().st_mtime_ns == 0
    # New bytes are written
    build_dir.sourcedir_asset("asset", "code", b"two")
    assert tarball.read_bytes() == b"two"
