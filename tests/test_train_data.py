"""Tests of bqsam.train.data: readers on real and written files, subsets, cache, loader."""

from __future__ import annotations

import io
import os
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch
from PIL import Image

from bqsam.train import data
from bqsam.train.data import (
    CIFAR10_CLASSES,
    BatchLoader,
    crop_and_flip,
    load_dataset,
    normalize,
    read_svhn_mat,
    restricted_load,
    select_subset,
    write_cifar_python_batches,
)

# ---------------------------------------------------------------------------------------
# Fixtures: real CIFAR-10 images
# ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def real_test_subset(cifar10_dir):
    """100 real test images (10 per class) decoded from the JPEG zip."""
    return load_dataset("cifar10", cifar10_dir, "test", subset=100, seed=0)


@pytest.fixture(scope="module")
def real_entries(cifar10_dir):
    """Three real JPEG entries per class: list of (class name, file name, JPEG bytes)."""
    entries = []
    with zipfile.ZipFile(cifar10_dir / "test.zip") as archive:
        for name in CIFAR10_CLASSES:
            for number in (7, 123, 456):
                file_name = f"{number:04d}.jpg"
                entries.append((name, file_name, archive.read(f"test/{name}/{file_name}")))
    return entries


def decode_with_pillow(payload: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(payload)) as image:
        return np.asarray(image.convert("RGB")).transpose(2, 0, 1)


def expected_from_entries(entries):
    """Images and labels in the order the readers use: by label, then by file name."""
    ordered = sorted(entries, key=lambda entry: (CIFAR10_CLASSES.index(entry[0]), entry[1]))
    images = np.stack([decode_with_pillow(payload) for _, _, payload in ordered])
    labels = np.array([CIFAR10_CLASSES.index(name) for name, _, _ in ordered])
    return images, labels


# ---------------------------------------------------------------------------------------
# CIFAR-10 image zips and folders
# ---------------------------------------------------------------------------------------


def test_real_zip_subset_is_balanced_and_deterministic(cifar10_dir, real_test_subset):
    images, labels = real_test_subset
    assert images.shape == (100, 3, 32, 32)
    assert images.dtype == np.uint8
    assert labels.dtype == np.int64
    assert np.bincount(labels, minlength=10).tolist() == [10] * 10

    again_images, again_labels = load_dataset("cifar10", cifar10_dir, "test", subset=100, seed=0)
    assert np.array_equal(again_images, images)
    assert np.array_equal(again_labels, labels)
    other_images, _ = load_dataset("cifar10", cifar10_dir, "test", subset=100, seed=1)
    assert not np.array_equal(other_images, images)


def test_real_zip_images_match_their_class_folder(cifar10_dir):
    # Without a subset the images are ordered by label, then file name, so position
    # 1000 * label + 17 contains test/<class>/0017.jpg.
    images, labels = load_dataset("cifar10", cifar10_dir / "test.zip", "test")
    assert images.shape == (10000, 3, 32, 32)
    with zipfile.ZipFile(cifar10_dir / "test.zip") as archive:
        for label, name in enumerate(CIFAR10_CLASSES):
            position = label * 1000 + 17
            assert labels[position] == label
            expected = decode_with_pillow(archive.read(f"test/{name}/0017.jpg"))
            assert np.array_equal(images[position], expected), name


@pytest.mark.parametrize("layout", ["zip", "zip-with-prefix", "folder"])
def test_image_tree_labels_follow_folder_names(tmp_path, real_entries, layout):
    shuffled = [real_entries[i] for i in np.random.default_rng(0).permutation(len(real_entries))]
    if layout == "folder":
        for name, file_name, payload in shuffled:
            path = tmp_path / "data" / "train" / name / file_name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(payload)
        (tmp_path / "data" / "train" / "notes.txt").write_text("not an image")
        root = tmp_path / "data"
    else:
        prefix = "cifar10/" if layout == "zip-with-prefix" else ""
        root = tmp_path / "images.zip"
        with zipfile.ZipFile(root, "w", compression=zipfile.ZIP_STORED) as archive:
            for name, file_name, payload in shuffled:
                archive.writestr(f"{prefix}train/{name}/{file_name}", payload)

    images, labels = load_dataset("cifar10", root, "train")

    expected_images, expected_labels = expected_from_entries(real_entries)
    assert np.array_equal(labels, expected_labels)
    assert np.array_equal(images, expected_images)


