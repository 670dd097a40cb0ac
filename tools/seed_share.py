"""What the seeds cost beside the generator: latents from seeds, numpy's per-seed path against ganrt's.

    python tools/seed_share.py BUNDLE [--variant NAME] [--batch 64] [--rounds 7]

Times, interleaved over ``--rounds`` rounds (min over rounds, these machines are shared), one call of
``generate(z=...)`` on pre-drawn latents of the variant (default: what ``auto`` picks for the batch), numpy's
per-seed construction ``Generator(PCG64(seed)).standard_normal(latent_dim)`` (the contract as written), and
``ganrt.latents.latents_from_seeds`` (the same numbers, vectorized seeding); prints each latent path's share
of a seeds-path call (latents + generate).
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def per_seed(seeds, dim):
    z = np.empty((len(seeds), dim), np.float32)
    for i, s in enumerate(seeds):
        z[i] = np.random.Generator(np.random.PCG64(s)).standard_normal(dim)
    return z


def best_of(fn, rounds: int, calls: int = 20) -> float:
    """Min over rounds of the mean ms per call."""
    out = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        out.append((time.perf_counter() - t0) / calls * 1e3)
    return min(out)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("bundle")
    p.add_argument("--variant", default=None)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--rounds", type=int, default=7)
    args = p.parse_args(argv)

    from ganrt.latents import labels_from_seeds, latents_from_seeds
    from ganrt.runtime import load

    gen = load(args.bundle, variant=args.variant) if args.variant else load(args.bundle, batch_size=args.batch)
    seeds = list(range(args.batch))
    dim = gen.spec.latent_dim
    labels = labels_from_seeds(seeds, gen.spec.num_classes) if gen.spec.conditional else None
    z = latents_from_seeds(seeds, dim)
    assert np.array_equal(z, per_seed(seeds, dim)), "the two latent paths must draw the same numbers"
    gen.warmup([args.batch])
    model = best_of(lambda: gen.generate(z=z, labels=labels), args.rounds)
    old = best_of(lambda: per_seed(seeds, dim), args.rounds)
    new = best_of(lambda: latents_from_seeds(seeds, dim), args.rounds)
    print(f"{gen.variant} at batch {args.batch} (latent_dim {dim}): generate(z) {model:.3f} ms")
    for name, ms in (("numpy per-seed PCG64", old), ("ganrt.latents (vectorized seeding)", new)):
        print(f"  latents by {name:36s} {ms:.3f} ms = {100 * ms / (ms + model):.1f}% of the seeds-path call")
    gen.close()


if __name__ == "__main__":
    main()
