"""A small CNN for quick CPU runs and tests (two conv blocks, ~100k parameters)."""
from __future__ import annotations

from torch import nn

from ._base import Classifier, register_model


@register_model(options=("width",))
def small_cnn(num_classes: int, in_channels: int = 3, image_size: int = 32, width: int = 32) -> Classifier:
    w = width
    feats = nn.Sequential(
        nn.Conv2d(in_channels, w, 3, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=True), nn.MaxPool2d(2),
        nn.Conv2d(w, 2 * w, 3, padding=1, bias=False), nn.BatchNorm2d(2 * w), nn.ReLU(inplace=True), nn.MaxPool2d(2),
        nn.Conv2d(2 * w, 4 * w, 3, padding=1, bias=False), nn.BatchNorm2d(4 * w), nn.ReLU(inplace=True),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(),
    )
    return Classifier(feats, nn.Linear(4 * w, num_classes))


@register_model(options=("width", "hidden"))
def small_cnn_fc(num_classes: int, in_channels: int = 3, image_size: int = 32, width: int = 32, hidden: int = 128) -> Classifier:
    """Two conv blocks and a fully connected hidden layer (the classic Fashion-MNIST CNN): cheaper on a CPU than
    :func:`small_cnn` (about 4M multiply-adds per 28x28 image against 7.5M) and keeps the spatial layout the
    global pooling of :func:`small_cnn` averages away. Features: the ``hidden``-wide layer."""
    w, side = width, image_size // 4
    feats = nn.Sequential(
        nn.Conv2d(in_channels, w, 3, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=True), nn.MaxPool2d(2),
        nn.Conv2d(w, 2 * w, 3, padding=1, bias=False), nn.BatchNorm2d(2 * w), nn.ReLU(inplace=True), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(2 * w * side * side, hidden), nn.ReLU(inplace=True),
    )
    return Classifier(feats, nn.Linear(hidden, num_classes))
