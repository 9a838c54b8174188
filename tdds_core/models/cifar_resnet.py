"""ResNet-18/34/50, CIFAR variant (He et al. 2016; the variant used by the TDDS authors):
3x3 stride-1 stem, no max-pool, stages of widths 64-128-256-512, global average pool."""
from __future__ import annotations

from torch import nn

from ._base import Classifier, register_model


def _block(name: str) -> type[nn.Module]:
    """torchvision's ``BasicBlock`` or ``Bottleneck``, imported on first use (torchvision adds ~1 s to
    every process that imports tdds)."""
    from torchvision.models import resnet

    return getattr(resnet, name)


def _stage(block, in_planes: int, planes: int, blocks: int, stride: int) -> tuple[nn.Sequential, int]:
    layers = []
    for s in [stride] + [1] * (blocks - 1):
        down = None
        if s != 1 or in_planes != planes * block.expansion:
            down = nn.Sequential(nn.Conv2d(in_planes, planes * block.expansion, 1, s, bias=False),
                                 nn.BatchNorm2d(planes * block.expansion))
        layers.append(block(in_planes, planes, s, down))
        in_planes = planes * block.expansion
    return nn.Sequential(*layers), in_planes


def _cifar_resnet(block, layers: list[int], num_classes: int, in_channels: int) -> Classifier:
    mods: list[nn.Module] = [nn.Conv2d(in_channels, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64), nn.ReLU(inplace=True)]
    planes = 64
    for i, (width, n) in enumerate(zip((64, 128, 256, 512), layers)):
        stage, planes = _stage(block, planes, width, n, 1 if i == 0 else 2)
        mods.append(stage)
    mods += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    model = Classifier(nn.Sequential(*mods), nn.Linear(planes, num_classes))
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
    return model


@register_model
def resnet18(num_classes: int, in_channels: int = 3, image_size: int = 32) -> Classifier:
    return _cifar_resnet(_block("BasicBlock"), [2, 2, 2, 2], num_classes, in_channels)


@register_model
def resnet34(num_classes: int, in_channels: int = 3, image_size: int = 32) -> Classifier:
    return _cifar_resnet(_block("BasicBlock"), [3, 4, 6, 3], num_classes, in_channels)


@register_model
def resnet50(num_classes: int, in_channels: int = 3, image_size: int = 32) -> Classifier:
    return _cifar_resnet(_block("Bottleneck"), [3, 4, 6, 3], num_classes, in_channels)
