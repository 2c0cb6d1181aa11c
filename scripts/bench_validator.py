"""Benchmark the Level 3 dataset validator against a bare ``json.loads`` loop over the same JSON Lines file.

Generates a Nova-format (``bedrock-conversation-2024``) file of ``size_mb`` MiB (default 1024: over 1 GB) in
a temporary directory, for each corpus, then times, each in a fresh interpreter and ``rounds`` times alternately:

- the validator: ``finetune_validate.validator.validate_files`` (every record fully checked);
- the bare loop: ``for line in f: json.loads(line)``.

Throughput is the file size over the best time of the work itself (interpreter start and imports excluded),
both wall-clock and CPU (``time.process_time``); the ratio target is judged on CPU time, which other
processes on a shared machine cannot inflate (on an idle machine the two agree). Peak RSS is the child's own
high-water mark (``VmHWM``, else ``ru_maxrss``).

Two corpora (``--corpus``, default both):

- ``synthetic``: short chat samples (a shared system prompt, one to three exchanges, about 1.5 KB each);
- ``realistic``: ``tests.level3_finetune.finetune_data.realistic_records`` (the records the validator tests
  use): half tool-use conversations whose system prompt holds several KB of JSON tool specifications (a ':'
  after every key, the marker the reserved-string scan looks for), half long multi-turn conversations with
  code and tables. It is generated in a child interpreter started in the checkout (``tests`` is not an
  installed package).

Each file is built from a pool of ``POOL`` distinct records drawn at random, so it holds far more than Nova's
20,000-record cap: the only error the validator may report is ``too_many_records``, which proves it ran to the
end. The file is deleted afterwards.

Targets, on each corpus: validator throughput >= 0.5x the bare loop; validator peak RSS < 200 MB.
``run()`` returns the numbers of one corpus as a dict (``scripts/bench.py`` imports it); ``main()`` prints a
table per corpus.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from stacks.shared.python_function import stage_function_code

ROOT = Path(__file__).resolve().parents[1]
BASE_MODEL = "amazon.nova-lite-v1:0:300k"
MIB = 1 << 20
MB = 1_000_000
RATIO_TARGET = 0.5
RSS_TARGET_MB = 200.0
ROUNDS = 3
POOL = 2_000
SEED = 20261128
SYNTHETIC = "synthetic"
REALISTIC = "realistic"
CORPORA = (SYNTHETIC, REALISTIC)
CORPUS_LABELS = {
    SYNTHETIC: "synthetic chat records (~1.5 KB)",
    REALISTIC: "realistic records (JSON tool specs, long multi-turn)",
}

SYSTEM = (
    "You are the genai-spectrum-kit support assistant. Answer in the kit's house style: start with the "
    "recommended customization level in bold, give the reason in one sentence, name the AWS services, and "
    "end with what the setup costs when idle. Keep answers under 120 words."
)
_WORDS = (
    "prompt", "engineering", "retrieval", "knowledge", "base", "guardrail", "fine-tuning", "pre-training", "model",
    "customization", "dataset", "record", "epoch", "learning", "rate", "validation", "report", "bucket", "vector",
    "index", "ingestion", "citation", "tone", "style", "format", "latency", "token", "throughput", "quota",
    "region", "account", "cluster", "controller", "file", "system", "lifecycle", "script", "state", "machine",
    "workflow", "deployment", "endpoint", "on-demand", "provisioned", "storage", "monthly", "hourly", "cost",
    "idle", "floor", "Nova", "Titan", "Llama", "Claude", "Bedrock", "SageMaker", "HyperPod", "Lambda", "Step",
    "Functions", "S3", "Vectors", "OpenSearch", "café", "€",
)  # fmt: skip


def maxrss_mb(ru_maxrss: int, platform: str) -> float:
    """getrusage's ``ru_maxrss`` in MiB: Linux counts it in KiB (getrusage(2), Linux man-pages: "in kilobytes"),
    macOS in bytes (getrusage(2), macOS: "in bytes"). The child interpreters run this function's own source."""
    return ru_maxrss / (1024 * 1024 if platform == "darwin" else 1024)


