"""Architectures, built from plain nn.Conv2d / nn.Linear / nn.MultiheadAttention (`asymbp.convert`
makes them asymmetric).

Every model takes the same four contract arguments (in_channels, image_size, num_classes,
batch_norm). With batch_norm=True a BatchNorm layer follows every conv/linear layer except the
output layer; with False there is no normalization layer at all (the ViT, whose LayerNorms are
part of the architecture, refuses batch_norm=True). The output layer is the one that
produces the logits (`convert` finds it from a forward pass).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Literal

import torch
import torchvision
from torch import nn

from asymbp.registry import Positive, PositiveInt, Rate, Registry

ModelBuilder = Callable[..., nn.Module]

#: name -> builder(*, in_channels, image_size, num_classes, batch_norm, **options).
MODELS: Registry[ModelBuilder] = Registry("model")
#: The keywords every builder takes, supplied from the dataset and the norm, not the model config.
CONTRACT = ("in_channels", "image_size", "num_classes", "batch_norm")


def register_model(name: str) -> Callable[[ModelBuilder], ModelBuilder]:
    """Decorator: make a builder the choice `model=<name>`."""
    return MODELS.register(name)


def build_model(
    name: str, *, in_channels: int, image_size: int, num_classes: int, batch_norm: bool, **options
) -> nn.Module:
    """Build the model registered as `name`; `options` are its own keywords (e.g. hidden)."""
    MODELS.check(name, options, provided=CONTRACT)
    for arg, value in (("in_channels", in_channels), ("image_size", image_size)):
        if int(value) < 1:
            raise ValueError(f"{name}: {arg} must be >= 1, got {value}")
    if int(num_classes) < 2:
        raise ValueError(f"{name}: num_classes must be >= 2, got {num_classes}")
    return MODELS[name](
        in_channels=int(in_channels),
        image_size=int(image_size),
        num_classes=int(num_classes),
        batch_norm=bool(batch_norm),
        **options,
    )


def _bn2d(channels: int, batch_norm: bool) -> list[nn.Module]:
    return [nn.BatchNorm2d(channels)] if batch_norm else []


def _bn1d(features: int, batch_norm: bool) -> list[nn.Module]:
    return [nn.BatchNorm1d(features)] if batch_norm else []


# --------------------------------------------------------------------------------------- paper_cnn


def paper_cnn_stages(image_size: int, max_stages: int = 5, min_side: int = 4) -> int:
    """How many conv/pool stages paper_cnn uses for an image_size x image_size input.

    Each pooling (3x3, stride 2, padding 1) maps a side s to ceil(s / 2). Stages are added while
    the pooled side stays >= min_side, with at least 1 and at most max_stages stages.
    With the defaults: 8 -> 1 (side 4), 28 -> 3 (14, 7, 4), 32 -> 3 (16, 8, 4),
    96 -> 4 (48, 24, 12, 6), 224 -> 5 (112, ..., 7).
    """
    if max_stages < 1:
        raise ValueError(f"paper_cnn: max_stages must be >= 1, got {max_stages}")
    stages, side = 1, -(-image_size // 2)
    while stages < max_stages and -(-side // 2) >= min_side:
        stages, side = stages + 1, -(-side // 2)
    return stages


@register_model("paper_cnn")
class PaperCNN(nn.Module):
    """The paper's small CIFAR network (MatConvNet example style), its depth fitted to the input.

    Stage k: conv5x5 (padding 2) -> [BN] -> ReLU -> pool 3x3/2 (padding 1), with 32, 64, 64, 64,
    ... output channels (times `width`); stage 1 max-pools, the others average-pool. Then
    fc-hidden -> [BN] -> ReLU -> fc-classes. The number of stages is `paper_cnn_stages`: 3 for
    CIFAR-size (32) and MNIST-size (28) inputs as in the paper's net, 1 for 8x8 digits, 4 for
    96x96 STL-10.
    """

    def __init__(
        self,
        *,
        in_channels: int,
        image_size: int,
        num_classes: int,
        batch_norm: bool,
        hidden: PositiveInt = 128,
        width: Positive = 1.0,
        max_stages: PositiveInt = 5,
    ) -> None:
        super().__init__()
        self.num_stages = paper_cnn_stages(image_size, max_stages)
        layers: list[nn.Module] = []
        channels, side = in_channels, image_size
        for stage in range(self.num_stages):
            out = max(1, round((32 if stage == 0 else 64) * width))
            pool = (
                nn.MaxPool2d(3, stride=2, padding=1)
                if stage == 0
                # Padding is not averaged in: border outputs are means of real pixels only.
                else nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False)
            )
            layers += [
                nn.Conv2d(channels, out, 5, padding=2),
                *_bn2d(out, batch_norm),
                nn.ReLU(inplace=True),
                pool,
            ]
            channels, side = out, -(-side // 2)
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(channels * side * side, hidden),
            *_bn1d(hidden, batch_norm),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


# --------------------------------------------------------------------------------------------- mlp


@register_model("mlp")
def mlp(
    *,
    in_channels: int,
    image_size: int,
    num_classes: int,
    batch_norm: bool,
    hidden: PositiveInt | list[PositiveInt] = (512, 512),
) -> nn.Module:
    """Flatten -> [Linear -> [BN1d] -> ReLU] per hidden width -> Linear(num_classes).

    hidden: the hidden widths (a list, a single int, or empty for a linear classifier).
    """
    widths = [int(hidden)] if isinstance(hidden, int) else [int(h) for h in hidden]
    layers: list[nn.Module] = [nn.Flatten()]
    features = in_channels * image_size * image_size
    for width in widths:
        layers += [nn.Linear(features, width), *_bn1d(width, batch_norm), nn.ReLU(inplace=True)]
        features = width
    layers.append(nn.Linear(features, num_classes))
    return nn.Sequential(*layers)


# ---------------------------------------------------------------------------------------- resnets


def _norm2d(batch_norm: bool) -> Callable[[int], nn.Module]:
    # nn.Identity ignores its arguments, so it stands in for BatchNorm2d(channels).
    return nn.BatchNorm2d if batch_norm else nn.Identity


class BasicBlock(nn.Module):
    """He et al.'s basic block: conv3x3 -> BN -> ReLU -> conv3x3 -> BN, plus the shortcut, -> ReLU.

    The shortcut is the identity, or a 1x1 convolution (+ BN) where the shape changes
    ("option B" projection shortcuts)."""

    #: a shortcut around layers: global-error rules (DFA) cannot run through it (asymbp.layers)
    asymbp_residual = True

    def __init__(self, in_planes: int, planes: int, stride: int, batch_norm: bool) -> None:
        super().__init__()
        norm = _norm2d(batch_norm)
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=not batch_norm)
        self.bn1 = norm(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=not batch_norm)
        self.bn2 = norm(planes)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=stride, bias=not batch_norm), norm(planes)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """The CIFAR ResNet of He et al. (2016), depth 6n + 2: a 3x3 conv with 16 channels, three
    stages of n basic blocks with 16, 32, 64 channels (stride 2 at the start of stages 2 and 3),
    global average pooling, and a linear output layer."""

    def __init__(
        self, *, in_channels: int, num_classes: int, batch_norm: bool, depth: int = 20
    ) -> None:
        super().__init__()
        if depth < 8 or (depth - 2) % 6:
            raise ValueError(f"CIFAR ResNet depth must be 6n + 2 with n >= 1, got {depth}")
        blocks = (depth - 2) // 6
        self.conv1 = nn.Conv2d(in_channels, 16, 3, padding=1, bias=not batch_norm)
        self.bn1 = _norm2d(batch_norm)(16)
        self.relu = nn.ReLU(inplace=True)
        stages, in_planes = [], 16
        for index, planes in enumerate((16, 32, 64)):
            stage = []
            for block in range(blocks):
                stride = 2 if index > 0 and block == 0 else 1
                stage.append(BasicBlock(in_planes, planes, stride, batch_norm))
                in_planes = planes
            stages.append(nn.Sequential(*stage))
        self.layer1, self.layer2, self.layer3 = stages
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(64, num_classes)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        return self.fc(torch.flatten(self.pool(out), 1))


@register_model("resnet20")
def resnet20(*, in_channels: int, image_size: int, num_classes: int, batch_norm: bool) -> nn.Module:
    """ResNet-20 for CIFAR-size inputs (any image size works: it ends in global pooling)."""
    return CifarResNet(
        in_channels=in_channels, num_classes=num_classes, batch_norm=batch_norm, depth=20
    )


@register_model("resnet56")
def resnet56(*, in_channels: int, image_size: int, num_classes: int, batch_norm: bool) -> nn.Module:
    """ResNet-56: the CIFAR-10 network of biotorch's benchmark (jsalbert/biotorch
    Benchmarks.md)."""
    return CifarResNet(
        in_channels=in_channels, num_classes=num_classes, batch_norm=batch_norm, depth=56
    )


@register_model("resnet18")
def resnet18(*, in_channels: int, image_size: int, num_classes: int, batch_norm: bool) -> nn.Module:
    """torchvision's ResNet-18. For inputs smaller than 64 pixels the ImageNet stem (7x7 stride-2
    conv and max-pool) is replaced by a 3x3 stride-1 conv without pooling, as usual for CIFAR.
    torchvision's convolutions have no bias, so without BN only the output layer has one."""
    model = torchvision.models.resnet18(num_classes=num_classes, norm_layer=_norm2d(batch_norm))
    if image_size < 64:
        model.conv1 = nn.Conv2d(in_channels, 64, 3, stride=1, padding=1, bias=False)
        model.maxpool = nn.Identity()
    elif in_channels != 3:
        model.conv1 = nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False)
    nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")
    return model


