"""Synthetic embeddings for the search benchmarks and tests: unit vectors shaped like the model's.

``planted``: i.i.d. Gaussian vectors with noisy copies of 2 % of them (the grouping-at-scale benchmark since the
start; easy for an inverted-file index, since unrelated vectors are nearly orthogonal).

``near_uniform``: noisy copies of one vector, every pair similar (scanned pages, screenshots, a burst of frames).

``clustered``: shaped like real embeddings of the default model. Measured on the 2,099 photos of
``../shared/data/photos``: the mean of the unit vectors has norm 0.72 (every photo shares a common direction, so
unrelated photos score about 0.5), the similarity of all pairs has 1/10/50/90/99 % quantiles
0.29/0.40/0.53/0.64/0.74, the median nearest neighbour scores 0.79, and the variance spreads over about 68
effective dimensions. Here a common mean, 50 subject categories, clusters of photos of one scene (lognormal sizes,
mean 30) and the photos in them add up to 0.27/0.39/0.50/0.59/0.73, a median nearest neighbour of 0.80 and about
45 dimensions; then 10 % of the photos are replaced by an edited copy of another photo of their cluster, at
similarities spread over 0.80-0.995, so the pairs near a threshold sit inside dense clusters.
"""

from __future__ import annotations

import numpy as np


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def planted(n: int, dim: int = 256, seed: int = 0) -> np.ndarray:
    """I.i.d. Gaussian unit vectors; 2 % of them are noisy copies of others (similarity about 0.94)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, dim)).astype(np.float32)
    k = n // 50
    src = rng.choice(n, size=k, replace=False)
    dst = rng.choice(np.setdiff1d(np.arange(n), src), size=k, replace=False)
    x[dst] = x[src] + 0.25 * rng.standard_normal((k, dim)).astype(np.float32)
    return _unit(x)


def near_uniform(n: int, dim: int = 256, noise: float = 0.45, seed: int = 0) -> np.ndarray:
    """Noisy copies of one vector. At ``noise`` 0.45 in 256 dimensions every pair scores 0.75-0.92 (mean 0.83)."""
    rng = np.random.default_rng(seed)
    return _unit(rng.standard_normal(dim).astype(np.float32) + noise * rng.standard_normal((n, dim), np.float32))


def clustered(
    n: int,
    dim: int = 256,
    seed: int = 0,
    categories: int = 50,
    cluster_mean: float = 30.0,
    copies: float = 0.1,
    planted_pairs: list[np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Unit vectors in clusters (see the module's description) and each vector's cluster number. With
    ``planted_pairs`` (a list), the edited copies' (copy, original) index arrays are appended to it."""
    rng = np.random.default_rng(seed)
    basis, _ = np.linalg.qr(rng.standard_normal((dim, dim)))
    spread = np.arange(1, dim + 1) ** -0.4  # variance decays over the axes, as in the real embeddings
    axes = basis * (spread / np.sqrt((spread**2).sum()))  # z @ axes.T has expected squared norm 1

    def offsets(count: int, size: float) -> np.ndarray:
        return size * (rng.standard_normal((count, dim)) @ axes.T)

    mean = rng.standard_normal(dim)
    mean *= 0.72 / np.linalg.norm(mean)
    sizes: list[int] = []
    while sum(sizes) < n:
        sizes.append(max(1, int(rng.lognormal(np.log(cluster_mean) - 0.5, 1.0))))
    sizes[-1] -= sum(sizes) - n
    size = np.array(sizes)
    cluster = np.repeat(np.arange(len(size)), size)
    category = rng.integers(0, categories, len(size))
    centres = mean + offsets(categories, 0.35)[category] + offsets(len(size), 0.35)
    x = centres[cluster] + offsets(n, 0.55)
    # edited copies: a photo replaced by another photo of its cluster plus an edit, at 0.80-0.995 similarity
    dst = rng.choice(n, size=int(copies * n), replace=False)
    src = np.r_[0, np.cumsum(size)[:-1]][cluster[dst]] + rng.integers(0, size[cluster[dst]])
    dst, src = dst[src != dst], src[src != dst]
    edit = rng.uniform(0.1, 0.75, (len(dst), 1)) * np.linalg.norm(x[src], axis=1, keepdims=True)
    x[dst] = x[src] + edit * offsets(len(dst), 1.0)
    if planted_pairs is not None:
        # a photo copied twice keeps its last copy; a copy whose original was overwritten by a later copy is a copy
        # of that copy's source, which the similarity decides; the pairs are the (copy, original) as written
        planted_pairs.extend([dst, src])
    return _unit(x), cluster
