"""Train a detector or an image classifier from a YAML experiment config.

Examples::

    python tools/train.py configs/shapes_demo.yaml
    python tools/train.py configs/coco/retinanet_sasa_resnet50_convstem.yaml trainer.devices=8 data.batch_size=8
    python tools/train.py --resume outputs/shapes_demo                      # continue the run in that folder
    python tools/train.py --resume outputs/shapes_demo trainer.max_epochs=16    # ... and train it longer
    python tools/train.py configs/shapes_demo.yaml --resume                 # the run in the config's output_dir
    python tools/train.py configs/shapes_demo.yaml output_dir=run2 --resume run/checkpoints/best-epoch003-step000500.ckpt

Arguments after the config are ``key=value`` overrides of the config (see ``docs/configs.md``). A resumed
run uses the config stored in its checkpoint; overrides may change how it runs (e.g. trainer.max_steps,
trainer.devices) but not the model. A checkpoint of another run is only read. SIGINT (Ctrl-C), SIGTERM and SIGUSR1 stop training after the current
step with checkpoints/last.ckpt written (exit status 128 + signal); under SLURM, SIGUSR1 also requeues the
job, and the requeued job resumes by itself.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from sasa_det.cli import run_tool, tool_parser

#: The demo's config: ``model.init_from=demo`` starts from the checkpoint of the run it writes.
DEMO_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "shapes_demo.yaml"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line arguments of this tool."""
    parser = tool_parser(__doc__)
    parser.add_argument(
        "config", nargs="?", help="experiment YAML (may use _base_ inheritance); not needed with --resume DIR"
    )
    parser.add_argument("overrides", nargs="*", help="config overrides as key=value, e.g. optim.lr=0.02")
    parser.add_argument(
        "--resume",
        nargs="?",
        const="last",
        default=None,
        metavar="DIR|CKPT",
        help="continue a run: the run in DIR (its checkpoints/last.ckpt and stored config), or from the checkpoint "
        "CKPT; alone, the run in the config's output_dir",
    )
    args = parser.parse_intermixed_args(argv)
    if args.config is not None and "=" in args.config and not args.config.endswith((".yaml", ".yml")):
        args.overrides.insert(0, args.config)  # `--resume DIR key=value ...`: no config file
        args.config = None
    if args.config is None and (args.resume is None or args.resume == "last"):
        parser.error("give a config file, or --resume OUTPUT_DIR to continue the run in that folder")
    return args


def resume_command(output_dir: str) -> str:
    """The command that continues the run in ``output_dir`` (quoted for a POSIX shell)."""
    import shlex

    return f"python tools/train.py --resume {shlex.quote(str(output_dir))}"


def main(argv: Sequence[str] | None = None) -> dict:
    """Load the config, train (or resume), and print the final metrics and checkpoint paths."""
    args = parse_args(argv)
    from sasa_det.logging_setup import configure_logging

    configure_logging()
    import json

    from sasa_det.cli import is_user_error
    from sasa_det.engine.experiment import config_from_dict, load_config

    try:  # the config is read and checked before torch loads
        cfg = load_config(args.config, args.overrides) if args.config is not None else None
        from sasa_det.engine.run.resume import resolve_resume

        cfg, resume_from = resolve_resume(cfg, list(args.overrides), args.resume, config_from_dict)
    except Exception as err:
        if not is_user_error(err):
            raise
        sys.exit(f"error: {err}")
    from sasa_det.engine.run.run_directory import RunDirectory
    from sasa_det.engine.run.signals import TrainingInterrupted
    from sasa_det.engine.runner import train

    last = RunDirectory(cfg.output_dir).last_checkpoint
    go_on = resume_command(cfg.output_dir)
    try:
        # checks the data paths before it writes anything
        result = train(cfg, resume_from=resume_from, demo_config=DEMO_CONFIG)
    except TrainingInterrupted as stop:
        hint = "" if stop.requeued else f"; continue with: {go_on}"
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
    except Exception as err:  # a config, data, weights or disk problem: one line naming it (CheckpointWriteError...)
        if not is_user_error(err):
            raise
        sys.exit(f"error: {err}")
    print(json.dumps(result, indent=2), flush=True)
    if result.get("already_finished"):
        print(result["already_finished"], file=sys.stderr, flush=True)
    return result


if __name__ == "__main__":
    run_tool(main)
