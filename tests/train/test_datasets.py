"""load_dataset: the built-in digits, image folders, npz files, and every way they can be wrong."""

from __future__ import annotations

import numpy as np
import pytest

from ganrt.errors import DataError
from ganrt.train.datasets import load_dataset

from .conftest import write_png


def test_mnist_loads_offline_with_ten_labels_padded_to_resolution():
    data = load_dataset("mnist", 32)
    assert data.images.shape == (5000, 32, 32, 1) and data.images.dtype == np.uint8
    assert data.labels.shape == (5000,) and set(np.unique(data.labels)) == set(range(10))
    assert data.num_classes == 10
    assert data.images[:, :2].max() == 0 and data.images[:, :, -2:].max() == 0  # 28 -> 32 padding
    assert data.images.max() > 200
    assert data.identity["name"] == "mnist" and len(data.identity["sha256"]) == 64


def test_folder_with_class_subfolders_gives_sorted_class_labels(tmp_path):
    rng = np.random.default_rng(0)
    for cls, n in (("zebra", 2), ("ant", 3)):
        for i in range(n):
            write_png(tmp_path / cls / f"{i}.png", rng.integers(0, 256, (20, 30, 3), dtype=np.uint8))
    data = load_dataset(tmp_path, 16)
    assert data.images.shape == (5, 16, 16, 3)  # mixed aspect resized + center-cropped, RGB kept
    assert data.class_names == ["ant", "zebra"] and data.num_classes == 2
    assert data.labels.tolist() == [0, 0, 0, 1, 1]
    assert data.identity["class_names"] == ["ant", "zebra"]


def test_folder_of_gray_images_of_mixed_sizes_is_one_channel(tmp_path):
    write_png(tmp_path / "a.png", np.full((40, 40), 100, dtype=np.uint8))
    write_png(tmp_path / "b.jpg", np.full((10, 12), 200, dtype=np.uint8))
    gray_rgb = np.repeat(np.full((8, 8, 1), 50, dtype=np.uint8), 3, axis=2)  # RGB file, gray content
    write_png(tmp_path / "c.png", gray_rgb)
    data = load_dataset(tmp_path, 8)
    assert data.images.shape == (3, 8, 8, 1)
    assert data.labels is None and data.num_classes == 0
    assert sorted(int(v) for v in data.images[:, 4, 4, 0]) == [50, 100, 200]


def test_channels_can_be_forced(tmp_path):
    write_png(tmp_path / "a.png", np.full((8, 8), 100, dtype=np.uint8))
    assert load_dataset(tmp_path, 8, channels=3).images.shape == (1, 8, 8, 3)
    write_png(tmp_path / "b.png", np.random.default_rng(0).integers(0, 256, (8, 8, 3), dtype=np.uint8))
    assert load_dataset(tmp_path, 8).channels == 3
    assert load_dataset(tmp_path, 8, channels=1).images.shape == (2, 8, 8, 1)


def test_npz_with_labels_and_resize(tmp_path, labelled_npz):
    data = load_dataset(labelled_npz, 16)
    assert data.images.shape == (24, 16, 16, 1) and data.num_classes == 3
    assert data.labels.dtype == np.int64 and data.labels.tolist()[:4] == [0, 1, 2, 0]


def test_npz_num_classes_key_sets_the_class_count(tmp_path):
    path = tmp_path / "d.npz"
    np.savez(path, images=np.zeros((2, 8, 8), np.uint8), labels=np.array([0, 1]), num_classes=np.int64(5))
    assert load_dataset(path, 8).num_classes == 5


def test_identity_hash_follows_the_pixels(tmp_path):
    a, b = tmp_path / "a.npz", tmp_path / "b.npz"
    images = np.zeros((2, 8, 8), np.uint8)
    np.savez(a, images=images)
    images[1, 3, 3] = 1
    np.savez(b, images=images)
    assert load_dataset(a, 8).identity["sha256"] != load_dataset(b, 8).identity["sha256"]
    assert load_dataset(a, 8).identity["sha256"] == load_dataset(a, 8).identity["sha256"]


