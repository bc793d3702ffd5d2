"""Bottleneck ResNet whose spatial operation per stage is the layer factory it is given: convolution, SASA or AA.

One network family covers the baselines and the attention models of both papers:

* Stand-Alone Self-Attention (Ramachandran et al. 2019, Sec. 4.1): every bottleneck's 3x3 convolution
  is replaced by :class:`~sasa_det.layers.LocalSelfAttention2d` (k=7, 8 heads); a strided block runs
  the attention at full resolution and then 2x2/2 average-pools. The "full attention" model also
  replaces the convolutional stem by :class:`~sasa_det.layers.SpatiallyAwareStem`.
* Attention Augmented Convolution (Bello et al. 2019, Sec. 3.3 and 4.2): the bottleneck's 3x3
  convolution becomes an :class:`~sasa_det.layers.AugmentedConv2d` (one per residual block) on the
  chosen stages, followed by the block's BatchNorm as in the paper.

The network receives the layers to build, torchvision style: a ``spatial_op`` factory per stage, a ``stem``
factory and a ``norm_layer``; the builder (:func:`sasa_det.backbones.build_backbone`) decides which layers
they are and with which options. Only the bottleneck's 3x3 (``conv2``) changes with the stage's operation;
the 1x1 convolutions, the projection shortcuts and the stem's layout stay those of the standard ResNet. Strides sit on the 3x3 of
the first block of stages 2-4 (the papers' TensorFlow ResNet, also torchvision's "ResNet v1.5").

Parameter names follow torchvision's ResNet (``conv1``, ``bn1``, ``layer1``..``layer4``; blocks with
``conv1, bn1, conv2, bn2, conv3, bn3, downsample.0/.1``), so torchvision ResNet weights load by name
into the convolutional parts. The attention stem is called ``stem``.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence

import torch
from torch import nn
from torchvision.ops import FrozenBatchNorm2d

__all__ = [
    "FEATURE_NAMES",
    "FEATURE_STRIDES",
    "Bottleneck",
    "ResNet",
    "SpatialOp",
    "conv3x3",
    "replace_batchnorm_with_frozen",
]

FEATURE_NAMES = ("C2", "C3", "C4", "C5")
# Output stride of each feature: the stem divides by 4, stages 2-4 each by 2 more.
FEATURE_STRIDES = {"C2": 4, "C3": 8, "C4": 16, "C5": 32}

#: A bottleneck's spatial operation: ``spatial_op(in_channels, out_channels, stride=s)`` makes the module that
#: maps ``[N, in, H, W]`` to ``[N, out, ceil(H/s), ceil(W/s)]`` (e.g. ``SasaOptions(...).factory()``).
SpatialOp = Callable[..., nn.Module]


def conv3x3(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    """The standard bottleneck's 3x3 convolution (padding 1, no bias: a norm follows)."""
    return nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=stride, padding=1, bias=False)


def replace_batchnorm_with_frozen(module: nn.Module) -> nn.Module:
    """Replace every ``nn.BatchNorm2d`` inside ``module`` (in place) by a ``FrozenBatchNorm2d`` with the
    same statistics and affine values; returns ``module``."""
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d):
            frozen = FrozenBatchNorm2d(child.num_features, eps=child.eps)
            with torch.no_grad():
                if child.affine:
                    frozen.weight.copy_(child.weight)
                    frozen.bias.copy_(child.bias)
                if child.track_running_stats:
                    frozen.running_mean.copy_(child.running_mean)
                    frozen.running_var.copy_(child.running_var)
            setattr(module, name, frozen)
        else:
            replace_batchnorm_with_frozen(child)
    return module


