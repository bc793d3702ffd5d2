"""Train a detector or an image classifier from a YAML experiment config.

Example::

    python tools/train.py configs/shapes_demo.yaml
    python tools/train.py configs/coco/retinanet_sasa_resnet50_convstem.yaml trainer.devices=8 data.batch_size=8

Arguments after the config are ``key=value`` overrides of the config (see ``sasa_det/config.py``).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from sasa_det.config import ConfigError, load_config
from sasa_det.engine.runner import train


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line arguments of this tool."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", help="experiment YAML (may use _base_ inheritance)")
    parser.add_argument("overrides", nargs="*", help="config overrides as key=value, e.g. optim.lr=0.02")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict:
    """Load the config, train, and print the final metrics and checkpoint paths."""
    args = parse_args(argv)
    try:
        cfg = load_config(args.config, args.overrides)
    except (ConfigError, FileNotFoundError) as err:
        sys.exit(f"error: {err}")
    result = train(cfg)
    print(json.dumps(result, indent=2), flush=True)
    return result


if __name__ == "__main__":
    main()
