"""The command line itself: version, help, lazy imports, the demo."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from medsynth_kohya import __version__

from .conftest import invoke, squeezed


def test_version(runner: CliRunner) -> None:
    code, stdout, _ = invoke(runner, "--version")
    assert code == 0 and stdout.strip() == f"medsynth-kohya {__version__}"


def test_help_lists_commands_and_teaches(runner: CliRunner) -> None:
    code, stdout, _ = invoke(runner, "--help")
    assert code == 0
    for command in ("prepare", "demo"):
        assert command in stdout
    code, stdout, _ = invoke(runner, "prepare", "--help")
    assert code == 0
    for option in ("--out", "--hair", "--target-steps", "--val-frac", "--force", "train.csv"):
        assert option in stdout


def test_prepare_help_names_every_layout_it_detects(runner: CliRunner) -> None:
    """SOURCE's help lists each download prepare reads, by the CSV it looks for."""
    code, stdout, _ = invoke(runner, "prepare", "--help")
    assert code == 0
    for name in ("train.csv", "ISIC_2020_Training_GroundTruth", "(ISIC2020)",
                 "ISIC_2019_Training_GroundTruth.csv", "(ISIC2019)",
                 "ISIC2018_Task3_Training_GroundTruth.csv", "(ISIC2018task3)",
                 "HAM10000_metadata.csv", "train-metadata.csv", "(ISIC2024)",
                 "ISIC-2017_Training_Part3_GroundTruth.csv", "(ISIC2017)",
                 "ISBI2016_ISIC_Part3_Training_GroundTruth.csv", "(ISIC2016)",
                 "metadata.csv(anISICArchiveexport)"):
        assert name in squeezed(stdout), name


def test_help_imports_no_heavy_module() -> None:
    code = ("import sys; from medsynth_kohya.cli import app; "
            "from typer.testing import CliRunner; CliRunner().invoke(app, ['--help']); "
            "print(sorted(m for m in ('pandas', 'cv2', 'numpy', 'huggingface_hub', 'torch', "
            "'toml', 'isic_metadata', 'pydantic') if m in sys.modules))")
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True).stdout.strip()
    assert output == "[]"


