"""ganrt: GAN generators from training to low-latency production inference.

    train -> checkpoint -> export -> bundle -> runtime -> bench / serve

This package is the shared core (spec, checkpoint and bundle formats, models, metrics); the stages are
subpackages: ``ganrt.train``, ``ganrt.export``, ``ganrt.runtime``, ``ganrt.benchmarks``. Importing
``ganrt`` imports neither torch nor any backend.
"""

__version__ = "0.1.0"

from ganrt.errors import GanrtError  # noqa: E402
from ganrt.spec import GeneratorSpec  # noqa: E402

__all__ = ["GanrtError", "GeneratorSpec", "__version__"]
