"""Geometric verification of look-alike pairs: the same picture, or only the same subject?

The embedding ranks images by what they show. Two photos of one cat on one sofa, two product shots of grey trousers
on a white wall or two frames of a burst score as high as a resized copy does: on the 1,961 deduplicated photos of
``../shared/data/photos/pool`` the shipped model puts 611 pairs of *different* photos at or above its threshold.
A copy keeps the picture's geometry whatever was done to it (resized, recompressed, cropped, turned, mirrored,
recoloured, framed, written on): its local features map onto the original's through one homography. Two photos of
one subject do not, except where the scene is flat and still.

So every pair that the embedding puts in the band where look-alikes live ([threshold, :data:`VERIFY_BELOW`)) is
checked the way image retrieval has checked its candidates since Philbin et al. (2007, "Object retrieval with large
vocabularies and fast spatial matching"): OpenCV's SIFT keypoints on a grey image of at most 512 px a side, RootSIFT
descriptors (Arandjelović and Zisserman 2012), Lowe's ratio test, and a homography fitted with USAC MAGSAC. A pair
is a copy when at least :data:`MIN_INLIERS` matches agree with the homography, trying the second image mirrored when
the plain match fails (SIFT is not mirror-invariant). The figures behind the constants are in
``docs/find-and-verify.md`` ("Geometric check"). Above the band, the embedding is trusted: no look-alike pair of the
pool scored there and failed the check.

What it cannot tell apart: photos of a flat object from two viewpoints (UKBench's CD covers) and burst frames with
a still background map onto each other as well as a copy does.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict, deque
from collections.abc import Callable, Generator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING

import cv2
import numpy as np

from dedup_app.core.imageio import ImageLoadError, decode, read_bytes
from dedup_app.core.index import SIMILARITY_TOLERANCE
from dedup_app.core.progress import CancelToken, Progress

if TYPE_CHECKING:
    from dedup_app.core.cache import EmbeddingCache

log = logging.getLogger(__name__)

#: Pairs at or above this similarity are taken on the embedding's word: the check runs under it.
VERIFY_BELOW = 0.92
#: Matches consistent with one homography that make a pair a copy.
MIN_INLIERS = 20
#: Longest side of the grey image the keypoints are found on, and keypoints kept per image.
SIDE = 512
FEATURES = 600
#: Lowe's ratio test: a match is kept when its distance is under this share of the second-best one's.
RATIO = 0.85
#: RANSAC reprojection error in pixels of a :data:`SIDE`-px image (0.8 % of its side).
REPROJECTION = 4.0
#: Identifies the method and its parameters in the cache: results of another version are not reused.
METHOD = f"sift{SIDE}-{FEATURES}-r{RATIO}-magsac{REPROJECTION}-v1"
#: Inlier count of a pair that could not be checked (an image unreadable now): the pair is left as it was.
UNCHECKED = -1
#: Inlier count of a pair with an image too plain to judge (fewer than :data:`MIN_KEYPOINTS` keypoints: a clear sky,
#: a gradient, flat graphics): the embedding's word stands.
PLAIN = -2
MIN_KEYPOINTS = 40

_MIN_MATCHES = 6
#: Pairs checked at once (one progress report each).
_CHUNK = 64
STAGE = "Checking look-alike pairs"


@dataclass(frozen=True)
class Features:
    """Keypoint positions (n x 2, float32) and their SIFT descriptors (n x 128, uint8) of one image, plus the
    image's grey pixels (kept to compute the mirrored features only when they are needed)."""

    points: np.ndarray
    descriptors: np.ndarray
    grey: np.ndarray

    @property
    def nbytes(self) -> int:
        return int(self.points.nbytes + self.descriptors.nbytes + self.grey.nbytes)


