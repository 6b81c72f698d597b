"""trainables.data: offline, on data the tests write themselves (or scikit-learn's bundled digits)."""
from __future__ import annotations

import hashlib
import pickle
import struct

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image
from torchvision.transforms.v2 import functional as TF

from benchmarks.plain_loader import make_plain_loader
from trainables import data
from trainables.data import augment, sources
from common.registry import UnknownNameError
from trainables.specs import DataSpec


@pytest.fixture(autouse=True)
def _fresh_cache():
    data.clear_cache()
    yield
    data.clear_cache()


# ---------------------------------------------------------------------------------------------- data dir, info


def test_resolve_data_dir_prefers_option_then_env_then_default(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(data.DATA_DIR_ENV, raising=False)
    assert data.resolve_data_dir(None) == tmp_path / "data"
    monkeypatch.setenv(data.DATA_DIR_ENV, str(tmp_path / "from_env"))
    assert data.resolve_data_dir(None) == tmp_path / "from_env"
    assert data.resolve_data_dir(tmp_path / "option") == tmp_path / "option"
    assert data.resolve_data_dir("relative") == tmp_path / "relative"  # made absolute for Ray workers


def test_dataset_info_reads_no_files(tmp_path, monkeypatch):
    monkeypatch.setenv(data.DATA_DIR_ENV, str(tmp_path))
    cifar100 = data.dataset_info(DataSpec("cifar100"))
    assert (cifar100.input_shape, cifar100.num_classes) == ((3, 32, 32), 100)
    assert (cifar100.augment, cifar100.crop_padding, cifar100.tensor_resident) == ("crop_flip", 4, True)
    imagenet = data.dataset_info(DataSpec("imagenet"))
    assert (imagenet.input_shape, imagenet.num_classes, imagenet.tensor_resident) == ((3, 224, 224), 1000, False)
    assert data.dataset_info(DataSpec("tiny_imagenet")).input_shape == (3, 64, 64)
    assert data.dataset_info(DataSpec("mnist")).input_shape == (1, 28, 28)
    assert list(tmp_path.iterdir()) == []


def test_every_registered_dataset_describes_itself():
    assert data.DATASETS.names() == ["cifar10", "cifar100", "digits", "imagenet", "mnist", "synthetic",
                                     "tiny_imagenet"]
    for name in data.DATASETS:
        info = data.dataset_info(DataSpec(name))
        assert info.name == name
        assert len(info.mean) == len(info.std) == info.input_shape[0]


def test_unknown_dataset_lists_valid_names():
    with pytest.raises(UnknownNameError, match="cifar10.*digits"):
        data.dataset_info(DataSpec("svhn"))


def test_shape_overrides_only_for_synthetic():
    with pytest.raises(ValueError, match="'cifar10'"):
        data.dataset_info(DataSpec("cifar10", num_classes=5))
    with pytest.raises(ValueError, match="size"):
        data.load_tensors(DataSpec("digits", size=10), "train")
    with pytest.raises(ValueError, match="split"):
        data.load_tensors(DataSpec("digits"), "validation")
    info = data.dataset_info(DataSpec("synthetic", input_shape=(1, 5, 7), num_classes=3))
    assert (info.input_shape, info.num_classes, len(info.mean)) == ((1, 5, 7), 3, 1)
    with pytest.raises(ValueError, match="num_classes"):
        data.dataset_info(DataSpec("synthetic", num_classes=1))


# ---------------------------------------------------------------------------------------------- digits, synthetic


def test_digits_split_is_fixed_and_stratified():
    x_train, y_train = data.load_tensors(DataSpec("digits"), "train")
    x_test, y_test = data.load_tensors(DataSpec("digits"), "test")
    assert x_train.shape == (1347, 1, 8, 8) and x_test.shape == (450, 1, 8, 8)
    assert x_train.dtype == torch.uint8 and y_train.dtype == torch.int64
    assert int(x_train.max()) == 255 and int(x_train.min()) == 0
    per_class = torch.bincount(y_train, minlength=10) + torch.bincount(y_test, minlength=10)
    assert per_class.sum() == 1797
    assert torch.all((torch.bincount(y_test, minlength=10) - 0.25 * per_class).abs() <= 1)
    again_x, again_y = data.load_tensors(DataSpec("digits"), "test")
    assert torch.equal(again_x, x_test) and torch.equal(again_y, y_test)


def test_digits_normalisation_constants_are_the_train_split_statistics():
    x_train, _ = data.load_tensors(DataSpec("digits"), "train")
    pixels = x_train.double() / 255
    info = data.dataset_info(DataSpec("digits"))
    assert pixels.mean().item() == pytest.approx(info.mean[0], abs=1e-4)
    assert pixels.std(unbiased=False).item() == pytest.approx(info.std[0], abs=1e-4)


def test_synthetic_is_deterministic_balanced_and_class_dependent():
    shaped = DataSpec("synthetic", input_shape=(2, 6, 6), num_classes=4, size=40)
    x, y = data.load_tensors(shaped, "train")
    assert x.shape == (40, 2, 6, 6) and x.dtype == torch.uint8
    assert torch.bincount(y).tolist() == [10, 10, 10, 10]
    x2, y2 = data.load_tensors(shaped, "train")
    assert torch.equal(x, x2) and torch.equal(y, y2)
    x_test, _ = data.load_tensors(shaped, "test")
    assert x_test.shape[0] == 20
    # Nearest class mean predicts the label: there is something to learn.
    means = torch.stack([x[y == c].float().mean(0) for c in range(4)])
    nearest = torch.cdist(x.float().flatten(1), means.flatten(1)).argmin(1)
    assert (nearest == y).float().mean() > 0.9
    default_x, default_y = data.load_tensors(DataSpec("synthetic"), "test")
    assert default_x.shape == (256, 3, 32, 32) and default_y.max() == 9


# ---------------------------------------------------------------------------------------------- torchvision datasets


@pytest.mark.parametrize("name", ["mnist", "cifar10", "cifar100"])
def test_torchvision_dataset_absent_offline_names_dataset_and_directory(name, tmp_path, monkeypatch):
    monkeypatch.setattr(sources, "DOWNLOAD_SOCKET_TIMEOUT_S", 5.0)
    with pytest.raises(data.DatasetMissingError) as absent:
        data.load_tensors(DataSpec(name), "test", tmp_path, download=False)
    assert name in str(absent.value) and str(tmp_path) in str(absent.value)
    assert isinstance(absent.value, FileNotFoundError)
    with pytest.raises(data.DatasetMissingError) as failed:  # no network here: the download fails cleanly
        data.load_tensors(DataSpec(name), "test", tmp_path, download=True)
    assert name in str(failed.value) and str(tmp_path) in str(failed.value)
    assert "download failed" in str(failed.value)


def _write_idx(path, array):
    magic = {1: 0x0801, 3: 0x0803}[array.ndim]
    path.write_bytes(struct.pack(">I", magic) + struct.pack(f">{array.ndim}I", *array.shape)
                     + array.astype(np.uint8).tobytes())


def test_mnist_in_torchvision_layout_loads_as_nchw(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    images = {"train": rng.integers(0, 256, (6, 28, 28)), "t10k": rng.integers(0, 256, (3, 28, 28))}
    labels = {"train": np.array([0, 1, 2, 3, 4, 9]), "t10k": np.array([7, 8, 5])}
    for prefix in ("train", "t10k"):
        _write_idx(raw / f"{prefix}-images-idx3-ubyte", images[prefix])
        _write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels[prefix])
    x, y = data.load_tensors(DataSpec("mnist"), "test", tmp_path, download=False)
    assert x.shape == (3, 1, 28, 28) and x.dtype == torch.uint8
    assert torch.equal(x[:, 0], torch.from_numpy(images["t10k"].astype(np.uint8)))
    assert y.tolist() == [7, 8, 5]


def _write_fake_cifar10(root):
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(1)
    written = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        rows = rng.integers(0, 256, (2, 3 * 32 * 32), dtype=np.uint8)
        labels = rng.integers(0, 10, 2).tolist()
        (folder / name).write_bytes(pickle.dumps({"data": rows, "labels": labels}))
        written[name] = (rows, labels)
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": [f"class{i}" for i in range(10)]}))
    md5 = {p.name: hashlib.md5(p.read_bytes()).hexdigest() for p in folder.iterdir()}
    return written, md5


def test_cifar10_pickled_batches_convert_to_nchw(tmp_path):
    written, md5 = _write_fake_cifar10(tmp_path)

    # torchvision md5-checks every CIFAR file against the real release, so a fake
    # needs these checksums swapped; everything else is torchvision's own reader.
    class FakeChecksumCIFAR10(torchvision.datasets.CIFAR10):
        train_list = [[f"data_batch_{i}", md5[f"data_batch_{i}"]] for i in range(1, 6)]
        test_list = [["test_batch", md5["test_batch"]]]
        meta = {"filename": "batches.meta", "key": "label_names", "md5": md5["batches.meta"]}

    source = sources.TorchvisionSource(data.dataset_info(DataSpec("cifar10")), FakeChecksumCIFAR10,
                                       "cifar-10-batches-py")
    x, y = source.load("train", tmp_path, False, source.info, None)
    rows = np.concatenate([written[f"data_batch_{i}"][0] for i in range(1, 6)])
    assert x.shape == (10, 3, 32, 32) and x.dtype == torch.uint8
    assert torch.equal(x, torch.from_numpy(rows.reshape(10, 3, 32, 32)))
    assert y.tolist() == sum((written[f"data_batch_{i}"][1] for i in range(1, 6)), [])
    # The real loader sees checksums that are not CIFAR-10's: absent, not silently wrong.
    with pytest.raises(data.DatasetMissingError, match="cifar10"):
        data.load_tensors(DataSpec("cifar10"), "train", tmp_path, download=False)


# ---------------------------------------------------------------------------------------------- tiny imagenet


def _solid_jpeg(path, value, size=(64, 64)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (value, 255 - value, value // 2)).save(path, quality=95)


def _write_tiny_imagenet(root):
    base = root / "tiny-imagenet-200"
    wnids = ["n03", "n01", "n02"]  # unsorted on purpose: class index = sorted position
    (base / "wnids.txt").parent.mkdir(parents=True)
    (base / "wnids.txt").write_text("\n".join(wnids) + "\n")
    for wnid in wnids:
        for i in range(4):
            _solid_jpeg(base / "train" / wnid / "images" / f"{wnid}_{i}.JPEG", 40 * int(wnid[-1]) + i)
    val_labels = ["n02", "n03", "n01", "n03", "n02", "n01"]
    lines = []
    for i, wnid in enumerate(val_labels):
        _solid_jpeg(base / "val" / "images" / f"val_{i}.JPEG", 40 * int(wnid[-1]))
        lines.append(f"val_{i}.JPEG\t{wnid}\t0\t0\t63\t63")
    (base / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    return base


def test_tiny_imagenet_folder_loads_labels_and_caches(tmp_path):
    base = _write_tiny_imagenet(tmp_path)
    x, y = data.load_tensors(DataSpec("tiny_imagenet"), "train", tmp_path, download=False)
    assert x.shape == (12, 3, 64, 64) and x.dtype == torch.uint8
    assert y.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    red = x[:, 0].float().mean((1, 2))
    assert torch.allclose(red, torch.tensor([40.0 * (c + 1) + i for c in range(3) for i in range(4)]), atol=2)
    x_val, y_val = data.load_tensors(DataSpec("tiny_imagenet"), "test", tmp_path, download=False)
    assert y_val.tolist() == [1, 2, 0, 2, 1, 0]  # from val_annotations.txt, n01 -> 0
    assert torch.allclose(x_val[:, 0].float().mean((1, 2)), 40.0 * (y_val.float() + 1), atol=2)
    # The decoded tensors are cached: later loads need no JPEGs.
    for jpeg in base.rglob("*.JPEG"):
        jpeg.unlink()
    cached_x, cached_y = data.load_tensors(DataSpec("tiny_imagenet"), "train", tmp_path, download=False)
    assert torch.equal(cached_x, x) and torch.equal(cached_y, y)
    assert sorted(p.name for p in base.glob(".cache_*")) == [".cache_test.pt", ".cache_train.pt"]


def test_tiny_imagenet_absent_names_directory(tmp_path):
    with pytest.raises(data.DatasetMissingError) as absent:
        data.load_tensors(DataSpec("tiny_imagenet"), "train", tmp_path, download=False)
    assert "tiny_imagenet" in str(absent.value) and str(tmp_path / "tiny-imagenet-200") in str(absent.value)


# ---------------------------------------------------------------------------------------------- imagenet folder


def _write_imagenet(root, per_class=3):
    for split in ("train", "val"):
        for c, wnid in enumerate(["n001", "n002"]):
            for i in range(per_class):
                _solid_jpeg(root / "imagenet" / split / wnid / f"{i}.JPEG", 60 * c + 10 * i, size=(40, 30))


def test_imagenet_folder_batches_are_deterministic_and_worker_independent(tmp_path):
    _write_imagenet(tmp_path)
    batches = data.train_batches(DataSpec("imagenet"), tmp_path, 4, "cpu", seed=3, epoch=1, num_workers=0)
    assert isinstance(batches, data.FolderBatches) and len(batches) == 2
    first = list(batches)
    assert [x.shape for x, _ in first] == [(4, 3, 224, 224), (2, 3, 224, 224)]
    assert sorted(torch.cat([y for _, y in first]).tolist()) == [0, 0, 0, 1, 1, 1]
    again = list(data.train_batches(DataSpec("imagenet"), tmp_path, 4, "cpu", seed=3, epoch=1, num_workers=2))
    for (x, y), (x2, y2) in zip(first, again):
        assert torch.equal(x, x2) and torch.equal(y, y2)
    test = list(data.test_batches(DataSpec("imagenet"), tmp_path, 4, "cpu", num_workers=0))
    assert torch.cat([y for _, y in test]).tolist() == [0, 0, 0, 1, 1, 1]
    # A solid image stays solid through Resize + CenterCrop: normalised (value / 255 - mean) / std.
    info = data.dataset_info(DataSpec("imagenet"))
    expected_red = (torch.tensor([0.0, 10, 20, 60, 70, 80]) / 255 - info.mean[0]) / info.std[0]
    observed_red = torch.cat([x for x, _ in test])[:, 0].mean((1, 2))
    assert torch.allclose(observed_red, expected_red, atol=0.05)
    with pytest.raises(ValueError, match="batch by batch"):
        data.load_tensors(DataSpec("imagenet"), "train", tmp_path)


def test_imagenet_scoring_batches_and_missing_folder(tmp_path):
    _write_imagenet(tmp_path)
    batches = data.scoring_batches(DataSpec("imagenet"), tmp_path, 2, 3, "cpu", seed=0, num_workers=0)
    labels = torch.cat([y for _, y in batches])
    assert torch.bincount(labels, minlength=1000)[:2].tolist() == [2, 2] and labels.numel() == 4
    with pytest.raises(data.DatasetMissingError) as absent:
        data.train_batches(DataSpec("imagenet"), tmp_path / "elsewhere", 4, "cpu", 0, 0)
    assert "imagenet" in str(absent.value) and str(tmp_path / "elsewhere") in str(absent.value)


# ---------------------------------------------------------------------------------------------- augmentation


def test_crop_flip_by_hand():
    image = torch.arange(16, dtype=torch.uint8).view(1, 1, 4, 4) + 1
    params = augment.CropFlip(torch.tensor([0]), torch.tensor([2]), torch.tensor([True]))
    # pad 1 -> 6x6 with zeros; rows 0..3 / cols 2..5 of the padded image, then mirrored.
    expected = torch.tensor([[0, 0, 0, 0],
                             [0, 4, 3, 2],
                             [0, 8, 7, 6],
                             [0, 12, 11, 10]], dtype=torch.uint8)
    assert torch.equal(augment.crop_flip(image, 1, params)[0, 0], expected)


def test_crop_flip_matches_torchvision_crop_and_flip():
    images = torch.randint(0, 256, (64, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    params = augment.draw_crop_flip(64, 4, torch.Generator().manual_seed(5))
    out = augment.crop_flip(images, 4, params)
    for i in range(64):
        crop = TF.crop(TF.pad(images[i], [4], fill=0), int(params.top[i]), int(params.left[i]), 32, 32)
        expected = TF.horizontal_flip(crop) if params.flip[i] else crop
        assert torch.equal(out[i], expected)
    assert not torch.equal(out, images)


def test_crop_offsets_uniform_range_and_flip_half_the_time():
    params = augment.draw_crop_flip(4000, 4, torch.Generator().manual_seed(0))
    assert set(params.top.tolist()) == set(range(9)) == set(params.left.tolist())
    assert abs(params.flip.float().mean().item() - 0.5) < 0.04


# ---------------------------------------------------------------------------------------------- TensorBatches


def _indexed_dataset(count=50):
    """Images whose pixels encode their index, in a dataset without augmentation."""
    images = torch.arange(count, dtype=torch.uint8).view(count, 1, 1, 1).expand(count, 1, 8, 8).contiguous()
    labels = torch.arange(count) % 10
    return images, labels, data.dataset_info(DataSpec("digits"))


def test_tensor_batches_are_a_pure_function_of_seed_and_epoch():
    x, y = data.load_tensors(DataSpec("synthetic", size=64), "train")
    info = data.dataset_info(DataSpec("synthetic"))
    info = data.DatasetInfo(**{**info.__dict__, "augment": "crop_flip", "crop_padding": 4})

    def epoch(seed, number):
        return list(data.TensorBatches(x, y, info, 16, "cpu", train=True, seed=seed, epoch=number))

    rng_before = torch.random.get_rng_state()
    first = epoch(0, 0)
    assert torch.equal(torch.random.get_rng_state(), rng_before)  # the trainer's global RNG is untouched
    for (a, ay), (b, by) in zip(first, epoch(0, 0)):
        assert torch.equal(a, b) and torch.equal(ay, by)
    uninterrupted = data.TensorBatches(x, y, info, 16, "cpu", train=True, seed=0, epoch=1)
    resumed = epoch(0, 1)
    assert all(torch.equal(a, b) for (a, _), (b, _) in zip(uninterrupted, resumed))
    assert all(torch.equal(a, b) for (a, _), (b, _) in zip(uninterrupted, uninterrupted))  # re-iterable
    assert not torch.equal(first[0][0], resumed[0][0])
    assert not torch.equal(first[0][0], epoch(1, 0)[0][0])


def test_train_batches_visit_every_example_once_per_epoch():
    images, labels, info = _indexed_dataset(50)
    batches = data.TensorBatches(images, labels, info, 16, "cpu", train=True, seed=2, epoch=0)
    assert len(batches) == 4
    seen_x, seen_y = zip(*batches)
    assert [len(b) for b in seen_y] == [16, 16, 16, 2]
    scale = 255 * info.std[0]
    index = torch.cat([x[:, 0, 0, 0] for x in seen_x]) * scale + 255 * info.mean[0]
    index = index.round().long()
    assert sorted(index.tolist()) == list(range(50)) and index.tolist() != list(range(50))
    assert torch.equal(torch.cat(seen_y), labels[index])
    dropped = data.TensorBatches(images, labels, info, 16, "cpu", train=True, seed=2, epoch=0, drop_last=True)
    assert len(dropped) == 3 and [len(y) for _, y in dropped] == [16, 16, 16]


def test_test_split_batches_are_in_order_and_normalised():
    images, labels, info = _indexed_dataset(20)
    batches = list(data.TensorBatches(images, labels, info, 8, "cpu", train=False, seed=0))
    x = torch.cat([b for b, _ in batches])
    expected = (images.float() / 255 - info.mean[0]) / info.std[0]
    assert torch.allclose(x, expected, atol=1e-5) and x.dtype == torch.float32
    assert torch.equal(torch.cat([y for _, y in batches]), labels)


def test_train_and_test_batches_load_once_per_process_until_cleared():
    first = data.train_batches(DataSpec("digits"), None, 128, "cpu", seed=0, epoch=0)
    second = data.train_batches(DataSpec("digits"), None, 128, "cpu", seed=0, epoch=1)
    assert first.images is second.images
    assert len(first) == 11 and len(data.test_batches(DataSpec("digits"), None, 100, "cpu")) == 5
    data.clear_cache()
    assert data.train_batches(DataSpec("digits"), None, 128, "cpu", seed=0, epoch=0).images is not first.images


# ---------------------------------------------------------------------------------------------- scoring batches


def test_scoring_batches_are_exactly_class_balanced_and_seeded():
    batches = data.scoring_batches(DataSpec("digits"), None, examples_per_class=7, batch_size=16, device="cpu",
                                   seed=4)
    assert [len(y) for _, y in batches] == [16, 16, 16, 16, 6]
    labels = torch.cat([y for _, y in batches])
    assert torch.bincount(labels, minlength=10).tolist() == [7] * 10
    x = torch.cat([b for b, _ in batches])
    train_x, _ = data.load_tensors(DataSpec("digits"), "train")
    train_normalised = augment.Normaliser(data.dataset_info(DataSpec("digits")), "cpu")(train_x).flatten(1)
    distance = (x.flatten(1)[:, None] - train_normalised[None]).abs().amax(-1).min(1).values
    assert distance.max() < 1e-5  # every example is an unaugmented train image
    again = torch.cat([y for _, y in data.scoring_batches(DataSpec("digits"), None, 7, 16, "cpu", seed=4)])
    other = torch.cat([y for _, y in data.scoring_batches(DataSpec("digits"), None, 7, 16, "cpu", seed=5)])
    assert torch.equal(again, labels) and not torch.equal(other, labels)


def test_scoring_batches_take_what_a_small_class_has():
    small = DataSpec("synthetic", num_classes=10, size=25)
    _, y = data.load_tensors(small, "train")
    batches = data.scoring_batches(small, None, 3, 100, "cpu", 0)
    counts = torch.bincount(torch.cat([b for _, b in batches]), minlength=10)
    assert torch.equal(counts, torch.bincount(y, minlength=10).clamp(max=3))
    assert counts.tolist().count(2) == 5  # 25 examples over 10 classes: five classes have only 2


# ---------------------------------------------------------------------------------------------- plain baseline


def test_plain_loader_matches_tensor_batches_on_the_test_split():
    plain = make_plain_loader(DataSpec("digits"), None, 100, train=False, num_workers=0)
    fast = data.test_batches(DataSpec("digits"), None, 100, "cpu")
    for (a, ay), (b, by) in zip(plain, fast):
        assert torch.allclose(a, b, atol=1e-5) and torch.equal(ay, by)
    train_labels = torch.cat([y for _, y in make_plain_loader(DataSpec("digits"), None, 500, train=True,
                                                              num_workers=0)])
    assert torch.equal(torch.bincount(train_labels),
                       torch.bincount(data.load_tensors(DataSpec("digits"), "train")[1]))
