"""Reading an NVlabs snapshot runs no code from it: an allow-list of globals, one line for anything else."""

from __future__ import annotations

import io
import os
import pickle
import subprocess
import sys

import pytest
from click.testing import CliRunner

from ganrt.cli import cli
from ganrt.errors import SnapshotError
from ganrt.importers.nvlabs_pickle import read_snapshot

pytest.importorskip("torch")


class _Call:
    """Pickles as a call of ``fn(*args)``: what a hostile snapshot would hold."""

    def __init__(self, fn, *args):
        self.fn, self.args = fn, args

    def __reduce__(self):
        return self.fn, self.args


def _one_line_exit_2(args):
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ganrt: error: "), result.output
    return lines[0]


@pytest.mark.parametrize("fn, args, named", [
    (os.system, ("echo pwned",), "system"),
    (eval, ("1 + 1",), "builtins.eval"),
    (subprocess.call, (["true"],), "subprocess.call"),
    (getattr, ("text", "upper"), "builtins.getattr"),
])
def test_a_pickle_naming_any_other_global_is_refused_with_one_line_naming_it(fn, args, named, tmp_path):
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"G_ema": _Call(fn, *args)}))
    with pytest.raises(SnapshotError, match=named) as e:
        read_snapshot(path)
    assert "\n" not in str(e.value)
    line = _one_line_exit_2(["import", "nvlabs", str(path), "--out", str(tmp_path / "g.safetensors")])
    assert named in line
    assert not (tmp_path / "g.safetensors").exists()


def test_a_tensorflow_era_pickle_is_refused_with_the_conversion_to_run(tmp_path):
    path = tmp_path / "stylegan2-ffhq-config-f.pkl"
    path.write_bytes(b"\x80\x02cdnnlib.tflib.network\nNetwork\nq\x00)\x81}b.")  # what a TF-era pickle starts with
    line = _one_line_exit_2(["import", "nvlabs", str(path), "--out", str(tmp_path / "g.safetensors")])
    assert "TensorFlow-era" in line and "legacy.py" in line


def test_numpy_object_arrays_are_refused(tmp_path):
    import numpy as np

    path = tmp_path / "objects.pkl"
    path.write_bytes(pickle.dumps({"x": np.array([object()], dtype=object)}))
    with pytest.raises(SnapshotError, match="dtype 'O'|object"):
        read_snapshot(path)


def test_a_planted_side_effect_in_the_embedded_source_never_happens(nv, tmp_path):
    marker = tmp_path / "side-effect-happened"
    planted = f"import pathlib\npathlib.Path({str(marker)!r}).write_text('the snapshot ran code')\n"

    def plant(data):
        for net in ("G_ema", "G", "D"):
            data[net].meta["module_src"] = planted

    evil = nv.rewrite_snapshot("stylegan3-t-32", tmp_path / "planted.pkl", plant)
    assert not marker.exists()
    # loaded the way NVlabs' code loads it (the stand-in executes the embedded source, as NVlabs' does),
    # the plant fires: it is real
    code = f"import sys, pickle; sys.path.insert(0, {str(nv.STANDIN)!r}); pickle.load(open({str(evil)!r}, 'rb'))"
    subprocess.run([sys.executable, "-I", "-c", code], check=True)
    assert marker.read_text() == "the snapshot ran code"
    marker.unlink()
    # ganrt reads the same file, builds the generator and writes a checkpoint: nothing runs
    out = tmp_path / "g.safetensors"
    result = CliRunner().invoke(cli, ["import", "nvlabs", str(evil), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert out.is_file() and not marker.exists()
    assert "torch_utils" not in sys.modules and "dnnlib" not in sys.modules


def test_the_embedded_source_is_kept_only_as_its_hash(nv):
    import hashlib

    with nv.standin_on_path():
        embedded = pickle.loads(nv.snapshot_path("stylegan2-64").read_bytes())["G_ema"].meta["module_src"]
    g = read_snapshot(nv.snapshot_path("stylegan2-64")).networks["G_ema"]
    assert all("module_src" not in o.state for _, o in g.walk())
    assert {o.module_sha256 for _, o in g.walk()} == {hashlib.sha256(embedded.encode()).hexdigest()}


@pytest.mark.parametrize("damage", ["truncated", "tampered", "empty", "not a pickle"])
def test_a_truncated_or_tampered_snapshot_gives_one_line(damage, nv, tmp_path):
    raw = nv.snapshot_path("stylegan2-ada-cond-32").read_bytes()
    if damage == "truncated":
        raw = raw[: len(raw) // 2]
    elif damage == "tampered":
        i = raw.index(b"_rebuild_tensor_v2")
        raw = raw[:i] + b"_rebuild_tensor_v3" + raw[i + 18:]
    elif damage == "empty":
        raw = b""
    else:
        raw = b"PK\x03\x04 a zip file, say"
    path = tmp_path / "bad.pkl"
    path.write_bytes(raw)
    with pytest.raises(SnapshotError) as e:
        read_snapshot(path)
    assert "\n" not in str(e.value) and str(path) in str(e.value)
    _one_line_exit_2(["import", "nvlabs", str(path), "--out", str(tmp_path / "g.safetensors")])


def test_damaged_tensor_bytes_inside_a_storage_give_one_line(nv, tmp_path):
    raw = bytearray(nv.snapshot_path("stylegan3-r-cond-32").read_bytes())
    i = raw.index(b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8")  # torch's legacy storage header (magic number)
    raw[i + 2: i + 12] = b"\x00" * 10
    path = tmp_path / "bad-storage.pkl"
    path.write_bytes(bytes(raw))
    with pytest.raises(SnapshotError, match="not a readable NVlabs network pickle"):
        read_snapshot(path)


def test_a_plain_object_that_is_not_a_snapshot_is_refused(tmp_path):
    path = tmp_path / "list.pkl"
    path.write_bytes(pickle.dumps([1, 2, 3]))
    with pytest.raises(SnapshotError, match="not an NVlabs snapshot"):
        read_snapshot(path)
    buf = io.BytesIO()
    pickle.dump({"G_ema": 3}, buf)
    path.write_bytes(buf.getvalue())
    line = _one_line_exit_2(["import", "nvlabs", str(path), "--out", str(tmp_path / "g.safetensors")])
    assert "no network 'G_ema'" in line


def test_random_damage_gives_a_generator_or_one_line_never_a_traceback(nv, tmp_path):
    import numpy as np

    from ganrt.importers import nvlabs

    raw = nv.snapshot_path("stylegan2-ada-cond-32").read_bytes()
    rng = np.random.default_rng(19)
    outcomes = {"imported": 0, "refused": 0}
    for trial in range(40):
        damaged = bytearray(raw)
        head = trial % 2 == 0  # half the trials hit the pickle's structure, not the tensor bytes
        for at in rng.integers(0, 4096 if head else len(raw), size=int(rng.integers(1, 8))):
            damaged[at] = int(rng.integers(0, 256))
        path = tmp_path / f"damaged-{trial}.pkl"
        path.write_bytes(bytes(damaged))
        try:
            nvlabs.read(path)
            outcomes["imported"] += 1
        except SnapshotError as e:
            assert "\n" not in str(e)
            outcomes["refused"] += 1
    assert outcomes["refused"] > 0
