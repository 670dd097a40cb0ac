"""Files a bundle ships are data an attacker may have planted: a lock or cache entry that is a symlink (or a hard
link) to a file elsewhere is refused and that file is never written or truncated; a manifest that is a FIFO or a
symlink is refused at once instead of blocking or being followed."""

from __future__ import annotations

import os
import threading

import pytest

from ganrt.errors import BundleError
from ganrt.fileio import NotRegularFile, exclusive_lock, read_regular

PRECIOUS = "export PATH=$HOME/bin:$PATH\n" * 10


@pytest.fixture
def outside(tmp_path):
    target = tmp_path / "outside" / ".bashrc"
    target.parent.mkdir()
    target.write_text(PRECIOUS)
    return target


def test_a_lock_symlinked_out_is_refused_and_its_target_untouched(tmp_path, outside):
    lock = tmp_path / "bundle" / "tuning" / ".lock"
    lock.parent.mkdir(parents=True)
    lock.symlink_to(outside)
    with pytest.raises(NotRegularFile, match="symlink"):
        with exclusive_lock(lock):
            pass
    assert outside.read_text() == PRECIOUS and lock.is_symlink()


def test_a_lock_hard_linked_to_a_file_elsewhere_is_refused(tmp_path, outside):
    lock = tmp_path / ".lock"
    os.link(outside, lock)
    with pytest.raises(NotRegularFile, match="hard link"):
        with exclusive_lock(lock):
            pass
    assert outside.read_text() == PRECIOUS


def test_a_stale_lock_file_is_taken_over_without_truncation_and_names_its_holder(tmp_path):
    lock = tmp_path / ".lock"
    lock.write_text("123456789012345")  # what a killed holder with a long pid left
    with exclusive_lock(lock):
        assert lock.read_text().strip() == str(os.getpid())
    assert not lock.exists()


def test_record_tuning_through_a_planted_lock_leaves_the_outside_file_intact(bundle_dir, tmp_path, outside):
    import shutil

    from ganrt.runtime.tuning import record_tuning

    bundle = tmp_path / "b"
    shutil.copytree(bundle_dir, bundle)
    (bundle / "tuning").mkdir(exist_ok=True)
    (bundle / "tuning" / ".lock").symlink_to(outside)
    row = {"variant": "onnxruntime-fp32", "batch_size": 1, "median_ms": 1.0}
    with pytest.raises(OSError, match="symlink"):
        record_tuning(bundle, "test-key", [row])
    assert outside.read_text() == PRECIOUS


def test_a_fifo_manifest_is_refused_at_once(bundle_dir, tmp_path):
    import shutil

    from ganrt.bundle import Bundle

    bundle = tmp_path / "b"
    shutil.copytree(bundle_dir, bundle)
    (bundle / "manifest.json").unlink()
    os.mkfifo(bundle / "manifest.json")
    result = {}
    t = threading.Thread(target=lambda: result.update(e=_error(lambda: Bundle.open(bundle))), daemon=True)
    t.start()
    t.join(10)
    assert not t.is_alive(), "opening a FIFO manifest blocked"
    assert isinstance(result["e"], BundleError) and "FIFO" in str(result["e"])


def test_a_symlinked_manifest_is_refused(bundle_dir, tmp_path):
    import shutil

    from ganrt.bundle import Bundle

    bundle = tmp_path / "b"
    shutil.copytree(bundle_dir, bundle)
    real = tmp_path / "elsewhere.json"
    (bundle / "manifest.json").rename(real)
    (bundle / "manifest.json").symlink_to(real)
    with pytest.raises(BundleError, match="symlink"):
        Bundle.open(bundle)


def test_a_fifo_artifact_fails_verification_instead_of_blocking(bundle_dir, tmp_path):
    import shutil

    from ganrt.bundle import Bundle

    bundle = tmp_path / "b"
    shutil.copytree(bundle_dir, bundle)
    onnx = next(bundle.glob("*.onnx"))
    onnx.unlink()
    os.mkfifo(onnx)
    with pytest.raises(BundleError, match="FIFO"):
        Bundle.open(bundle)


def test_read_regular_refuses_files_past_its_limit(tmp_path):
    f = tmp_path / "big"
    f.write_bytes(b"x" * 101)
    assert read_regular(f, 101) == b"x" * 101
    with pytest.raises(OSError, match="larger than 100"):
        read_regular(f, 100)


@pytest.mark.parametrize("plant", ["symlink", "hardlink", "dir-symlink"])
def test_the_onnxruntime_tensorrt_cache_refuses_planted_links(tmp_path, outside, plant):
    from ganrt.runtime.onnxruntime_backend import check_cache_dir

    cache = tmp_path / "ort-trt-cache"
    if plant == "dir-symlink":
        cache.symlink_to(outside.parent, target_is_directory=True)
    else:
        cache.mkdir()
        entry = cache / "model_ctx.engine"
        entry.symlink_to(outside) if plant == "symlink" else os.link(outside, entry)
    with pytest.raises(BundleError, match="remove it"):
        check_cache_dir(cache)
    assert outside.read_text() == PRECIOUS


def test_a_clean_onnxruntime_tensorrt_cache_passes(tmp_path):
    from ganrt.runtime.onnxruntime_backend import check_cache_dir

    cache = tmp_path / "ort-trt-cache"
    check_cache_dir(cache)  # absent: fine
    cache.mkdir()
    (cache / "a.engine").write_bytes(b"x")
    check_cache_dir(cache)


def _error(fn):
    try:
        fn()
    except Exception as e:  # noqa: BLE001
        return e
    return None
