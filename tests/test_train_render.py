"""`train --dry-run`: rendered files, preset fidelity, and every refusal before launch."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import toml
from typer.testing import CliRunner

from medsynth_kohya.data import manifest
from medsynth_kohya.data.synth import SyntheticSet
from medsynth_kohya.errors import UserError
from medsynth_kohya.pipeline.reproduce import reproduce
from medsynth_kohya.resources import data_dir
from medsynth_kohya.sdscripts import presets
from medsynth_kohya.training.train import check as train_check
from medsynth_kohya.training.train import train

from .conftest import InstallGpus, invoke
from .fakes import FakeSd

ORIGINAL_ONLY = {"in_json", "train_data_dir", "output_dir", "output_name", "logging_dir",
                 "max_train_epochs"}
"""Original keys the folder layout replaces (documented in configs/medsynthx-2023.toml)."""


def _flat(path: Path) -> dict[str, object]:
    return {k: v for table in toml.load(path).values() for k, v in table.items()}


def test_every_preset_renders_and_passes_its_own_checks(prepared: Path, tmp_path: Path) -> None:
    for name in presets.available():
        result = train(prepared, name, run_dir=tmp_path / name, dry_run=True,
                       detect=lambda: [])
        assert result.status == "dry-run"
        assert result.config.is_file() and result.dataset_config.is_file()
        flat = _flat(result.config)
        assert flat["caption_extension"] == ".txt"
        assert flat["output_dir"] == str((tmp_path / name / "output").resolve())
        for key, value in presets.load(name).options.items():
            assert flat[key] == value, (name, key)


def test_medsynthx_2023_holds_every_original_value(prepared: Path, tmp_path: Path,
                                                   seed_configs: Path) -> None:
    original = _flat(seed_configs / "config_file.toml")
    result = train(prepared, "medsynthx-2023", run_dir=tmp_path / "run", dry_run=True,
                   detect=lambda: [])
    rendered = _flat(result.config)
    for key, value in original.items():
        if key not in ORIGINAL_ONLY:
            assert rendered[key] == value, key
    assert rendered["max_train_steps"] == 7200 and "max_train_epochs" not in rendered
    assert result.expected_steps == 7200


def test_overrides_are_rendered_and_parsed_back(prepared: Path, tmp_path: Path) -> None:
    result = train(prepared, "t4-16gb", overrides=["learning_rate=2e-4", "network_dim=16",
                                                   "seed=7", "sample_sampler=\"ddim\"",
                                                   "lr_warmup_steps="],
                   run_dir=tmp_path / "run", dry_run=True, detect=lambda: [])
    flat = _flat(result.config)
    expected = presets.load("t4-16gb").options
    expected.update(learning_rate=2e-4, network_dim=16, seed=7, sample_sampler="ddim")
    del expected["lr_warmup_steps"]
    assert {k: flat[k] for k in expected} == expected
    assert "lr_warmup_steps" not in flat


DATASET_SETS = ["shuffle_caption=true", "cache_text_encoder_outputs=false", "keep_tokens=2",
                "enable_bucket=false", "bucket_no_upscale=true", "min_bucket_reso=256",
                "max_bucket_reso=1024", "bucket_reso_steps=32"]
"""--set options sd-scripts would take from the dataset config over the config file."""


def test_options_the_dataset_config_sets_follow_the_run_not_its_defaults(
        prepared: Path, tmp_path: Path) -> None:
    """sd-scripts prefers the dataset config's shuffle_caption, keep_tokens and bucket keys to
    its config file's: a preset's or --set value is written there too."""
    result = train(prepared, "t4-16gb", overrides=DATASET_SETS, run_dir=tmp_path / "run",
                   dry_run=True, detect=lambda: [])
    dataset = toml.load(result.dataset_config)
    assert dataset["general"] == {"caption_extension": ".txt", "shuffle_caption": True,
                                  "keep_tokens": 2}
    assert {key: dataset["datasets"][0][key] for key in (
        "enable_bucket", "bucket_no_upscale", "min_bucket_reso", "max_bucket_reso",
        "bucket_reso_steps")} == {"enable_bucket": False, "bucket_no_upscale": True,
                                  "min_bucket_reso": 256, "max_bucket_reso": 1024,
                                  "bucket_reso_steps": 32}
    steps = train(prepared, "t4-16gb", overrides=["bucket_reso_steps=32", "resolution=768"],
                  run_dir=tmp_path / "steps", dry_run=True, detect=lambda: [])
    buckets = toml.load(steps.dataset_config)["datasets"][0]
    assert (buckets["min_bucket_reso"], buckets["max_bucket_reso"]) == (384, 1536)
    plain = toml.load(train(prepared, "t4-16gb", run_dir=tmp_path / "plain", dry_run=True,
                            detect=lambda: []).dataset_config)
    assert plain["general"] == {"caption_extension": ".txt", "shuffle_caption": False,
                                "keep_tokens": 0}
    assert (plain["datasets"][0]["enable_bucket"], plain["datasets"][0]["min_bucket_reso"],
            plain["datasets"][0]["max_bucket_reso"]) == (True, 512, 2048)


def test_dataset_repeats_is_refused_as_the_prepared_folder_decides_it(
        runner: CliRunner, prepared: Path, tmp_path: Path) -> None:
    code, _, stderr = invoke(runner, "train", prepared, "--preset", "t4-16gb", "--run-dir",
                             tmp_path / "run", "--dry-run", "--set", "dataset_repeats=5")
    assert code == 1 and " ".join(stderr.split()) == (
        "Error: --set dataset_repeats does not reach a prepared folder: its images repeat as the "
        "class folder's name says (img/<R>_<class>); choose R with `medsynth-kohya prepare "
        "--repeats R` (or --target-steps)"), stderr
    assert not (tmp_path / "run").exists()


def test_a_mixed_number_array_is_rendered_as_sd_scripts_reads_it(prepared: Path,
                                                                  tmp_path: Path) -> None:
    """sd-scripts reads its config with toml 0.10.2, which refuses arrays of mixed number
    kinds: the rendered array holds decimals only and parses back."""
    result = train(prepared, "t4-16gb", overrides=["text_encoder_lr=[1, 5e-5]"],
                   run_dir=tmp_path / "run", dry_run=True, detect=lambda: [])
    assert _flat(result.config)["text_encoder_lr"] == [1.0, 5e-5]


def test_dataset_and_prompts_follow_the_prepared_folder(prepared: Path, tmp_path: Path) -> None:
    result = train(prepared, "cpu-smoke", run_dir=tmp_path / "run", dry_run=True)
    dataset = toml.load(result.dataset_config)
    subset = dataset["datasets"][0]["subsets"][0]
    assert subset["num_repeats"] == 2
    assert Path(subset["image_dir"]) == (prepared / "img" / "2_melanoma").resolve()
    assert dataset["datasets"][0]["resolution"] == [64, 64]
    assert dataset["general"]["caption_extension"] == ".txt"
    prompts = toml.load(result.sample_prompts)["prompt"]
    assert prompts["width"] == 64 and prompts["scale"] == 12 and prompts["sample_steps"] == 28
    captions = set(manifest.read(prepared / "manifest.csv")["caption"])
    assert prompts["subset"] and all(s["prompt"] in captions for s in prompts["subset"])
    assert all(not set(s) & set(prompts) - {"subset"} for s in prompts["subset"])
    record = json.loads((result.run_dir / "run.json").read_text(encoding="utf-8"))
    assert record["status"] == "dry-run" and record["preset"] == "cpu-smoke"
    assert len(record["dataset"]["manifest_sha256"]) == 64


def test_dry_run_prints_the_exact_command(runner: CliRunner, prepared: Path,
                                          tmp_path: Path) -> None:
    code, stdout, stderr = invoke(runner, "train", prepared, "--preset", "cpu-smoke",
                                  "--run-dir", tmp_path / "run", "--dry-run",
                                  "--sd-scripts", tmp_path / "nowhere")
    assert code == 0, stderr
    assert "accelerate.commands.launch" in stdout and "sdxl_train_network.py" in stdout
    assert "--config_file" in stdout and "--dataset_config" in stdout
    assert "sd-scripts not found" in stderr


def test_a_dry_run_without_sd_scripts_shows_a_command_that_installs_it_first(
        runner: CliRunner, prepared: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """It printed `cd ~/.local/share/medsynth-kohya/sd-scripts && …` for a folder that did not
    exist (as the warning before it said), so the line failed at once when pasted. Where the
    checkout is missing the line now installs it there first, and its heading says so; a
    folder install-sd-scripts would refuse, or a checkout that is there, gets no such step."""
    import shlex

    from medsynth_kohya.sdscripts import checkout

    monkeypatch.setattr(checkout, "checkout_root", lambda: None)  # as from a wheel
    monkeypatch.delenv(checkout.ENV_DIR, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "home" / "data"))
    user, given = checkout.user_dir(), tmp_path / "my sd-scripts"
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine", encoding="utf-8")
    there = tmp_path / "sd"
    (there / "networks").mkdir(parents=True)
    for script in (checkout.TRAIN_SCRIPT, "networks/lora.py"):
        (there / script).write_text("", encoding="utf-8")
    for n, (extra, folder, step) in enumerate((
            ((), user, "medsynth-kohya install-sd-scripts"),
            (("--sd-scripts", given), given,
             f"medsynth-kohya install-sd-scripts --dir {shlex.quote(str(given))}"),
            (("--sd-scripts", other), other, ""), (("--sd-scripts", there), there, ""))):
        code, stdout, stderr = invoke(runner, "train", prepared, "--preset", "cpu-smoke",
                                      "--run-dir", tmp_path / f"run{n}", "--dry-run", *extra)
        assert code == 0, stderr
        heading, line = stdout.splitlines()[-2:]
        made = f", which `{step}` makes first" if step else ""
        assert heading == f"Command (run in {folder}{made}):", heading
        cd = f"cd {shlex.quote(str(folder))} && "
        assert line.startswith(f"{step} && {cd}" if step else cd), line
        assert not user.exists() and not given.exists()


@pytest.mark.parametrize(("setting", "needle"), [
    ("learning_rat=1e-4", "learning_rate"),
    ('mixed_precision="bf17"', "fp16"),
    ("resolution=1.5", "resolution"),
    ("network_dim=\"big\"", "network_dim"),
    ("shuffle_caption=true", "shuffle_caption"),
    ("network_train_unet_only=false", "network_train_unet_only"),
    ("color_aug=true", "color_aug"),
    ("caption_dropout_rate=0.1", "caption_dropout_rate"),
    ("token_warmup_step=5", "token_warmup_step"),
    ('caption_extension=".caption"', ".txt"),
    ("output_dir=/tmp/x", "--run-dir"),
    ("nonsense", "key=value"),
    ("learning_rate=0", "learning_rate = 0 must be a number above 0"),
    ("learning_rate=nan", "learning_rate = nan must be a number above 0"),
    ("unet_lr=-1e-4", "unet_lr = -0.0001 must be 0 (not trained) or a number above 0"),
    ("text_encoder_lr=[inf]", "text_encoder_lr = [inf] must be 0 (not trained) or a number"),
    ("seed=-1", "seed = -1 is out of range: use 0 to 4294967295"),
    ("seed=4294967296", "seed = 4294967296 is out of range"),
    ("optimizer_type=AdamW8bitt", "did you mean AdamW8bit?"),
    ("lr_scheduler=cosine_with_restart", "did you mean cosine_with_restarts?"),
])
def test_config_errors_refuse_even_a_dry_run(runner: CliRunner, prepared: Path, tmp_path: Path,
                                             setting: str, needle: str) -> None:
    code, stdout, stderr = invoke(runner, "train", prepared, "--preset", "t4-16gb", "--set",
                                  setting, "--run-dir", tmp_path / "run", "--dry-run")
    assert code == 1, stdout
    assert needle in stderr and "Traceback" not in stderr + stdout
    assert not (tmp_path / "run" / "config.toml").exists()


def test_bf16_on_a_t4_is_refused_even_in_a_dry_run(runner: CliRunner, prepared: Path,
                                                   tmp_path: Path,
                                                   nvidia_smi: InstallGpus) -> None:
    nvidia_smi("Tesla T4, 15360 MiB, 7.5")
    code, _, stderr = invoke(runner, "train", prepared, "--preset", "a100-80gb", "--run-dir",
                             tmp_path / "run", "--dry-run")
    assert code == 1 and "no bf16" in stderr and "15 GiB" in stderr


def test_two_a100s_get_a_multi_gpu_launch(runner: CliRunner, prepared: Path, tmp_path: Path,
                                          nvidia_smi: InstallGpus) -> None:
    nvidia_smi("NVIDIA A100-SXM4-80GB, 81920 MiB, 8.0", "NVIDIA A100-SXM4-80GB, 81920 MiB, 8.0")
    code, stdout, stderr = invoke(runner, "train", prepared, "--preset", "a100-80gb",
                                  "--run-dir", tmp_path / "run", "--dry-run")
    assert code == 0, stderr
    assert "--multi_gpu" in stdout and "--num_processes 2" in stdout
    code, _, stderr = invoke(runner, "train", prepared, "--preset", "a100-80gb", "--gpus", "3",
                             "--run-dir", tmp_path / "run3", "--dry-run")
    assert code == 1 and "--gpus 2" in stderr


def test_machine_problems_refuse_a_real_launch(runner: CliRunner, prepared: Path,
                                               tmp_path: Path) -> None:
    code, _, stderr = invoke(runner, "train", prepared, "--preset", "cpu-smoke",
                             "--run-dir", tmp_path / "run", "--sd-scripts", tmp_path / "nowhere")
    assert code == 1 and "sd-scripts not found" in stderr and "Traceback" not in stderr


def test_unknown_preset_and_unprepared_folder(runner: CliRunner, prepared: Path,
                                              tmp_path: Path) -> None:
    code, _, stderr = invoke(runner, "train", prepared, "--preset", "nope", "--dry-run")
    assert code == 1 and "medsynthx-2023" in stderr
    code, _, stderr = invoke(runner, "train", tmp_path, "--dry-run")
    assert code == 1 and "prepare" in stderr


def test_an_earlier_run_is_not_overwritten(prepared: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    train(prepared, "cpu-smoke", run_dir=run, dry_run=True)
    train(prepared, "cpu-smoke", run_dir=run, dry_run=True)
    record = json.loads((run / "run.json").read_text(encoding="utf-8"))
    record["status"] = "succeeded"
    (run / "run.json").write_text(json.dumps(record), encoding="utf-8")
    from medsynth_kohya.errors import UserError

    with pytest.raises(UserError, match="--force"):
        train(prepared, "cpu-smoke", run_dir=run, dry_run=True)


def test_a_preset_file_with_values_sd_scripts_fails_on_late_is_refused(
        runner: CliRunner, prepared: Path, tmp_path: Path) -> None:
    preset = toml.loads((data_dir("configs") / "cpu-smoke.toml").read_text(encoding="utf-8"))
    preset["settings"].update(learning_rate=0.0, seed=-1, optimizer_type="Adamw8bitt")
    (tmp_path / "mine.toml").write_text(toml.dumps(preset), encoding="utf-8")
    code, stdout, stderr = invoke(runner, "train", prepared, "--preset", tmp_path / "mine.toml",
                                  "--run-dir", tmp_path / "run", "--dry-run")
    said = " ".join(stderr.split())
    assert code == 1 and "Traceback" not in stdout + stderr
    for needle in ("learning_rate = 0.0 must be a number above 0", "seed = -1 is out of range",
                   "optimizer_type = 'Adamw8bitt' is neither", "did you mean AdamW8bit?"):
        assert needle in said, said
    assert not (tmp_path / "run" / "config.toml").exists()


def test_a_network_module_sd_scripts_cannot_import_is_refused_before_any_launch(
        runner: CliRunner, prepared: Path, fake_sd: FakeSd, tmp_path: Path) -> None:
    tools = ("--sd-scripts", fake_sd.sd_scripts, "--python", sys.executable)
    for extra in (("--dry-run",), ()):
        code, stdout, stderr = invoke(runner, "train", prepared, "--preset", "cpu-smoke",
                                      "--set", "network_module=networks.lorra", "--run-dir",
                                      tmp_path / "run", *tools, *extra)
        said = " ".join(stderr.split())
        assert code == 1 and "Traceback" not in stdout + stderr
        assert ("network_module = 'networks.lorra' is neither a module of sd-scripts in "
                f"{fake_sd.sd_scripts} nor installed in {sys.executable}; did you mean "
                "networks.lora?") in said, said
        assert not fake_sd.record.exists() and not (tmp_path / "run" / "config.toml").exists()
    code, stdout, stderr = invoke(runner, "train", prepared, "--preset", "cpu-smoke", "--set",
                                  "network_module=json", "--run-dir", tmp_path / "run", *tools,
                                  "--dry-run")
    assert code == 0, stdout + stderr  # an installed module is what sd-scripts imports too


def test_reproduce_refuses_a_bad_value_before_it_prepares(isic2020: SyntheticSet,
                                                          tmp_path: Path) -> None:
    with pytest.raises(UserError, match="did you mean cosine"):
        train_check("cpu-smoke", ["lr_scheduler=cosin"], tmp_path / "run", class_name="melanoma",
                    target_steps=None, images=4, repeats=2)
    with pytest.raises(UserError, match="seed = -1"):
        reproduce(isic2020.root, tmp_path / "work", n=1, overrides=["seed=-1"], dry_run=True)
    assert not (tmp_path / "work").exists()


@pytest.mark.parametrize("model", ["/nowhere/sd_xl_base_1.0.safetensors", "./base.ckpt",
                                   "~/no-such-models/base.safetensors"])
def test_a_local_model_that_is_not_there_stops_a_launch(runner: CliRunner, prepared: Path,
                                                        fake_sd: FakeSd, tmp_path: Path,
                                                        model: str) -> None:
    tools = ("--sd-scripts", fake_sd.sd_scripts, "--python", sys.executable)
    setting = ("--set", f"pretrained_model_name_or_path={model}")
    code, stdout, stderr = invoke(runner, "train", prepared, "--preset", "cpu-smoke", *setting,
                                  "--run-dir", tmp_path / "dry", *tools, "--dry-run")
    said = " ".join(stderr.split())
    assert code == 0 and "a real run would stop at: pretrained_model_name_or_path" in said, said
    code, stdout, stderr = invoke(runner, "train", prepared, "--preset", "cpu-smoke", *setting,
                                  "--run-dir", tmp_path / "run", *tools)
    said = " ".join(stderr.split())
    assert code == 1 and "Traceback" not in stdout + stderr and not fake_sd.record.exists()
    assert "is not there (relative paths start at" in said and "a Hub id such as" in said, said


def test_training_at_another_size_than_prepared_for_is_a_warning(
        runner: CliRunner, prepared: Path, tmp_path: Path) -> None:
    """prepare --resolution chose the size its small- and elongated-photo warnings were for;
    a run at another size says so, and how to train at the prepared one."""
    code, stdout, stderr = invoke(runner, "train", prepared, "--preset", "t4-16gb", "--run-dir",
                                  tmp_path / "run", "--dry-run", "--set", "resolution=768")
    said = " ".join((stdout + stderr).split())
    assert code == 0, said
    assert (f"{prepared} was prepared for 1024x1024 (prepare --resolution), this run trains at "
            "768x768: prepare's warnings of small and elongated photos were for the other "
            "size; add --set resolution=1024 to train at it, or prepare again at this one"
            ) in said
    same = train(prepared, "t4-16gb", run_dir=tmp_path / "same", dry_run=True,
                 detect=lambda: [])
    assert not any("was prepared for" in warning for warning in same.warnings)
