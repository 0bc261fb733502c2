"""evaluate --dry-run: what would be read and computed, refused where a run would be refused,
with no image decoded and nothing written."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from medsynth_kohya.errors import UserError
from medsynth_kohya.evaluation import evaluate as module
from medsynth_kohya.evaluation import features, sets
from medsynth_kohya.evaluation.evaluate import EvaluateOptions, evaluate, plan

from .conftest import invoke, one_line_error
from .eval_data import isic_source, photo, synthetic_set

TINY = "tests.eval_data:build"
needs_eval = pytest.mark.skipif(bool(features.missing(TINY)), reason="the eval extra (torch, "
                                "torchmetrics, scikit-learn) is not installed")


@pytest.fixture
def data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """A source of 5 melanomas and 7 other lesions, a synthetic set of 3 photos (one row
    without its file), and a decoder that fails the test if anything is decoded."""
    isic_source(tmp_path / "isic", 5, 7, seed=5)
    synthetic_set(tmp_path / "syn", [photo(9500 + i) for i in range(4)])
    (tmp_path / "syn" / "images" / "SYN_0000003.png").unlink()

    def decoded(*_: object) -> None:
        raise AssertionError("a dry run decoded an image")

    monkeypatch.setattr(sets, "decoded", decoded)
    return tmp_path / "isic", tmp_path / "syn"


def _rows(found: module.EvaluatePlan) -> dict[str, str]:
    return dict(found.rows)


def test_it_counts_the_sets_and_writes_nothing(data: tuple[Path, Path], tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(features, "missing", lambda *_: ["torch-fidelity"])
    out = tmp_path / "new" / "report"
    rows = _rows(plan(data[0], data[1], out, EvaluateOptions()))
    assert rows["real data"].endswith("5 training photos")
    assert rows["synthetic set"].endswith(
        "3 synthetic images (1 row of metadata.csv without an image file left out)")
    assert rows["fidelity (FID/KID)"].startswith("skipped: needs torch-fidelity")
    assert rows["classifier utility"].startswith("skipped: needs torch-fidelity")
    assert rows["writes"].startswith(str(out / "report.html"))
    assert not (tmp_path / "new").exists()


@needs_eval
@pytest.mark.parametrize(("classifier", "said"), [
    ("logistic", "6 logistic regressions on frozen tests.eval_data:build features: mixes 0, 1, "
                 "2 x 2 patient splits, on 12 real photos (5 melanomas)"),
    ("finetune", "6 fine-tunings of the tests.eval_data:build network, 3 epochs each, on "),
    ("none", "skipped: not asked for (--classifier none)")])
def test_the_classifier_row_counts_its_fits(data: tuple[Path, Path], tmp_path: Path,
                                            classifier: str, said: str) -> None:
    rows = _rows(plan(data[0], data[1], tmp_path / "r", EvaluateOptions(
        features=TINY, mixes=(2.0, 1.0), repeats=2, epochs=3, classifier=classifier)))
    assert rows["classifier utility"].startswith(said)
    assert rows["fidelity (FID/KID)"].startswith(f"{TINY} features of both sets on ")


@needs_eval
def test_the_classifier_reads_at_most_max_labelled_photos(data: tuple[Path, Path],
                                                          tmp_path: Path) -> None:
    rows = _rows(plan(data[0], data[1], tmp_path / "r", EvaluateOptions(
        features=TINY, max_labelled=8)))
    assert rows["classifier utility"].endswith("on 8 real photos (5 melanomas)")


def test_what_a_run_refuses_the_dry_run_refuses(data: tuple[Path, Path], tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(features, "missing", lambda *_: [])
    with pytest.raises(UserError, match="cannot be loaded"):
        plan(data[0], data[1], tmp_path / "r", EvaluateOptions(features="tests.eval_data:nope"))
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "notes.txt").write_text("mine", encoding="utf-8")
    with pytest.raises(UserError, match="holds files evaluate did not write"):
        plan(data[0], data[1], tmp_path / "taken", EvaluateOptions(features=TINY))
    (tmp_path / "afile").write_text("x", encoding="utf-8")
    with pytest.raises(UserError, match=r"--out .*afile is a file, not a folder"):
        plan(data[0], data[1], tmp_path / "afile", EvaluateOptions(features=TINY))
    with pytest.raises(UserError, match=r"give --real \(an ISIC source or a prepared "
                                        r"folder\) or --lora RUN"):
        plan(None, data[1], tmp_path / "r")
    with pytest.raises(UserError, match="--repeats must be at least 1"):
        plan(data[0], data[1], tmp_path / "r", EvaluateOptions(repeats=0))


@needs_eval
def test_an_earlier_report_is_refused_without_force(data: tuple[Path, Path], tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.undo()  # the report is written for real first
    isic, syn = data
    evaluate(isic, syn, tmp_path / "r", EvaluateOptions(features=TINY, classifier="none"))
    with pytest.raises(UserError, match="already holds a report; add --force"):
        plan(isic, syn, tmp_path / "r", EvaluateOptions(features=TINY))
    assert _rows(plan(isic, syn, tmp_path / "r", EvaluateOptions(features=TINY, force=True)))


def test_the_cli_prints_the_plan_and_exits_0(runner: CliRunner, data: tuple[Path, Path],
                                             tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(features, "missing", lambda *_: ["torch"])
    code, stdout, stderr = invoke(runner, "evaluate", "--real", data[0], "--synthetic", data[1],
                                  "-o", tmp_path / "r", "--dry-run")
    assert code == 0, stderr
    assert "evaluate --dry-run" in stdout and "nothing written" in stdout
    assert "5 training photos" in stdout
    assert not (tmp_path / "r").exists()
    line = one_line_error(*invoke(runner, "evaluate", "--real", data[0], "--synthetic",
                                  data[1], "-o", tmp_path / "r", "--dry-run", "--mix", "x"))
    assert "--mix 'x': give ratios like 0,0.5,1,2" in line
