"""The wheel holds every subpackage and module: an editable install would hide a missing one."""

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
STAGES = {"ganrt": "ganrt", "train": "ganrt/train", "export": "ganrt/export", "runtime": "ganrt/runtime",
          "benchmarks": "ganrt/benchmarks", "serve": "ganrt/serve"}


def expected_members() -> set[str]:
    out = set()
    for folder, target in STAGES.items():
        for py in (ROOT / folder).rglob("*.py"):
            rel = py.relative_to(ROOT / folder)
            if "__pycache__" in rel.parts:
                continue
            out.add(f"{target}/{rel.as_posix()}")
    return out


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out),
                    str(ROOT)], check=True, capture_output=True, text=True)
    (whl,) = out.glob("ganrt-*.whl")
    return whl


def test_wheel_contains_every_module_of_every_stage(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    missing = sorted(expected_members() - names)
    assert not missing, f"modules missing from the wheel (add the package to pyproject's list): {missing}"


def test_every_python_folder_is_a_listed_package():
    import tomllib

    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    for folder, target in STAGES.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / folder)
            pkg = ".".join([target.replace("/", "."), *rel.parts]) if rel.parts else target.replace("/", ".")
            assert pkg in listed, f"{pkg} has an __init__.py but is not in [tool.setuptools] packages"


def test_wheel_carries_the_seed_explorer_page(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for page in sorted((ROOT / "serve" / "static").iterdir()):
        assert f"ganrt/serve/static/{page.name}" in names


def test_wheel_has_the_console_script(wheel):
    zf = zipfile.ZipFile(wheel)
    (ep,) = [n for n in zf.namelist() if n.endswith("entry_points.txt")]
    assert "ganrt = ganrt.cli:main" in zf.read(ep).decode()