def grey_image(path: str, side: int = SIDE) -> np.ndarray:
    """The upright image at ``path`` as 8-bit grey, at most ``side`` px on its longer side. Raises
    :class:`ImageLoadError` or :class:`OSError`."""
    rgb, _ = decode(read_bytes(path), side)
    grey = np.asarray(rgb.convert("L"))
    scale = side / max(grey.shape)
    if scale < 1:
        grey = cv2.resize(grey, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(grey)


_LOCAL = threading.local()


def _sift() -> cv2.SIFT:
    # one detector per thread: OpenCV's Feature2D objects are not documented as thread-safe
    sift = getattr(_LOCAL, "sift", None)
    if sift is None:
        sift = _LOCAL.sift = cv2.SIFT.create(nfeatures=FEATURES)
    return sift


def features_of(grey: np.ndarray) -> Features:
    """SIFT keypoints and descriptors of a grey image."""
    keypoints, desc = _sift().detectAndCompute(grey, None)
    if desc is None or not keypoints:
        return Features(np.zeros((0, 2), np.float32), np.zeros((0, 128), np.uint8), grey)
    points = np.array([k.pt for k in keypoints], np.float32)
    return Features(points, np.clip(desc, 0, 255).astype(np.uint8), grey)


def _root_sift(desc: np.ndarray) -> np.ndarray:
    d = desc.astype(np.float32)
    return np.sqrt(d / (d.sum(axis=1, keepdims=True) + 1e-7))


def inliers(a: Features, b: Features) -> int:
    """Matches of ``a`` to ``b`` (RootSIFT, ratio test) that one homography explains (USAC MAGSAC)."""
    matcher = cv2.BFMatcher(cv2.NORM_L2)
    knn = matcher.knnMatch(_root_sift(a.descriptors), _root_sift(b.descriptors), k=2)
    good = [m[0] for m in knn if len(m) == 2 and m[0].distance < RATIO * m[1].distance]
    if len(good) < _MIN_MATCHES:
        return 0
    src = a.points[[m.queryIdx for m in good]]
    dst = b.points[[m.trainIdx for m in good]]
    _, mask = cv2.findHomography(src, dst, cv2.USAC_MAGSAC, REPROJECTION * max(b.grey.shape) / SIDE)
    return int(mask.sum()) if mask is not None else 0


def mirrored(f: Features) -> Features:
    """The features of the left-right mirror of ``f``'s image."""
    return features_of(np.ascontiguousarray(f.grey[:, ::-1]))


def pair_inliers(a: Features, b: Features, b_mirrored: Callable[[], Features] | None = None) -> int:
    """:func:`inliers` of the pair, or of ``a`` and ``b`` mirrored (``b_mirrored()``, computed when not given) when
    the plain match falls short; :data:`PLAIN` when either image has too few keypoints to judge."""
    if min(len(a.descriptors), len(b.descriptors)) < MIN_KEYPOINTS:
        return PLAIN
    n = inliers(a, b)
    if n >= MIN_INLIERS:
        return n
    return max(n, inliers(a, b_mirrored() if b_mirrored is not None else mirrored(b)))


def is_copy(count: int) -> bool | None:
    """What an inlier count says: True (the same picture), False (only alike), None (not judged)."""
    return None if count < 0 else count >= MIN_INLIERS


class _FeatureCache:
    """Features by path, least recently used dropped past ``max_bytes``; thread-safe."""

    def __init__(self, load: Callable[[str], Features | None], max_bytes: int) -> None:
        self._load = load
        self._max = max_bytes
        self._items: OrderedDict[str, Features | None] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, path: str) -> Features | None:
        with self._lock:
            if path in self._items:
                self._items.move_to_end(path)
                return self._items[path]
        value = self._load(path)
        with self._lock:
            if path not in self._items:
                self._items[path] = value
                self._bytes += value.nbytes if value is not None else 0
                while self._bytes > self._max and len(self._items) > 1:
                    _, old = self._items.popitem(last=False)
                    self._bytes -= old.nbytes if old is not None else 0
        return value


def _load_features(path: str) -> Features | None:
    try:
        return features_of(grey_image(path))
    except (ImageLoadError, OSError, ValueError, MemoryError) as exc:
        log.info("geometric check: %s cannot be read now (%s); its pairs are left unchecked", path, exc)
        return None


def check_image_pair(path_a: str, path_b: str) -> int:
    """Inliers of one pair of image files (:data:`UNCHECKED` when either cannot be read, :data:`PLAIN`)."""
    a, b = _load_features(path_a), _load_features(path_b)
    return UNCHECKED if a is None or b is None else pair_inliers(a, b)


