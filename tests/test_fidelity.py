"""evaluation.fidelity's figures on feature sets whose answers follow from their construction:
precision and recall (Kynkäänniemi et al.: a ball's edge is inside it), FID of a shifted copy,
and KID's subsets: half the smaller set, so that its spread is measured."""

from __future__ import annotations

import numpy as np
import pytest

from medsynth_kohya.evaluation import features

pytestmark = pytest.mark.skipif(bool(features.missing("tests.eval_data:build")),
                                reason="the eval extra (torch, torchmetrics) is not installed")

REAL = np.array([[0, 0], [2, 0], [10, 1], [12, 1]], dtype=np.float32)
"""Two pairs 2 apart: with k = 1, every real ball has radius 2."""
SYNTHETIC = np.array([[4, 0], [20, 3], [100, 7], [101, 7]], dtype=np.float32)
"""(4, 0) lies on the edge of (2, 0)'s ball, the others outside every real ball; the two
synthetic balls of (4, 0) and (20, 3) (radius about 16.3) hold all four real points."""


def test_precision_counts_synthetic_images_in_real_balls_edge_included() -> None:
    from medsynth_kohya.evaluation.fidelity import fidelity

    result = fidelity(REAL, SYNTHETIC, k=1)
    assert (result.precision, result.recall) == (0.25, 1.0)
    assert (result.neighbours, result.n_real, result.n_synthetic) == (1, 4, 4)


def test_recall_counts_real_images_in_synthetic_balls() -> None:
    """The same sets the other way round: the two figures trade places."""
    from medsynth_kohya.evaluation.fidelity import fidelity

    result = fidelity(SYNTHETIC, REAL, k=1)
    assert (result.precision, result.recall) == (1.0, 0.25)


def test_a_ball_is_its_kth_neighbour_not_the_point_itself() -> None:
    """k = 2 on four points of a line 1 apart: each ball reaches two neighbours away, so a
    synthetic point 2 past the end is inside, and one 3 past it is not."""
    from medsynth_kohya.evaluation.fidelity import fidelity

    line = np.array([[0, 0], [1, 0], [2, 0], [3, 0]], dtype=np.float32)
    line[:, 1] = [0, 0.5, 0, 0.5]  # not collinear: FID needs a full-rank covariance
    probes = np.array([[5, 0.5], [6, 0.5], [7, 0.5]], dtype=np.float32)
    assert fidelity(line, probes, k=2).precision == pytest.approx(1 / 3)


def test_fid_of_a_shifted_copy_is_the_squared_shift_and_kid_grows_with_it() -> None:
    """Equal covariances leave FID = |mean difference|^2; KID of a second draw from the same
    distribution is small beside KID of the shifted copy."""
    from medsynth_kohya.evaluation.fidelity import fidelity

    rng = np.random.default_rng(3)
    real = rng.normal(size=(40, 3)).astype(np.float32)
    shift = np.array([3.0, 0.0, 4.0], dtype=np.float32)
    shifted = fidelity(real, real + shift)
    assert shifted.fid == pytest.approx(25.0, rel=1e-3)
    assert fidelity(real, real.copy()).fid == pytest.approx(0.0, abs=1e-3)
    again = fidelity(real, rng.normal(size=(40, 3)).astype(np.float32))
    assert abs(again.kid_mean) < 0.01 * shifted.kid_mean


@pytest.mark.parametrize(("sizes", "subset"), [((9, 5), 2), ((30, 30), 15), ((41, 60), 20)])
def test_kid_subsets_are_half_the_smaller_set_so_its_spread_is_measured(
        sizes: tuple[int, int], subset: int) -> None:
    """Subsets as large as the smaller set were that whole set every time (with equal sets,
    every subset was both sets whole and the std 0, read as certainty): half of it, either
    way round, leaves every subset a draw from both sets, and a spread above 0."""
    from medsynth_kohya.evaluation.fidelity import fidelity

    rng = np.random.default_rng(4)
    one, other = (rng.normal(size=(n, 2)).astype(np.float32) for n in sizes)
    for real, synthetic in ((one, other), (other, one)):
        result = fidelity(real, synthetic)
        assert result.kid_subset_size == subset and result.kid_std is not None
        assert result.kid_std > 0


def test_sets_too_small_for_subsets_give_one_kid_on_the_whole_sets_and_no_spread() -> None:
    """Three images a side leave no subsets of two or more below the sets: KID is the unbiased
    MMD^2 of the cubic kernel (x.y / d + 1)^3 on the sets whole, and its std is not measured
    (None, not 0)."""
    from medsynth_kohya.evaluation.fidelity import fidelity

    rng = np.random.default_rng(7)
    real = rng.normal(size=(3, 4)).astype(np.float32)
    synthetic = (rng.normal(size=(3, 4)) + 0.5).astype(np.float32)
    a, b = real.astype(np.float64), synthetic.astype(np.float64)

    def kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        value: np.ndarray = (x @ y.T / x.shape[1] + 1) ** 3
        return value

    within = sum((kernel(x, x).sum() - np.trace(kernel(x, x))) / 6 for x in (a, b))
    result = fidelity(real, synthetic)
    assert result.kid_mean == pytest.approx(within - 2 * kernel(a, b).mean(), rel=1e-6)
    assert (result.kid_std, result.kid_subset_size) == (None, 3)
    assert fidelity(real[:2], synthetic).kid_std is None
    assert fidelity(np.concatenate([real, real + 1]), synthetic).kid_std is None
    assert fidelity(np.concatenate([real, real + 1]), np.concatenate([synthetic, real])
                    ).kid_std is not None


