"""Entry point of one section's process: ``python -m sasa_det.analysis.gpu_check --section NAME --out DIR``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .sections import SECTIONS, run_section


def main(argv: list[str] | None = None) -> int:
    """Run the section ``--section`` of the GPU check in this process (see ``tools/gpu_check.py``)."""
    parser = argparse.ArgumentParser(description="Run one section of the GPU check (see tools/gpu_check.py).")
    parser.add_argument("--section", required=True, choices=[s.name for s in SECTIONS])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--dry-run", action="store_true")
    parser.add_argument("--train-config", default=None, help="the experiment YAML the train_eval section trains")
    args = parser.parse_args(argv)
    run_section(args.section, args.out, args.dry_run, args.train_config)
    return 0


if __name__ == "__main__":
    sys.exit(main())