class PairChecker:
    """Checks pairs of image files on ``workers`` threads (OpenCV releases the GIL), keeping each image's features
    while its pairs are checked (at most ``memory`` bytes, least recently used dropped). Use as a context manager."""

    def __init__(self, workers: int | None = None, memory: int = 256 << 20) -> None:
        import os

        self._features = _FeatureCache(_load_features, memory // 2)
        # an image alike to many others is tried mirrored against each of them: its mirror's features are kept too
        self._mirrors = _FeatureCache(self._load_mirror, memory // 2)
        self._pool = ThreadPoolExecutor(workers or min(4, os.cpu_count() or 1))

    def _load_mirror(self, path: str) -> Features | None:
        plain = self._features.get(path)
        return None if plain is None else mirrored(plain)

    def check(self, pairs: Sequence[tuple[str, str]]) -> np.ndarray:
        """Inlier counts of ``pairs`` (:data:`UNCHECKED` where a file cannot be read, :data:`PLAIN`), in order."""

        def one(pair: tuple[str, str]) -> int:
            a, b = self._features.get(pair[0]), self._features.get(pair[1])
            if a is None or b is None:
                return UNCHECKED
            return pair_inliers(a, b, lambda: self._mirrors.get(pair[1]) or mirrored(b))

        return np.array(list(self._pool.map(one, pairs)), np.int32).reshape(len(pairs))

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> PairChecker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Components:
    """Union-find over nodes: which images are known to show one picture."""

    def __init__(self, n: int) -> None:
        self.parent = list(range(n))

    def find(self, v: int) -> int:
        while self.parent[v] != v:
            self.parent[v] = self.parent[self.parent[v]]
            v = self.parent[v]
        return v

    def union(self, a: int, b: int) -> None:
        self.parent[self.find(a)] = self.find(b)


def apart_edges(
    i: np.ndarray,
    j: np.ndarray,
    s: np.ndarray,
    paths: Sequence[str],
    keys: Sequence[str],
    threshold: float,
    cache: EmbeddingCache | None = None,
    cancel: CancelToken | None = None,
) -> Generator[Progress, None, np.ndarray]:
    """Which edges ``(i[k], j[k])`` of a similarity graph at or above ``threshold`` to set apart: pairs under
    :data:`VERIFY_BELOW` whose images do not map onto each other. Node ``v`` is the file ``paths[v]`` with content
    key ``keys[v]`` (results are kept in ``cache`` by key pair and :data:`METHOD`).

    Showing one picture is transitive: when A is a copy of C and B is a copy of C, A and B are copies, even if a
    crop and a noisy copy share too few keypoints to show it directly. So images are joined into components of one
    picture (edges at or above VERIFY_BELOW, and pairs that pass), most similar pairs first; a pair inside a
    component is not checked at all (which also spares most checks in a large group of copies), and a pair that
    failed is set apart only if its images still lie in different components at the end.
    """
    band = np.flatnonzero((s >= threshold - SIMILARITY_TOLERANCE) & (s < VERIFY_BELOW))
    apart = np.zeros(len(s), bool)
    if not len(band):
        return apart
    n = len(paths)
    comps = _Components(n)
    for a, b in zip(i[s >= VERIFY_BELOW].tolist(), j[s >= VERIFY_BELOW].tolist(), strict=True):
        comps.union(a, b)
    band = band[np.argsort(-s[band], kind="stable")]
    pair_keys = [(keys[i[k]], keys[j[k]]) for k in band.tolist()]
    known = cache.pair_checks(METHOD, pair_keys) if cache is not None else {}
    failed: list[int] = []
    checked = reused = 0
    queue = deque(range(len(band)))  # positions in ``band``, most similar first
    with PairChecker() as checker:
        while queue:
            if cancel is not None:
                cancel.raise_if_cancelled()
            yield Progress(STAGE, len(band) - len(queue), len(band))
            # the next pairs to check at once; a pair that the chunk's own pairs would imply if they pass waits
            chunk: list[int] = []
            later: list[int] = []
            hoped: dict[int, int] = {}  # component -> component, as if the chunk's pairs passed

            while queue and len(chunk) < _CHUNK:
                p = queue.popleft()
                a, b = int(i[band[p]]), int(j[band[p]])
                ra, rb = comps.find(a), comps.find(b)
                if ra == rb:
                    continue  # implied: both are copies of one picture already
                if pair_keys[p] in known:
                    _settle(comps, failed, p, a, b, known[pair_keys[p]])
                    reused += 1
                    continue
                ha, hb = _follow(hoped, ra), _follow(hoped, rb)
                if ha == hb:
                    later.append(p)
                    continue
                hoped[ha] = hb
                chunk.append(p)
            if chunk:
                found = checker.check([(paths[i[band[p]]], paths[j[band[p]]]) for p in chunk])
                checked += len(chunk)
                done = []
                for p, c in zip(chunk, found.tolist(), strict=True):
                    _settle(comps, failed, p, int(i[band[p]]), int(j[band[p]]), c)
                    if c != UNCHECKED:
                        done.append((*pair_keys[p], c))
                if cache is not None and done:  # kept at once: a cancelled scan's checks are not lost
                    cache.put_pair_checks(METHOD, done)
                    cache.commit()
            queue.extendleft(reversed(later))
    yield Progress(STAGE, len(band), len(band))
    for p in failed:
        k = int(band[p])
        apart[k] = comps.find(int(i[k])) != comps.find(int(j[k]))
    log.info("geometric check: %d of %d pairs in [%.3f, %.2f) set apart (%d checked now, %d known, %d implied)",
             int(apart.sum()), len(band), threshold, VERIFY_BELOW, checked, reused,
             len(band) - checked - reused)  # fmt: skip
    return apart


def _follow(links: dict[int, int], root: int) -> int:
    while root in links:
        root = links[root]
    return root


def _settle(comps: _Components, failed: list[int], pos: int, a: int, b: int, count: int) -> None:
    if is_copy(count) is False:
        failed.append(pos)
    else:  # a copy, or not judged (the embedding's word stands)
        comps.union(a, b)
