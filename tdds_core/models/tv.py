"""torchvision architectures wrapped as :class:`Classifier`, adapted to small images and 1/3 channels.

Small-image variants (image_size <= 64) drop the early down-sampling the ImageNet stems do, as the
CIFAR versions in the dataset-pruning literature do. ImageNet models (``*_imagenet``, ``swin_t``)
are torchvision's standard definitions (no pretrained weights are loaded)."""
from __future__ import annotations

from types import ModuleType

from torch import nn

from ._base import Classifier, register_model


def _tvm() -> ModuleType:
    """``torchvision.models``, imported on first use (it adds ~1 s to every process that imports tdds)."""
    from torchvision import models

    return models


def _first_conv(conv: nn.Conv2d, in_channels: int, stride: int | None = None) -> nn.Conv2d:
    return nn.Conv2d(in_channels, conv.out_channels, conv.kernel_size, stride if stride is not None else conv.stride,
                     conv.padding, bias=conv.bias is not None)


@register_model
def vgg16_bn(num_classes: int, in_channels: int = 3, image_size: int = 32) -> Classifier:
    """VGG-16 with batch norm (Simonyan & Zisserman 2015); CIFAR head: global pool + one linear layer."""
    m = _tvm().vgg16_bn(weights=None)
    feats = m.features
    feats[0] = _first_conv(feats[0], in_channels)
    if image_size < 32:  # keep at least a 1x1 map after the five max-pools
        feats = nn.Sequential(*[l for i, l in enumerate(feats) if not (isinstance(l, nn.MaxPool2d) and i == len(feats) - 1)])
    return Classifier(nn.Sequential(feats, nn.AdaptiveAvgPool2d(1), nn.Flatten()), nn.Linear(512, num_classes))


@register_model
def mobilenet_v2(num_classes: int, in_channels: int = 3, image_size: int = 32) -> Classifier:
    """MobileNet-v2 (Sandler et al. 2018); stride-1 stem for small images."""
    m = _tvm().mobilenet_v2(weights=None, num_classes=num_classes)
    small = image_size <= 64
    m.features[0][0] = _first_conv(m.features[0][0], in_channels, 1 if small else None)
    if small:  # the first bottleneck stage with stride 2 runs at stride 1 too (CIFAR adaptation)
        m.features[2].conv[1][0].stride = (1, 1)
    head = m.classifier[-1]
    return Classifier(nn.Sequential(m.features, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.2)), head)


@register_model
def shufflenet_v2(num_classes: int, in_channels: int = 3, image_size: int = 32) -> Classifier:
    """ShuffleNet-v2 x1.0 (Ma et al. 2018); stride-1 stem and no max-pool for small images."""
    m = _tvm().shufflenet_v2_x1_0(weights=None, num_classes=num_classes)
    small = image_size <= 64
    m.conv1[0] = _first_conv(m.conv1[0], in_channels, 1 if small else None)
    maxpool = nn.Identity() if small else m.maxpool
    feats = nn.Sequential(m.conv1, maxpool, m.stage2, m.stage3, m.stage4, m.conv5, nn.AdaptiveAvgPool2d(1), nn.Flatten())
    return Classifier(feats, m.fc)


def _imagenet_resnet(fn, num_classes: int, in_channels: int) -> Classifier:
    m = fn(weights=None, num_classes=num_classes)
    m.conv1 = _first_conv(m.conv1, in_channels)
    feats = nn.Sequential(m.conv1, m.bn1, m.relu, m.maxpool, m.layer1, m.layer2, m.layer3, m.layer4, m.avgpool, nn.Flatten())
    return Classifier(feats, m.fc)


@register_model
def resnet34_imagenet(num_classes: int, in_channels: int = 3, image_size: int = 224) -> Classifier:
    """Standard ResNet-34 (7x7 stride-2 stem, max-pool), the paper's ImageNet-1K model."""
    return _imagenet_resnet(_tvm().resnet34, num_classes, in_channels)


@register_model
def resnet50_imagenet(num_classes: int, in_channels: int = 3, image_size: int = 224) -> Classifier:
    """Standard ResNet-50 for ImageNet-sized input."""
    return _imagenet_resnet(_tvm().resnet50, num_classes, in_channels)


class _SwinFeatures(nn.Module):
    def __init__(self, m):
        super().__init__()
        self.features, self.norm, self.permute, self.avgpool, self.flatten = m.features, m.norm, m.permute, m.avgpool, m.flatten

    def forward(self, x):
        return self.flatten(self.avgpool(self.permute(self.norm(self.features(x)))))


@register_model
def swin_t(num_classes: int, in_channels: int = 3, image_size: int = 224) -> Classifier:
    """Swin-T (Liu et al. 2021), the paper's second ImageNet-1K model (torchvision definition)."""
    m = _tvm().swin_t(weights=None, num_classes=num_classes)
    m.features[0][0] = _first_conv(m.features[0][0], in_channels)
    return Classifier(_SwinFeatures(m), m.head)
