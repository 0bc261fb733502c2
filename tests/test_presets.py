"""Presets and --gpus: what a preset file must hold, how --preset names one, and how many
training processes a machine can start, refused before anything is written or launched."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
import toml
from typer.testing import CliRunner

from medsynth_kohya.errors import UserError
from medsynth_kohya.machine.gpus import Gpu
from medsynth_kohya.resources import data_dir
from medsynth_kohya.sdscripts import presets
from medsynth_kohya.training.train import check as train_check
from medsynth_kohya.training.train import train

from .conftest import invoke
from .fakes import FakeSd

A100 = Gpu("NVIDIA A100-SXM4-80GB", 81920, (8, 0))


def _preset(tmp_path: Path, name: str = "mine.toml", *, drop: tuple[str, ...] = (),
            own: dict[str, Any] | None = None) -> Path:
    """cpu-smoke written to `name`, without the settings in `drop`, its [medsynth] table
    updated with `own`."""
    document = toml.loads((data_dir("configs") / "cpu-smoke.toml").read_text(encoding="utf-8"))
    for key in drop:
        document["settings"].pop(key)
    document["medsynth"].update(own or {})
    path = tmp_path / name
    path.write_text(toml.dumps(document), encoding="utf-8")
    return path


def _refused(runner: CliRunner, *args: object) -> str:
    """The one line a refused `train` prints (exit 1, no traceback)."""
    code, stdout, stderr = invoke(runner, "train", *args)
    assert code == 1, stdout + stderr
    assert "Traceback" not in stdout + stderr and len(stderr.strip().splitlines()) == 1, stderr
    return " ".join(stderr.split())


# what a preset must set


def test_an_empty_preset_is_refused_in_one_line_even_in_a_dry_run(
        runner: CliRunner, prepared: Path, tmp_path: Path) -> None:
    empty = tmp_path / "empty.toml"
    empty.write_text("", encoding="utf-8")
    said = _refused(runner, prepared, "--preset", empty, "--run-dir", tmp_path / "run",
                    "--dry-run")
    assert ("preset empty.toml sets no pretrained_model_name_or_path (the SDXL base model, e.g. "
            f"{presets.BASE_MODEL}) and no network_module (networks.lora trains a LoRA), which "
            "sdxl_train_network.py cannot run without: add them under [settings] in "
            f"{empty}") in said, said
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("key", ["pretrained_model_name_or_path", "network_module"])
def test_a_preset_without_a_required_option_is_refused_before_it_plans(
        prepared: Path, tmp_path: Path, key: str) -> None:
    mine = _preset(tmp_path, drop=(key,))
    with pytest.raises(UserError, match=f"preset mine.toml sets no {key} ") as refused:
        train(prepared, str(mine), run_dir=tmp_path / "run", dry_run=True)
    assert "and no" not in str(refused.value) and f"--set {key}=VALUE" in str(refused.value)
    with pytest.raises(UserError, match=f"sets no {key} "):  # reproduce's check before prepare
        train_check(str(mine), [], tmp_path / "run", class_name="melanoma", target_steps=None,
                    images=4, repeats=2)
    value = presets.BASE_MODEL if key == "pretrained_model_name_or_path" else "networks.lora"
    given = train(prepared, str(mine), overrides=[f"{key}={value}"],
                  run_dir=tmp_path / "given", dry_run=True)  # the option given by --set is enough
    assert given.status == "dry-run"


def test_a_set_that_removes_a_required_option_says_so(runner: CliRunner, prepared: Path,
                                                       tmp_path: Path) -> None:
    said = _refused(runner, prepared, "--preset", "cpu-smoke", "--set", "network_module=",
                    "--run-dir", tmp_path / "run", "--dry-run")
    assert ("--set network_module= leaves no network_module (networks.lora trains a LoRA), "
            "which sdxl_train_network.py cannot run without: leave it out or give "
            "network_module=VALUE") in said
    said = _refused(runner, prepared, "--preset", "cpu-smoke", "--set",
                    'pretrained_model_name_or_path=" "', "--run-dir", tmp_path / "run",
                    "--dry-run")
    assert "--set pretrained_model_name_or_path=' ' leaves no pretrained_model_name_or_path" in said


# how --preset names one


def test_an_empty_preset_name_is_refused_not_the_default(runner: CliRunner, prepared: Path,
                                                         tmp_path: Path) -> None:
    said = _refused(runner, prepared, "--preset", "", "--run-dir", tmp_path / "run",
                    "--dry-run")
    assert said.startswith("Error: --preset is empty; choose one of: a100-80gb, cpu-smoke")
    with pytest.raises(UserError, match="--preset is empty"):
        train(prepared, " ", run_dir=tmp_path / "run", dry_run=True)
    assert not (tmp_path / "run").exists()


def test_a_preset_file_that_is_not_there_is_named_as_a_file(
        runner: CliRunner, prepared: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        ) -> None:
    monkeypatch.chdir(tmp_path)
    for name in ("missing.toml", "presets/mine", str(tmp_path / "nowhere" / "x.TOML")):
        said = _refused(runner, prepared, "--preset", name, "--dry-run")
        assert said == f"Error: preset file {name} does not exist", said
    said = _refused(runner, prepared, "--preset", "t4-16gb.toml", "--dry-run")
    assert said.endswith("does not exist; the shipped preset is --preset t4-16gb")
    (tmp_path / "folder.toml").mkdir()
    assert _refused(runner, prepared, "--preset", "folder.toml", "--dry-run").endswith(
        "preset file folder.toml is not a file")
    said = _refused(runner, prepared, "--preset", "t4-16g", "--dry-run")
    assert said.startswith("Error: unknown preset 't4-16g'; did you mean t4-16gb? choose one")
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize(("own", "needle"), [
    ({"num_processes": -1}, "num_processes = -1 must be a whole number, 0 or more"),
    ({"num_processes": "two"}, "num_processes = 'two' must be a whole number"),
    ({"num_processes": 1.5}, "num_processes = 1.5 must be a whole number"),
    ({"min_gpu_memory_gib": "lots"}, "min_gpu_memory_gib = 'lots' must be a number of GiB"),
    ({"device": "gpu"}, "device = 'gpu' must be one of: cuda, cpu"),
    ({"num_process": 2}, "[medsynth] has no setting 'num_process'; it takes description, "
                         "num_processes"),
])
def test_a_wrong_setting_of_the_tools_own_table_is_one_line(
        runner: CliRunner, prepared: Path, tmp_path: Path, own: dict[str, Any],
        needle: str) -> None:
    mine = _preset(tmp_path, own=own)
    said = _refused(runner, prepared, "--preset", mine, "--run-dir", tmp_path / "run",
                    "--dry-run")
    assert f"preset {mine}: " in said and needle in said, said


def test_the_tools_own_settings_are_read(tmp_path: Path) -> None:
    mine = presets.load(str(_preset(tmp_path, own={"num_processes": 0, "device": "cuda",
                                                    "min_gpu_memory_gib": 12})))
    assert (mine.num_processes, mine.device, mine.min_gpu_memory_gib) == (0, "cuda", 12.0)
    assert presets.load("cpu-smoke").device == "cpu"


# how many processes the machine can start


def test_a_cpu_preset_refuses_more_than_one_process(runner: CliRunner, prepared: Path,
                                                    fake_sd: FakeSd, tmp_path: Path) -> None:
    tools = ("--sd-scripts", fake_sd.sd_scripts, "--python", sys.executable)
    for extra in (("--dry-run",), ()):
        said = _refused(runner, prepared, "--preset", "cpu-smoke", "--gpus", "3", "--run-dir",
                        tmp_path / "run", *tools, *extra)
        assert said == ('Error: preset cpu-smoke runs on the CPU (device = "cpu"), in one '
                        "process, not 3: leave out --gpus")
    assert not fake_sd.record.exists() and not (tmp_path / "run").exists()
    mine = _preset(tmp_path, own={"num_processes": 2})
    with pytest.raises(UserError, match=r"in one process, not 2: set num_processes = 1 in "):
        train(prepared, str(mine), run_dir=tmp_path / "run", dry_run=True)
    code, stdout, stderr = invoke(runner, "train", prepared, "--preset", "cpu-smoke", "--gpus",
                                  "1", "--run-dir", tmp_path / "one", *tools, "--dry-run")
    assert code == 0 and "--multi_gpu" not in stdout, stderr


def test_more_gpus_than_a_machine_without_gpus_has_refuse_a_real_launch_only(
        prepared: Path, fake_sd: FakeSd, tmp_path: Path) -> None:
    tools: dict[str, Any] = {"sd_scripts": fake_sd.sd_scripts, "python": sys.executable}
    line = ("3 training processes need 3 GPUs; nvidia-smi found none on this machine: train on "
            "a machine with 3 GPUs, or ask for fewer with --gpus")
    planned = train(prepared, "t4-16gb", run_dir=tmp_path / "plan", gpus=3, dry_run=True,
                    detect=lambda: [], **tools)  # planning a run for another machine
    assert f"a real run would stop at: {line}" in planned.warnings
    with pytest.raises(UserError) as refused:
        train(prepared, "t4-16gb", run_dir=tmp_path / "run", gpus=3, detect=lambda: [], **tools)
    said = str(refused.value)
    assert f" | {line}" in said and "\n" not in said, said
    assert not fake_sd.record.exists()
    one = train(prepared, "t4-16gb", run_dir=tmp_path / "one", dry_run=True, detect=lambda: [],
                **tools)
    assert not any("training processes need" in warning for warning in one.warnings)


def test_more_gpus_than_found_are_refused_naming_how_many(prepared: Path,
                                                         tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"^1000 training processes need 1000 GPUs; 1 found: use "
                                        r"--gpus 1$"):
        train(prepared, "a100-80gb", run_dir=tmp_path / "run", gpus=1000, dry_run=True,
              detect=lambda: [A100])
    assert not (tmp_path / "run").exists()


# what a preset may not set: the run's own folders and tables


@pytest.mark.parametrize("key", presets.RUN_OWNED)
def test_a_preset_that_sets_an_option_the_run_owns_is_refused_before_anything_is_written(
        runner: CliRunner, prepared: Path, tmp_path: Path, key: str) -> None:
    document = toml.loads(_preset(tmp_path).read_text(encoding="utf-8"))
    document["settings"][key] = str(tmp_path / "elsewhere")
    mine = tmp_path / "mine.toml"
    mine.write_text(toml.dumps(document), encoding="utf-8")
    said = _refused(runner, prepared, "--preset", mine, "--run-dir", tmp_path / "run")
    assert (f"preset {mine}: [settings] sets {key}, which the run decides (its run folder); "
            "remove it from the preset and choose the folder with --run-dir") in said, said
    assert not (tmp_path / "run").exists() and not (tmp_path / "elsewhere").exists()


@pytest.mark.parametrize(("key", "value", "said"), [
    ("huggingface_repo_id", '"alice/melanoma"', "upload to the Hub itself"),
    ("console_log_file", '"/tmp/x.log"', "RUN/train.log"),
    ("initial_step", "100", "--resume decides"),
    ("skip_until_initial_step", "true", "--resume decides")])
def test_options_that_take_a_step_out_of_the_runs_hands_are_refused(
        runner: CliRunner, prepared: Path, tmp_path: Path, key: str, value: str,
        said: str) -> None:
    """sd-scripts' own Hub upload (past push's privacy and copy checks), its log sent
    elsewhere (train.log and the reported error lose it), or a start step over the state's
    were taken from --set and from a preset as any other option."""
    line = _refused(runner, prepared, "--preset", _preset(tmp_path), "--run-dir",
                    tmp_path / "run", "--set", f"{key}={value}")
    assert line.startswith(f"Error: --set {key} ") and said in line, line
    document = toml.loads(_preset(tmp_path).read_text(encoding="utf-8"))
    document["settings"][key] = toml.loads(f"v = {value}")["v"]
    mine = tmp_path / "mine.toml"
    mine.write_text(toml.dumps(document), encoding="utf-8")
    line = _refused(runner, prepared, "--preset", mine, "--run-dir", tmp_path / "run")
    assert f"preset {mine}: [settings] sets {key}, which " in line and said in line, line
    assert not (tmp_path / "run").exists()


def test_a_run_config_copied_as_a_preset_cannot_write_into_that_run(
        runner: CliRunner, prepared: Path, tmp_path: Path) -> None:
    """A finished run's config.toml names its output folder: as another run's preset it
    would have sd-scripts overwrite the first run's LoRA."""
    first = tmp_path / "first"
    train(prepared, str(_preset(tmp_path)), run_dir=first, dry_run=True)
    config = (first / "config.toml").read_text(encoding="utf-8")
    assert f"[{presets.RUN_TABLE}]" in config  # the table the template renders the run's keys in
    copy = tmp_path / "copy.toml"
    copy.write_text('[medsynth]\ndevice = "cpu"\n' + config, encoding="utf-8")
    said = _refused(runner, prepared, "--preset", copy, "--run-dir", tmp_path / "second")
    assert f"preset {copy}: the table [{presets.RUN_TABLE}] is the run's own; rename it" in said
    assert not (tmp_path / "second").exists()


