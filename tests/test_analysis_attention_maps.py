"""Attention maps: SASA weights equal the reference implementation's softmax, live in the k×k window and sum
to one; AA weights equal a dense softmax over the relative embeddings; the stem's weights mix its values into its
own output; the tool draws a PNG from a checkpoint."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from sasa_det.analysis.attention_maps import augmented_attention_weights, local_attention_weights
from sasa_det.layers import AugmentedConv2d, LocalSelfAttention2d, SpatiallyAwareStem
from sasa_det.layers.reference import local_attention_reference, relative_embeddings_2d_reference
from sasa_det.layers.relative_position import slice_relative_table
from tests.helpers import load_tool


def _reference_weights(layer, x, row, col):
    """The reference's softmax read through its output: values that are one-hot over the keys make the
    output at a query equal to that query's attention weights on those keys (zero-padded keys have value 0)."""
    n, _, height, width = x.shape
    shape = (n, layer.heads, layer.head_channels, height, width)
    q, k = layer.query(x).reshape(shape), layer.key(x).reshape(shape)
    weights = torch.zeros(layer.heads, height * width, dtype=torch.float64)
    d = layer.head_channels
    for start in range(0, height * width, d):
        v = torch.zeros(n, layer.heads, d, height * width, dtype=x.dtype)
        for c in range(min(d, height * width - start)):
            v[:, :, c, start + c] = 1.0
        out = local_attention_reference(
            q, k, v.reshape(shape), layer.rel_row, layer.rel_col, layer.kernel_size, layer.mask_padding
        )
        count = min(d, height * width - start)
        weights[:, start : start + count] = out[0, :, :count, row, col]
    return weights.reshape(layer.heads, height, width)


@pytest.mark.parametrize("mask_padding", [False, True])
def test_sasa_weights_equal_the_reference_softmax_inside_the_window(mask_padding):
    torch.manual_seed(0)
    layer = LocalSelfAttention2d(6, 8, kernel_size=5, heads=2, mask_padding=mask_padding).double()
    x = torch.randn(1, 6, 7, 9, dtype=torch.float64)
    for row, col in [(3, 4), (0, 0), (6, 8), (2, 7)]:
        weights, outside = local_attention_weights(layer, x, row, col)
        expected = _reference_weights(layer, x, row, col)
        torch.testing.assert_close(weights.double(), expected, rtol=1e-5, atol=1e-6)
        window = torch.zeros(7, 9, dtype=torch.bool)
        window[max(row - 2, 0) : row + 3, max(col - 2, 0) : col + 3] = True
        assert (weights[:, ~window] == 0).all()
        torch.testing.assert_close(weights.sum(dim=(1, 2)) + outside, torch.ones(2))
        if mask_padding or (row, col) == (3, 4):  # whole window inside the map, or padding masked out
            torch.testing.assert_close(weights.sum(dim=(1, 2)), torch.ones(2))
            assert outside.abs().max() < 1e-6
        else:
            assert (outside > 0).all()


@pytest.mark.parametrize("pool_attention", [False, True])
def test_aa_weights_equal_a_dense_softmax(pool_attention):
    torch.manual_seed(0)
    layer = AugmentedConv2d(8, 16, dk=8, dv=8, heads=2, max_size=(8, 8), pool_attention=pool_attention).double()
    x = torch.randn(1, 8, 6, 5, dtype=torch.float64)
    pooled = torch.nn.functional.avg_pool2d(x, 3, 2, padding=1, count_include_pad=False) if pool_attention else x
    h, w = pooled.shape[-2:]
    q, k, _ = torch.split(layer.qkv(pooled), [8, 8, 8], dim=1)
    q = q.reshape(2, 4, h * w).transpose(1, 2) * 4**-0.5
    k = k.reshape(2, 4, h * w)
    embeddings = relative_embeddings_2d_reference(
        slice_relative_table(layer.rel_width, w), slice_relative_table(layer.rel_height, h), h, w
    )
    logits = q @ k + torch.einsum("hqd,qkd->hqk", q, embeddings)
    dense = logits.softmax(-1).reshape(2, h * w, h, w)
    for row, col in [(0, 0), (h - 1, w - 1), (1, 2)]:
        weights = augmented_attention_weights(layer, x, row, col)
        torch.testing.assert_close(weights.double(), dense[:, row * w + col], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(weights.sum(dim=(1, 2)), torch.ones(2))


def test_stem_weights_mix_the_values_into_the_stems_attention_output():
    """Weights times the position-mixed values give the stem's own attention output at the query, and live in
    the query's block (the map is not a multiple of the window: the last blocks are partial)."""
    torch.manual_seed(0)
    stem = SpatiallyAwareStem(3, 8, heads=2, window=4).double()
    x = torch.randn(1, 3, 7, 9, dtype=torch.float64)
    with torch.no_grad():
        out = stem.attention(x)[0]  # (8, 7, 9), before the BatchNorm
        values = stem.value(x).reshape(stem.mixtures, 8, 7, 9)
        mixture = stem.mixture_weights()[:, torch.arange(7) % 4][:, :, torch.arange(9) % 4]  # p(y % 4, x % 4, m)
    mixed_values = (values * mixture[:, None]).sum(0).reshape(2, 4, 7, 9)  # (heads, d, H, W)
    for row, col in [(0, 0), (6, 8), (5, 3), (2, 7)]:
        weights, outside = stem.attention_weights(x, row, col)
        assert outside is None
        torch.testing.assert_close(weights.sum(dim=(1, 2)), torch.ones(2))
        block = torch.zeros(7, 9, dtype=torch.bool)
        block[row - row % 4 : row - row % 4 + 4, col - col % 4 : col - col % 4 + 4] = True
        assert (weights[:, ~block] == 0).all()
        output = torch.einsum("hyx,hdyx->hd", weights.double(), mixed_values).reshape(8)
        torch.testing.assert_close(output, out[:, row, col], rtol=1e-5, atol=1e-6)


def test_visualize_attention_tool_lists_layers_and_draws(tiny_detection_run, tmp_path, capsys):
    from omegaconf import OmegaConf

    checkpoint = tiny_detection_run["last_checkpoint"]
    image = sorted(Path(OmegaConf.load(tiny_detection_run["config_path"]).data.val_images).glob("*.png"))[0]
    tool = load_tool("visualize_attention")
    rows = tool.main([checkpoint, str(image), "--list-layers"])
    kinds = {row[1].split()[0] for row in rows}
    assert kinds == {"sasa", "aa"} and all(row[3] >= 8 for row in rows)
    sasa = next(row[0] for row in rows if row[1].startswith("sasa"))
    aa = next(row[0] for row in rows if row[1] == "aa")
    for layer, extra in ((sasa, ["--pixel", "20,30"]), (aa, ["--head", "0"])):
        out = tmp_path / f"{layer}.png"
        tool.main([checkpoint, str(image), "--layer", layer, "--out", str(out), *extra])
        drawn = np.asarray(Image.open(out))
        assert drawn.shape[0] >= 256 and drawn.std() > 10  # not blank
        assert (drawn[..., 0] > 200).any()  # the heat is drawn
    with pytest.raises(SystemExit, match="not an attention layer"):
        tool.main([checkpoint, str(image), "--layer", "model.backbone.body.conv1"])