def test_fewer_than_two_images_on_a_side_is_refused() -> None:
    from medsynth_kohya.evaluation.fidelity import fidelity

    with pytest.raises(ValueError, match="at least 2 real and 2 synthetic"):
        fidelity(REAL[:1], SYNTHETIC)


def _coverage(anchors: np.ndarray, probes: np.ndarray, k: int) -> float:
    """The share of `probes` within the distance of some anchor to its k-th nearest other
    anchor, by brute force in numpy."""
    def distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        difference = a[:, None, :].astype(np.float64) - b[None, :, :]
        distance: np.ndarray = np.sqrt((difference ** 2).sum(axis=2))
        return distance

    radii = np.sort(distances(anchors, anchors), axis=1)[:, k]
    return float((distances(probes, anchors) <= radii).any(axis=1).mean())


def test_precision_and_recall_take_a_block_of_distances_at_a_time(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """With room for 500 distances, 300 synthetic images against 40 real ones: every pair is
    measured once and no block holds more (memory stays flat as sets grow); the figures are
    the brute-force shares at the paper's k = 3 by default; KID's subsets are half the real
    set, drawn by the seed."""
    import torch

    from medsynth_kohya.evaluation import fidelity

    sizes: list[int] = []
    cdist = torch.cdist

    def counted(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        sizes.append(len(a) * len(b))
        return cdist(a, b)

    monkeypatch.setattr(fidelity, "BLOCK", 500)
    monkeypatch.setattr(torch, "cdist", counted)
    rng = np.random.default_rng(6)
    real = rng.normal(size=(40, 2)).astype(np.float32)
    synthetic = (rng.normal(size=(300, 2)) * 1.5 + 0.5).astype(np.float32)
    result = fidelity.fidelity(real, synthetic)
    assert max(sizes) <= 500 and sum(sizes) == (len(real) + len(synthetic)) ** 2
    assert result.precision == pytest.approx(_coverage(real, synthetic, 3))
    assert result.recall == pytest.approx(_coverage(synthetic, real, 3))
    assert (result.neighbours, result.kid_subset_size) == (3, len(real) // 2)
    assert result == fidelity.fidelity(real, synthetic, seed=0)
    assert result.kid_std is not None and result.kid_std > 0
    assert fidelity.fidelity(real, synthetic, seed=1).kid_mean != result.kid_mean


def test_two_images_a_side_are_enough_and_use_their_one_neighbour() -> None:
    """The balls' k is at most one less than the smaller set, whichever side it is."""
    from medsynth_kohya.evaluation.fidelity import fidelity

    two = np.array([[0, 1], [2, 0]], dtype=np.float32)
    for real, synthetic in ((two, SYNTHETIC), (SYNTHETIC, two), (two, SYNTHETIC[:2])):
        result = fidelity(real, synthetic, k=5)
        assert (result.neighbours, result.n_real, result.n_synthetic) == (
            min(len(real), len(synthetic)) - 1, len(real), len(synthetic))
        assert (result.precision, result.recall) == (_coverage(real, synthetic, 1),
                                                     _coverage(synthetic, real, 1))
    assert fidelity(SYNTHETIC, REAL, k=5).neighbours == len(REAL) - 1
    for real, synthetic in ((REAL, SYNTHETIC[:1]), (REAL[:1], SYNTHETIC)):
        with pytest.raises(ValueError, match=r"^fidelity needs at least 2 real and 2 synthetic "
                                             r"images$"):
            fidelity(real, synthetic)


def test_kid_subsets_are_capped(monkeypatch: pytest.MonkeyPatch) -> None:
    from medsynth_kohya.evaluation import fidelity

    monkeypatch.setattr(fidelity, "KID_SUBSET_SIZE", 5)
    rng = np.random.default_rng(9)
    real, synthetic = rng.normal(size=(14, 2)), rng.normal(size=(12, 2))
    result = fidelity.fidelity(real.astype(np.float32), synthetic.astype(np.float32))
    assert result.kid_subset_size == 5 and result.kid_std is not None and result.kid_std > 0


def test_fid_is_the_formula_on_the_two_sets() -> None:
    """Two random sets of different means and covariances: FID is |mu1 - mu2|^2 +
    Tr(S1 + S2 - 2 (S1 S2)^1/2) with sample covariances (the trace of the root: the sum of the
    roots of S1 S2's eigenvalues)."""
    from medsynth_kohya.evaluation.fidelity import fidelity

    rng = np.random.default_rng(8)
    real = rng.normal(size=(30, 3)).astype(np.float32)
    synthetic = (rng.normal(size=(30, 3)) @ [[1, 0.5, 0], [0, 2, 0], [0, 0, 0.5]]
                 + [1, 0, -1]).astype(np.float32)
    a, b = real.astype(np.float64), synthetic.astype(np.float64)
    covariances = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root = np.sqrt(np.linalg.eigvals(covariances[0] @ covariances[1]).real).sum()
    fid = ((a.mean(axis=0) - b.mean(axis=0)) ** 2).sum() + np.trace(
        covariances[0] + covariances[1]) - 2 * root
    assert fidelity(real, synthetic).fid == pytest.approx(fid, rel=1e-4)
