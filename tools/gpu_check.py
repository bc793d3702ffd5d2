"""Check the CUDA path on one GPU: correctness against the CPU references, layer and detector speed, a short training.

    python tools/gpu_check.py --out gpu_check            # on a GPU machine, about 8 minutes from cold caches
    python tools/gpu_check.py --dry-run --out /tmp/check  # every section on the CPU at tiny sizes

Each section runs in its own process with its own timeout and appends one JSON line per result to
OUT/gpu_check.jsonl as it goes (a crash loses only the rest of that section); a table is printed at the
end. The short training trains --train-config (default: this clone's configs/coco/retinanet_sasa_resnet50.yaml)
for 20 steps on a generated COCO-format set and evaluates it. A bare PyTorch image lacks omegaconf, pycocotools and faster-coco-eval: the environment section
names what is missing and how to install it from wheels without network.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from sasa_det.cli import run_tool, tool_parser

#: The experiment the train_eval section trains by default: the COCO RetinaNet with a SASA-ResNet-50.
DEFAULT_TRAIN_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "coco" / "retinanet_sasa_resnet50.yaml"


def parse_args(argv=None) -> argparse.Namespace:
    """Command-line arguments of this tool."""
    parser = tool_parser(__doc__)
    parser.add_argument("--out", type=Path, required=True, help="folder for gpu_check.jsonl, the caches and the runs")
    parser.add_argument("--dry-run", action="store_true", help="run every section on the CPU at tiny sizes")
    parser.add_argument("--sections", nargs="+", metavar="NAME", help="run only these sections")
    parser.add_argument("--budget", type=float, default=470.0, help="seconds for all sections (default 470)")
    parser.add_argument(
        "--train-config",
        type=Path,
        default=DEFAULT_TRAIN_CONFIG,
        help="experiment YAML the train_eval section trains briefly (default: configs/coco/retinanet_sasa_resnet50.yaml)",
    )
    args = parser.parse_args(argv)
    if not args.train_config.is_file():
        parser.error(f"--train-config {args.train_config}: no such file (an experiment YAML of configs/)")
    return args


def main(argv=None) -> int:
    """Run the check and print the table; exit status 1 when a section or a result failed."""
    args = parse_args(argv)
    from sasa_det.analysis.gpu_check import format_results, run_gpu_check

    records = run_gpu_check(
        args.out,
        dry_run=args.dry_run,
        sections=args.sections,
        budget_s=args.budget,
        progress=lambda line: print(line, file=sys.stderr, flush=True),
        train_config=args.train_config,
    )
    print(format_results(records))
    print(f"\nresults: {args.out / 'gpu_check.jsonl'}")
    failed = [r for r in records if r.get("status") not in (None, "ok") or r.get("ok") is False]
    return 1 if failed else 0


if __name__ == "__main__":
    run_tool(main)
