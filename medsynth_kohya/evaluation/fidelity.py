"""Fidelity and diversity of a synthetic set against the real one, on network features.

FID and KID come from torchmetrics (`FrechetInceptionDistance`, `KernelInceptionDistance`),
fed the features computed once by `features.Extractor`; precision and recall are Kynkäänniemi
et al. (2019): the share of synthetic samples inside the real samples' k-nearest-neighbour
balls, and the other way round. FID is biased at small n; KID is not, so its std is reported.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray

NEIGHBOURS = 3
"""k of the precision/recall balls (the paper's default)."""
KID_SUBSETS = 100
KID_SUBSET_SIZE = 1000


@dataclass(frozen=True)
class Fidelity:
    """The figures, with the sample sizes they were computed on."""

    fid: float
    kid_mean: float
    kid_std: float
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


def _coverage(anchors: NDArray[np.float32], probes: NDArray[np.float32], k: int) -> float:
    """Share of `probes` inside some anchor's ball of radius = distance to its k-th neighbour."""
    import torch

    anchor = torch.from_numpy(anchors).double()
    radii = torch.cdist(anchor, anchor).kthvalue(k + 1, dim=1).values
    inside = 0
    for start in range(0, len(probes), 1024):
        chunk = torch.from_numpy(probes[start:start + 1024]).double()
        inside += int((torch.cdist(chunk, anchor) <= radii).any(dim=1).sum())
    return inside / len(probes)


def fidelity(real: NDArray[np.float32], synthetic: NDArray[np.float32],
             k: int = NEIGHBOURS, seed: int = 0) -> Fidelity:
    """FID, KID (mean and std over subsets) and precision/recall of two feature sets."""
    import torch
    from torchmetrics.image.fid import FrechetInceptionDistance
    from torchmetrics.image.kid import KernelInceptionDistance

    if len(real) < 2 or len(synthetic) < 2:
        raise ValueError("fidelity needs at least 2 real and 2 synthetic images")
    torch.manual_seed(seed)
    width = real.shape[1]
    fid = FrechetInceptionDistance(feature=_passthrough(width))
    subset = min(KID_SUBSET_SIZE, len(real), len(synthetic))
    kid = KernelInceptionDistance(feature=_passthrough(width), subsets=KID_SUBSETS,
                                  subset_size=subset)
    for metric in (fid, kid):
        metric.update(torch.from_numpy(real).double(), real=True)
        metric.update(torch.from_numpy(synthetic).double(), real=False)
    kid_mean, kid_std = kid.compute()
    neighbours = min(k, len(real) - 1, len(synthetic) - 1)
    return Fidelity(float(fid.compute()), float(kid_mean), float(kid_std), subset,
                    _coverage(real, synthetic, neighbours), _coverage(synthetic, real, neighbours),
                    neighbours, len(real), len(synthetic))