def test_every_command_s_function_is_importable_from_the_package() -> None:
    """`from medsynth_kohya import <command>` gives the plain function the CLI calls, for
    every command the CLI has, without importing it before it is asked for."""
    import medsynth_kohya
    from medsynth_kohya.cli import app

    names = {command.name or command.callback.__name__ for command in app.registered_commands
             if command.callback is not None}
    assert {"prepare", "train", "sample", "push", "evaluate", "fetch-isic"} <= names
    for name in names:
        function = getattr(medsynth_kohya, name.replace("-", "_"))
        assert callable(function) and not isinstance(function, type(medsynth_kohya)), name
        assert name.replace("-", "_") in medsynth_kohya.__all__
    code = ("import sys, medsynth_kohya; print(any(m.startswith(('medsynth_kohya.data', "
            "'medsynth_kohya.training', 'pandas', 'cv2')) for m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True)
    assert result.stdout.strip() == "False"
    with pytest.raises(AttributeError, match="no_such_command"):
        medsynth_kohya.no_such_command  # noqa: B018


def test_console_script_runs() -> None:
    result = subprocess.run([sys.executable, "-m", "medsynth_kohya", "--version"],
                            capture_output=True, text=True, check=True)
    assert __version__ in result.stdout


def test_demo_prepares_synthetic_data(runner: CliRunner, tmp_path: Path) -> None:
    code, stdout, stderr = invoke(runner, "demo", "--out", tmp_path / "demo", "--n", 10)
    assert code == 0, stderr
    prepared = tmp_path / "demo" / "prepared"
    assert (prepared / "manifest.csv").is_file() and (prepared / "dataset.toml").is_file()
    assert list((prepared / "img").glob("*_melanoma/*.txt"))
    source = tmp_path / "demo" / "source"
    assert (source / "SYNTHETIC.txt").is_file()
    assert all(p.name.startswith("SYN_") for p in (source / "train").iterdir())
    assert b"SYNTHETIC" in next((source / "train").iterdir()).read_bytes()[:200]
    assert "selected and prepared" in stdout
    run = tmp_path / "demo" / "run"
    assert (run / "config.toml").is_file() and (run / "dataset.toml").is_file()
    assert "sdxl_train_network.py --config_file" in stdout and str(run / "config.toml") in stdout
    code, again, stderr = invoke(runner, "demo", "--out", tmp_path / "demo", "--n", 10)
    assert code == 0, stderr
    assert "selected and prepared" in again, "a second demo into its own folder runs again"


@pytest.mark.parametrize("option", [("--seed", -1), ("--n", 3)])
def test_demo_options_are_checked_in_one_line(runner: CliRunner, tmp_path: Path,
                                              option: tuple[str, int]) -> None:
    code, stdout, stderr = invoke(runner, "demo", "--out", tmp_path / "demo", *option)
    assert code == 1 and "Traceback" not in stdout + stderr
    assert f"{option[0]} must be" in stderr and f"(got {option[1]})" in stderr
    assert not (tmp_path / "demo").exists()


@pytest.mark.parametrize("mine", ["source/train.csv", "notes.txt", "source/SYNTHETIC.txt"])
def test_demo_never_writes_into_a_folder_it_did_not_make(runner: CliRunner, tmp_path: Path,
                                                         mine: str) -> None:
    """The user's own folder (even one with a SYNTHETIC.txt of theirs) is refused before any
    file of it is replaced; too few photos is refused before anything is written."""
    from .disk import checksums

    out = tmp_path / "mine"
    (out / mine).parent.mkdir(parents=True, exist_ok=True)
    (out / mine).write_text("the user's own file", encoding="utf-8")
    before = checksums(out)
    code, _, stderr = invoke(runner, "demo", "--out", out, "--n", 10)
    assert code == 1 and "was not made by medsynth-kohya demo" in stderr, stderr
    assert checksums(out) == before
    code, _, stderr = invoke(runner, "demo", "--out", tmp_path / "few", "--n", 3)
    assert code == 1 and "--n must be 8 to 10,000 (got 3)" in stderr
    assert not (tmp_path / "few").exists()


def test_demo_continues_after_being_stopped_while_it_generated(runner: CliRunner,
                                                               tmp_path: Path) -> None:
    """The generator writes its SYNTHETIC.txt first, so a demo stopped half-way is its own."""
    from medsynth_kohya.data.synth import NOTE, NOTE_FILE

    source = tmp_path / "demo" / "source"
    (source / "train").mkdir(parents=True)
    (source / NOTE_FILE).write_text(NOTE, encoding="utf-8")
    (source / "train" / "SYN_00000000.jpg").write_bytes(b"half written")
    code, stdout, stderr = invoke(runner, "demo", "--out", tmp_path / "demo", "--n", 8)
    assert code == 0 and "selected and prepared" in stdout, stderr


def test_progress_bars_leave_no_blank_lines_off_a_terminal(runner: CliRunner,
                                                          tmp_path: Path) -> None:
    """rich's stop prints a line break off a terminal each time it is called: a bar never
    shown, or stopped twice, left a blank line in logs and piped output."""
    out = tmp_path / "demo"
    code, _, stderr = invoke(runner, "demo", "--out", out, "--n", 8)
    assert code == 0 and "checking images" in stderr and "drawing photos" in stderr, stderr
    assert all(line.strip() for line in stderr.splitlines()), stderr
    code, _, stderr = invoke(runner, "train", out / "prepared", "--run-dir", tmp_path / "run",
                                "--dry-run")
    assert code == 0 and "Warning:" in stderr, stderr
    assert all(line.strip() for line in stderr.splitlines()), stderr


def test_a_demo_refuses_a_folder_another_demo_is_writing(runner: CliRunner,
                                                         tmp_path: Path) -> None:
    """Two demos into one --out mixed their photos: the second is refused at once, and not
    told that a --force it does not have would not help."""
    from medsynth_kohya import locks

    out = tmp_path / "demo"
    code, _, stderr = invoke(runner, "demo", "--out", out, "--n", 8)
    assert code == 0, stderr
    before = sorted(p.name for p in (out / "source" / "train").iterdir())
    with locks.hold(out, "demo"):
        code, _, stderr = invoke(runner, "demo", "--out", out, "--n", 12, "--seed", 7)
    said = " ".join(stderr.split())
    assert code == 1 and f"{out} is in use by `medsynth-kohya demo`" in said
    assert said.rstrip().endswith("then run this again") and "--force" not in said, said
    assert sorted(p.name for p in (out / "source" / "train").iterdir()) == before


@pytest.mark.parametrize(("status", "code"), [("failed", 1), ("interrupted", 130)])
def test_a_demo_whose_training_did_not_finish_exits_non_zero_saying_so(
        runner: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, status: str,
        code: int) -> None:
    """It printed 'Training failed: …' and exited 0, its warnings unshown."""
    from dataclasses import replace

    from medsynth_kohya.pipeline import demo

    planned = demo.run_demo(tmp_path / "demo", n=8, workers=1)
    stopped = replace(planned.training, status=status, message="sd-scripts exited with 1",
                      log=tmp_path / "demo" / "run" / "train.log", warnings=("a warning",))
    monkeypatch.setattr(demo, "run_demo", lambda *a, **k: replace(planned, training=stopped))
    exit_code, stdout, stderr = invoke(runner, "demo", "--out", tmp_path / "demo", "--n", 8)
    said = " ".join(stderr.split())
    assert exit_code == code, stdout + stderr
    assert "Warning: a warning" in said
    assert said.endswith(f"Error: training {status}: sd-scripts exited with 1 (log: "
                         f"{tmp_path / 'demo' / 'run' / 'train.log'}); "
                         f"{'' if status == 'interrupted' else 'see the log, then '}run the "
                         "same demo again to go on from its last saved state (or over, if it "
                         "saved none)"), said


def test_a_demo_that_trained_for_real_goes_on_from_its_run(tmp_path: Path) -> None:
    """A re-run resumed nothing: train refused 'already holds a succeeded run … --force',
    options demo does not have. A run that trained is resumed (one that finished, only reported);
    a dry run's record, or none, starts afresh."""
    import json

    from medsynth_kohya.pipeline.demo import AFRESH, FINISHED, OVER, RESUME, _earlier
    from medsynth_kohya.sdscripts import launch

    run = tmp_path / "run"
    assert _earlier(tmp_path, "melanoma") == AFRESH
    run.mkdir()
    for status, how in (("dry-run", AFRESH), ("succeeded", FINISHED), ("running", RESUME),
                        ("interrupted", OVER), ("failed", OVER)):
        (run / "run.json").write_text(json.dumps({"status": status}), encoding="utf-8")
        assert _earlier(tmp_path, "melanoma") == how, status
    state = run / "output" / "melanoma-step00000100-state"
    state.mkdir(parents=True)
    (state / "train_state.json").write_text(json.dumps({"current_step": 100}), encoding="utf-8")
    (state / launch.STATE_WRITTEN_LAST).write_bytes(b"")
    assert _earlier(tmp_path, "melanoma") == RESUME
    (run / "run.json").write_text("{oops", encoding="utf-8")
    assert _earlier(tmp_path, "melanoma") == AFRESH


@pytest.mark.parametrize("mode", ["crash", "final-save-fails"])
def test_a_demo_that_left_no_state_to_go_on_from_trains_over_when_run_again(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mode: str) -> None:
    """The demo's run saves once, at its end: one stopped or failed before that left nothing
    to resume, and one whose final LoRA's save then failed left a state at its last step,
    which sd-scripts cannot go on from; every re-run was refused ('no saved training state'
    or 'at step N of N', each with '--resume --force', options demo lacks)."""
    from medsynth_kohya.pipeline import demo

    from .fake_gen import PYTHON, install_gpus, make_fake_gen

    fake = make_fake_gen(tmp_path / "fake", monkeypatch)
    install_gpus(fake, tmp_path / "fake", monkeypatch, 1)
    monkeypatch.setenv("MEDSYNTH_SD_SCRIPTS", str(fake.sd_scripts))
    monkeypatch.setenv("MEDSYNTH_SD_PYTHON", PYTHON)
    monkeypatch.setattr(demo, "base_model_cached", lambda *_: True)
    monkeypatch.setenv("FAKE_SD_MODE", mode)
    out = tmp_path / "demo"
    assert demo.run_demo(out, n=8, workers=1).training.status == "failed"
    monkeypatch.setenv("FAKE_SD_MODE", "normal")
    again = demo.run_demo(out, n=8, workers=1)
    assert again.training.status == "succeeded", again.training.message
    assert again.training.warnings[0] == (f"the earlier training in {out / 'run'} stopped "
                                          "leaving no state to go on from: it started over")
    assert (out / "run" / "output" / "melanoma.safetensors").is_file()
    assert demo.run_demo(out, n=8, workers=1).training.status == "succeeded"


def test_a_demo_of_other_photos_is_refused_where_its_run_trained_for_real(
        runner: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--seed 7 redrew the photos a trained run was made on, then stopped on train's '--run-dir
    … --force', options demo lacks; the run could no longer be evaluated. It now refuses first,
    naming the run's options; the same options go on, and a dry run's demo redraws."""
    from medsynth_kohya.errors import UserError
    from medsynth_kohya.pipeline import demo

    from .conftest import one_line_error
    from .disk import checksums
    from .fake_gen import PYTHON, install_gpus, make_fake_gen

    planned = tmp_path / "planned"
    demo.run_demo(planned, n=8, workers=1)
    assert demo.run_demo(planned, n=9, seed=7, workers=1).source.frame["image_name"].iloc[0] \
        == "SYN_00700000"
    fake = make_fake_gen(tmp_path / "fake", monkeypatch)
    install_gpus(fake, tmp_path / "fake", monkeypatch, 1)
    monkeypatch.setenv("MEDSYNTH_SD_SCRIPTS", str(fake.sd_scripts))
    monkeypatch.setenv("MEDSYNTH_SD_PYTHON", PYTHON)
    monkeypatch.setattr(demo, "base_model_cached", lambda *_: True)
    out = tmp_path / "demo"
    assert demo.run_demo(out, n=8, seed=3, workers=1).training.status == "succeeded"
    before = checksums(out)
    said = (f"{out / 'run'} trained on the photos of another demo (--n 8 --seed 3), which "
            "--n {n} --seed {seed} would redraw; run demo with --n 8 --seed 3 to go on from "
            "that training, or choose another --out")
    for n, seed in ((8, 7), (9, 3)):
        with pytest.raises(UserError) as refused:
            demo.run_demo(out, n=n, seed=seed, workers=1)
        assert str(refused.value) == said.format(n=n, seed=seed)
        assert checksums(out) == before
    line = one_line_error(*invoke(runner, "demo", "--out", out, "--n", 8, "--seed", 7))
    assert line == "Error: " + said.format(n=8, seed=7)
    assert checksums(out) == before
    assert demo.run_demo(out, n=8, seed=3, workers=1).training.status == "succeeded"


@pytest.mark.parametrize("status", ["succeeded", "failed"])
def test_a_demo_that_cannot_train_leaves_a_run_trained_for_real_alone(
        runner: CliRunner, tmp_path: Path, status: str) -> None:
    """After `train OUT/prepared --run-dir OUT/run` on a GPU machine, the same demo on one that
    cannot train stopped on train's 'already holds a succeeded run … --force', an option demo
    lacks. It now refuses before writing anything, saying the run is kept and what to do."""
    from dataclasses import replace

    from medsynth_kohya.training.record import RunFolder

    from .conftest import one_line_error
    from .disk import checksums

    out = tmp_path / "demo"
    code, _, stderr = invoke(runner, "demo", "--out", out, "--n", 8)
    assert code == 0, stderr
    run = RunFolder(out / "run")
    run.save(replace(run.load(), status=status))  # as a real training records its end
    before = checksums(out)
    line = one_line_error(*invoke(runner, "demo", "--out", out, "--n", 8))
    what = ("run this demo again on a machine that can train, to go on from it"
            if status != "succeeded" else
            f"sample it (`medsynth-kohya sample --lora {out / 'run'}`), push it "
            f"(`medsynth-kohya push {out / 'run'} --repo-id USER/REPO`)")
    assert line == (f"Error: {out / 'run'} holds a real training ({status}), which demo keeps: "
                    "this machine cannot train (no CUDA GPU) and would only render a dry run "
                    f"over it; {what}, or choose another --out"), line
    assert checksums(out) == before


def test_a_demo_run_again_reuses_its_scans_and_drops_photos_of_another_n(
        tmp_path: Path) -> None:
    """Each run rewrote every photo, byte for byte, with a new time, so prepare scanned them all
    again; a smaller --n left the earlier photos, listed as skipped for having no row."""
    from medsynth_kohya.pipeline.demo import run_demo

    out = tmp_path / "demo"
    drawn: list[tuple[int, int]] = []
    first = run_demo(out, n=12, workers=1, on_draw=lambda done, total: drawn.append((done, total)))
    assert drawn[-1] == (12, 12) and len(drawn) == 12
    again = run_demo(out, n=12, workers=1)
    assert again.prepared.reused == first.prepared.scanned and again.prepared.scanned == 0
    fewer = run_demo(out, n=9, workers=1)
    assert sorted(p.stem for p in (out / "source" / "train").iterdir()) == sorted(
        fewer.source.frame["image_name"])
    skipped = (out / "prepared" / "skipped.csv").read_text(encoding="utf-8")
    assert "no metadata row" not in skipped


def test_a_folder_holding_only_a_hidden_file_is_refused_naming_it(runner: CliRunner,
                                                                  tmp_path: Path) -> None:
    """Finder's .DS_Store alone makes a folder 'not empty': the refusal names it."""
    out = tmp_path / "mine"
    out.mkdir()
    (out / ".DS_Store").write_bytes(b"\0")
    for command in (("demo", "--out", out, "--n", 8), ("prepare", tmp_path, "--out", out)):
        code, _, stderr = invoke(runner, *command)
        assert code == 1 and f"--out {out} is not empty (it holds .DS_Store) and was not made " \
            "by medsynth-kohya" in " ".join(stderr.split()), stderr
    code, _, stderr = invoke(runner, "demo", "--out", out, "--n", 8)
    assert " ".join(stderr.split()).endswith("was not made by medsynth-kohya demo; choose a new "
                                             "or empty folder"), stderr


def test_a_demo_out_that_is_a_file_is_refused_in_one_line_and_kept(runner: CliRunner,
                                                                    tmp_path: Path) -> None:
    """An --out naming a file says so and how to fix it; the file stays as it was."""
    out = tmp_path / "notes.txt"
    out.write_text("the user's own file", encoding="utf-8")
    code, stdout, stderr = invoke(runner, "demo", "--out", out, "--n", 8)
    assert code == 1 and "Traceback" not in stdout + stderr
    assert [line for line in stderr.splitlines() if line.strip()] == [
        f"Error: --out {out} is a file; choose a folder"], stderr
    assert out.read_text(encoding="utf-8") == "the user's own file"
    assert list(tmp_path.iterdir()) == [out]


def test_a_demo_on_a_gpu_machine_that_only_plans_says_why(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """It said 'On a GPU machine it runs…' on a GPU machine, with nothing about what was
    missing for it to train there."""
    from medsynth_kohya.machine.gpus import Gpu
    from medsynth_kohya.pipeline import demo
    from medsynth_kohya.sdscripts import checkout
    from medsynth_kohya.sdscripts.presets import BASE_MODEL

    t4 = [Gpu("Tesla T4", 15360, (7, 5))]
    monkeypatch.setattr(checkout, "present", lambda *_: False)
    result = demo.run_demo(tmp_path / "a", n=8, workers=1, detect=lambda: t4)
    assert result.training.status == "dry-run"
    assert ("not training on this GPU machine: no sd-scripts checkout (`medsynth-kohya "
            "install-sd-scripts`)") in result.training.warnings
    result = demo.run_demo(tmp_path / "c", n=8, workers=1, detect=lambda: [])
    assert not [w for w in result.training.warnings if "not training" in w]
    monkeypatch.setattr(checkout, "present", lambda *_: True)
    monkeypatch.setattr(demo, "base_model_cached", lambda *_: False)
    assert demo._missing_for_training(t4) == (
        f"the SDXL base model is not in the Hugging Face cache (`hf download "
        f"{BASE_MODEL}`)")
    monkeypatch.setattr(demo, "base_model_cached", lambda *_: True)
    assert demo._missing_for_training(t4) == "" and demo._missing_for_training([])


def _console_script() -> list[str]:
    """The arguments that make Python run what pyproject's `medsynth-kohya` script runs."""
    import toml

    from .conftest import REPO

    target = toml.load(REPO / "pyproject.toml")["project"]["scripts"]["medsynth-kohya"]
    module, function = target.split(":")
    return ["-c", f"import sys; from {module} import {function}; sys.exit({function}())"]


@pytest.mark.parametrize("start", [["-m", "medsynth_kohya"], _console_script()],
                         ids=["python -m", "console script"])
def test_ctrl_c_while_the_command_line_is_imported_is_one_line(start: list[str]) -> None:
    """Ctrl-C in the first ~0.7 s, while the command line's modules are still imported, printed
    a KeyboardInterrupt traceback. The interrupt is sent once Typer's first module is imported
    (`-X importtime` says when, on stderr), so it lands in the import of the command line."""
    import signal

    process = subprocess.Popen([sys.executable, "-X", "importtime", *start, "--version"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert process.stderr is not None
    said = []
    for line in process.stderr:
        said.append(line)
        if "typer" in line:
            process.send_signal(signal.SIGINT)
            break
    out, err = process.communicate(timeout=60)
    lines = [line for line in "".join(said).splitlines() + err.splitlines()
             if not line.startswith("import time:")]
    assert (process.returncode, out) == (130, ""), lines
    from medsynth_kohya.entry import RESUMABLE

    assert lines == [f"Error: {RESUMABLE}"]


def test_ctrl_c_before_a_command_starts_is_one_line(monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """Ctrl-C while Typer still builds the commands (the first ~0.7 s) printed a 30-line
    KeyboardInterrupt traceback instead of the one line each command gives."""
    from medsynth_kohya import cli, entry

    def interrupted() -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "app", interrupted)
    with pytest.raises(SystemExit) as stopped:
        entry.main()
    assert stopped.value.code == 130
    said = capsys.readouterr()
    assert squeezed(said.err) == squeezed(f"Error: {entry.RESUMABLE}") and not said.out