# ------------------------------------------------------------------------------------------ lenet5


#: lenet5's `init` choices (conf/model/lenet5.yaml).
LENET_INITS = ("default", "xavier")


@register_model("lenet5")
def lenet5(
    *,
    in_channels: int,
    image_size: int,
    num_classes: int,
    batch_norm: bool,
    activation: Literal["relu", "tanh"] = "relu",
    init: Literal[LENET_INITS] = "default",
) -> nn.Module:
    """biotorch's LeNetMNIST (Sanfiz & Akrout 2021), the network of its MNIST/Fashion-MNIST runs.

    conv5x5-6 -> act -> max-pool 2, conv5x5-16 -> act -> max-pool 2, conv5x5-120 -> act,
    fc-84 -> act, fc-classes, for 32x32 inputs; 28x28 inputs are zero-padded by 2 in the first
    convolution (biotorch resizes them to 32x32 instead). activation: "relu" (biotorch's) or
    "tanh" (LeCun et al. 1998's). [BN] follows every conv/fc layer but the last. init:
    "default" (PyTorch's, Kaiming-uniform a=sqrt(5): biotorch's non-Xavier branch too) or
    "xavier" (biotorch's benchmarks: Xavier-uniform weights, gain 1, and zero biases, as in
    init_parameters of jsalbert/biotorch biotorch/layers/fa_constructor/conv.py and linear.py).
    """
    if image_size not in (28, 32):
        raise ValueError(f"lenet5 takes 28x28 or 32x32 images, got {image_size}x{image_size}")
    act = {"relu": nn.ReLU, "tanh": nn.Tanh}[activation]
    model = nn.Sequential(
        nn.Conv2d(in_channels, 6, 5, padding=2 if image_size == 28 else 0),
        *_bn2d(6, batch_norm),
        act(),
        nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5),
        *_bn2d(16, batch_norm),
        act(),
        nn.MaxPool2d(2),
        nn.Conv2d(16, 120, 5),
        *_bn2d(120, batch_norm),
        act(),
        nn.Flatten(),
        nn.Linear(120, 84),
        *_bn1d(84, batch_norm),
        act(),
        nn.Linear(84, num_classes),
    )
    if init == "xavier":
        for layer in model.modules():
            if isinstance(layer, nn.Conv2d | nn.Linear):
                nn.init.xavier_uniform_(layer.weight)
                nn.init.zeros_(layer.bias)
    return model