def test_a_preset_table_named_overrides_is_refused_as_set_options_would_replace_it(
        prepared: Path, tmp_path: Path) -> None:
    document = toml.loads(_preset(tmp_path).read_text(encoding="utf-8"))
    document[presets.OVERRIDES_TABLE] = {"network_alpha": 2}
    mine = tmp_path / "mine.toml"
    mine.write_text(toml.dumps(document), encoding="utf-8")
    with pytest.raises(UserError, match=r"the table \[overrides\] is the run's own; rename it "
                       r"\(e\.g\. \[settings\]\)"):
        train(prepared, str(mine), overrides=["noise_offset=0.05"], run_dir=tmp_path / "run",
              dry_run=True)


@pytest.mark.parametrize(("value", "written"), [
    (512, "512,512"), ([1024, 768], "1024,768"), ("768", "768")])
def test_a_preset_resolution_is_read_as_set_reads_it(
        runner: CliRunner, prepared: Path, fake_sd: FakeSd, tmp_path: Path, value: Any,
        written: str) -> None:
    """`resolution = 512` or `[1024, 768]` in a preset file is what `--set resolution=512`
    takes: sd-scripts' "W,H" text, not a refusal of the number."""
    document = toml.loads(_preset(tmp_path).read_text(encoding="utf-8"))
    document["settings"]["resolution"] = value
    mine = tmp_path / "mine.toml"
    mine.write_text(toml.dumps(document), encoding="utf-8")
    run = tmp_path / "run"
    code, stdout, stderr = invoke(runner, "train", prepared, "--preset", mine, "--run-dir", run,
                                  "--sd-scripts", fake_sd.sd_scripts, "--dry-run")
    assert code == 0, stdout + stderr
    assert presets.flatten(toml.load(run / "config.toml"))["resolution"] == written
    size = [int(side) for side in written.split(",")] * (2 if "," not in written else 1)
    assert toml.load(run / "dataset.toml")["datasets"][0]["resolution"] == size


