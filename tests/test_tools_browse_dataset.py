"""tools/browse_dataset.py draws a config's dataset images with their ground truth."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sasa_det.engine.experiment import load_config
from sasa_det.engine.tasks import get_task
from sasa_det.evaluation.visualize import _PALETTE, MIN_DRAWN_SIDE
from tests.helpers import load_tool, tiny_shapes_overrides

DEMO = str(Path(__file__).resolve().parents[1] / "configs" / "shapes_demo.yaml")
browse = load_tool("browse_dataset")


@pytest.fixture(scope="module")
def overrides(tmp_path_factory):
    root = tmp_path_factory.mktemp("browse")
    return [*tiny_shapes_overrides(root / "shapes", root / "run", num_train=4, num_val=3), "data.flip_prob=1.0"]


@pytest.mark.parametrize("split", ["train", "val"])
def test_browse_draws_each_image_with_its_boxes_where_the_targets_are(overrides, split, tmp_path, capsys):
    written = browse.main([DEMO, *overrides, "--split", split, "--out", str(tmp_path), "--num", "3"])
    assert f"3 {split} image(s)" in capsys.readouterr().out

    cfg = load_config(DEMO, overrides)
    task = get_task(cfg.task)
    datamodule = task.build_datamodule(task.prepare(cfg), train=split == "train")
    dataset = datamodule.train_dataset if split == "train" else datamodule.val_dataset
    assert [Path(p).name for p in written] == [f"{image_id}.png" for image_id in dataset.image_ids[:3]]
    for index, path in enumerate(written):
        drawn = np.asarray(Image.open(path).convert("RGB"))
        assert drawn.std() > 10, f"{path} is blank"
        image, target = dataset[index]
        factor = -(-MIN_DRAWN_SIDE // max(image.shape[1:]))  # small images are drawn enlarged
        assert drawn.shape[:2] == (image.shape[1] * factor, image.shape[2] * factor)
        # The last box is drawn last (only label tags come after): the middles of its edges have its class colour.
        x1, y1, x2, y2 = (target["boxes"][-1] * factor).round().to(int).tolist()
        x2, y2 = min(x2, drawn.shape[1] - 1), min(y2, drawn.shape[0] - 1)
        colour = _PALETTE[(int(target["labels"][-1]) - 1) % len(_PALETTE)]
        middles = [(y2, (x1 + x2) // 2), (y1, (x1 + x2) // 2), ((y1 + y2) // 2, x1), ((y1 + y2) // 2, x2)]
        assert any(tuple(drawn[y, x]) == colour for y, x in middles), (path, target["boxes"][-1])


def test_browse_refuses_a_config_without_a_validation_split(tmp_path):
    with pytest.raises(SystemExit) as stop:
        browse.main([DEMO, "data.shapes.root=null", "--split", "val", "--out", str(tmp_path)])
    assert "val_images" in str(stop.value.code)
