"""Every CPU variant of the test snapshots' bundles against the images NVlabs' own code drew (README table).

    python tools/nvlabs_variant_table.py [--out table.json]

Imports each snapshot in ``tests/importers/data`` (see that folder's conftest for how they were made),
exports it with every CPU precision (fp32, fp16, bf16, onnxruntime int8, OpenVINO int8; what fails the
export's own gate is kept, marked failed, and reported as such), loads every CPU variant through
``ganrt.runtime.load`` and compares its images with the stored NVlabs images at each stored truncation.
Prints a Markdown table (max levels per psi; lowest per-psi PSNR) and writes the figures as JSON.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import click
import numpy as np

DATA = Path(__file__).resolve().parent.parent / "tests" / "importers" / "data"
SNAPSHOTS = ("stylegan2-ada-cond-32", "stylegan2-64", "stylegan3-t-32", "stylegan3-r-cond-32")


def measure(name: str, work: Path) -> dict:
    from ganrt.export import ExportOptions, export_checkpoint
    from ganrt.importers import nvlabs
    from ganrt.parity import image_parity
    from ganrt.runtime import load
    from ganrt.runtime.machine import Availability
    from ganrt.runtime.selection import runnable

    with np.load(DATA / f"{name}.nvlabs-images.npz") as f:
        stored = {k: f[k] for k in f.files}
    checkpoint = nvlabs.import_snapshot(DATA / f"{name}.pkl", work / f"{name}.safetensors")
    options = ExportOptions(max_batch=8, verify_batch_cap=8, precisions=("fp32", "fp16", "bf16", "int8"),
                            openvino_int8=True, allow_failed_parity=True)
    result = export_checkpoint(checkpoint, work / name, options=options)
    bundle = result.bundle
    verdicts = {v.variant: v.passed for v in result.variants}
    rows = {}
    for choice in runnable(bundle.to_dict(), Availability.probe()).choices:
        if choice.device != "cpu" or "compile" in choice.options:
            continue
        per_psi = []
        with load(bundle.path, variant=choice.variant) as gen:
            for i, psi in enumerate(stored["truncation"]):
                labels = stored["labels"] if bundle.spec.num_classes else None
                images = gen.generate(seeds=stored["seeds"], labels=labels, truncation=float(psi))
                p = image_parity(stored["images"][i], images)
                per_psi.append({"psi": float(psi), "max_levels": p["max_abs_diff"], "mean_levels": p["mean_abs_diff"],
                                "psnr_db": p["psnr_db"]})
        rows[choice.variant] = {"export_passed": verdicts.get(choice.variant), "per_psi": per_psi}
    return rows


def cell(row: dict | None) -> str:
    if row is None:
        return "-"
    levels = " / ".join(f"{p['max_levels']:.0f}" for p in row["per_psi"])
    psnr = min(p["psnr_db"] for p in row["per_psi"])
    text = levels if psnr == float("inf") or psnr > 90 else f"{levels}; {psnr:.1f} dB"
    return text if row["export_passed"] is not False else f"{text} (failed export's gate)"


@click.command()
@click.option("--out", type=click.Path(path_type=Path), default=None, help="Write the figures as JSON here.")
def main(out: Path | None) -> None:
    figures = {}
    with tempfile.TemporaryDirectory(prefix="ganrt-nvlabs-table-") as tmp:
        for name in SNAPSHOTS:
            click.echo(f"{name} ...", err=True)
            figures[name] = measure(name, Path(tmp))
    variants = sorted({v for rows in figures.values() for v in rows})
    lines = ["| variant (max levels at psi 0.5 / 0.7 / 1.0; lowest PSNR) | " + " | ".join(SNAPSHOTS) + " |",
             "|---" * (len(SNAPSHOTS) + 1) + "|"]
    lines += [f"| {v} | " + " | ".join(cell(figures[n].get(v)) for n in SNAPSHOTS) + " |" for v in variants]
    click.echo("\n".join(lines))
    if out:
        out.write_text(json.dumps(figures, indent=1))


if __name__ == "__main__":
    sys.exit(main())
