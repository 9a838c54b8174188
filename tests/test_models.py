import pytest
import torch

from tdds_core.errors import ConfigError
from tdds_core.models import create_model, list_models

LARGE = {"resnet34_imagenet", "resnet50_imagenet", "swin_t"}


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("name", list_models())
def test_forward_shapes(name, channels):
    size = 64 if name in LARGE else 28
    torch.manual_seed(0)
    m = create_model(name, num_classes=7, in_channels=channels, image_size=size).eval()
    with torch.no_grad():
        logits, feats = m(torch.randn(2, channels, size, size), return_features=True)
    assert logits.shape == (2, 7)
    assert feats.shape == (2, m.feature_dim)
    assert torch.isfinite(logits).all()


def test_cifar_resnet_stem_is_3x3_stride_1_without_maxpool():
    m = create_model("resnet18", num_classes=10)
    stem = m.features[0]
    assert stem.kernel_size == (3, 3) and stem.stride == (1, 1)
    assert not any(isinstance(x, torch.nn.MaxPool2d) for x in m.modules())
    assert m.feature_dim == 512


def test_unknown_architecture_lists_known():
    with pytest.raises(ConfigError, match="known architectures: .*resnet18"):
        create_model("resnet19", num_classes=10)


def test_unknown_option():
    with pytest.raises(ConfigError, match="has no option 'depth'"):
        create_model("small_cnn", num_classes=10, depth=3)


@pytest.mark.slow
def test_importing_the_library_leaves_torchvision_unloaded():
    # every KFP task is a new process: torchvision is imported only when a torchvision architecture
    # is built, not by `import tdds_core.engine` (the small CNN and the pipeline steps do not need it)
    import subprocess
    import sys

    code = ("import sys, tdds_core.engine, tdds_core.steps, tdds_core.stages, tdds_core.scoring; "
            "from tdds_core.models import create_model; create_model('small_cnn', num_classes=3); "
            "assert 'torchvision' not in sys.modules, 'torchvision imported'; "
            "create_model('resnet18', num_classes=3); assert 'torchvision' in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)
