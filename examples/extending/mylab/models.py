"""A funnel MLP: hidden widths halve layer by layer, as an asymbp model."""

from torch import nn

from asymbp.models import register_model


@register_model("funnel")  # selected by `name: funnel` in conf/model/funnel.yaml
def funnel(
    *, in_channels: int, image_size: int, num_classes: int, batch_norm: bool, width: int = 64,
    depth: int = 2,
) -> nn.Module:
    """Flatten -> depth x [Linear -> (BatchNorm1d if batch_norm) -> ReLU] -> Linear.

    The four keywords before `width` are asymbp's contract: every model takes them. Plain
    nn.Linear / nn.Conv2d layers are all asymbp needs to make a model asymmetric (any rule)."""
    layers: list[nn.Module] = [nn.Flatten()]
    features = in_channels * image_size * image_size
    for layer in range(depth):
        out = max(1, width >> layer)
        layers += [nn.Linear(features, out), *([nn.BatchNorm1d(out)] if batch_norm else [])]
        layers.append(nn.ReLU())
        features = out
    layers.append(nn.Linear(features, num_classes))
    return nn.Sequential(*layers)