_CHILD_PRELUDE = (
    """
import json, resource, sys, time
"""
    + inspect.getsource(maxrss_mb)
    + """
def peak_rss_mb():
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for row in status:
                if row.startswith("VmHWM:"):
                    return int(row.split()[1]) / 1024
    except OSError:
        pass
    return maxrss_mb(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, sys.platform)
path = sys.argv[1]
"""
)
VALIDATOR_CHILD = (
    _CHILD_PRELUDE
    + """
from finetune_validate.validator import error_kinds, validate_files
start, cpu = time.perf_counter(), time.process_time()
report = validate_files(path, base_model_id=sys.argv[2])
seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu
print(json.dumps({"seconds": seconds, "cpu_seconds": cpu_seconds, "peak_rss_mb": peak_rss_mb(),
                  "records": report["training"]["records"], "error_kinds": error_kinds(report)}))
"""
)
BARE_CHILD = (
    _CHILD_PRELUDE
    + """
start, cpu = time.perf_counter(), time.process_time()
with open(path, encoding="utf-8") as f:
    for line in f:
        json.loads(line)
seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu
print(json.dumps({"seconds": seconds, "cpu_seconds": cpu_seconds, "peak_rss_mb": peak_rss_mb()}))
"""
)


# Writes ``realistic_records(n, seed)`` as JSON Lines to stdout; run with the checkout as the working directory.
REALISTIC_CHILD = """
import json, sys
from tests.level3_finetune.finetune_data import realistic_records
out = sys.stdout
for record in realistic_records(int(sys.argv[1]), int(sys.argv[2])):
    out.write(json.dumps(record, ensure_ascii=False))
    out.write("\\n")
"""


def _sentence(rng: random.Random, words: int) -> str:
    text = " ".join(rng.choice(_WORDS) for _ in range(words))
    return text[0].upper() + text[1:] + "."


def make_record(rng: random.Random) -> dict[str, Any]:
    """One realistic Nova training record (no reserved strings)."""
    messages = []
    for _ in range(rng.randint(1, 3)):
        question = " ".join(_sentence(rng, rng.randint(6, 18)) for _ in range(rng.randint(1, 2)))
        level = rng.randint(1, 4)
        answer = f"**Level {level}.** " + " ".join(_sentence(rng, rng.randint(8, 22)) for _ in range(rng.randint(3, 9)))
        if rng.random() < 0.5:
            answer += f" Idle cost: about ${rng.randint(0, 400)} a month."
        messages.append({"role": "user", "content": [{"text": question}]})
        messages.append({"role": "assistant", "content": [{"text": answer}]})
    return {"schemaVersion": "bedrock-conversation-2024", "system": [{"text": SYSTEM}], "messages": messages}


def realistic_pool(count: int = POOL, seed: int = SEED) -> list[bytes]:
    """``count`` lines of ``realistic_records(count, seed)``, made by a child interpreter in the checkout."""
    done = subprocess.run(
        [sys.executable, "-c", REALISTIC_CHILD, str(count), str(seed)], cwd=ROOT, capture_output=True, check=True
    )
    lines = [line + b"\n" for line in done.stdout.splitlines()]
    if len(lines) != count:
        raise RuntimeError(f"expected {count} realistic records, got {len(lines)}: {done.stderr.decode()[-500:]}")
    return lines


def generate(path: Path, size_bytes: int, seed: int = SEED, corpus: str = SYNTHETIC) -> int:
    """Write at least ``size_bytes`` of JSON Lines of the corpus; returns the record count."""
    rng = random.Random(seed)
    if corpus == REALISTIC:
        pool = realistic_pool(POOL, seed)
    elif corpus == SYNTHETIC:
        pool = [json.dumps(make_record(rng), ensure_ascii=False).encode("utf-8") + b"\n" for _ in range(POOL)]
    else:
        raise ValueError(f"unknown corpus {corpus!r}; one of {', '.join(CORPORA)}")
    written = records = 0
    with open(path, "wb") as handle:
        while written < size_bytes:
            block = b"".join(pool[rng.randrange(POOL)] for _ in range(1_000))
            handle.write(block)
            written += len(block)
            records += 1_000
    return records


