"""`ganrt generate`: draw images from a bundle with any backend, as PNGs with provenance or an npz."""

from __future__ import annotations

import json
from pathlib import Path

import click

from ganrt.precisions import NAMES as PRECISION_CHOICES
from ganrt.runtime.backends import NAMES as BACKEND_NAMES
from ganrt.runtime.selection import DEVICES

BACKENDS = ("auto", *BACKEND_NAMES)
MAX_IMAGE_BYTES = 4 << 30  # the images of one call are held in memory (and in one npz): refuse more, up front


def parse_labels(text: str | None, seeds: list[int], num_classes: int) -> list[tuple[int, int | None]]:
    """(seed, label) pairs: no labels; 'random' (one per seed, ganrt.latents.labels_from_seeds); one label
    ('3') for every seed; or several ('0-9', '1,4') -> every seed with every label, label-major."""
    from ganrt.errors import InputError
    from ganrt.latents import MAX_SEEDS, labels_from_seeds, parse_seed_range

    if num_classes == 0:
        if text is not None:
            raise InputError("this bundle's generator is unconditional: it takes no --labels; drop the option")
        return [(s, None) for s in seeds]
    if text is None or text.strip().lower() == "random":
        return list(zip(seeds, (int(x) for x in labels_from_seeds(seeds, num_classes)), strict=True))
    try:
        labels = parse_seed_range(text, max_count=num_classes)
    except InputError:
        raise InputError(f"cannot read --labels {text!r}: expected 'random', one label like 3, or a list like "
                         f"'0-9' or '1,4,7' of labels in [0, {num_classes})") from None
    bad = [x for x in labels if x >= num_classes]
    if bad:
        raise InputError(f"--labels {bad[0]} is out of range: this generator has {num_classes} classes (0-"
                         f"{num_classes - 1})")
    if len(labels) * len(seeds) > MAX_SEEDS:
        raise InputError(f"{len(seeds)} seeds x {len(labels)} labels are {len(labels) * len(seeds)} images; at "
                         f"most {MAX_SEEDS} per call: split the seed range")
    return [(s, lab) for lab in labels for s in seeds]


def check_request_size(n_images: int, spec) -> None:
    """InputError, before any work, when the images asked for would not fit in memory (MAX_IMAGE_BYTES)."""
    from ganrt.errors import InputError

    size = n_images * spec.channels * spec.height * spec.width
    if size > MAX_IMAGE_BYTES:
        most = MAX_IMAGE_BYTES // (spec.channels * spec.height * spec.width)
        raise InputError(f"{n_images} images of {spec.channels}x{spec.height}x{spec.width} need {size / 2**30:.1f} "
                         f"GiB; at most {most} per call: split the seed range")


def default_batch_hint(n_images: int, max_batch: int | None) -> int:
    """The batch-size hint `ganrt generate` gives auto: the images requested, capped at the bundle's max_batch
    (larger requests run in chunks of max_batch)."""
    n = max(1, int(n_images))
    return min(n, int(max_batch)) if max_batch else n


def image_name(seed: int, label: int | None) -> str:
    return f"seed{seed:04d}" + ("" if label is None else f"-label{label:03d}") + ".png"