# ------------------------------------------------------------------------------------------- vit


class EncoderBlock(nn.Module):
    """A pre-norm Transformer block: x + attention(LayerNorm(x)), then x + MLP(LayerNorm(x))."""

    asymbp_residual = True  # shortcuts around the attention and the MLP (DFA refuses them)

    def __init__(self, width: int, heads: int, mlp_ratio: float, dropout: float) -> None:
        super().__init__()
        hidden = int(round(width * mlp_ratio))
        self.norm1 = nn.LayerNorm(width)
        self.attn = nn.MultiheadAttention(width, heads, dropout=dropout, batch_first=True)
        self.norm2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(
            OrderedDict(
                fc1=nn.Linear(width, hidden), act=nn.GELU(), drop=nn.Dropout(dropout),
                fc2=nn.Linear(hidden, width),
            )
        )  # fmt: skip
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.norm1(x)
        x = x + self.drop(self.attn(y, y, y, need_weights=False)[0])
        return x + self.drop(self.mlp(self.norm2(x)))


class VisionTransformer(nn.Module):
    """Patches embedded by a strided convolution, a class token (or mean pooling), learned
    position embeddings, pre-norm encoder blocks, a final LayerNorm and a linear head."""

    def __init__(
        self, in_channels: int, image_size: int, num_classes: int, patch_size: int, width: int,
        depth: int, heads: int, mlp_ratio: float, pool: str, dropout: float,
    ) -> None:  # fmt: skip
        super().__init__()
        tokens = (image_size // patch_size) ** 2
        self.pool = pool
        self.patch_embed = nn.Conv2d(in_channels, width, patch_size, stride=patch_size)
        self.class_token = nn.Parameter(torch.zeros(1, 1, width)) if pool == "cls" else None
        self.pos_embed = nn.Parameter(torch.zeros(1, tokens + (pool == "cls"), width))
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        self.blocks = nn.Sequential(
            *(EncoderBlock(width, heads, mlp_ratio, dropout) for _ in range(depth))
        )
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x).flatten(2).transpose(1, 2)  # (N, tokens, width)
        if self.class_token is not None:
            x = torch.cat([self.class_token.expand(x.shape[0], -1, -1), x], dim=1)
        x = self.blocks(x + self.pos_embed)
        x = self.norm(x)
        return self.head(x[:, 0] if self.class_token is not None else x.mean(dim=1))