# --- errors ----------------------------------------------------------------------------------------------------------
def test_missing_path(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_dataset(tmp_path / "nope" / "x.npz", 32)


def test_unknown_dataset_name():
    with pytest.raises(DataError, match="unknown dataset 'cifar'.*built-in datasets are mnist"):
        load_dataset("cifar", 32)


def test_empty_folder(tmp_path):
    (tmp_path / "notes.txt").write_text("no images here")
    with pytest.raises(DataError, match="holds no images"):
        load_dataset(tmp_path, 32)


def test_unreadable_files_are_named_and_counted(tmp_path):
    write_png(tmp_path / "good.png", np.zeros((8, 8), np.uint8))
    for i in range(7):
        (tmp_path / f"bad{i}.png").write_bytes(b"not a png at all")
    with pytest.raises(DataError, match=r"7 of 8 image files .* cannot be read: bad0.png .*bad4.png \(\w+\) \.\.\."):
        load_dataset(tmp_path, 8)


def test_images_both_at_top_and_in_class_folders(tmp_path):
    write_png(tmp_path / "a.png", np.zeros((8, 8), np.uint8))
    write_png(tmp_path / "cls" / "b.png", np.zeros((8, 8), np.uint8))
    with pytest.raises(DataError, match="both at its top level"):
        load_dataset(tmp_path, 8)


def test_file_that_is_neither_folder_nor_npz(tmp_path):
    path = tmp_path / "data.csv"
    path.write_text("1,2,3")
    with pytest.raises(DataError, match="expected a folder of images or an .npz file"):
        load_dataset(path, 8)


@pytest.mark.parametrize("arrays, match", [
    ({"pixels": np.zeros((2, 8, 8), np.uint8)}, "has no 'images' array"),
    ({"images": np.zeros((2, 8, 8), np.float32)}, "dtype float32, expected uint8"),
    ({"images": np.zeros((8, 8), np.uint8)}, r"shape \(8, 8\), expected"),
    ({"images": np.zeros((2, 8, 8, 4), np.uint8)}, r"shape \(2, 8, 8, 4\), expected"),
    ({"images": np.zeros((0, 8, 8), np.uint8)}, "N >= 1"),
    ({"images": np.zeros((3, 8, 8), np.uint8), "labels": np.array([0, 1])}, "2 labels for 3 images"),
    ({"images": np.zeros((2, 8, 8), np.uint8), "labels": np.array([0.0, 1.0])}, "labels must be integers"),
    ({"images": np.zeros((2, 8, 8), np.uint8), "labels": np.array([0, -1])}, r"labels must lie in >= 0.*-1"),
    ({"images": np.zeros((2, 8, 8), np.uint8), "labels": np.array([[0], [1]])}, "labels must be a 1-D array"),
    ({"images": np.zeros((2, 8, 8), np.uint8), "labels": np.array([0, 3]), "num_classes": np.int64(3)},
     r"labels must lie in \[0, 3\), found values from 0 to 3"),
    ({"images": np.zeros((2, 8, 8), np.uint8), "labels": np.array([0, 1]), "num_classes": np.int64(0)},
     "num_classes' must be one integer >= 1"),
])
def test_bad_npz_contents(tmp_path, arrays, match):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(DataError, match=match):
        load_dataset(path, 8)


def test_npz_needing_pickle_is_refused(tmp_path):
    path = tmp_path / "obj.npz"
    np.savez(path, images=np.array([np.zeros((8, 8), np.uint8), None], dtype=object))
    with pytest.raises(DataError, match="without unpickling"):
        load_dataset(path, 8)


def test_corrupt_npz(tmp_path):
    path = tmp_path / "torn.npz"
    path.write_bytes(b"PK\x03\x04 torn")
    with pytest.raises(DataError, match="not a readable .npz"):
        load_dataset(path, 8)
