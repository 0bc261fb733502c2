"""Fidelity and diversity of a synthetic set against the real one, on network features.

FID and KID come from torchmetrics (`FrechetInceptionDistance`, `KernelInceptionDistance`),
fed the features computed once by `features.Extractor`; precision and recall are Kynkäänniemi
et al. (2019): the share of synthetic samples inside the real samples' k-nearest-neighbour
balls, and the other way round. FID is biased at small n; KID is not, so its std is reported:
over subsets of at most half the smaller set, so that every subset is a draw from both sets (as
large as a set, a subset is that set whole every time, and the std shrinks to 0).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Iterator

    import numpy as np
    import torch
    from numpy.typing import NDArray

NEIGHBOURS = 3
"""k of the precision/recall balls (the paper's default)."""
KID_SUBSETS = 100
KID_SUBSET_SIZE = 1000
"""The subsets' size where both sets hold twice as many; else half the smaller set."""
KID_MIN_SUBSET = 2
"""The smallest subset KID's unbiased estimate takes: with fewer than twice as many images on
a side, KID is one estimate on the smaller set whole and its std is not measured."""
BLOCK = 1 << 22
"""Distances held at once (32 MiB of doubles): the memory of precision and recall stays flat
as the sets grow (all pairs of 100 000 synthetic images would take 80 GB)."""


@dataclass(frozen=True)
class Fidelity:
    """The figures, with the sample sizes they were computed on."""

    fid: float
    kid_mean: float
    kid_std: float | None
    """None: too few images for subsets below the set sizes, so no spread is measured."""
    kid_subset_size: int
    precision: float
    recall: float
    neighbours: int
    n_real: int
    n_synthetic: int


def _passthrough(width: int) -> Any:
    """A torch module returning its input: the features are already computed."""
    import torch

    class Passthrough(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.num_features = width

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x

    return Passthrough()


def _distances(points: torch.Tensor, anchor: torch.Tensor) -> Iterator[torch.Tensor]:
    """Distances of `points` to every anchor, a block of rows at a time: at most `BLOCK` of
    them at once, whatever the size of either set."""
    import torch

    rows = max(1, BLOCK // len(anchor))
    for start in range(0, len(points), rows):
        yield torch.cdist(points[start:start + rows], anchor)


def _coverage(anchors: NDArray[np.float32], probes: NDArray[np.float32], k: int) -> float:
    """Share of `probes` inside some anchor's ball of radius = distance to its k-th neighbour."""
    import torch

    anchor = torch.from_numpy(anchors).double()
    radii = torch.cat([block.kthvalue(k + 1, dim=1).values
                       for block in _distances(anchor, anchor)])
    probe = torch.from_numpy(probes).double()
    inside = sum(int((block <= radii).any(dim=1).sum()) for block in _distances(probe, anchor))
    return inside / len(probes)


def fidelity(real: NDArray[np.float32], synthetic: NDArray[np.float32],
             k: int = NEIGHBOURS, seed: int = 0) -> Fidelity:
    """FID, KID (mean and std over subsets of at most half the smaller set) and
    precision/recall of two feature sets."""
    import torch
    from torchmetrics.image.fid import FrechetInceptionDistance
    from torchmetrics.image.kid import KernelInceptionDistance

    if len(real) < 2 or len(synthetic) < 2:
        raise ValueError("fidelity needs at least 2 real and 2 synthetic images")
    torch.manual_seed(seed)
    width = real.shape[1]
    fid = FrechetInceptionDistance(feature=_passthrough(width))
    smaller = min(len(real), len(synthetic))
    subset = min(KID_SUBSET_SIZE, smaller // 2)
    spread = subset >= KID_MIN_SUBSET
    if not spread:
        subset = smaller
    kid = KernelInceptionDistance(feature=_passthrough(width),
                                  subsets=KID_SUBSETS if spread else 1, subset_size=subset)
    for metric in (fid, kid):
        metric.update(torch.from_numpy(real).double(), real=True)
        metric.update(torch.from_numpy(synthetic).double(), real=False)
    kid_mean, kid_std = kid.compute()
    neighbours = min(k, len(real) - 1, len(synthetic) - 1)
    return Fidelity(float(fid.compute()), float(kid_mean), float(kid_std) if spread else None,
                    subset,
                    _coverage(real, synthetic, neighbours), _coverage(synthetic, real, neighbours),
                    neighbours, len(real), len(synthetic))
