"""Write data/corpus.txt: a small, deterministic English corpus about cloud architecture.

The sentences come from templates and word lists written for this kit, drawn with a fixed seed, so
the file is the same on every machine (a test regenerates it and compares bytes). No downloads.

    python make_corpus.py                 # rewrite data/corpus.txt
    python make_corpus.py --check         # exit 1 if data/corpus.txt is out of date
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

DEFAULT_OUTPUT = Path(__file__).resolve().parent / "data" / "corpus.txt"
DEFAULT_SEED = 2026
DEFAULT_PARAGRAPHS = 110

TEAMS = [
    "the platform team",
    "a small startup",
    "the data engineering group",
    "an online retailer",
    "the research lab",
    "a payments company",
    "the analytics team",
    "a media streaming service",
    "the security office",
    "a logistics firm",
]
SERVICES = [
    "an object store",
    "a message queue",
    "a serverless function",
    "a managed database",
    "a load balancer",
    "a container cluster",
    "a content delivery network",
    "a key management service",
    "a workflow engine",
    "a shared file system",
    "a search index",
    "a stream processor",
]
GOALS = [
    "lower the idle cost",
    "survive the loss of a whole zone",
    "keep every request under one hundred milliseconds",
    "make deployments repeatable",
    "keep customer data encrypted at rest and in transit",
    "scale from ten users to ten million",
    "recover from a bad release within minutes",
    "give each team its own account",
    "trace a request across every hop",
    "train a model without leaving the private network",
]
PRACTICES = [
    "define the infrastructure as code and review it like any other change",
    "grant each function only the permissions it needs",
    "put the database in private subnets with no route to the internet",
    "tag every resource with its owner and its cost centre",
    "alarm on symptoms that users feel, not on every metric",
    "write checkpoints often so that a failed node costs minutes, not days",
    "version the configuration and keep it next to the code",
    "test the restore, because a backup that was never restored is only a hope",
    "prefer managed services when the team is small",
    "delete what nobody uses, since idle resources still send a bill",
    "shard the data so that every worker reads a different slice",
    "rotate credentials automatically and never paste them into code",
]
PROBLEMS = [
    "a queue that grew faster than the consumers could drain it",
    "a single instance that held all the state",
    "a lifecycle script that fetched its code from a moving branch",
    "a bucket policy that allowed far more than anyone intended",
    "a training job that lost a day of progress when one node failed",
    "a timeout that was shorter than the slowest dependency",
    "a cache that served stale prices for an hour",
    "a quota that was still zero on the morning of the launch",
    "a log group that kept every line forever",
    "a retry loop without any backoff",
]
FIXES = [
    "added a dead-letter queue and a second consumer",
    "moved the state into a managed table with point-in-time recovery",
    "pinned the scripts to a versioned artifact in their own bucket",
    "replaced the wildcard with the exact actions and resources",
    "saved a checkpoint every few hundred steps and resumed automatically",
    "raised the timeout and added a circuit breaker",
    "set a short time to live and invalidated on every write",
    "requested the quota increase weeks ahead and kept a fallback region",
    "set a retention period and exported old logs to cheap storage",
    "added exponential backoff with jitter",
]
CONNECTORS = ["Later,", "In the end,", "After a review,", "Within a week,", "Next quarter,", "Soon after,"]
OPENERS = [
    "{team} built {goal_phrase} around {service}.",
    "When {team} needed to {goal}, they started with {service}.",
    "The first design from {team} used {service} to {goal}.",
    "{team_cap} wanted to {goal}, so the architects chose {service}.",
]
MIDDLES = [
    "The trouble began with {problem}.",
    "Their first incident came from {problem}.",
    "Load tests soon exposed {problem}.",
    "A quiet weekend ended because of {problem}.",
]
ENDINGS = [
    "{connector} the team {fix}, and the pager stayed silent.",
    "{connector} they {fix}; the next outage was shorter and cheaper.",
    "{connector} the engineers {fix} and wrote down why.",
]
ADVICE = [
    "A good rule is to {practice}.",
    "The lesson they share is simple: {practice}.",
    "Their runbook now says to {practice}.",
    "Most teams learn to {practice}.",
]


def _paragraph(rng: random.Random) -> str:
    team = rng.choice(TEAMS)
    goal = rng.choice(GOALS)
    words = {
        "team": team[0].upper() + team[1:],
        "team_cap": team[0].upper() + team[1:],
        "goal": goal,
        "goal_phrase": f"a way to {goal}",
        "service": rng.choice(SERVICES),
        "problem": rng.choice(PROBLEMS),
        "fix": rng.choice(FIXES),
        "connector": rng.choice(CONNECTORS),
    }
    opener = rng.choice(OPENERS)
    if not opener.startswith("{team}"):
        words["team"] = team
    sentences = [opener.format(**words), rng.choice(MIDDLES).format(**words), rng.choice(ENDINGS).format(**words)]
    for _ in range(rng.randint(1, 2)):
        sentences.append(rng.choice(ADVICE).format(practice=rng.choice(PRACTICES)))
    return " ".join(sentences)


def make_corpus(seed: int = DEFAULT_SEED, paragraphs: int = DEFAULT_PARAGRAPHS) -> str:
    rng = random.Random(seed)
    return "\n\n".join(_paragraph(rng) for _ in range(paragraphs)) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--paragraphs", type=int, default=DEFAULT_PARAGRAPHS)
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    args = parser.parse_args(argv)
    text = make_corpus(args.seed, args.paragraphs)
    if args.check:
        current = args.output.read_text(encoding="utf-8") if args.output.exists() else None
        if current != text:
            print(f"{args.output} is out of date: run python make_corpus.py", file=sys.stderr)
            return 1
        return 0
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text, encoding="utf-8")
    print(f"wrote {len(text.encode())} bytes to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