def test_image_tree_unknown_class_folder_raises(tmp_path, real_entries):
    path = tmp_path / "train" / "zebra" / "0001.jpg"
    path.parent.mkdir(parents=True)
    path.write_bytes(real_entries[0][2])
    with pytest.raises(ValueError, match="zebra"):
        load_dataset("cifar10", tmp_path, "train")


def test_image_tree_corrupt_image_names_entry(tmp_path):
    root = tmp_path / "bad.zip"
    with zipfile.ZipFile(root, "w") as archive:
        archive.writestr("train/cat/0001.jpg", b"this is not a JPEG file")
    with pytest.raises(ValueError, match="train/cat/0001.jpg"):
        load_dataset("cifar10", root, "train")


# ---------------------------------------------------------------------------------------
# CIFAR-10 python version
# ---------------------------------------------------------------------------------------


def test_python_batches_round_trip_real_images(tmp_path, real_test_subset):
    images, labels = real_test_subset
    batch_dir = tmp_path / "cifar-10-batches-py"
    write_cifar_python_batches(images, labels, batch_dir, split="train")
    write_cifar_python_batches(images[:30], labels[:30], batch_dir, split="test")

    train_images, train_labels = load_dataset("cifar10", tmp_path, "train")
    assert np.array_equal(train_images, images)
    assert np.array_equal(train_labels, labels)
    test_images, test_labels = load_dataset("cifar10", batch_dir, "test")
    assert np.array_equal(test_images, images[:30])
    assert np.array_equal(test_labels, labels[:30])


def test_python_batches_match_official_layout(tmp_path, real_test_subset):
    # The official files read with pickle.load(file, encoding="bytes") give bytes keys,
    # "data" of shape (n, 3072) in channel-major order and "labels" a list of ints.
    images, labels = real_test_subset
    write_cifar_python_batches(images, labels, tmp_path)
    names = sorted(path.name for path in tmp_path.iterdir())
    assert names == ["batches.meta"] + [f"data_batch_{i}" for i in range(1, 6)]

    with open(tmp_path / "data_batch_2", "rb") as file:
        assert file.read(2) == b"\x80\x02"
        file.seek(0)
        batch = pickle.load(file, encoding="bytes")
    assert set(batch) == {b"batch_label", b"labels", b"data", b"filenames"}
    assert batch[b"data"].shape == (20, 3072)
    assert np.array_equal(batch[b"data"][0, :1024].reshape(32, 32), images[20, 0])
    assert batch[b"labels"] == labels[20:40].tolist()

    with open(tmp_path / "batches.meta", "rb") as file:
        meta = pickle.load(file, encoding="bytes")
    assert meta[b"label_names"] == [name.encode() for name in CIFAR10_CLASSES]


def test_python_batches_with_str_keys_are_read(tmp_path, real_test_subset):
    # A Python 3 re-save (protocol 4, str keys) of the same content must read the same.
    images, labels = real_test_subset
    for name, part in zip(data._CIFAR_TRAIN_BATCHES, np.array_split(np.arange(100), 5)):
        batch = {"data": images[part].reshape(len(part), 3072), "labels": labels[part].tolist()}
        (tmp_path / name).write_bytes(pickle.dumps(batch, protocol=4))
    (tmp_path / "batches.meta").write_bytes(pickle.dumps({"label_names": list(CIFAR10_CLASSES)}))

    read_images, read_labels = load_dataset("cifar10", tmp_path, "train")
    assert np.array_equal(read_images, images)
    assert np.array_equal(read_labels, labels)