# what a preset's values become


def test_a_preset_value_from_the_home_folder_is_written_out(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """sd-scripts expands no `~`: a preset's `~/models/base.safetensors` (or `~` alone) reaches
    it as the home folder's path; a `~` further in is part of the value. The preset file
    itself may be named from the home folder too."""
    home = tmp_path / "home"
    monkeypatch.setenv("HOME", str(home))
    document = toml.loads((data_dir("configs") / "cpu-smoke.toml").read_text(encoding="utf-8"))
    document["settings"].update(pretrained_model_name_or_path="~/models/base.safetensors",
                                vae="~", log_prefix="runs~/a", network_dim=4)
    (home / "presets").mkdir(parents=True)
    (home / "presets" / "mine.toml").write_text(toml.dumps(document), encoding="utf-8")
    mine = presets.load("~/presets/mine.toml")
    assert (mine.name, mine.path) == ("mine", home / "presets" / "mine.toml")
    assert mine.options["pretrained_model_name_or_path"] == str(
        home / "models" / "base.safetensors")
    assert (mine.options["vae"], mine.options["log_prefix"]) == (str(home), "runs~/a")
    assert mine.options["network_dim"] == 4



def test_a_preset_value_from_a_named_users_home_folder_is_written_out(
        tmp_path: Path) -> None:
    """`~name/…` is that user's home folder, as a shell reads it; a `~name` of no user on this
    machine, or a `~` that does not start a path, reaches sd-scripts as written."""
    import getpass
    import pwd

    user = getpass.getuser()
    document = toml.loads((data_dir("configs") / "cpu-smoke.toml").read_text(encoding="utf-8"))
    document["settings"].update(pretrained_model_name_or_path=f"~{user}/models/b.safetensors",
                                vae="~no-such-user-here/v.safetensors", log_prefix="~ a/b",
                                network_weights=f"~{user}")
    mine = tmp_path / "mine.toml"
    mine.write_text(toml.dumps(document), encoding="utf-8")
    options = presets.load(str(mine)).options
    assert options["pretrained_model_name_or_path"] == str(
        Path(pwd.getpwnam(user).pw_dir) / "models" / "b.safetensors")
    assert options["network_weights"] == pwd.getpwnam(user).pw_dir
    assert (options["vae"], options["log_prefix"]) == ("~no-such-user-here/v.safetensors",
                                                       "~ a/b")

def test_an_option_set_in_two_tables_is_refused_naming_both(tmp_path: Path) -> None:
    """sd-scripts reads a preset's tables as one and the last value of an option wins: a
    learning rate written twice would train on whichever table comes last, silently."""
    document = toml.loads((data_dir("configs") / "cpu-smoke.toml").read_text(encoding="utf-8"))
    document["optimizer"] = {"learning_rate": 5e-5}
    mine = tmp_path / "mine.toml"
    mine.write_text(toml.dumps(document), encoding="utf-8")
    with pytest.raises(UserError) as refused:
        presets.load(str(mine))
    assert str(refused.value) == (
        f"preset {mine}: learning_rate is set in [settings] and again in [optimizer], and "
        "sd-scripts would take the last one; keep it in one table")


@pytest.mark.parametrize(("own", "needle"), [
    ({"num_processes": True}, "num_processes = True must be a whole number, 0 or more (0: one "
                              "process per GPU found)"),
    ({"min_gpu_memory_gib": -0.5}, "min_gpu_memory_gib = -0.5 must be a number of GiB, 0 or "
                                   "more"),
    ({"min_gpu_memory_gib": float("inf")}, "min_gpu_memory_gib = inf must be a number of GiB, "
                                           "0 or more"),
    ({"min_gpu_memory_gib": True}, "min_gpu_memory_gib = True must be a number of GiB, 0 or "
                                   "more"),
    ({"description": 5}, "description = 5 must be text"),
])
def test_a_setting_of_another_kind_than_it_reads_as_is_refused(
        tmp_path: Path, own: dict[str, Any], needle: str) -> None:
    """A true/false, a negative or an infinite figure would each read as a number Python
    takes (True is 1): the preset is refused, not trained with a value nobody wrote."""
    mine = _preset(tmp_path, own=own)
    with pytest.raises(UserError) as refused:
        presets.load(str(mine))
    assert str(refused.value) == f"preset {mine}: [medsynth] {needle}", refused.value


def test_a_preset_without_the_tools_table_takes_its_defaults(tmp_path: Path) -> None:
    document = toml.loads((data_dir("configs") / "cpu-smoke.toml").read_text(encoding="utf-8"))
    del document["medsynth"]
    mine = tmp_path / "plain.toml"
    mine.write_text(toml.dumps(document), encoding="utf-8")
    plain = presets.load(str(mine))
    assert (plain.name, plain.description, plain.num_processes, plain.min_gpu_memory_gib,
            plain.device) == ("plain", "", 1, 0.0, "cuda")
    assert plain.tables == {"settings": document["settings"]}
    mine.write_text("medsynth = 2\n" + toml.dumps(document), encoding="utf-8")
    with pytest.raises(UserError, match=r"\[medsynth\] must be a table \(description, "
                                        r"num_processes, min_gpu_memory_gib, device\)$"):
        presets.load(str(mine))
    mine.write_text('seed = 3\nlearning_rate = 1e-4\n' + toml.dumps(document), encoding="utf-8")
    with pytest.raises(UserError, match=r": put seed, learning_rate inside a table such as "
                                        r"\[settings\]$"):
        presets.load(str(mine))


def test_a_preset_in_the_home_of_no_such_user_is_named_as_the_preset() -> None:
    with pytest.raises(UserError) as refused:
        presets.load("~no-such-user-of-medsynth/mine.toml")
    assert str(refused.value) == ("--preset ~no-such-user-of-medsynth/mine.toml: cannot expand "
                                  "its ~ (no such user or no home directory); give the path in "
                                  "full")


def test_a_preset_saved_with_a_byte_order_mark_reads_as_without_it(tmp_path: Path) -> None:
    """Windows editors (Notepad's 'UTF-8 with BOM') start a file with U+FEFF, which TOML
    does not allow: the mark is no part of the preset, so it reads as the same file without."""
    plain = _preset(tmp_path)
    marked = tmp_path / "marked.toml"
    marked.write_bytes(b"\xef\xbb\xbf" + plain.read_bytes())
    assert presets.load(str(marked)).tables == presets.load(str(plain)).tables
