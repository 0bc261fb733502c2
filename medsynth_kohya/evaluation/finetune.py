"""The fine-tuned classifier of `evaluate --classifier finetune` (torch; a GPU when present).

The feature network (`--features`: Inception by default) gets a linear melanoma head, first
fitted on its frozen features; then all layers are trained with random flips, class-balanced
loss and AdamW, afresh for every split and mix. Its inputs are decoded once into a file on
disk and read a batch at a time, so memory stays flat however many images there are.
"""

from __future__ import annotations

import copy
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from medsynth_kohya.evaluation.features import INPUT_SIDE, to_input

if TYPE_CHECKING:
    import numpy as np
    import torch
    from cv2.typing import MatLike
    from numpy.typing import NDArray

    from medsynth_kohya.evaluation.utility import Rows

EPOCHS = 5
BACKBONE_RATE = 1e-4
HEAD_RATE = 1e-3
WEIGHT_DECAY = 1e-4
_SHAPE = (3, INPUT_SIDE, INPUT_SIDE)


class InputStore:
    """Network inputs (uint8, channels first) appended to a temporary file, read back as a
    memory map: one row per image, none held in memory."""

    def __init__(self) -> None:
        self._folder = tempfile.TemporaryDirectory(prefix="medsynth-finetune-")
        self._path = Path(self._folder.name) / "inputs.u8"
        self._handle = self._path.open("wb")
        self._count = 0

    def __enter__(self) -> InputStore:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self._handle.close()
        self._folder.cleanup()

    def add(self, image: MatLike) -> None:
        """Append one BGR photo as the network's input."""
        self._handle.write(to_input(image).tobytes())
        self._count += 1

    def rows(self) -> NDArray[np.uint8]:
        """Every input so far, as a read-only (N, 3, side, side) memory map."""
        import numpy as np

        self._handle.flush()
        if not self._count:
            return np.zeros((0, *_SHAPE), dtype=np.uint8)
        return np.memmap(self._path, dtype=np.uint8, mode="r", shape=(self._count, *_SHAPE))


class FineTune:
    """A `utility.Classifier` that fine-tunes a copy of `network` with a new head per call."""

    def __init__(self, network: Any, device: str, *, epochs: int = EPOCHS,
                 batch_size: int = 32, on_fit: Callable[[], None] | None = None) -> None:
        self.network = network
        self.device = device
        self.epochs = epochs
        self.batch_size = batch_size
        self._on_fit = on_fit or (lambda: None)

    def __call__(self, train: Rows, targets: NDArray[np.int64], test: Rows,
                 seed: int) -> NDArray[np.float64]:
        """Fine-tune on `train`, return the melanoma probability of each row of `test`."""
        import numpy as np
        import torch

        torch.manual_seed(seed)
        rng = np.random.default_rng(seed)
        network = copy.deepcopy(self.network).requires_grad_(True)
        head, mean, std = self._probe(network, train, targets)
        optimiser = torch.optim.AdamW(
            [{"params": network.parameters(), "lr": BACKBONE_RATE},
             {"params": head.parameters(), "lr": HEAD_RATE}], weight_decay=WEIGHT_DECAY)
        positives = max(int(targets.sum()), 1)
        loss_of = torch.nn.BCEWithLogitsLoss(pos_weight=torch.tensor(
            (len(targets) - positives) / positives, device=self.device))
        network.train()
        for _ in range(self.epochs):
            for batch in np.array_split(rng.permutation(len(train)),
                                        -(-len(train) // self.batch_size)):
                outputs = network(_flipped(self._tensor(train.take(batch)), rng))
                logits = head((outputs.reshape(len(batch), -1) - mean) / std).squeeze(1)
                loss = loss_of(logits, torch.from_numpy(targets[batch]).float().to(self.device))
                optimiser.zero_grad()
                loss.backward()
                optimiser.step()
        network.eval()
        with torch.no_grad():
            scores = [torch.sigmoid(head((rows - mean) / std)).squeeze(1).double().cpu().numpy()
                      for rows in self._outputs(network, test)]
        self._on_fit()
        probability: NDArray[np.float64] = np.concatenate(scores)
        return probability

    def _probe(self, network: Any, train: Rows, targets: NDArray[np.int64]
               ) -> tuple[torch.nn.Linear, torch.Tensor, torch.Tensor]:
        """A linear head fitted on the network's frozen features, standardised by their mean
        and std (a linear probe first, then fine-tuning: Kumar et al. 2022)."""
        import torch
        from sklearn.linear_model import LogisticRegression

        network.eval()
        with torch.no_grad():
            frozen = torch.cat(list(self._outputs(network, train)))
        mean, std = frozen.mean(0), frozen.std(0, unbiased=False) + 1e-6
        probe = LogisticRegression(max_iter=2000, class_weight="balanced").fit(
            ((frozen - mean) / std).cpu().numpy(), targets)
        head = torch.nn.Linear(frozen.shape[1], 1).to(self.device)
        with torch.no_grad():
            head.weight.copy_(torch.from_numpy(probe.coef_))
            head.bias.copy_(torch.from_numpy(probe.intercept_))
        return head, mean, std

    def _outputs(self, network: Any, rows: Rows) -> Iterator[torch.Tensor]:
        """The network's feature rows for `rows`, a batch at a time."""
        for start in range(0, len(rows), self.batch_size):
            batch = range(start, min(start + self.batch_size, len(rows)))
            yield network(self._tensor(rows.take(batch))).reshape(len(batch), -1).float()

    def _tensor(self, rows: NDArray[np.uint8]) -> torch.Tensor:
        import torch

        return torch.from_numpy(rows).to(self.device)


def _flipped(batch: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """Each image mirrored horizontally and/or vertically at random (lesions have no up)."""
    import torch

    for axis in (2, 3):
        chosen = torch.from_numpy(rng.random(len(batch)) < 0.5).to(batch.device)
        batch = torch.where(chosen[:, None, None, None], batch.flip(axis), batch)
    return batch