def _child(code: str, *args: str) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(stage_function_code("finetune_validate"))}
    done = subprocess.run([sys.executable, "-c", code, *args], env=env, capture_output=True, text=True, check=True)
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def run(size_mb: int = 1024, rounds: int = ROUNDS, corpus: str = SYNTHETIC) -> dict[str, Any]:
    """Generate, measure (best of ``rounds``, alternating), delete; returns the numbers and whether targets hold."""
    with tempfile.TemporaryDirectory(prefix="bench-validator-") as tmp:
        path = Path(tmp) / "train.jsonl"
        started = time.perf_counter()
        records = generate(path, size_mb * MIB, corpus=corpus)
        generate_s = time.perf_counter() - started
        size = path.stat().st_size
        validator_runs, bare_runs = [], []
        for _ in range(max(rounds, 1)):
            bare_runs.append(_child(BARE_CHILD, str(path)))
            validator_runs.append(_child(VALIDATOR_CHILD, str(path), BASE_MODEL))
    validator = min(validator_runs, key=lambda r: r["seconds"])
    bare = min(bare_runs, key=lambda r: r["seconds"])
    validator_cpu = min(r["cpu_seconds"] for r in validator_runs)
    bare_cpu = min(r["cpu_seconds"] for r in bare_runs)
    validator_rate = size / MB / validator["seconds"]
    bare_rate = size / MB / bare["seconds"]
    ratio = validator_rate / bare_rate
    cpu_ratio = bare_cpu / validator_cpu
    peak = max(r["peak_rss_mb"] for r in validator_runs)
    unexpected = set(validator["error_kinds"]) - {"too_many_records"}
    return {
        "corpus": corpus,
        "fileBytes": size,
        "records": records,
        "generateSeconds": round(generate_s, 1),
        "rounds": len(validator_runs),
        "validator": {
            "seconds": round(validator["seconds"], 2),
            "cpuSeconds": round(validator_cpu, 2),
            "mbPerSecond": round(validator_rate, 1),
            "cpuMbPerSecond": round(size / MB / validator_cpu, 1),
            "peakRssMb": round(peak, 1),
            "recordsChecked": validator["records"],
            "errorKinds": validator["error_kinds"],
        },
        "bareLoop": {
            "seconds": round(bare["seconds"], 2),
            "cpuSeconds": round(bare_cpu, 2),
            "mbPerSecond": round(bare_rate, 1),
            "cpuMbPerSecond": round(size / MB / bare_cpu, 1),
            "peakRssMb": round(max(r["peak_rss_mb"] for r in bare_runs), 1),
        },
        "ratio": round(ratio, 2),
        "cpuRatio": round(cpu_ratio, 2),
        "targets": {"ratio": RATIO_TARGET, "peakRssMb": RSS_TARGET_MB},
        "ok": cpu_ratio >= RATIO_TARGET and peak < RSS_TARGET_MB and validator["records"] == records and not unexpected,
    }


def _print(result: dict[str, Any]) -> None:
    validator, bare = result["validator"], result["bareLoop"]
    rows = [
        ("measure", "validator", "bare json.loads loop", "target"),
        ("---", "---", "---", "---"),
        ("throughput, wall (MB/s)", f"{validator['mbPerSecond']:.1f}", f"{bare['mbPerSecond']:.1f}", ""),
        ("throughput, CPU time (MB/s)", f"{validator['cpuMbPerSecond']:.1f}", f"{bare['cpuMbPerSecond']:.1f}", ""),
        ("ratio validator / bare, wall", f"{result['ratio']:.2f}x", "", ""),
        ("ratio validator / bare, CPU time", f"{result['cpuRatio']:.2f}x", "", f">= {RATIO_TARGET}x"),
        ("peak RSS, VmHWM (MB)", f"{validator['peakRssMb']:.1f}", f"{bare['peakRssMb']:.1f}", f"< {RSS_TARGET_MB:.0f}"),
        ("best wall / CPU time (s)", f"{validator['seconds']:.2f} / {validator['cpuSeconds']:.2f}",
         f"{bare['seconds']:.2f} / {bare['cpuSeconds']:.2f}", ""),
    ]  # fmt: skip
    print(
        f"Corpus {result['corpus']}, {CORPUS_LABELS[result['corpus']]}. File: {result['fileBytes'] / MB:,.0f} MB "
        f"({result['fileBytes']:,} bytes), {result['records']:,} Nova records, generated in "
        f"{result['generateSeconds']} s; best of {result['rounds']} runs each, fresh interpreters."
    )
    print("\n".join("| " + " | ".join(row) + " |" for row in rows))
    print(
        f"Validator errors (expected: too_many_records only, Nova caps a dataset at 20,000): {validator['errorKinds']}"
    )
    print("targets met" if result["ok"] else "A TARGET WAS MISSED")
    print()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--size-mb", type=int, default=1024, help="file size in MiB (default 1024)")
    parser.add_argument("--rounds", type=int, default=ROUNDS, help="runs of each, best taken (default 3)")
    parser.add_argument(
        "--corpus", choices=(*CORPORA, "both"), default="both", help="which corpus to measure (default both)"
    )
    args = parser.parse_args(argv)
    ok = True
    for corpus in CORPORA if args.corpus == "both" else (args.corpus,):
        result = run(args.size_mb, args.rounds, corpus)
        _print(result)
        ok &= bool(result["ok"])
    print("all targets met" if ok else "A TARGET WAS MISSED", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
