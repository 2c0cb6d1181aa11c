"""A section of a Markdown file that a script writes from the kit's own sources, between two marker comments.

`python scripts/<script>.py` rewrites the section; `--check` exits 1 when the file's section is stale (each
script's test runs the same check), so a fact shown in the docs is never written there by hand.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class GeneratedSection:
    path: Path
    start: str
    end: str
    render: Callable[[], str]
    what: str  # e.g. "README.md's configuration reference", for the stale message
    command: str  # how to regenerate it

    def written_into(self, text: str, section: str | None = None) -> str:
        before, rest = text.split(self.start, 1)
        _, after = rest.split(self.end, 1)
        return f"{before}{self.start}\n{self.render() if section is None else section}\n{self.end}{after}"

    def main(self, argv: list[str]) -> int:
        text = self.path.read_text()
        fresh = self.written_into(text)
        if "--check" in argv:
            if fresh != text:
                print(f"{self.what} is stale: run {self.command}")
                return 1
            return 0
        self.path.write_text(fresh)
        return 0
