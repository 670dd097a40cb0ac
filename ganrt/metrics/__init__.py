"""Quality metrics (Fréchet distance, KID, Inception Score, precision/recall) and feature extractors.

One file per metric, each on plain (N, F) feature arrays in float64:
``frechet`` (FD / FID), ``kid``, ``inception_score``, ``precision_recall``. Feature extractors and their
registry are in ``extractors`` (``domain`` classifier, ``inception`` FID network, ``pixels`` fallback);
cached reference statistics in ``stats_cache``; a whole evaluation of a generator in ``evaluate``.

Written by hand rather than taken from torchmetrics: its metrics are stateful modules that run their own
feature network on images (its Inception path needs torch-fidelity, which downloads weights) and it has no
precision/recall; ganrt needs the math on feature arrays it already holds (cached reference features,
parity between variants). Each function is short and tested against a reference computation.
"""

from ganrt.metrics.frechet import GaussianStats, feature_statistics, frechet_distance, frechet_distance_features
from ganrt.metrics.inception_score import inception_score
from ganrt.metrics.kid import kernel_inception_distance
from ganrt.metrics.precision_recall import precision_recall

__all__ = ["GaussianStats", "feature_statistics", "frechet_distance", "frechet_distance_features",
           "inception_score", "kernel_inception_distance", "precision_recall"]
