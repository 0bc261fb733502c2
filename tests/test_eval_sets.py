"""How `evaluate` reads its two image sets and its feature network, as a user meets them:
files that are no image or are cut short, sets with nothing usable, networks that are none."""

from __future__ import annotations

import json
import urllib.error
from pathlib import Path
from typing import Any

import cv2
import pytest
from typer.testing import CliRunner

from medsynth_kohya.evaluation import features
from medsynth_kohya.evaluation.evaluate import evaluate

from .conftest import invoke
from .eval_data import isic_source, photo, synthetic_set

TINY = "tests.eval_data:build"
needs_torch = pytest.mark.skipif(bool(features.missing(TINY, False)),
                                 reason="the eval extra (torch, torchmetrics) is not installed")


@pytest.fixture
def data(tmp_path: Path) -> tuple[dict[str, Path], list[str]]:
    """An ISIC-style source at tmp_path/isic (4 melanomas, 3 others) and a synthetic set of 3
    unrelated photos at tmp_path/syn: (real id -> photo, synthetic ids)."""
    real = isic_source(tmp_path / "isic", 4, 3, seed=3)
    return real, synthetic_set(tmp_path / "syn", [photo(9300 + i) for i in range(3)])


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Evaluate without the feature network (copies and adherence only), as without torch."""
    monkeypatch.setattr(features, "missing", lambda *_: ["torch"])


def _cut(kind: str) -> bytes:
    """The first 20 bytes of a photo saved as `kind`: a header that ends before the size it
    announces (a download cut short)."""
    ok, data = cv2.imencode(f".{kind}", photo(1))
    assert ok
    return data.tobytes()[:20]


@pytest.mark.parametrize("kind", ["bmp", "tiff", "webp"])
def test_a_photo_cut_inside_its_header_is_undecodable_on_either_side(
        tmp_path: Path, data: tuple[dict[str, Path], list[str]], kind: str,
        no_network: None) -> None:
    real, synthetic = data
    cut_real = sorted(real)[0]  # a melanoma: a training photo
    real[cut_real].write_bytes(_cut(kind))
    (tmp_path / "syn" / "images" / f"{synthetic[1]}.png").write_bytes(_cut(kind))
    result = evaluate(tmp_path / "isic", tmp_path / "syn", tmp_path / "report")
    assert sorted((s["set"], s["id"], s["reason"]) for s in result.skipped) == [
        ("real", cut_real, "undecodable"), ("synthetic", synthetic[1], "undecodable")]
    document = json.loads((tmp_path / "report" / "report.json").read_text(encoding="utf-8"))
    assert document["inputs"]["n_synthetic"] == len(synthetic) - 1


class _Lookalike:
    """Not a torch module, though it has `eval` as a module has."""

    def eval(self) -> _Lookalike:
        return self


def gives_a_lookalike() -> _Lookalike:
    return _Lookalike()


def gives_a_lookalike_of_nothing() -> Any:
    class Quiet:
        def eval(self) -> None:
            return None

    return Quiet()


@needs_torch
@pytest.mark.parametrize(("factory", "gave"), [("gives_a_lookalike", "_Lookalike"),
                                               ("gives_a_lookalike_of_nothing", "Quiet")])
def test_a_factory_of_something_with_eval_that_is_no_torch_module_is_one_line(
        runner: CliRunner, tmp_path: Path, data: tuple[dict[str, Path], list[str]],
        factory: str, gave: str) -> None:
    spec = f"{__name__}:{factory}"
    code, stdout, stderr = invoke(runner, "evaluate", "--real", tmp_path / "isic", "--synthetic",
                                  tmp_path / "syn", "--out", tmp_path / "report", "--features",
                                  spec, "--no-classifier")
    line = " ".join(stderr.split())
    assert code == 1 and "Traceback" not in stdout + stderr, stderr
    assert (f"--features '{spec}' is not a factory of a torch network (it gave {gave})"
            in line)
    assert not (tmp_path / "report" / "report.json").exists()


@needs_torch
@pytest.mark.parametrize("failure", [
    urllib.error.URLError("[Errno -3] Temporary failure in name resolution"),
    RuntimeError("PytorchStreamReader failed reading zip archive: failed finding central "
                 "directory")])
def test_inception_weights_that_cannot_be_had_are_one_line_saying_what_to_do(
        runner: CliRunner, tmp_path: Path, data: tuple[dict[str, Path], list[str]],
        monkeypatch: pytest.MonkeyPatch, failure: Exception) -> None:
    """Offline on first use (the weights download) or a broken download in torch's cache."""
    import torch

    def unavailable(*_: Any, **__: Any) -> Any:
        raise failure

    monkeypatch.setattr(features, "missing", lambda *_: [])  # as with torch-fidelity installed
    monkeypatch.setattr("torchmetrics.image.fid.NoTrainInceptionV3", unavailable)
    code, stdout, stderr = invoke(runner, "evaluate", "--real", tmp_path / "isic", "--synthetic",
                                  tmp_path / "syn", "--out", tmp_path / "report",
                                  "--no-classifier")
    line = " ".join(stderr.split())
    assert code == 1 and "Traceback" not in stdout + stderr, stderr
    assert (f"the Inception network's weights could not be loaded ({type(failure).__name__}: "
            f"{str(failure).splitlines()[0]})") in line
    assert str(Path(torch.hub.get_dir()) / "checkpoints") in line and "--features" in line
    assert not (tmp_path / "report" / "report.json").exists()