VIT_POOLS = ("cls", "mean")


@register_model("vit")
def vit(
    *,
    in_channels: int,
    image_size: int,
    num_classes: int,
    batch_norm: bool,
    patch_size: PositiveInt = 4,
    width: PositiveInt = 64,
    depth: PositiveInt = 4,
    heads: PositiveInt = 4,
    mlp_ratio: Positive = 2.0,
    pool: Literal[VIT_POOLS] = "cls",
    dropout: Rate = 0.0,
) -> nn.Module:
    """A small Vision Transformer (Dosovitskiy et al. 2021) for 28-64 px images (ours: sized to
    train on a CPU in minutes). LayerNorm is part of the architecture (pre-norm blocks), so
    batch_norm=True (norm=bn, bn_bm) is refused: use norm=none or norm=bm."""
    if batch_norm:
        raise ValueError(
            "vit normalizes with LayerNorm in every block; norm=bn and bn_bm would add nothing "
            "the paper defines: use norm=none (LayerNorm only) or norm=bm (with Batch Manhattan)"
        )
    if image_size % patch_size:
        raise ValueError(
            f"vit: patch_size={patch_size} does not divide the {image_size}x{image_size} images "
            f"(try {', '.join(str(p) for p in range(2, 9) if image_size % p == 0)})"
        )
    if width % heads:
        raise ValueError(f"vit: heads={heads} must divide width={width}")
    return VisionTransformer(
        in_channels, image_size, num_classes, patch_size, width, depth, heads, float(mlp_ratio),
        pool, float(dropout),
    )  # fmt: skip
