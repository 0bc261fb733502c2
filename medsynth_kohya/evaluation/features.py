"""Frozen-network features of images, in batches, for fidelity and the classifier (torch).

The default network is the Inception-v3 that FID is defined on (torchmetrics' port of the
torch-fidelity weights, downloaded on first use). `module:factory` names any other: a callable
returning a torch module that maps a uint8 RGB batch (N, 3, 299, 299) to (N, D) features;
what that user code raises or returns amiss is a one-line UserError naming it.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medsynth_kohya.errors import UserError

if TYPE_CHECKING:
    import numpy as np
    from cv2.typing import MatLike
    from numpy.typing import NDArray

INCEPTION = "inception"
INPUT_SIDE = 299
INSTALL = "pip install 'medsynth-kohya[eval]'"
_NEEDED = ("torch", "torchmetrics")
_CLASSIFIER = "sklearn"
"""Needed by section 4's classifier only."""
_PACKAGE = {"sklearn": "scikit-learn", "torch_fidelity": "torch-fidelity"}
"""The pip name of each module whose import name differs."""


def missing(spec: str = INCEPTION, classifier: bool = True) -> list[str]:
    """The packages of the `eval` extra that this Python lacks to use the network `spec`, and
    with `classifier` to train section 4's (empty when all are there): the Inception network's
    weights come with torch-fidelity, the classifier with scikit-learn."""
    absent = []
    needed = (*_NEEDED, *((_CLASSIFIER,) if classifier else ()),
              *(("torch_fidelity",) if spec == INCEPTION else ()))
    for name in needed:
        try:
            importlib.import_module(name)
        except ImportError:
            absent.append(_PACKAGE.get(name, name))
    return absent


def factory_of(spec: str) -> Any:
    """What a MODULE:FACTORY `spec` names, imported but not called (so --dry-run can check
    it); one that names nothing is a one-line UserError."""
    module_name, _, factory_name = spec.partition(":")
    if not factory_name:
        raise UserError(f"--features {spec!r}: give 'inception' or MODULE:FACTORY")
    try:
        return getattr(importlib.import_module(module_name), factory_name)
    except (ImportError, AttributeError) as exc:
        raise UserError(f"--features {spec!r} cannot be loaded: {exc}") from None


def load_network(spec: str) -> Any:
    """The torch module named by `spec` (`inception` or `module:factory`), in eval mode."""
    import torch

    if spec == INCEPTION:
        try:
            from torchmetrics.image.fid import NoTrainInceptionV3

            network: Any = NoTrainInceptionV3(name="inception-v3-compat",
                                              features_list=["2048"])
        except ModuleNotFoundError as exc:
            raise UserError(f"the Inception network needs torch-fidelity ({exc}): "
                            f"{INSTALL}") from None
        except (OSError, RuntimeError) as exc:  # offline first use, a broken download
            cache = Path(torch.hub.get_dir()) / "checkpoints"
            raise UserError(f"the Inception network's weights could not be loaded ({_said(exc)}):"
                            " they are downloaded on first use, so connect to the internet once "
                            f"or remove a broken download from {cache}; or give --features "
                            "MODULE:FACTORY") from None
        return network.eval()
    factory = factory_of(spec)
    factory_name = spec.partition(":")[2]
    try:
        network = factory() if callable(factory) else None
    except Exception as exc:  # the user's own code: whatever it raises is theirs to fix
        raise UserError(f"--features {spec!r}: calling {factory_name}() failed ({_said(exc)}); "
                        "it is called with no arguments and must return a torch.nn.Module"
                        ) from None
    if not isinstance(network, torch.nn.Module):
        raise UserError(f"--features {spec!r} is not a factory of a torch network (it gave "
                        f"{type(network).__name__}): name a function that returns a "
                        "torch.nn.Module")
    return network.eval()


def _said(exc: Exception) -> str:
    """An exception as one line: its type and the first line of its message."""
    message = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {message[0]}" if message else type(exc).__name__


def to_input(image: MatLike) -> MatLike:
    """A BGR photo as the network's input: RGB, INPUT_SIDE square, channels first."""
    import cv2
    import numpy as np

    resized = cv2.resize(image, (INPUT_SIDE, INPUT_SIDE), interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(resized[:, :, ::-1].transpose(2, 0, 1))


class Extractor:
    """A network on the GPU when there is one, and the batch size it runs at."""

    def __init__(self, spec: str = INCEPTION, batch_size: int = 32) -> None:
        import torch

        self.spec = spec
        self.batch_size = batch_size
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.network = load_network(spec).to(self.device)

    def stream(self) -> FeatureStream:
        """An accumulator that runs the network each time a batch fills."""
        return FeatureStream(self)

    def rows(self, batch: list[MatLike]) -> NDArray[np.float32]:
        """The network's feature row of each input of `batch`; a one-line UserError naming the
        network when it fails, gives other than one row per input, or a NaN or infinity (which
        would make every figure on them NaN, and report.json invalid JSON)."""
        import numpy as np
        import torch

        count = len(batch)
        with torch.no_grad():
            tensor = torch.from_numpy(np.stack(batch)).to(self.device)
            try:
                output = self.network(tensor)
            except Exception as exc:  # the user's own network: whatever it raises is theirs
                raise UserError(f"--features {self.spec!r}: the network failed on a batch of "
                                f"{count} images ({_said(exc)})") from None
        if (not isinstance(output, torch.Tensor) or output.ndim == 0 or output.numel() == 0
                or output.shape[0] != count):
            got = (f"a tensor of shape {tuple(output.shape)}" if isinstance(output, torch.Tensor)
                   else f"a {type(output).__name__}")
            raise UserError(f"--features {self.spec!r}: the network gave {got} for a batch of "
                            f"{count} images, not one row of features per image (N, D)")
        rows: NDArray[np.float32] = output.reshape(count, -1).float().cpu().numpy()
        if not np.isfinite(rows).all():
            raise UserError(f"--features {self.spec!r}: the network gave NaN or infinite "
                            "features, on which no figure means anything: fix the network")
        return rows


class FeatureStream:
    """Images in, one feature row each out; holds at most one batch of images at a time."""

    def __init__(self, extractor: Extractor) -> None:
        self._extractor = extractor
        self._batch: list[MatLike] = []
        self._rows: list[NDArray[np.float32]] = []

    def add(self, image: MatLike) -> None:
        """Queue a BGR photo; the network runs when the batch is full."""
        self._batch.append(to_input(image))
        if len(self._batch) == self._extractor.batch_size:
            self._flush()

    def _flush(self) -> None:
        if not self._batch:
            return
        self._rows.append(self._extractor.rows(self._batch))
        self._batch.clear()

    def result(self) -> NDArray[np.float32]:
        """Every row so far, in the order the images were added."""
        import numpy as np

        self._flush()
        if not self._rows:
            return np.zeros((0, 0), dtype=np.float32)
        return np.concatenate(self._rows)
