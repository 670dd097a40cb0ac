"""KID, IS and precision/recall agree with independent implementations on the same feature arrays:
torchmetrics (features passed through its metric unchanged) and a brute-force k-NN manifold."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ganrt.metrics.inception_score import inception_score, softmax
from ganrt.metrics.kid import kernel_inception_distance, mmd2_unbiased
from ganrt.metrics.precision_recall import precision_recall

torchmetrics = pytest.importorskip("torchmetrics")


class PassThrough(torch.nn.Module):
    """A 'feature extractor' that returns what it is given: the metric then sees our feature arrays."""

    def forward(self, x):
        return x


@pytest.fixture(scope="module")
def features():
    rng = np.random.default_rng(0)
    real = rng.normal(size=(400, 32))
    fake = rng.normal(loc=0.3, scale=1.2, size=(400, 32))
    return real, fake


def test_mmd_equals_torchmetrics_poly_mmd_on_the_same_features(features):
    from torchmetrics.image.kid import poly_mmd

    real, fake = features
    ours = mmd2_unbiased(real[:200], fake[:200])
    theirs = float(poly_mmd(torch.from_numpy(real[:200]), torch.from_numpy(fake[:200])))
    assert ours == pytest.approx(theirs, rel=1e-9, abs=1e-12)


def test_kid_over_subsets_agrees_with_torchmetrics_within_its_error(features):
    from torchmetrics.image.kid import KernelInceptionDistance

    real, fake = features
    mean, std = kernel_inception_distance(real, fake, subsets=200, subset_size=100, seed=0)
    torch.manual_seed(0)
    metric = KernelInceptionDistance(feature=PassThrough(), subsets=200, subset_size=100)
    metric.update(torch.from_numpy(real), real=True)
    metric.update(torch.from_numpy(fake), real=False)
    theirs_mean, theirs_std = (float(x) for x in metric.compute())
    # different random subsets: the means agree within a few standard errors of a 200-subset mean
    assert abs(mean - theirs_mean) < 4 * max(std, theirs_std) / np.sqrt(200)
    assert std == pytest.approx(theirs_std, rel=0.25)
    assert mean > 10 * std / np.sqrt(200)  # the distributions differ: a real signal, not noise


def test_inception_score_equals_torchmetrics_on_the_same_logits():
    from torchmetrics.image.inception import InceptionScore

    logits = np.random.default_rng(1).normal(scale=3.0, size=(500, 20))
    metric = InceptionScore(feature=PassThrough(), splits=10)
    metric.update(torch.from_numpy(logits))
    torch.manual_seed(3)
    theirs_mean, theirs_std = (float(x) for x in metric.compute())
    torch.manual_seed(3)
    perm = torch.randperm(500).numpy()  # torchmetrics shuffles before splitting: the same permutation here
    mean, std = inception_score(softmax(logits[perm]), splits=10)
    assert mean == pytest.approx(theirs_mean, rel=1e-6)
    n = 10  # torchmetrics' std is the unbiased one (ddof=1), ganrt's the population one
    assert std * np.sqrt(n / (n - 1)) == pytest.approx(theirs_std, rel=1e-5)


def _brute_force_pr(real, fake, k=3):
    from scipy.spatial.distance import cdist

    def radii(x):
        d = cdist(x, x)
        return np.sort(d, axis=1)[:, k]  # column 0 is the sample itself

    def inside(manifold, r, queries):
        return float(np.mean((cdist(queries, manifold) <= r[None, :]).any(axis=1)))

    return inside(real, radii(real), fake), inside(fake, radii(fake), real)


def test_precision_recall_equal_a_brute_force_knn_manifold(features):
    real, fake = features
    ours = precision_recall(real, fake, k=3, batch=64)  # batched: the batching must not change the result
    assert ours == pytest.approx(_brute_force_pr(real, fake, k=3), abs=1e-12)
    assert 0.05 < ours[0] < 0.95 and 0.05 < ours[1] < 0.95  # neither trivially 0 nor 1
