"""Export and re-export are crash-safe and exclusive.

A subprocess export is SIGKILLed at every file-system change it makes inside the bundle directory (the
kill point is counted by wrapping os.open/replace/rename/mkdir/unlink/rmdir in the child, so it lands
exactly there on a loaded machine too): after each kill the bundle opens, verifies and draws the old images
or the new ones, or, for a first export, the path is free for the next export; the next export then
completes and leaves no leftovers (staging directories, journals' files, lock files). Readers loading in a
loop while a bundle is re-exported over and over never fail and never see a mix. A second writer gets a
clear error, or waits.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")

SEEDS, LABELS = [0, 1, 2], [1, 2, 3]

CHILD = r'''
import json, os, shutil, signal, sys
from pathlib import Path

bundle, kill_at, plan = sys.argv[1], int(sys.argv[2]), json.loads(Path(sys.argv[3]).read_text())
root = os.path.abspath(bundle)
ops = [0]


def inside(path):
    try:
        p = os.path.abspath(os.fsdecode(path))
    except TypeError:
        return False
    return p == root or p.startswith(root + os.sep)


def counted(fn, n_paths, writes=lambda args: True):
    def wrapper(*args, **kwargs):
        hit = kwargs.get("dir_fd") is None and writes(args) and any(inside(p) for p in args[:n_paths])
        if hit and kill_at == 0:
            os.kill(os.getpid(), signal.SIGKILL)  # before the first change
        result = fn(*args, **kwargs)
        if hit:
            ops[0] += 1
            if ops[0] == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)  # just after change number kill_at
        return result
    return wrapper


os.open = counted(os.open, 1, lambda args: bool(args[1] & (os.O_WRONLY | os.O_RDWR | os.O_CREAT)))
for name, n in (("replace", 2), ("rename", 2), ("mkdir", 1), ("unlink", 1), ("remove", 1), ("rmdir", 1)):
    setattr(os, name, counted(getattr(os, name), n))

if plan["mode"] == "export":
    from ganrt.export import ExportOptions, export_checkpoint

    export_checkpoint(plan["checkpoint"], bundle, options=ExportOptions(**plan["options"]))
else:
    from ganrt.bundle import BundleWriter, Staged
    from ganrt.spec import GeneratorSpec

    with BundleWriter(bundle, GeneratorSpec.from_dict(plan["spec"])) as writer:
        copies = {}
        staged = []
        for name, src, entry in plan["staged"]:
            if src not in copies:
                copies[src] = writer.stage / f"{len(copies)}-{Path(src).name}"
                shutil.copyfile(src, copies[src])
            staged.append(Staged(name, copies[src], entry))
        writer.commit(graph=plan["graph"], source=plan["source"], staged=staged)
print(json.dumps({"ops": ops[0]}))
'''


def _checkpoint(path, spec, seed):
    from ganrt.checkpoint import Checkpoint, save_checkpoint
    from ganrt.models import build_generator

    torch.manual_seed(seed)
    g = build_generator(spec)
    g.train()
    with torch.no_grad():
        g(torch.randn(16, spec.latent_dim), torch.randint(0, spec.num_classes, (16,)))
    save_checkpoint(path, Checkpoint(spec=spec, tensors={f"G.{k}": v for k, v in g.state_dict().items()}))
    return path


def _images(path):
    from ganrt.runtime import load

    with load(path, backend="onnxruntime", threads=1) as gen:
        return gen.generate(seeds=SEEDS, labels=LABELS)


@pytest.fixture(scope="module")
def two(tmp_path_factory, tiny_spec):
    """Bundles A and B of two generators of one spec (other weights: a re-export renames every file), and
    B's export as a commit plan (what export moves into a bundle, from its staging directory)."""
    from ganrt.bundle import Bundle, home_name
    from ganrt.export import ExportOptions, export_checkpoint

    root = tmp_path_factory.mktemp("crash")
    options = {"max_batch": 4, "verify_batch_cap": 4}
    out = {}
    for name, seed in (("A", 1), ("B", 2)):
        ckpt = _checkpoint(root / f"{name}.safetensors", tiny_spec, seed)
        bundle = export_checkpoint(ckpt, root / name, options=ExportOptions(**options)).bundle
        out[name] = {"path": root / name, "checkpoint": ckpt, "images": _images(root / name),
                     "weights": bundle.artifacts["weights"]["sha256"]}
    b = Bundle.open(root / "B")
    staged = [[name, str(b.artifact_path(name)), {**{k: v for k, v in a.items() if k not in ("sha256", "size")},
                                                  "file": home_name(a["file"])}]
              for name, a in b.artifacts.items()]
    plan = {"mode": "commit", "spec": tiny_spec.to_dict(), "graph": b.graph, "source": b.source, "staged": staged}
    (root / "plan.json").write_text(json.dumps(plan))
    export_plan = {"mode": "export", "checkpoint": str(out["B"]["checkpoint"]), "options": options}
    (root / "export-plan.json").write_text(json.dumps(export_plan))
    assert not np.array_equal(out["A"]["images"], out["B"]["images"])
    return {**out, "root": root, "plan": root / "plan.json", "export_plan": root / "export-plan.json"}


