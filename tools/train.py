"""Train a detector or an image classifier from a YAML experiment config.

Examples::

    python tools/train.py configs/shapes_demo.yaml
    python tools/train.py configs/coco/retinanet_sasa_resnet50_convstem.yaml trainer.devices=8 data.batch_size=8
    python tools/train.py configs/shapes_demo.yaml --resume                 # continue from checkpoints/last.ckpt
    python tools/train.py configs/shapes_demo.yaml --resume run/checkpoints/best-epoch003-step000500.ckpt

Arguments after the config are ``key=value`` overrides of the config (see ``sasa_det/config.py``). A resumed
run uses the config stored in its checkpoint; overrides may change how it runs (e.g. trainer.max_steps,
trainer.devices) but not the model. SIGINT (Ctrl-C), SIGTERM and SIGUSR1 stop training after the current
step with checkpoints/last.ckpt written (exit status 128 + signal); under SLURM, SIGUSR1 also requeues the
job, and the requeued job resumes by itself.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from sasa_det.cli import tool_parser


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line arguments of this tool."""
    parser = tool_parser(__doc__)
    parser.add_argument("config", help="experiment YAML (may use _base_ inheritance)")
    parser.add_argument("overrides", nargs="*", help="config overrides as key=value, e.g. optim.lr=0.02")
    parser.add_argument(
        "--resume",
        nargs="?",
        const="last",
        default=None,
        metavar="CKPT",
        help="continue the run in output_dir from checkpoints/last.ckpt, or from CKPT",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict:
    """Load the config, train (or resume), and print the final metrics and checkpoint paths."""
    args = parse_args(argv)
    from sasa_det.logging_setup import configure_logging

    configure_logging()
    import json

    from sasa_det.checkpoint_file import CheckpointFileError
    from sasa_det.config import ConfigError, load_config
    from sasa_det.engine.checkpointing import CheckpointWriteError, TrainingInterrupted
    from sasa_det.engine.resume import resolve_resume
    from sasa_det.engine.runner import train

    try:
        cfg = load_config(args.config, args.overrides)
        cfg, resume_from = resolve_resume(cfg, list(args.overrides), args.resume)
    except (ConfigError, CheckpointFileError, FileNotFoundError, ValueError) as err:
        sys.exit(f"error: {err}")
    last = f"{cfg.output_dir}/checkpoints/last.ckpt"
    go_on = f"python tools/train.py {args.config} --resume"
    try:
        result = train(cfg, resume_from=resume_from)  # checks the data paths before it writes anything
    except (ConfigError, CheckpointWriteError) as err:
        sys.exit(f"error: {err}")
    except TrainingInterrupted as stop:
        hint = "" if stop.requeued else f"; continue with: python tools/train.py {args.config} --resume"
        print(f"{stop}{hint}", file=sys.stderr, flush=True)
        sys.exit(128 + stop.signum)
    except FloatingPointError as err:  # a non-finite loss: no update was made and last.ckpt is finite
        sys.exit(f"error: {err}. {last} (if written) holds the last finite weights: continue with {go_on} optim.lr=...")
    except RuntimeError as err:
        if "DataLoader worker" not in str(err):
            raise
        sys.exit(
            f"error: a data loader worker died ({str(err).splitlines()[0]}), usually killed for lack of memory. "
            f"{last} (if written) is intact: lower data.num_workers or give the job more memory, then {go_on}"
        )
    print(json.dumps(result, indent=2), flush=True)
    if result.get("already_finished"):
        print(result["already_finished"], file=sys.stderr, flush=True)
    return result


if __name__ == "__main__":
    main()
