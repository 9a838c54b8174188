import numpy as np
import pytest
import torch

from helpers import make_cifar, make_idx_dataset, make_imagefolder
from tdds_core.config import DataConfig
from tdds_core.data import create_dataset, fingerprint, stratified_subset
from tdds_core.data.datasets import read_idx
from tdds_core.data.loader import ResidentLoader, StreamLoader, augment_batch
from tdds_core.errors import ConfigError, DataError


@pytest.mark.parametrize("gz", [True, False])
@pytest.mark.parametrize("name", ["fashion-mnist", "mnist"])
def test_idx_datasets(tmp_path, gz, name):
    make_idx_dataset(tmp_path, gz=gz)
    s = create_dataset(DataConfig(name=name, root=str(tmp_path)))
    assert s.train.images.shape == (40, 1, 28, 28) and s.test.images.shape == (20, 1, 28, 28)
    assert s.train.ids[:3] == ["0", "1", "2"] and s.num_classes == 10
    assert s.train.labels.tolist() == [i % 10 for i in range(40)]
    assert s.flip == (name == "fashion-mnist")


def test_idx_torchvision_raw_layout(tmp_path):
    make_idx_dataset(tmp_path / "FashionMNIST" / "raw", gz=False)
    assert len(create_dataset(DataConfig(name="fashion-mnist", root=str(tmp_path))).train) == 40


def test_idx_truncated_and_missing(tmp_path):
    make_idx_dataset(tmp_path, gz=False)
    p = tmp_path / "train-images-idx3-ubyte"
    p.write_bytes(p.read_bytes()[:-100])
    with pytest.raises(DataError, match="truncated"):
        read_idx(p)
    with pytest.raises(DataError, match="missing .*dataset-fashion-mnist"):
        create_dataset(DataConfig(name="fashion-mnist", root=str(tmp_path / "empty")))


def test_real_fashion_mnist_when_installed():
    s = create_dataset(DataConfig(name="fashion-mnist"))
    assert s.train.images.shape == (60000, 1, 28, 28) and s.test.images.shape == (10000, 1, 28, 28)
    assert np.bincount(s.train.labels).tolist() == [6000] * 10
    assert s.classes[9] == "Ankle boot"


@pytest.mark.parametrize("classes", [10, 100])
def test_cifar_pickle_batches(tmp_path, classes):
    make_cifar(tmp_path, classes)
    s = create_dataset(DataConfig(name=f"cifar{classes}", root=str(tmp_path)))
    assert s.train.images.shape == (30, 3, 32, 32) and s.test.images.shape == (6, 3, 32, 32)
    assert s.num_classes == classes and s.channels == 3


def test_cifar_missing_names_fix(tmp_path):
    with pytest.raises(DataError, match="data.download: true"):
        create_dataset(DataConfig(name="cifar10", root=str(tmp_path)))


def test_imagefolder_with_splits(tmp_path):
    make_imagefolder(tmp_path, per_class=4)
    s = create_dataset(DataConfig(name="imagefolder", root=str(tmp_path), image_size=16))
    assert s.classes == ["cat", "dog"] and s.train.images.shape == (8, 3, 16, 16) and len(s.test) == 4
    assert s.train.ids[0] == "train/cat/000.png"


def test_imagefolder_flat_growing_keeps_ids_and_split(tmp_path):
    make_imagefolder(tmp_path, per_class=30, split=False)
    a = create_dataset(DataConfig(name="imagefolder", root=str(tmp_path)))
    make_imagefolder(tmp_path, per_class=10, split=False, start=30)
    b = create_dataset(DataConfig(name="imagefolder", root=str(tmp_path)))
    assert set(a.train.ids) <= set(b.train.ids) and set(a.test.ids) <= set(b.test.ids)
    assert len(b.train) + len(b.test) == 80 and len(a.test) > 0
    assert a.fingerprint != b.fingerprint


def test_imagefolder_empty(tmp_path):
    (tmp_path / "cat").mkdir()
    with pytest.raises(DataError, match="holds no images"):
        create_dataset(DataConfig(name="imagefolder", root=str(tmp_path)))