def _child(bundle, kill_at, plan, timeout=300):
    script = bundle.parent / "child.py"
    script.write_text(CHILD)
    return subprocess.run([sys.executable, str(script), str(bundle), str(kill_at), str(plan)],
                          capture_output=True, text=True, timeout=timeout)


def _leftovers(bundle: Path) -> list[str]:
    """Anything an interrupted export left beside or in the bundle: staging directories, a lock, temp files."""
    beside = [p.name for p in bundle.parent.glob(f".{bundle.name}.*")]
    inside = [str(p.relative_to(bundle)) for p in bundle.rglob(".*")] if bundle.is_dir() else []
    return beside + inside


def _check_after_kill(bundle: Path, two, first_export: bool) -> str:
    """The bundle as a kill left it: 'old', 'new', or 'none' (a first export that had not finished)."""
    from ganrt.bundle import Bundle, BundleWriter

    if (bundle / "manifest.json").exists():
        b = Bundle.open(bundle)  # every hash checks
        images = _images(bundle)
        which = [n for n in ("A", "B") if b.artifacts["weights"]["sha256"] == two[n]["weights"]]
        assert which and np.array_equal(images, two[which[0]]["images"]), "a mix of two bundles"
        return {"A": "old", "B": "new"}[which[0]]
    assert first_export, "a re-export lost the manifest"
    with BundleWriter(bundle, Bundle.open(two["B"]["path"]).spec):  # the path is free for the next export
        pass
    assert not _leftovers(bundle) and (not bundle.exists() or not any(bundle.iterdir()))
    return "none"


def _check_complete(bundle: Path, two) -> None:
    """After the next export: bundle B exactly, nothing else in or beside it."""
    from ganrt.bundle import MANIFEST, Bundle

    b = Bundle.open(bundle)
    assert b.artifacts["weights"]["sha256"] == two["B"]["weights"]
    assert np.array_equal(_images(bundle), two["B"]["images"])
    files = {str(p.relative_to(bundle)) for p in bundle.rglob("*") if p.is_file()}
    assert files == b.files() | {MANIFEST}
    assert not _leftovers(bundle)


@pytest.mark.slow
@pytest.mark.parametrize("first_export", [True, False], ids=["first-export", "re-export"])
def test_an_export_killed_at_every_change_leaves_a_bundle_or_a_free_path(two, tmp_path, first_export):
    """On main, 4 of 4 kills just after the re-export started moving files left a bundle no command opened,
    and a killed first export left a directory later exports refused."""
    def fresh(name):
        path = tmp_path / name / "b"
        path.parent.mkdir()
        if not first_export:
            shutil.copytree(two["A"]["path"], path)
        return path

    done = _child(fresh("dry"), 10**6, two["plan"])
    assert done.returncode == 0, done.stderr
    changes = json.loads(done.stdout)["ops"]
    assert changes >= 4
    seen = []
    for k in range(changes + 1):  # kill before the first change, and just after each one
        bundle = fresh(f"k{k}")
        killed = _child(bundle, k, two["plan"])
        assert killed.returncode == -signal.SIGKILL, (k, killed.stderr)
        seen.append(_check_after_kill(bundle, two, first_export))
        completed = _child(bundle, 10**6, two["plan"])  # the next export, from what the kill left
        assert completed.returncode == 0, (k, completed.stderr)
        _check_complete(bundle, two)
    print(f"kill points ({'first export' if first_export else 're-export'}): {len(seen)}, left: {seen}")
    # the kills landed before and after the manifest switch
    assert seen[0] == ("none" if first_export else "old") and seen[-1] == "new", seen


@pytest.mark.slow
@pytest.mark.parametrize("first_export", [True, False], ids=["first-export", "re-export"])
def test_a_real_export_killed_just_after_its_first_write_into_the_bundle(two, tmp_path, first_export):
    bundle = tmp_path / "b"
    if not first_export:
        shutil.copytree(two["A"]["path"], bundle)
    killed = _child(bundle, 1, two["export_plan"])
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert list(tmp_path.glob(".b.export-*"))  # its staging directory, left for the next export to remove
    assert _check_after_kill(bundle, two, first_export) == ("none" if first_export else "old")
    completed = _child(bundle, 10**6, two["plan"])
    assert completed.returncode == 0, completed.stderr
    _check_complete(bundle, two)


