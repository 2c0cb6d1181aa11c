"""`python -m kit`: the same entry point as the `kit` console command."""

from __future__ import annotations

from kit.cli import main

if __name__ == "__main__":
    main()
