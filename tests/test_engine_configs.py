"""Every shipped experiment config builds its model (slow: full-size ResNet-50/101 detectors)."""

from pathlib import Path

import pytest

from sasa_det.engine.experiment import load_config

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"
EXPERIMENTS = sorted(p for p in CONFIG_DIR.rglob("*.yaml") if "_base_" not in p.parts)


@pytest.mark.slow
@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: str(p.relative_to(CONFIG_DIR)))
def test_shipped_config_builds_its_model(path):
    from sasa_det.engine.tasks import get_task

    cfg = load_config(path, ["model.num_classes=3", "classifier.num_classes=3"])
    module = get_task(cfg.task).build_module(cfg)
    assert sum(p.numel() for p in module.parameters()) > 0