class _RunsShellCommand:
    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


class _OpensFileForWriting:
    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def _malicious_payloads(marker: Path) -> dict[str, bytes]:
    return {
        "os.system": pickle.dumps({b"data": _RunsShellCommand(f"touch {marker}"), b"labels": []}, protocol=2),
        "io.open": pickle.dumps({"data": _OpensFileForWriting(str(marker)), "labels": []}, protocol=4),
    }


def test_malicious_payload_is_live_with_plain_pickle(tmp_path):
    # Control: without the allow-list this payload does create the marker file.
    marker = tmp_path / "marker"
    pickle.loads(_malicious_payloads(marker)["io.open"])["data"].close()
    assert marker.exists()


@pytest.mark.parametrize("payload_name", ["os.system", "io.open"])
def test_malicious_pickle_rejected_without_executing(tmp_path, real_test_subset, payload_name):
    images, labels = real_test_subset
    batch_dir = tmp_path / "cifar-10-batches-py"
    write_cifar_python_batches(images, labels, batch_dir)
    marker = tmp_path / "marker"
    (batch_dir / "data_batch_3").write_bytes(_malicious_payloads(marker)[payload_name])

    with pytest.raises(ValueError, match="data_batch_3") as raised:
        load_dataset("cifar10", tmp_path, "train")
    assert "not allowed" in str(raised.value)
    assert not marker.exists()

    with pytest.raises(pickle.UnpicklingError):
        restricted_load(io.BytesIO(_malicious_payloads(marker)[payload_name]))
    assert not marker.exists()


@pytest.mark.parametrize("module, name", [("numpy", "load"), ("numpy.core.multiarray", "scalar"),
                                          ("builtins", "eval"), ("_codecs", "encode")])
def test_unpickler_rejects_globals_outside_allow_list(module, name):
    payload = b"\x80\x02c" + module.encode() + b"\n" + name.encode() + b"\n."
    with pytest.raises(pickle.UnpicklingError, match=f"{module}.{name}"):
        restricted_load(io.BytesIO(payload))


def test_truncated_python_batch_names_file(tmp_path, real_test_subset):
    images, labels = real_test_subset
    write_cifar_python_batches(images, labels, tmp_path)
    path = tmp_path / "data_batch_4"
    path.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(ValueError, match="data_batch_4"):
        load_dataset("cifar10", tmp_path, "train")


def test_missing_python_batch_names_file_and_source(tmp_path, real_test_subset):
    images, labels = real_test_subset
    write_cifar_python_batches(images, labels, tmp_path)
    (tmp_path / "data_batch_5").unlink()
    with pytest.raises(FileNotFoundError, match="data_batch_5") as raised:
        load_dataset("cifar10", tmp_path, "train")
    assert data.CIFAR10_URL in str(raised.value)


def test_python_batch_labels_out_of_range(tmp_path, real_test_subset):
    images, _ = real_test_subset
    for name in data._CIFAR_TRAIN_BATCHES:
        batch = {b"data": images[:4].reshape(4, 3072), b"labels": [0, 1, 2, 10]}
        (tmp_path / name).write_bytes(pickle.dumps(batch))
    with pytest.raises(ValueError, match=r"data_batch_1.*\[0, 9\]"):
        load_dataset("cifar10", tmp_path, "train")


# ---------------------------------------------------------------------------------------
# SVHN
# ---------------------------------------------------------------------------------------


