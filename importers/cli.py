"""`ganrt import`: another tool's generator file -> a ganrt checkpoint (no code from the file runs)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from ganrt.errors import ConfigError, ParityError


@click.group("import", context_settings={"help_option_names": ["-h", "--help"]})
def import_group() -> None:
    """Import another tool's generator file as a ganrt checkpoint, which `ganrt export`, `generate`,
    `bench` and `serve` then take as it is. No code from the file runs."""


@import_group.command("nvlabs", context_settings={"show_default": True})
@click.argument("snapshot", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--out", "-o", required=True, type=click.Path(path_type=Path),
              help="The checkpoint to write (.safetensors).")
@click.option("--network", type=click.Choice(["G_ema", "G"]), default="G_ema",
              help="Which generator of the snapshot: the EMA weights (what NVlabs' tools draw with) or G.")
@click.option("--force", is_flag=True, default=False, help="Replace --out when it exists.")
@click.option("--verify-against-source", "checkout", type=click.Path(exists=True, file_okay=False, path_type=Path),
              default=None, help="A checkout of NVlabs' stylegan3 or stylegan2-ada-pytorch: run the snapshot's own "
                                 "forward pass from it (a separate process) and record ganrt's parity with it. "
                                 "Needs --trust-code.")
@click.option("--trust-code", is_flag=True, default=False,
              help="With --verify-against-source: allow running the checkout's code and the module source embedded "
                   "in the snapshot. Only for files and checkouts whose source you trust.")
@click.option("--seeds", default="0-7", help="With --verify-against-source: the seeds compared (ganrt.latents).")
@click.option("--truncations", default="0.5,0.7,1.0",
              help="With --verify-against-source: the truncation psi values compared.")
@click.option("--allow-failed-parity", is_flag=True, default=False,
              help="Write the checkpoint even when ganrt's images are more than one level from NVlabs' "
                   "(the failure is recorded in it).")
@click.option("--json", "as_json", is_flag=True, default=False, help="Print what was imported as JSON.")
def nvlabs(snapshot, out, network, force, checkout, trust_code, seeds, truncations, allow_failed_parity, as_json):
    """Import an NVlabs StyleGAN2-ADA / StyleGAN3 snapshot (network-snapshot-*.pkl) as a checkpoint.

    \b
    ganrt import nvlabs network-snapshot-000800.pkl --out g.safetensors
    ganrt export g.safetensors --out bundle --precision fp32,fp16
    ganrt serve bundle
    """
    from ganrt.latents import parse_seed_range

    if checkout is not None and not trust_code:
        raise ConfigError("--verify-against-source imports NVlabs' code from that checkout and runs the module source "
                          "embedded in the snapshot: pass --trust-code if you trust both")
    if trust_code and checkout is None:
        raise ConfigError("--trust-code goes with --verify-against-source (importing itself never runs code)")
    seed_list = parse_seed_range(seeds, max_count=1024)
    try:
        psis = [float(t) for t in truncations.split(",") if t.strip()]
    except ValueError:
        raise ConfigError(f"--truncations takes numbers like 0.5,0.7,1.0, got {truncations!r}") from None
    if not psis or not all(0.0 <= p <= 2.0 for p in psis):
        raise ConfigError(f"--truncations takes numbers in [0, 2], got {truncations!r}")

    from ganrt.importers import nvlabs as importer

    importer.check_destination(snapshot, out, force=force)
    imported = importer.read(snapshot, network=network)
    parity = None
    if checkout is not None:
        from ganrt.importers.nvlabs_source import source_parity

        parity = source_parity(snapshot, checkout, imported, seeds=seed_list, truncations=psis)
        if not parity["passed"] and not allow_failed_parity:
            raise ParityError(f"ganrt's {imported.spec.arch} differs from NVlabs' forward pass by "
                              f"{parity['max_levels']:.0f} uint8 levels (max |diff| {parity['max_abs_diff']:.3g}); "
                              "nothing was written. Please report it with the snapshot's configuration; "
                              "--allow-failed-parity writes the checkpoint anyway")
    path = importer.import_snapshot(snapshot, out, network=network, force=force, parity=parity, imported=imported)
    report = {"checkpoint": str(path), "spec": imported.spec.to_dict(), "imported_from": imported.source,
              "parameters": sum(p.numel() for p in imported.module.parameters()), "parity": parity}
    click.echo(json.dumps(report, indent=2) if as_json else render(report))


def render(report: dict) -> str:
    s, src = report["spec"], report["imported_from"]
    classes = f"{s['num_classes']} classes (labels = c)" if s["num_classes"] else "unconditional"
    lines = [f"imported {src['config']} ({src['network']}) from {src['file']} (sha256 {src['sha256'][:16]}...): "
             f"z {s['latent_dim']}, {classes}, images {s['channels']}x{s['height']}x{s['width']}, "
             "truncation toward w_avg",
             f"  -> {report['checkpoint']} ({s['arch']}, {report['parameters'] / 1e6:.2f}M parameters); "
             "reading the snapshot ran no code from it"]
    parity = report.get("parity")
    if parity:
        lines.append(f"parity against NVlabs' forward pass (its code, from {parity['checkout']}, ran in a separate "
                     "process; noise_mode const, "
                     f"seeds {parity['seeds'][0]}-{parity['seeds'][-1]}): "
                     + ("passed" if parity["passed"] else "FAILED") + f" (goal: <= {parity['goal_levels']} level)")
        for psi, p in parity["per_truncation"].items():
            lines.append(f"  psi {psi:>4}: max |diff| {p['max_abs_diff']:.3g} (output units), {p['max_levels']:.0f} "
                         f"levels, >1 level {100 * p['frac_gt_1']:.3f}%")
    lines.append(f"next: ganrt export {report['checkpoint']} --out bundle --precision fp32,fp16")
    return "\n".join(lines)
