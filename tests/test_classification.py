"""Classification: image-folder data, top-k accuracy, and a tiny training run whose checkpoint feeds a backbone."""

import pytest
import pytorch_lightning as pl
import torch

from sasa_det.backbones import build_backbone, build_classifier, load_backbone_weights
from sasa_det.data.image_folder import ImageFolderDataModule, make_image_folder_dataset
from sasa_det.engine.tasks.classification_module import ClassificationModule, topk_correct
from sasa_det.optim import OptimSettings


def test_topk_correct_against_explicit_loop():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(20, 7, generator=generator)
    labels = torch.randint(0, 7, (20,), generator=generator)
    got = topk_correct(logits, labels, (1, 3, 5))
    for k, value in zip((1, 3, 5), got):
        expected = 0
        for row, label in zip(logits.tolist(), labels.tolist()):
            ranked = sorted(range(7), key=lambda c: -row[c])
            expected += label in ranked[:k]
        assert int(value) == expected


def test_synthetic_image_folder_layout(tmp_path):
    paths = make_image_folder_dataset(tmp_path, num_train_per_class=3, num_val_per_class=2, image_size=16)
    data = ImageFolderDataModule(paths["train"], paths["val"], image_size=16, batch_size=4, num_workers=0)
    assert data.num_classes == 3 and data.class_names == ["blue_triangle", "green_square", "red_circle"]
    data.setup("fit")
    assert len(data.train_dataset) == 9 and len(data.val_dataset) == 6
    images, labels = next(iter(data.val_dataloader()))
    assert images.shape == (4, 3, 16, 16) and labels.dtype == torch.int64


def test_missing_or_empty_folders_are_clear_errors(tmp_path):
    paths = make_image_folder_dataset(tmp_path / "ok", num_train_per_class=1, num_val_per_class=1, image_size=8)
    with pytest.raises(FileNotFoundError, match="training folder"):
        ImageFolderDataModule(tmp_path / "absent", paths["val"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no class sub-folders"):
        ImageFolderDataModule(paths["train"], tmp_path / "empty")
    (tmp_path / "noimages" / "cat").mkdir(parents=True)
    with pytest.raises(ValueError, match="no image"):
        ImageFolderDataModule(tmp_path / "noimages", paths["val"])
    other = make_image_folder_dataset(
        tmp_path / "four", num_train_per_class=1, num_val_per_class=1, image_size=8, num_classes=4
    )
    with pytest.raises(ValueError, match="different classes"):
        ImageFolderDataModule(paths["train"], other["val"])


def test_top5_only_with_five_classes():
    assert ClassificationModule(build_classifier("resnet26", num_classes=3, base_width=8)).topk == (1,)
    assert ClassificationModule(build_classifier("resnet26", num_classes=10, base_width=8)).topk == (1, 5)


def test_training_beats_chance_and_checkpoint_loads_into_a_backbone(tmp_path):
    pl.seed_everything(0, workers=True)
    paths = make_image_folder_dataset(tmp_path / "data", num_train_per_class=24, num_val_per_class=8, image_size=32)
    data = ImageFolderDataModule(
        paths["train"], paths["val"], image_size=32, batch_size=12, num_workers=0, min_crop_scale=0.5
    )
    overrides = {"base_width": 8}
    module = ClassificationModule(
        build_classifier("resnet26", num_classes=data.num_classes, **overrides),
        optim=OptimSettings(lr=0.05, warmup_steps=3, nesterov=True),
        label_smoothing=0.1,
    )
    trainer = pl.Trainer(
        max_steps=36,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        default_root_dir=tmp_path,
    )
    trainer.fit(module, datamodule=data)
    metrics = trainer.validate(module, datamodule=data, verbose=False)[0]
    assert metrics["val/top1"] > 0.6, metrics  # chance is 1/3
    assert torch.isfinite(torch.tensor(metrics["val/loss"]))
    assert "val/top5" not in metrics

    checkpoint = tmp_path / "classifier.ckpt"
    trainer.save_checkpoint(checkpoint)
    backbone = build_backbone("resnet26", out_features=("C4", "C5"), **overrides)
    missing, unexpected = load_backbone_weights(backbone, checkpoint)  # weights_only=True inside
    assert missing == [] and unexpected == []
    x = torch.randn(2, 3, 32, 32)
    module.eval()
    backbone.eval()
    with torch.no_grad():
        torch.testing.assert_close(backbone(x)["C5"], module.model.backbone(x)["C5"], rtol=0, atol=0)
    restored = ClassificationModule.load_from_checkpoint(
        checkpoint, model=build_classifier("resnet26", num_classes=3, **overrides), weights_only=True
    )
    assert restored.optim_settings == module.optim_settings and restored.label_smoothing == 0.1
    torch.testing.assert_close(restored.model.fc.weight, module.model.fc.weight)