def write_svhn(path: Path, count: int = 40, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    generator = np.random.default_rng(seed)
    images = generator.integers(0, 256, size=(32, 32, 3, count), dtype=np.uint8)
    labels = (np.arange(count) % 10 + 1).astype(np.uint8).reshape(count, 1)  # 1..10
    scipy.io.savemat(path, {"X": images, "y": labels})
    return images, labels


@pytest.mark.parametrize("split", ["train", "test", "extra"])
def test_svhn_mat_round_trip(tmp_path, split):
    raw_images, raw_labels = write_svhn(tmp_path / f"{split}_32x32.mat")
    images, labels = load_dataset("svhn", tmp_path, split)
    assert images.shape == (40, 3, 32, 32)
    assert labels.dtype == np.int64
    assert np.array_equal(images, raw_images.transpose(3, 2, 0, 1))
    assert np.array_equal(labels, raw_labels.ravel() % 10)


def test_svhn_label_10_is_digit_0(tmp_path):
    raw_images, raw_labels = write_svhn(tmp_path / "train_32x32.mat")
    _, labels = read_svhn_mat(tmp_path / "train_32x32.mat")
    tens = raw_labels.ravel() == 10
    assert tens.any()
    assert (labels[tens] == 0).all()
    assert labels.max() == 9


def test_svhn_truncated_mat_names_file(tmp_path):
    path = tmp_path / "train_32x32.mat"
    write_svhn(path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(ValueError, match="train_32x32.mat") as raised:
        load_dataset("svhn", tmp_path, "train")
    assert "truncated" in str(raised.value)
    assert data.SVHN_URL in str(raised.value)


@pytest.mark.parametrize("bad_label", [0, 11])
def test_svhn_labels_out_of_range(tmp_path, bad_label):
    path = tmp_path / "test_32x32.mat"
    images = np.zeros((32, 32, 3, 3), dtype=np.uint8)
    scipy.io.savemat(path, {"X": images, "y": np.array([[1], [bad_label], [10]], dtype=np.uint8)})
    with pytest.raises(ValueError, match=rf"test_32x32.mat.*values \[{bad_label}\].*1\.\.10"):
        load_dataset("svhn", tmp_path, "test")


def test_svhn_wrong_shape_names_variable(tmp_path):
    path = tmp_path / "train_32x32.mat"
    scipy.io.savemat(path, {"X": np.zeros((28, 28, 3, 2), dtype=np.uint8), "y": np.ones((2, 1))})
    with pytest.raises(ValueError, match=r"'X' must be uint8 of shape \(32, 32, 3, N\)"):
        load_dataset("svhn", tmp_path, "train")


def test_svhn_missing_file_names_file_and_source(tmp_path):
    with pytest.raises(FileNotFoundError, match="test_32x32.mat") as raised:
        load_dataset("svhn", tmp_path, "test")
    assert data.SVHN_URL in str(raised.value)


# ---------------------------------------------------------------------------------------
# load_dataset: detection, subsets, cache, invalid usage
# ---------------------------------------------------------------------------------------


def test_missing_cifar_root_contents_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="cifar-10-batches-py") as raised:
        load_dataset("cifar10", tmp_path, "train")
    assert str(tmp_path) in str(raised.value)
    assert "train.zip" in str(raised.value)


def test_missing_root_names_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="does-not-exist"):
        load_dataset("cifar10", tmp_path / "does-not-exist", "train")


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(name="mnist"), "name='mnist'"),
        (dict(split="valid"), "split='valid'"),
        (dict(name="cifar10", split="extra"), "split='extra'"),
        (dict(subset=0), "subset=0"),
        (dict(subset=-5), "subset=-5"),
        (dict(subset=2.5), "subset=2.5"),
        (dict(seed=-1), "seed=-1"),
    ],
)
def test_load_dataset_invalid_arguments(tmp_path, kwargs, message):
    arguments = dict(name="svhn", root=tmp_path, split="train") | kwargs
    with pytest.raises(ValueError, match=message):
        load_dataset(**arguments)


def test_subset_larger_than_split_raises(tmp_path):
    write_svhn(tmp_path / "train_32x32.mat", count=40)
    with pytest.raises(ValueError, match="subset=41 exceeds the 40 images"):
        load_dataset("svhn", tmp_path, "train", subset=41)