READER = r'''
import json, sys, time
import numpy as np
from ganrt.runtime import load

path, wanted, expected = sys.argv[1], int(sys.argv[2]), np.load(sys.argv[3])
with load(path, backend="onnxruntime", threads=1) as gen:  # the imports, before the timed part
    pass
print("ready", flush=True)
loads, errors, end = 0, [], time.monotonic() + 120
while loads + len(errors) < wanted and time.monotonic() < end:
    try:
        with load(path, backend="onnxruntime", threads=1) as gen:
            images = gen.generate(seeds=[0, 1, 2], labels=[1, 2, 3])
        if not any(np.array_equal(images, expected[k]) for k in ("A", "B")):
            errors.append("images of neither bundle")
        loads += 1
    except Exception as e:
        errors.append(f"{type(e).__name__}: {str(e)[:200]}")
print(json.dumps({"loads": loads, "errors": errors}))
'''


def test_readers_see_the_old_bundle_or_the_new_one_during_re_exports(two, tmp_path):
    """On main, 4 of 209 loads during re-exports failed."""
    from ganrt.bundle import Bundle, BundleWriter, Staged, home_name

    bundle = tmp_path / "b"
    shutil.copytree(two["A"]["path"], bundle)
    np.savez(tmp_path / "expected.npz", A=two["A"]["images"], B=two["B"]["images"])
    (tmp_path / "reader.py").write_text(READER)
    sets = {}
    for name in ("A", "B"):
        b = Bundle.open(two[name]["path"])
        sets[name] = (b, [(n, b.artifact_path(n), a) for n, a in b.artifacts.items()])
    reader = subprocess.Popen([sys.executable, str(tmp_path / "reader.py"), str(bundle), "100",
                               str(tmp_path / "expected.npz")], stdout=subprocess.PIPE, text=True)
    assert reader.stdout.readline().strip() == "ready"
    commits = 0
    while reader.poll() is None:
        source, files = sets["B" if commits % 2 == 0 else "A"]
        with BundleWriter(bundle, source.spec) as writer:
            staged = []
            for name, path, entry in files:
                copy = writer.stage / f"{name}-{path.name}"
                shutil.copyfile(path, copy)
                staged.append(Staged(name, copy, {**entry, "file": home_name(entry["file"])}))
            writer.commit(graph=source.graph, source=source.source, staged=staged)
        commits += 1
        time.sleep(0.02)
    result = json.loads(reader.stdout.read())
    print(f"reader: {result['loads']} loads, {len(result['errors'])} failures, during {commits} re-exports")
    assert result["errors"] == [] and result["loads"] == 100 and commits >= 10, (result["errors"], commits)


def test_a_second_writer_gets_a_clear_error_or_waits(two, tmp_path):
    from ganrt.bundle import Bundle, BundleWriter
    from ganrt.errors import BundleError

    spec = Bundle.open(two["A"]["path"]).spec
    bundle = tmp_path / "b"
    with BundleWriter(bundle, spec):
        with pytest.raises(BundleError, match=rf"another export is writing .*b \(process {os.getpid()} holds "
                                              r"\.b\.lock\); wait for it to finish"):
            BundleWriter(bundle, spec).__enter__()
        from click.testing import CliRunner

        from ganrt.cli import cli

        r = CliRunner().invoke(cli, ["export", str(two["A"]["checkpoint"]), "--out", str(bundle)])
        assert r.exit_code == 2 and "another export is writing" in r.output and r.output.count("\n") == 1

    entered = []
    first = BundleWriter(bundle, spec).__enter__()
    waiter = threading.Thread(target=lambda: entered.append(BundleWriter(bundle, spec, wait=30).__enter__()))
    waiter.start()
    time.sleep(0.3)
    assert not entered  # still waiting
    first.__exit__(None, None, None)
    waiter.join(10)
    assert entered
    entered[0].__exit__(None, None, None)
    assert not _leftovers(bundle)


def test_staging_directories_of_killed_exports_are_removed_by_the_next(two, tmp_path):
    """On main, .NAME.export-* directories of killed exports (1.4-4.2 MB each) were never cleaned up."""
    from ganrt.bundle import Bundle, BundleWriter

    bundle = tmp_path / "b"
    shutil.copytree(two["A"]["path"], bundle)
    old = tmp_path / ".b.export-k1ll3d_"  # an interrupted export of an older ganrt: no journal
    old.mkdir()
    (old / "full.fp32.onnx").write_bytes(b"\0" * (1 << 20))
    other = tmp_path / ".b.export-x.export-abc"  # a staging directory of the bundle "b.export-x": not ours
    other.mkdir()
    with BundleWriter(bundle, Bundle.open(bundle).spec):
        pass
    assert not old.exists() and other.exists()
