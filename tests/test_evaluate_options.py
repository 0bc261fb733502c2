"""evaluate's options: a skip reason that says why (--classifier none is not a missing package),
--threshold and --deep-threshold on their scales, --real and --lora not both."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from typer.testing import CliRunner

from medsynth_kohya.errors import UserError
from medsynth_kohya.evaluation import features
from medsynth_kohya.evaluation.evaluate import EvaluateOptions, evaluate

from .conftest import invoke
from .eval_data import isic_source, photo, synthetic_set


@pytest.fixture
def data(tmp_path: Path) -> tuple[Path, Path]:
    """A small ISIC-style source and a synthetic set of unrelated photos."""
    isic_source(tmp_path / "isic", 4, 4, seed=5)
    synthetic_set(tmp_path / "syn", [photo(9500 + i) for i in range(3)])
    return tmp_path / "isic", tmp_path / "syn"


def test_the_classifier_needs_scikit_learn_and_the_rest_does_not(
        monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("torch", "torchmetrics"):  # there, whether installed or not
        if name not in sys.modules:
            monkeypatch.setitem(sys.modules, name, ModuleType(name))
    monkeypatch.setitem(sys.modules, "sklearn", None)  # its import fails
    assert features.missing("pkg:factory") == ["scikit-learn"]
    assert features.missing("pkg:factory", False) == []


def test_classifier_none_is_said_as_such_without_the_extra(
        runner: CliRunner, data: tuple[Path, Path], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(features, "missing", lambda *_: ["torch-fidelity"])
    code, _, stderr = invoke(runner, "evaluate", "--real", data[0], "--synthetic", data[1],
                             "--out", tmp_path / "report", "--classifier", "none")
    assert code == 0, stderr
    sections = json.loads((tmp_path / "report" / "report.json").read_text(
        encoding="utf-8"))["sections"]
    assert sections["utility"] == {"skipped": "not asked for (--classifier none)"}
    assert sections["fidelity"]["skipped"].startswith("needs torch-fidelity")
    result = evaluate(data[0], data[1], tmp_path / "again", EvaluateOptions())
    row = next(r for r in result.verdict if r["check"] == "classifier utility")
    assert row["detail"].startswith("needs torch-fidelity")  # asked for: the package is why


@pytest.mark.parametrize(("args", "said"), [
    (["--threshold", "5"], "--threshold 5: give a hash distance from 0 to below 0.5"),
    (["--threshold", "0.5"], "--threshold 0.5: give a hash distance from 0 to below 0.5"),
    (["--threshold", "-0.01"], "--threshold -0.01: give a hash distance"),
    (["--deep-threshold", "1.5"], "--deep-threshold 1.5: give a cosine similarity above 0"),
    (["--deep-threshold", "0"], "--deep-threshold 0: give a cosine similarity above 0"),
    (["--lora", "{run}"], "give --real or --lora, not both"),
    (["--mix", ""], "--mix: give one or more ratios of 0 or more"),
    (["--mix", ","], "--mix: give one or more ratios of 0 or more"),
    (["--mix", "0,-1"], "--mix: give one or more ratios of 0 or more"),
    (["--mix", "nan"], "--mix: give one or more ratios of 0 or more"),
    (["--mix", "0,inf"], "--mix: give one or more ratios of 0 or more"),
    (["--batch-size", "0"], "--batch-size must be at least 1"),
    (["--batch-size", "-2"], "--batch-size must be at least 1"),
    (["--no-classifier", "--classifier", "logistic"],
     "--no-classifier and --classifier logistic contradict each other"),
])
def test_out_of_range_options_and_both_sources_are_one_line(
        runner: CliRunner, data: tuple[Path, Path], trained: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch, args: list[str], said: str) -> None:
    monkeypatch.setattr(features, "missing", lambda *_: ["torch"])
    code, stdout, stderr = invoke(runner, "evaluate", "--real", data[0], "--synthetic", data[1],
                                  "--out", tmp_path / "report",
                                  *[arg.format(run=trained) for arg in args])
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert code == 1 and "Traceback" not in stdout + stderr and len(lines) == 1, stderr
    assert lines[0].startswith(f"Error: {said}")
    assert not (tmp_path / "report").exists()


def test_a_threshold_on_its_scale_is_used(data: tuple[Path, Path], tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(features, "missing", lambda *_: ["torch"])
    result = evaluate(data[0], data[1], tmp_path / "report", EvaluateOptions(threshold=0.0))
    assert result.flagged == []
    assert "within 0 of a training photo" in result.verdict[0]["detail"]


def test_a_mistyped_lora_run_is_said_not_to_exist(runner: CliRunner, data: tuple[Path, Path],
                                                  tmp_path: Path) -> None:
    missing = tmp_path / "runs" / "nothere"
    code, stdout, stderr = invoke(runner, "evaluate", "--lora", missing, "--synthetic", data[1],
                                  "--out", tmp_path / "report")
    line = " ".join(stderr.split())
    assert code == 1 and "Traceback" not in stdout + stderr
    assert f"--lora {missing} does not exist" in line and "--real" in line
    assert not (tmp_path / "report").exists()


@pytest.mark.parametrize("spec", ["os:getcwd", "os:sep", "os:nothere", "no_such_module:x"])
def test_a_features_spec_that_names_no_network_is_one_line(spec: str) -> None:
    from medsynth_kohya.errors import UserError

    with pytest.raises(UserError, match=f"--features '{spec}'"):
        features.load_network(spec)


def needs_an_argument(width: int) -> Any:
    """A factory that cannot be called as --features calls it."""
    return width


def fails_to_build() -> Any:
    raise RuntimeError("no weights in ~/weights.pt")


def _network(forward: Callable[[Any], Any]) -> Any:
    """A torch module running `forward`."""
    import torch

    class Network(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> Any:
            return forward(x)

    return Network()


def fails_to_run() -> Any:
    def forward(x: Any) -> Any:
        raise ValueError("expected 224 x 224 inputs")

    return _network(forward)


def gives_one_row() -> Any:
    import torch

    return _network(lambda x: torch.zeros(1, 8))


def gives_a_tuple() -> Any:
    return _network(lambda x: (x,))


def gives_nan() -> Any:
    import torch

    return _network(lambda x: torch.full((len(x), 8), float("nan")))


def gives_infinity() -> Any:
    import torch

    return _network(lambda x: torch.cat([torch.ones(len(x), 7),
                                         torch.full((len(x), 1), float("inf"))], dim=1))


@pytest.mark.skipif(bool(features.missing("pkg:factory", False)),
                    reason="the eval extra is not installed")
@pytest.mark.parametrize(("factory", "said"), [
    ("needs_an_argument", "calling needs_an_argument() failed (TypeError: "),
    ("fails_to_build", "calling fails_to_build() failed (RuntimeError: no weights in "),
    ("fails_to_run", "the network failed on a batch of 4 images (ValueError: expected 224"),
    ("gives_one_row", "the network gave a tensor of shape (1, 8) for a batch of 4 images, not "
                      "one row of features per image"),
    ("gives_a_tuple", "the network gave a tuple for a batch of 4 images"),
    ("gives_nan", "the network gave NaN or infinite features, on which no figure means "
                  "anything: fix the network"),
    ("gives_infinity", "the network gave NaN or infinite features, on which no figure means "
                       "anything: fix the network"),
])
def test_a_features_network_that_fails_is_one_line_and_writes_nothing(
        runner: CliRunner, data: tuple[Path, Path], tmp_path: Path, factory: str,
        said: str) -> None:
    spec = f"{__name__}:{factory}"
    code, stdout, stderr = invoke(runner, "evaluate", "--real", data[0], "--synthetic", data[1],
                                  "--out", tmp_path / "report", "--features", spec,
                                  "--no-classifier")
    lines = [line for line in stderr.splitlines() if line.strip() and "━" not in line]
    assert code == 1 and "Traceback" not in stdout + stderr and len(lines) == 1, stderr
    assert f"--features '{spec}': {said}" in " ".join(lines[0].split())
    if "calling" in said:  # what the factory must be
        assert " ".join(lines[0].split()).endswith(
            "); it is called with no arguments and must return a torch.nn.Module")
    assert not (tmp_path / "report" / "report.json").exists()


@pytest.mark.parametrize("args", [["--no-classifier"], ["--no-classifier", "--classifier", "none"]])
def test_no_classifier_alone_or_agreeing_skips_the_classifier(
        runner: CliRunner, data: tuple[Path, Path], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch, args: list[str]) -> None:
    monkeypatch.setattr(features, "missing", lambda *_: ["torch"])
    code, _, stderr = invoke(runner, "evaluate", "--real", data[0], "--synthetic", data[1],
                             "--out", tmp_path / "report", *args)
    assert code == 0, stderr
    sections = json.loads((tmp_path / "report" / "report.json").read_text("utf-8"))["sections"]
    assert sections["utility"] == {"skipped": "not asked for (--classifier none)"}


def test_a_run_folder_given_as_real_data_points_to_lora(
        runner: CliRunner, data: tuple[Path, Path], trained: Path, tmp_path: Path) -> None:
    code, stdout, stderr = invoke(runner, "evaluate", "--real", trained, "--synthetic", data[1],
                                  "--out", tmp_path / "report")
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert code == 1 and "Traceback" not in stdout + stderr and len(lines) == 1, stderr
    assert f"give --lora {trained}" in " ".join(stderr.split())


def test_ctrl_c_says_the_evaluation_starts_over(
        runner: CliRunner, data: tuple[Path, Path], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    from medsynth_kohya.evaluation import sets

    def interrupt(path: Path) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(sets, "load_real", interrupt)
    code, _, stderr = invoke(runner, "evaluate", "--real", data[0], "--synthetic", data[1],
                             "--out", tmp_path / "report")
    said = " ".join(stderr.split())
    assert code == 130 and "start the evaluation over" in said
    assert "continue where it stopped" not in said


def test_a_report_stopped_while_written_is_never_taken_for_whole(
        data: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`evaluate --force` stopped between its files left the new report.json beside the old
    report's public page, which push --eval then published; its re-run asked for --force."""
    from medsynth_kohya.evaluation import report

    out = tmp_path / "report"
    first = evaluate(data[0], data[1], out, EvaluateOptions(classifier="none"))
    page = first.public_page.read_text(encoding="utf-8")
    synthetic_set(tmp_path / "other", [photo(9600 + i) for i in range(4)])
    render = report.render_html

    def stopped(document: Any, pairs: Any, public: bool) -> str:
        if public:
            raise KeyboardInterrupt
        return render(document, pairs, public=public)

    monkeypatch.setattr(report, "render_html", stopped)
    with pytest.raises(KeyboardInterrupt):
        evaluate(data[0], tmp_path / "other", out, EvaluateOptions(classifier="none",
                                                                    force=True))
    assert not (out / "report.json").exists() and first.public_page.read_text(
        encoding="utf-8") == page
    with pytest.raises(UserError, match=r"holds no report\.json"):  # what push --eval reads
        report.read(out)
    monkeypatch.setattr(report, "render_html", render)
    again = evaluate(data[0], tmp_path / "other", out, EvaluateOptions(classifier="none"))
    assert json.loads((out / "report.json").read_text(encoding="utf-8"))["inputs"][
        "n_synthetic"] == 4 and again.public_page.read_text(encoding="utf-8") != page