@pytest.mark.parametrize(
    "counts, size, expected",
    [
        ([10, 10, 10], 9, [3, 3, 3]),
        ([10, 10, 10], 10, [4, 3, 3]),
        ([2, 10, 10], 12, [2, 5, 5]),
        ([1, 1, 10], 12, [1, 1, 10]),
        ([5, 5], 10, [5, 5]),
    ],
)
def test_select_subset_balances_classes(counts, size, expected):
    labels = np.repeat(np.arange(len(counts)), counts)
    chosen = select_subset(labels, size, seed=3)
    assert len(chosen) == size
    assert len(np.unique(chosen)) == size
    assert np.all(np.diff(chosen) > 0)
    assert np.bincount(labels[chosen], minlength=len(counts)).tolist() == expected


def test_select_subset_depends_on_seed():
    labels = np.repeat(np.arange(10), 50)
    assert np.array_equal(select_subset(labels, 30, seed=5), select_subset(labels, 30, seed=5))
    assert not np.array_equal(select_subset(labels, 30, seed=5), select_subset(labels, 30, seed=6))


def test_cache_is_reused_and_written_atomically(tmp_path, monkeypatch):
    write_svhn(tmp_path / "train_32x32.mat", count=40)
    cache = tmp_path / "cache"
    images, labels = load_dataset("svhn", tmp_path, "train", subset=20, seed=1, cache_dir=cache)
    written = sorted(path.name for path in cache.iterdir())
    assert len(written) == 2
    assert all(name.endswith(".npy") for name in written)

    def fail(*args, **kwargs):
        raise AssertionError("the source was read although a cache file exists")

    monkeypatch.setattr(data, "_read_source", fail)
    cached_images, cached_labels = load_dataset("svhn", tmp_path, "train", subset=20, seed=1, cache_dir=cache)
    assert np.array_equal(cached_images, images)
    assert np.array_equal(cached_labels, labels)
    with pytest.raises(AssertionError, match="source was read"):
        load_dataset("svhn", tmp_path, "train", subset=20, seed=2, cache_dir=cache)


def test_cache_invalidated_when_source_changes(tmp_path):
    write_svhn(tmp_path / "train_32x32.mat", count=40, seed=0)
    cache = tmp_path / "cache"
    first, _ = load_dataset("svhn", tmp_path, "train", cache_dir=cache)
    raw_images, _ = write_svhn(tmp_path / "train_32x32.mat", count=30, seed=1)
    second, _ = load_dataset("svhn", tmp_path, "train", cache_dir=cache)
    assert second.shape[0] == 30
    assert np.array_equal(second, raw_images.transpose(3, 2, 0, 1))


def test_corrupt_cache_is_replaced(tmp_path):
    write_svhn(tmp_path / "train_32x32.mat", count=40)
    cache = tmp_path / "cache"
    images, _ = load_dataset("svhn", tmp_path, "train", cache_dir=cache)
    for path in cache.glob("*.images.npy"):
        path.write_bytes(b"not a numpy file")
    again, _ = load_dataset("svhn", tmp_path, "train", cache_dir=cache)
    assert np.array_equal(again, images)


# ---------------------------------------------------------------------------------------
# Augmentation and normalisation
# ---------------------------------------------------------------------------------------


def random_images(count: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(count, 3, 32, 32), dtype=np.uint8)


def test_crop_at_padding_offset_is_identity():
    images = torch.from_numpy(random_images(6))
    offsets = torch.full((6, 2), 4)
    result = crop_and_flip(images, offsets, torch.zeros(6, dtype=torch.bool), padding=4)
    assert result.shape == images.shape
    assert torch.equal(result, images)