class Bottleneck(nn.Module):
    """Bottleneck residual block: 1x1 reduce -> spatial op -> 1x1 expand, plus a shortcut.

    ``relu(bn3(conv3(relu(bn2(conv2(relu(bn1(conv1(x)))))))) + shortcut(x))`` where ``conv2`` is the
    given spatial operation (3x3 convolution, SASA layer or augmented convolution) and carries the
    block's stride; the shortcut is the identity or ``downsample`` (strided 1x1 conv + norm).

    Args:
        in_channels: channels of the input.
        width: bottleneck width (channels of ``conv1``/``conv2`` outputs); the output has
            ``width * expansion`` channels.
        spatial_op: a module mapping ``[N, width, H, W]`` to ``[N, width, ceil(H/stride), ceil(W/stride)]``.
        stride: the block's stride (carried by ``spatial_op``; used here for the shortcut).
        norm_layer: ``norm_layer(channels)`` makes each normalisation layer (default ``nn.BatchNorm2d``).

    Shapes: ``[N, in_channels, H, W] -> [N, width * 4, ceil(H/stride), ceil(W/stride)]``.
    """

    expansion = 4  # He et al. 2016, Table 1: bottleneck output = 4 x width

    def __init__(
        self,
        in_channels: int,
        width: int,
        spatial_op: nn.Module,
        stride: int = 1,
        norm_layer: Callable[[int], nn.Module] = nn.BatchNorm2d,
    ):
        super().__init__()
        out_channels = width * self.expansion
        self.conv1 = nn.Conv2d(in_channels, width, kernel_size=1, bias=False)
        self.bn1 = norm_layer(width)
        self.conv2 = spatial_op
        self.bn2 = norm_layer(width)  # AA paper Sec. 3.3: a BatchNorm follows the augmented conv
        self.conv3 = nn.Conv2d(width, out_channels, kernel_size=1, bias=False)
        self.bn3 = norm_layer(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=stride, bias=False),
                norm_layer(out_channels),
            )
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[N, C_in, H, W] -> [N, 4 * width, ceil(H/stride), ceil(W/stride)]``."""
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + shortcut)


class ResNet(nn.Module):
    """Multi-scale bottleneck ResNet feature extractor with a per-stage spatial operation.

    Forward: ``x [N, in_channels, H, W] -> OrderedDict`` of the features named in ``out_features``:
    ``C2 [N, 4w, ceil(H/4), ceil(W/4)]``, ``C3 [N, 8w, ceil(H/8), ...]``, ``C4 [N, 16w, ceil(H/16), ...]``,
    ``C5 [N, 32w, ceil(H/32), ...]`` with ``w = base_width`` (64 for the papers' networks). Any H, W >= 1
    work. ``out_channels`` and ``strides`` map each returned feature name to its channels and stride
    (what an FPN needs). Stages deeper than the deepest requested feature are not built (no unused
    parameters under DDP).

    Args:
        blocks_per_stage: residual blocks of stages 1-4, e.g. ``(3, 4, 6, 3)`` for ResNet-50
            (SASA paper Sec. 4.1: 26 = [1,2,4,1], 38 = [2,3,5,2], 50 = [3,4,6,3]).
        spatial_ops: the bottleneck's spatial operation (:data:`SpatialOp`), one for every stage or a
            sequence of four; the first block of stages 2-4 calls it with ``stride=2``. Default
            :func:`conv3x3`, the standard ResNet.
        stem: ``stem(in_channels, base_width)`` makes a stem that divides the input by 4 (e.g. the SASA
            paper's :class:`~sasa_det.layers.SpatiallyAwareStem`), kept as ``stem``; ``None`` (default)
            builds the standard one: 7x7/2 conv, norm, ReLU, 3x3/2 max-pool as ``conv1``/``bn1``/``relu``/
            ``maxpool``.
        base_width: width of stage 1's bottleneck; stages use ``base_width * (1, 2, 4, 8)`` and the
            stem outputs ``base_width`` channels (64 in both papers; smaller values are for tests).
        in_channels: input image channels.
        norm_layer: ``norm_layer(channels)`` makes every normalisation layer of the blocks and the
            convolutional stem (default ``nn.BatchNorm2d``; torchvision's ``FrozenBatchNorm2d`` for
            fine-tuning with small per-device batches).
        frozen_stages: 0 freezes nothing; ``n`` in 1..4 freezes the stem and stages 1..n (parameters get
            ``requires_grad=False`` and their norm layers stay in eval mode even in ``train()``).
        zero_init_residual: initialise every block's last norm scale (``bn3``) to 0, so each residual
            branch starts as the identity (Goyal et al. 2017); off by default as in both papers.
        out_features: names among ``C2``..``C5`` to return, in any order (returned in stage order).

    Initialisation (all in :meth:`reset_parameters`): every convolution of the convolutional parts
    (stem, 1x1 convs, 3x3 convs, shortcuts) gets He-normal with fan-out and ReLU gain; norm scales 1
    and shifts 0 (``bn3`` scale 0 with ``zero_init_residual``); attention layers keep the
    initialisation of their own ``reset_parameters`` (documented in ``sasa_det.layers``).
    """

    def __init__(
        self,
        blocks_per_stage: Sequence[int] = (3, 4, 6, 3),  # He et al. 2016, Table 1: ResNet-50
        spatial_ops: SpatialOp | Sequence[SpatialOp] = conv3x3,
        stem: Callable[[int, int], nn.Module] | None = None,
        base_width: int = 64,  # He et al. 2016, Table 1 (both papers keep the ResNet widths)
        in_channels: int = 3,
        norm_layer: Callable[[int], nn.Module] | None = None,
        frozen_stages: int = 0,
        zero_init_residual: bool = False,
        out_features: Sequence[str] = FEATURE_NAMES,
    ):
        super().__init__()
        blocks = tuple(int(b) for b in blocks_per_stage)
        if len(blocks) != 4 or any(b < 1 for b in blocks):
            raise ValueError(f"blocks_per_stage needs 4 positive block counts, got {list(blocks_per_stage)}")
        ops = tuple(spatial_ops) if isinstance(spatial_ops, Sequence) else (spatial_ops,) * 4
        if len(ops) != 4:
            raise ValueError(f"spatial_ops needs one operation per stage (4), got {len(ops)}")
        if not 0 <= int(frozen_stages) <= 4:
            raise ValueError(f"frozen_stages must be in 0..4 (0 = nothing frozen), got {frozen_stages}")
        if isinstance(out_features, str):
            out_features = (out_features,)
        unknown = [f for f in out_features if f not in FEATURE_NAMES]
        if unknown or not out_features:
            raise ValueError(
                f"out_features must be a non-empty subset of {list(FEATURE_NAMES)}, got {list(out_features)}"
            )
        if int(base_width) < 1:
            raise ValueError(f"base_width must be >= 1, got {base_width}")

        norm_layer = norm_layer or nn.BatchNorm2d
        self.frozen_stages = int(frozen_stages)
        self.zero_init_residual = bool(zero_init_residual)
        self.out_features = tuple(f for f in FEATURE_NAMES if f in out_features)
        num_stages = max(FEATURE_NAMES.index(f) for f in self.out_features) + 1

        width = int(base_width)
        self.stem: nn.Module | None = None
        if stem is None:
            self.conv1 = nn.Conv2d(in_channels, width, kernel_size=7, stride=2, padding=3, bias=False)
            self.bn1 = norm_layer(width)
            self.relu = nn.ReLU(inplace=True)
            self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        else:
            self.stem = stem(in_channels, width)

        channels = width
        self.out_channels: dict[str, int] = {}
        self.strides: dict[str, int] = {}
        for index in range(num_stages):
            stage_width = width * 2**index
            stride = 1 if index == 0 else 2
            stage = self._make_stage(ops[index], norm_layer, channels, stage_width, blocks[index], stride)
            self.add_module(f"layer{index + 1}", stage)
            channels = stage_width * Bottleneck.expansion
            name = FEATURE_NAMES[index]
            if name in self.out_features:
                self.out_channels[name] = channels
                self.strides[name] = FEATURE_STRIDES[name]

        self.reset_parameters()
        self._freeze()

    @staticmethod
    def _make_stage(
        spatial_op: SpatialOp,
        norm_layer: Callable[[int], nn.Module],
        in_channels: int,
        width: int,
        num_blocks: int,
        stride: int,
    ) -> nn.Sequential:
        blocks = []
        for i in range(num_blocks):
            block_stride = stride if i == 0 else 1
            spatial = spatial_op(width, width, stride=block_stride)
            blocks.append(Bottleneck(in_channels, width, spatial, stride=block_stride, norm_layer=norm_layer))
            in_channels = width * Bottleneck.expansion
        return nn.Sequential(*blocks)

    def stages(self) -> list[nn.Sequential]:
        """The built residual stages ``layer1``.. in order."""
        return [getattr(self, f"layer{i}") for i in range(1, 5) if hasattr(self, f"layer{i}")]

    def stem_modules(self) -> list[nn.Module]:
        """The modules forming the stem (``conv1``, ``bn1``, ``relu``, ``maxpool`` or ``stem``)."""
        if self.stem is None:
            return [self.conv1, self.bn1, self.relu, self.maxpool]
        return [self.stem]

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """(Re-)initialise the convolutional parts; attention layers keep their own initialisation.

        He-normal (fan-out, ReLU gain) for every ``nn.Conv2d`` of the stem, the blocks' ``conv1``/
        ``conv3``, convolutional ``conv2`` and shortcuts; BatchNorm scale 1, shift 0; with
        ``zero_init_residual`` each block's ``bn3`` scale is 0. Frozen BatchNorm layers hold fixed
        statistics and are left as constructed (identity until weights are loaded).
        """
        convs: list[nn.Module] = []
        norms: list[nn.Module] = []
        if self.stem is None:
            convs.append(self.conv1)
            norms.append(self.bn1)
        for stage in self.stages():
            for block in stage:
                convs += [block.conv1, block.conv3]
                norms += [block.bn1, block.bn2, block.bn3]
                if isinstance(block.conv2, nn.Conv2d):
                    convs.append(block.conv2)
                if block.downsample is not None:
                    convs.append(block.downsample[0])
                    norms.append(block.downsample[1])
        for conv in convs:
            nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
        for norm in norms:
            if isinstance(norm, nn.BatchNorm2d):
                nn.init.ones_(norm.weight)
                nn.init.zeros_(norm.bias)
        if self.zero_init_residual:
            for stage in self.stages():
                for block in stage:
                    if isinstance(block.bn3, nn.BatchNorm2d):
                        nn.init.zeros_(block.bn3.weight)

    def frozen_modules(self) -> list[nn.Module]:
        """The stem and stages 1..``frozen_stages`` (empty when nothing is frozen)."""
        if self.frozen_stages == 0:
            return []
        return self.stem_modules() + self.stages()[: self.frozen_stages]

    def _freeze(self) -> None:
        for module in self.frozen_modules():
            for param in module.parameters():
                param.requires_grad_(False)
        self.train(self.training)

    def train(self, mode: bool = True) -> ResNet:
        """Set train/eval mode; the frozen stem/stages stay in eval mode (fixed BatchNorm statistics)."""
        super().train(mode)
        for module in self.frozen_modules():
            module.eval()
        return self

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        """``x [N, C, H, W]`` -> ``OrderedDict`` name -> feature (see the class docstring for shapes)."""
        if x.ndim != 4:
            raise ValueError(f"expected an NCHW batch, got a tensor of shape {tuple(x.shape)}")
        if self.stem is None:
            x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        else:
            x = self.stem(x)
        features: OrderedDict[str, torch.Tensor] = OrderedDict()
        for name, stage in zip(FEATURE_NAMES, self.stages()):
            x = stage(x)
            if name in self.out_features:
                features[name] = x
        return features