def test_imagefolder_undecodable_image_is_named(tmp_path):
    make_imagefolder(tmp_path, per_class=2)
    (tmp_path / "train" / "cat" / "999.png").write_bytes(b"not an image")
    with pytest.raises(DataError, match=r"image .*train/cat/999\.png cannot be decoded .*replace the image or remove the file"):
        create_dataset(DataConfig(name="imagefolder", root=str(tmp_path)))


def test_unknown_dataset_and_option():
    with pytest.raises(ConfigError, match="known datasets: .*fashion-mnist"):
        create_dataset(DataConfig(name="svhn"))
    with pytest.raises(ConfigError, match="data.options.size"):
        create_dataset(DataConfig(name="synthetic", options={"size": 3}))


def test_fingerprint_changes_with_labels_and_ids():
    y = np.array([0, 1, 2])
    f = fingerprint(["a", "b", "c"], y)
    assert f == fingerprint(["a", "b", "c"], y.copy())
    assert f != fingerprint(["a", "b", "c"], np.array([0, 1, 1]))
    assert f != fingerprint(["a", "b", "d"], y)


def test_labels_outside_range_rejected():
    s = create_dataset(DataConfig(name="synthetic"))
    s.train.labels[5] = 9
    with pytest.raises(DataError, match=r"outside \[0, 4\).*sample '5' has label 9"):
        s.validate()


def test_stratified_subset_keeps_proportions():
    y = np.repeat(np.arange(4), [100, 50, 30, 20])
    idx = stratified_subset(y, 50, seed=3)
    assert len(idx) == 50 and np.all(np.diff(idx) > 0)
    assert np.bincount(y[idx]).tolist() == [25, 12, 8, 5] or abs(np.bincount(y[idx]) - [25, 12.5, 7.5, 5]).max() <= 1
    assert np.array_equal(idx, stratified_subset(y, 50, seed=3))


def test_noise_is_seeded_and_recorded():
    cfg = DataConfig(name="synthetic", options={"num_train": 200}, noise={"label_noise": 0.2, "corruption": 0.1, "seed": 1})
    a, b = create_dataset(cfg), create_dataset(cfg)
    clean = create_dataset(DataConfig(name="synthetic", options={"num_train": 200}))
    changed = a.train.labels != clean.train.labels
    assert changed.sum() == 40 and a.info["noise"]["label_noise_count"] == 40
    assert np.array_equal(a.train.labels, b.train.labels) and np.array_equal(a.train.images, b.train.images)
    assert a.info["noisy_mask"][changed].all() and a.info["noisy_mask"].sum() >= 40


def test_augment_batch_crops_and_flips_deterministically():
    x = torch.arange(2 * 1 * 4 * 4, dtype=torch.uint8).view(2, 1, 4, 4)
    g1, g2 = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    a, b = augment_batch(x, g1, pad=1, flip=True), augment_batch(x, g2, pad=1, flip=True)
    assert a.shape == x.shape and torch.equal(a, b)
    # with pad 0 and no flip it is the identity
    assert torch.equal(augment_batch(x, g1, pad=0, flip=False), x)
    # every output pixel is an input pixel of the same sample or zero padding
    for i in range(2):
        assert set(a[i].flatten().tolist()) <= set(x[i].flatten().tolist()) | {0}


@pytest.mark.parametrize("cls", [ResidentLoader, StreamLoader])
def test_loaders_visit_every_position_once(cls):
    s = create_dataset(DataConfig(name="synthetic", options={"num_train": 50}))
    kw = dict(batch_size=8, device=torch.device("cpu"), mean=s.mean, std=s.std, augment=True, flip=True, pad=2,
              positions=np.arange(0, 50, 2))
    if cls is StreamLoader:
        kw["num_workers"] = 0
    loader = cls(s.train, **kw)
    seen = torch.cat([idx for _, _, idx in loader.epoch(3, seed=1)])
    assert sorted(seen.tolist()) == list(range(0, 50, 2))
    again = torch.cat([idx for _, _, idx in loader.epoch(3, seed=1)])
    assert torch.equal(seen, again)
    other = torch.cat([idx for _, _, idx in loader.epoch(4, seed=1)])
    assert not torch.equal(seen, other)
    x, y, idx = next(iter(loader.epoch(0, seed=1)))
    assert x.dtype == torch.float32 and torch.equal(y, torch.from_numpy(s.train.labels)[idx])