def test_crop_shifts_and_fills_zeros():
    images = torch.from_numpy(random_images(2))
    offsets = torch.tensor([[0, 0], [8, 2]])
    result = crop_and_flip(images, offsets, torch.zeros(2, dtype=torch.bool), padding=4)
    assert result.shape == (2, 3, 32, 32)
    # Offset (0, 0): the window starts 4 pixels above and left of the image.
    assert torch.equal(result[0, :, 4:, 4:], images[0, :, :28, :28])
    assert (result[0, :, :4, :] == 0).all()
    assert (result[0, :, :, :4] == 0).all()
    # Offset (8, 2): 4 rows below, 2 columns left.
    assert torch.equal(result[1, :, :28, 2:], images[1, :, 4:, :30])
    assert (result[1, :, 28:, :] == 0).all()


def test_flip_mirrors_columns():
    images = torch.from_numpy(random_images(3))
    flips = torch.tensor([True, False, True])
    result = crop_and_flip(images, torch.full((3, 2), 4), flips, padding=4)
    assert torch.equal(result[0], images[0].flip(-1))
    assert torch.equal(result[1], images[1])
    assert torch.equal(result[2], images[2].flip(-1))


def test_normalize_maps_mean_pixel_to_zero():
    mean, std = data.NORMALIZATION["cifar10"]
    pixel = torch.tensor([round(255 * m) for m in mean], dtype=torch.uint8).view(1, 3, 1, 1)
    result = normalize(pixel.expand(1, 3, 2, 2), "cifar10")
    assert result.dtype == torch.float32
    assert result.abs().max() < 0.5 / 255 / min(std) + 1e-6


def make_loader(dataset: str = "cifar10", images: np.ndarray | None = None, **overrides) -> BatchLoader:
    """Loader over 70 random images (labels 0..9 repeating) with batch 16 and seed 7."""
    if images is None:
        images = random_images(70)
    arguments = dict(batch_size=16, dataset=dataset, train=True, seed=7) | overrides
    return BatchLoader(images, np.arange(len(images)) % 10, **arguments)


def collect(loader: BatchLoader, epoch: int, start: int = 0):
    return [(x.clone(), y.clone()) for x, y in loader.batches(epoch, start=start)]


def assert_same_batches(first, second):
    assert len(first) == len(second)
    for (x1, y1), (x2, y2) in zip(first, second):
        assert torch.equal(x1, x2)
        assert torch.equal(y1, y2)


def test_loader_reproducible_from_seed_and_epoch():
    batches = collect(make_loader(), epoch=3)
    assert_same_batches(batches, collect(make_loader(), epoch=3))
    other_epoch = collect(make_loader(), epoch=4)
    assert not torch.equal(batches[0][0], other_epoch[0][0])
    other_seed = collect(make_loader(seed=8), epoch=3)
    assert not torch.equal(batches[0][0], other_seed[0][0])


def test_loader_resumes_mid_epoch_with_same_batches():
    loader = make_loader()
    full = collect(loader, epoch=2)
    resumed = collect(make_loader(), epoch=2, start=2)
    assert_same_batches(full[2:], resumed)


def test_loader_epoch_covers_every_sample_once():
    loader = make_loader(batch_size=10)
    order = loader.epoch_plan(0).order
    assert sorted(order.tolist()) == list(range(70))
    labels = torch.cat([y for _, y in loader.batches(0)])
    assert torch.equal(labels, loader.labels[order])


@pytest.mark.parametrize("dataset, flips_expected", [("cifar10", True), ("svhn", False)])
def test_flip_only_for_cifar(dataset, flips_expected):
    images = random_images(64)
    loader = make_loader(dataset, images=images, padding=0, batch_size=64)
    plan = loader.epoch_plan(0)
    assert bool(plan.flips.any()) is flips_expected

    # With padding 0 the crop is the identity, so any change is a flip.
    (batch, _), = loader.batches(0)
    plain = normalize(torch.from_numpy(images)[plan.order], dataset)
    mirrored = torch.tensor([not torch.equal(batch[i], plain[i]) for i in range(64)])
    assert bool(mirrored.any()) is flips_expected
    for i in torch.nonzero(mirrored).flatten().tolist():
        assert torch.equal(batch[i], plain[i].flip(-1))


