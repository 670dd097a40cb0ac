"""Folder datasets decoded by DataLoader workers while training (``--data-workers``): the same pixels, the
same batches and so the same weights as decoding everything up front; either way resumes the other."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ganrt.checkpoint import read_checkpoint
from ganrt.errors import DataError
from ganrt.train.datasets import index_folder, load_dataset
from ganrt.train.loop import train

from .conftest import tiny_config, train_in_fresh_process, write_png


def test_an_indexed_folder_reads_the_pixels_load_dataset_decodes(image_folder):
    loaded, index = load_dataset(image_folder, 32), index_folder(image_folder, 32)
    assert len(index) == len(loaded) == 12 and index.channels == loaded.channels == 3
    assert index.class_names == ["cat", "dog"] and np.array_equal(index.labels, loaded.labels)
    assert all(np.array_equal(index.read(i), loaded.images[i]) for i in range(12))
    assert index.identity["files_sha256"] == loaded.identity["files_sha256"]
    assert index.identity["labels_sha256"] == loaded.identity["labels_sha256"]
    gray, gray_loaded = index_folder(image_folder, 32, channels=1), load_dataset(image_folder, 32, channels=1)
    assert gray.read(0).shape == (32, 32, 1) and np.array_equal(gray.read(0), gray_loaded.images[0])


def test_a_folder_of_gray_files_is_one_channel_and_the_hash_follows_the_bytes(tmp_path):
    write_png(tmp_path / "a.png", np.full((8, 8), 7, dtype=np.uint8))
    write_png(tmp_path / "b.png", np.full((8, 8), 9, dtype=np.uint8))
    before = index_folder(tmp_path, 8)
    assert before.channels == 1 and before.labels is None and before.num_classes == 0
    write_png(tmp_path / "b.png", np.full((8, 8), 10, dtype=np.uint8))
    assert index_folder(tmp_path, 8).identity["files_sha256"] != before.identity["files_sha256"]


def test_index_folder_needs_a_folder(labelled_npz):
    with pytest.raises(DataError, match="--data-workers reads a folder of images"):
        index_folder(labelled_npz, 32)


def test_data_workers_train_the_same_weights_and_resume_either_way(tmp_path, image_folder):
    config = tiny_config(image_folder, steps=4, checkpoint_every=2, diffaugment="translation")
    train(config, tmp_path / "memory", progress=False)
    train_in_fresh_process(config.replace(data_workers=2), tmp_path / "workers")
    memory, workers = (read_checkpoint(tmp_path / r / "checkpoint.safetensors").tensors for r in ("memory", "workers"))
    assert all(torch.equal(memory[k], workers[k]) for k in memory)

    train_in_fresh_process(config.replace(steps=2, data_workers=2), tmp_path / "split")
    result = train(config, tmp_path / "split", resume=True, progress=False)  # resumed decoding up front
    assert result.start_step == 2
    split = read_checkpoint(tmp_path / "split" / "checkpoint.safetensors").tensors
    assert all(torch.equal(memory[k], split[k]) for k in memory)


def test_resuming_with_workers_from_another_folder_is_refused(tmp_path, image_folder):
    train(tiny_config(image_folder, steps=1), tmp_path / "run", progress=False)
    write_png(image_folder / "cat" / "0.png", np.zeros((36, 40, 3), dtype=np.uint8))
    with pytest.raises(DataError, match="cannot resume .* trained on dataset 'images'"):
        train(tiny_config(image_folder, steps=2, data_workers=1), tmp_path / "run", resume=True, progress=False)


def test_gray_pictures_stored_as_rgb_resume_with_the_runs_own_channel_count(tmp_path):
    """In memory such a folder is 1 channel (its pixels), with workers 3 (its files' modes): a run started one
    way once could not be resumed the other (spec mismatch)."""
    rng = np.random.default_rng(0)
    for i in range(8):
        gray = rng.integers(0, 256, (32, 32), dtype=np.uint8)
        write_png(tmp_path / "gray" / f"{i}.png", np.stack([gray] * 3, axis=-1))
    assert load_dataset(tmp_path / "gray", 32).channels == 1 and index_folder(tmp_path / "gray", 32).channels == 3
    config = tiny_config(tmp_path / "gray", steps=1, checkpoint_every=1)
    train(config, tmp_path / "run", progress=False)
    train_in_fresh_process(config.replace(steps=2, data_workers=1), tmp_path / "run", resume=True)
    assert read_checkpoint(tmp_path / "run" / "checkpoint.safetensors").spec.channels == 1
