"""The all-attention detector at initialisation: what each attention layer of the pyramid and heads reads, the
heads' starting class probability, and gradients reaching every attention layer (the demo's quarter-width
model, ``model.fpn=attention model.head=attention``)."""

import pytest
import torch
from omegaconf import OmegaConf

from sasa_det.engine.experiment import load_config
from sasa_det.engine.tasks.detection import build_detection_model
from sasa_det.layers import LocalSelfAttention2d

ALL_ATTENTION = ["model.fpn=attention", "model.head=attention"]


def _detector(*overrides: str) -> torch.nn.Module:
    torch.manual_seed(0)
    cfg = load_config("configs/shapes_demo.yaml", [*ALL_ATTENTION, *overrides])
    return build_detection_model(OmegaConf.to_object(cfg.model)).train()


def _batch():
    gen = torch.Generator().manual_seed(0)
    images = [torch.rand(3, 128, 128, generator=gen) for _ in range(2)]
    boxes = torch.tensor([[10.0, 10.0, 50.0, 60.0], [60.0, 50.0, 120.0, 118.0]])
    return images, [{"boxes": boxes, "labels": torch.tensor([1, 2])} for _ in images]


def _pyramid_and_head_attention(model):
    return {
        name: module
        for name, module in model.named_modules()
        if isinstance(module, LocalSelfAttention2d) and not name.startswith("backbone.body")
    }


def _content_logit_spread(layer: LocalSelfAttention2d, x: torch.Tensor) -> float:
    """Spread of a query's logit with its own position's key, ``q_ij·k_ij`` per head, computed from the
    projections by hand."""
    q, k = layer.query(x), layer.key(x)
    n, c, h, w = q.shape
    per_head = (q.view(n, layer.heads, c // layer.heads, h, w) * k.view(n, layer.heads, -1, h, w)).sum(2)
    return per_head.std().item()


def _inputs_of_attention_layers(model) -> dict[str, torch.Tensor]:
    seen: dict[str, torch.Tensor] = {}

    def keep_first_input(name):
        def hook(module, args, output):
            seen.setdefault(name, args[0].detach())  # the first pyramid level a shared head layer sees

        return hook

    hooks = [
        layer.register_forward_hook(keep_first_input(name))
        for name, layer in _pyramid_and_head_attention(model).items()
    ]
    model(*_batch())
    for hook in hooks:
        hook.remove()
    return seen


def test_every_attention_layer_of_the_pyramid_and_heads_reads_a_normalised_input():
    """With the default ``attention_norm="layer"`` each input is normalised per position (mean 0, variance 1
    over channels) and the content logits spread about sqrt(d) = 2.8; without it the demo's pyramid feeds
    inputs of RMS 2 to 2.5 and the logits spread 13 to 20, an almost one-hot softmax."""
    model = _detector()
    inputs = _inputs_of_attention_layers(model)
    layers = _pyramid_and_head_attention(model)
    assert len(inputs) == len(layers) == 5 + 2 * 4  # P3-P5 outputs, P6, P7; two towers of four
    for name, x in inputs.items():
        torch.testing.assert_close(x.mean(1), torch.zeros_like(x.mean(1)), atol=1e-4, rtol=0)
        torch.testing.assert_close(x.var(1, unbiased=False), torch.ones_like(x.mean(1)), atol=1e-3, rtol=0)
        assert _content_logit_spread(layers[name], x) < 5, name

    plain = _detector("model.attention_norm=none")
    spreads = {
        name: _content_logit_spread(layer, x)
        for (name, layer), x in zip(
            _pyramid_and_head_attention(plain).items(), _inputs_of_attention_layers(plain).values()
        )
    }
    assert max(spreads.values()) > 10, spreads


def test_the_attention_heads_start_at_the_focal_loss_prior():
    """Every anchor's initial foreground probability is RetinaNet's prior 0.01 (within the spread the
    predictor's N(0, 0.01) weights allow)."""
    model = _detector().eval()
    images, _ = _batch()
    with torch.no_grad():
        features = list(model.backbone(torch.stack(images)).values())
        logits = model.head(features)["cls_logits"]
    probability = torch.sigmoid(logits)
    assert probability.mean().item() == pytest.approx(0.01, rel=0.05)
    assert 0.005 < probability.min().item() and probability.max().item() < 0.02


def test_gradients_reach_every_attention_layer_of_the_pyramid_and_heads():
    """One training step: the query, key and value projections and the relative tables of every attention
    layer of the pyramid and heads, and every input LayerNorm, get finite, non-zero gradients."""
    model = _detector()
    losses = model(*_batch())
    sum(losses.values()).backward()
    for name, layer in _pyramid_and_head_attention(model).items():
        for part in ("query", "key", "value"):
            grad = getattr(layer, part).weight.grad
            assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0, (name, part)
        for table in (layer.rel_row, layer.rel_col):
            assert table.grad is not None and table.grad.abs().sum() > 0, name
    norms = [m for m in model.modules() if type(m).__name__ == "LayerNorm2d"]
    assert len(norms) == 13
    assert all(m.weight.grad is not None and m.weight.grad.abs().sum() > 0 for m in norms)


def _first_head_layer_output_rms_by_level(model) -> list[float]:
    layer = model.head.classification_head.conv[0][0]
    levels: list[float] = []
    hook = layer.register_forward_hook(lambda m, args, out: levels.append(out.pow(2).mean().sqrt().item()))
    model(*_batch())
    hook.remove()
    return levels  # P3 .. P7 (16x16 .. 1x1 at 128 px)


def test_masked_padding_keeps_the_small_levels_at_the_scale_of_the_large_ones():
    """With zero padding the 1x1 P7 map's attention sees 48 empty keys of 49 and its output shrinks several
    times against P3's; leaving out-of-image keys out of the softmax (the all-attention recipe) keeps every
    level at one scale."""
    zero_padded = _first_head_layer_output_rms_by_level(_detector())
    masked = _first_head_layer_output_rms_by_level(_detector("model.sasa.mask_padding=true"))
    assert len(zero_padded) == len(masked) == 5
    assert zero_padded[-1] < zero_padded[0] / 2.5, zero_padded
    assert max(masked) < 1.5 * min(masked), masked