def test_augmented_batches_keep_shape_and_dtype():
    for x, y in make_loader().batches(0):
        assert x.shape[1:] == (3, 32, 32)
        assert x.dtype == torch.float32
        assert y.dtype == torch.int64
        assert x.shape[0] == y.shape[0]


def test_eval_loader_keeps_order_without_augmentation():
    images = random_images(20)
    loader = BatchLoader(images, np.arange(20) % 10, batch_size=8, dataset="svhn", train=False)
    batches = collect(loader, epoch=5)
    assert [len(y) for _, y in batches] == [8, 8, 4]
    expected = normalize(torch.from_numpy(images), "svhn")
    assert torch.equal(torch.cat([x for x, _ in batches]), expected)


@pytest.mark.parametrize("drop_last, sizes", [(False, [16, 16, 16, 16, 6]), (True, [16, 16, 16, 16])])
def test_loader_last_batch(drop_last, sizes):
    loader = make_loader(drop_last=drop_last)
    assert len(loader) == len(sizes)
    assert [len(y) for _, y in loader.batches(0)] == sizes


@pytest.mark.parametrize("world_size", [2, 4])
def test_shards_concatenate_to_single_process_batches(world_size):
    single = collect(make_loader(drop_last=True), epoch=1)
    shards = [collect(make_loader(drop_last=True, rank=rank, world_size=world_size), epoch=1)
              for rank in range(world_size)]
    for rank_batches in shards:
        assert len(rank_batches) == len(single)
    for index, (x, y) in enumerate(single):
        assert torch.equal(torch.cat([shards[rank][index][0] for rank in range(world_size)]), x)
        assert torch.equal(torch.cat([shards[rank][index][1] for rank in range(world_size)]), y)


def test_shards_of_short_last_batch_are_equal():
    # 70 samples, batch 16: the last global batch has 6 samples, 4 ranks get 1 each.
    shards = [collect(make_loader(rank=rank, world_size=4), epoch=0) for rank in range(4)]
    assert [len(shard[-1][1]) for shard in shards] == [1, 1, 1, 1]
    single_last = collect(make_loader(), epoch=0)[-1]
    assert torch.equal(torch.cat([shard[-1][0] for shard in shards]), single_last[0][:4])


def test_last_batch_smaller_than_world_size_is_dropped():
    # 66 samples, batch 16: the last global batch has 2 samples, fewer than 4 ranks.
    images = random_images(66)
    assert len(make_loader(images=images)) == 5
    for rank in range(4):
        loader = make_loader(images=images, rank=rank, world_size=4)
        assert len(loader) == 4
        assert [len(y) for _, y in loader.batches(0)] == [4, 4, 4, 4]


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(dataset="mnist"), "dataset='mnist'"),
        (dict(batch_size=0), "batch_size=0"),
        (dict(batch_size=15, world_size=2), "batch_size=15"),
        (dict(world_size=0), "world_size=0"),
        (dict(rank=2, world_size=2), "rank=2"),
        (dict(rank=-1), "rank=-1"),
        (dict(seed=-3), "seed=-3"),
        (dict(padding=-1), "padding=-1"),
    ],
)
def test_loader_invalid_arguments(overrides, message):
    with pytest.raises(ValueError, match=message):
        make_loader(**overrides)


def test_loader_invalid_images_and_epoch():
    with pytest.raises(ValueError, match=r"shape \(N, 3, 32, 32\)"):
        BatchLoader(np.zeros((4, 32, 32, 3), np.uint8), np.zeros(4), batch_size=2, dataset="svhn", train=True)
    loader = make_loader()
    with pytest.raises(ValueError, match="epoch=-1"):
        loader.epoch_plan(-1)
    with pytest.raises(ValueError, match="start=9"):
        next(loader.batches(0, start=9))