@click.command("generate", context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.argument("bundle", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--seeds", default="0-15", show_default=True, type=str,
              help="Seeds to draw: a range '0-63', a list '1,5,9' or both '0-3,10'. One image per seed (per label).")
@click.option("--labels", default=None, type=str, show_default=True,
              help="Conditional bundles: 'random' (one per seed; the default), one label '3' for all, or "
                   "several '0-9' (every seed with every label; one grid row per label).")
@click.option("--truncation", default=None, type=click.FloatRange(0.0, 2.0), show_default=True,
              help="Truncation psi in [0, 2] for families that have it (1 = none; 0.7 is typical).")
@click.option("--backend", default="auto", type=click.Choice(BACKENDS), show_default=True,
              help="Backend; 'auto' = the fastest one here whose variant passed parity.")
@click.option("--precision", default=None, type=click.Choice(PRECISION_CHOICES), show_default=True,
              help="Precision; default: the chosen backend's best that passed parity.")
@click.option("--device", default=None, type=click.Choice(DEVICES), show_default=True,
              help="Restrict to 'cpu' or 'cuda' backends (default: any).")
@click.option("--threads", default=None, type=click.IntRange(min=1), show_default=True,
              help="CPU threads (default: the physical cores).")
@click.option("--batch-size-hint", default=None, type=click.IntRange(min=1), show_default=True,
              help="Typical request size for --backend auto: it picks the variant fastest in the bundle's "
                   "benchmarks at the measured batch closest to this (default: the number of images "
                   "requested, capped at the bundle's max_batch).")
@click.option("--out", "out_dir", default=Path("generated"), type=click.Path(file_okay=False, path_type=Path),
              show_default=True, help="Directory for the PNG files (or images.npz).")
@click.option("--grid", default=None, type=click.Path(dir_okay=False, path_type=Path), show_default=True,
              help="Also write all images as one grid PNG here.")
@click.option("--grid-scale", default=1, type=click.IntRange(1, 16), show_default=True,
              help="Nearest-neighbour upscaling of the grid, for small images.")
@click.option("--format", "fmt", default="png", type=click.Choice(("png", "npz")), show_default=True,
              help="'png': one file per image with provenance text chunks; 'npz': one images.npz "
                   "(images uint8 (N, H, W, C), seeds, labels, truncation).")
@click.option("--no-files", is_flag=True, default=False, show_default=True,
              help="Write only the --grid, no per-image files.")
@click.option("--trust-code", is_flag=True, default=False, show_default=True,
              help="A bundle of your own module: let the torch backend import and run the code its spec names "
                   "(factory). Only for bundles whose source you trust; the graph backends never need it.")
@click.option("--json", "as_json", is_flag=True, default=False, show_default=True,
              help="Print a JSON summary (variant, reason, files) on stdout.")
def generate(bundle: Path, seeds: str, labels: str | None, truncation: float | None, backend: str,
             precision: str | None, device: str | None, threads: int | None, batch_size_hint: int | None,
             out_dir: Path, grid: Path | None,
             grid_scale: int, fmt: str, no_files: bool, trust_code: bool, as_json: bool) -> None:
    """Draw images from BUNDLE (a directory written by `ganrt export`).

    The same seed draws the same image on every backend: latents are
    numpy.random.Generator(PCG64(seed)).standard_normal(latent_dim), seeds in [0, 2**64 - 1]. Each PNG
    carries text chunks seed, label, truncation, bundle_sha256, variant and generated (these images are
    machine-made).
    """
    import numpy as np
    from tqdm import tqdm

    from ganrt.bundle import Bundle
    from ganrt.errors import ConfigError
    from ganrt.fileio import atomic_path
    from ganrt.images import provenance as png_provenance
    from ganrt.images import save_grid, save_png
    from ganrt.latents import parse_seed_range
    from ganrt.runtime import load

    if no_files and grid is None:
        raise ConfigError("--no-files writes nothing without --grid PATH; add --grid or drop --no-files")
    seed_list = parse_seed_range(seeds)
    opened = Bundle.open(bundle)
    spec = opened.spec
    check_request_size(len(seed_list), spec)  # before drawing a label per seed
    pairs = parse_labels(labels, seed_list, spec.num_classes)
    check_request_size(len(pairs), spec)
    if truncation is not None and not spec.has_truncation:
        raise ConfigError(f"the {spec.arch!r} generator has no truncation; drop --truncation")
    if batch_size_hint is None:
        batch_size_hint = default_batch_hint(len(pairs), opened.graph.get("max_batch"))
    with load(opened, backend=backend, precision=precision, device=device, threads=threads,
              batch_size=batch_size_hint, trust_code=trust_code) as gen:
        if not as_json:
            click.echo(f"backend: {gen.variant} on {gen.device} ({gen.reason})", err=True)
        bundle_sha = gen.bundle.sha256()
        images = []
        with tqdm(total=len(pairs), desc="generating", unit="img", disable=as_json, leave=False) as bar:
            for i in range(0, len(pairs), gen.max_batch):
                chunk = pairs[i:i + gen.max_batch]
                chunk_labels = None if spec.num_classes == 0 else [lab for _, lab in chunk]
                images.append(gen.generate(seeds=[s for s, _ in chunk], labels=chunk_labels, truncation=truncation))
                bar.update(len(chunk))
        images = np.concatenate(images, axis=0)
        variant, backend_name, reason = gen.variant, gen.backend, gen.reason

    provenance = png_provenance(bundle_sha256=bundle_sha, variant=variant, truncation=truncation)
    files: list[str] = []
    if not no_files:
        out_dir.mkdir(parents=True, exist_ok=True)
        if fmt == "npz":
            path = out_dir / "images.npz"
            with atomic_path(path) as tmp, open(tmp, "wb") as f:
                np.savez(f, images=images, seeds=np.array([s for s, _ in pairs], dtype=np.uint64),
                         labels=np.array([-1 if lab is None else lab for _, lab in pairs], dtype=np.int64),
                         truncation=np.float32(np.nan if truncation is None else truncation),
                         variant=np.array(variant), bundle_sha256=np.array(bundle_sha))
            files.append(str(path))
        else:
            for (seed, label), image in tqdm(list(zip(pairs, images, strict=True)), desc="writing", unit="img",
                                             disable=as_json, leave=False):
                text = {"seed": str(seed), "label": "" if label is None else str(label), **provenance}
                files.append(str(save_png(out_dir / image_name(seed, label), image, text=text)))
    if grid is not None:
        nrow = len(seed_list) if spec.num_classes and labels and len(pairs) > len(seed_list) else None
        text = {"seed": seeds, "label": labels or ("random" if spec.num_classes else ""), **provenance}
        save_grid(grid, images, nrow=nrow, text=text, scale=grid_scale)

    summary = {"variant": variant, "backend": backend_name, "reason": reason, "n_images": len(pairs),
               "bundle_sha256": bundle_sha, "files": files, "grid": None if grid is None else str(grid)}
    if as_json:
        click.echo(json.dumps(summary, indent=2))
    else:
        where = f"{len(files)} file(s) in {out_dir}" if files else ""
        click.echo(f"wrote {len(pairs)} image(s): " + ", ".join(x for x in (where, grid and f"grid {grid}") if x))
