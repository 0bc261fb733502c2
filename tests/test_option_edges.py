"""Option values at their edges: too large, not finite, out of range or empty values are
refused in one line before anything is read, run or written, not taken as a default or left
to crash late."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from medsynth_kohya import arguments
from medsynth_kohya.data.synth import SyntheticSet, make_dataset
from medsynth_kohya.errors import UserError
from medsynth_kohya.evaluation.evaluate import EvaluateOptions, evaluate
from medsynth_kohya.hub.push import resolve_endpoint
from medsynth_kohya.machine import doctor
from medsynth_kohya.pipeline.demo import MAX_PHOTOS, run_demo
from medsynth_kohya.sampling.plan import (
    MAX_IMAGES,
    SampleOptions,
    check_options,
    generation_settings,
)
from medsynth_kohya.sampling.prompts import MAX_SIZE
from medsynth_kohya.sdscripts import checkout, sdopts

from .conftest import invoke, prepare_set, squeezed
from .fake_gen import PYTHON, FakeGen, make_original_gen
from .fakes import FakeSd

TRAIN = "sdxl_train_network"


def _refused(code: int, stdout: str, stderr: str, needle: str) -> None:
    """Exit 1 with `needle` in the one-line message, no traceback."""
    assert code == 1, stdout + stderr
    assert needle in " ".join(stderr.split()) and "Traceback" not in stdout + stderr


# --- sample --n and reproduce's pre-flight ------------------------------------------------------

def test_an_n_past_the_id_digits_is_refused_by_the_options_check() -> None:
    check_options(SampleOptions(n=MAX_IMAGES))
    for n in (MAX_IMAGES + 1, 10**10):
        with pytest.raises(UserError, match=f"--n must be 1 to {MAX_IMAGES:,}"):
            check_options(SampleOptions(n=n))


def test_a_huge_sample_n_is_refused_even_in_a_dry_run(runner: CliRunner, trained: Path,
                                                      fake_gen: FakeGen, tmp_path: Path) -> None:
    out = tmp_path / "synth"
    _refused(*invoke(runner, "sample", "--lora", trained, "--n", 10**10, "--out", out,
                     "--sd-scripts", fake_gen.sd_scripts, "--python", PYTHON, "--dry-run"),
             f"--n must be 1 to {MAX_IMAGES:,} (got 10,000,000,000)")
    assert not out.exists()


@pytest.mark.parametrize(("option", "needle"), [
    (("--n", 10**10), f"--n must be 1 to {MAX_IMAGES:,}"),
    (("--set", "network_alpha=nan"), "network_alpha = nan must be 0"),
])
def test_reproduce_refuses_a_later_stage_option_before_any_stage(
        runner: CliRunner, isic2020: SyntheticSet, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch, option: tuple[object, ...], needle: str) -> None:
    fake = make_original_gen(tmp_path, monkeypatch)
    workdir = tmp_path / "w"
    _refused(*invoke(runner, "reproduce", isic2020.root, "--workdir", workdir, "--preset",
                     "cpu-smoke", "--sd-scripts", fake.sd_scripts, "--python", PYTHON, *option),
             needle)
    assert not workdir.exists()  # neither prepare nor train ran


def test_demo_refuses_a_huge_n_and_an_out_of_range_seed(runner: CliRunner,
                                                        tmp_path: Path) -> None:
    out = tmp_path / "demo"
    _refused(*invoke(runner, "demo", "--out", out, "--n", 10**9),
             f"--n must be 8 to {MAX_PHOTOS:,}")
    _refused(*invoke(runner, "demo", "--out", out, "--seed", 2**32),
             f"--seed must be 0 to {arguments.MAX_SEED}")
    with pytest.raises(UserError, match="--seed must be 0 to"):
        run_demo(out, seed=-1)
    assert not out.exists()


# --- one rule for seeds -------------------------------------------------------------------------

def test_the_seed_rule_allows_0_to_2_to_the_32_minus_one_per_image() -> None:
    for seed in (0, 2**32 - 1):
        arguments.check_seed(seed)
    arguments.check_seed(2**32 - 10, count=10)
    for seed, count in ((-1, 1), (2**32, 1), (2**32 - 9, 10)):
        with pytest.raises(UserError, match="--seed must be 0 to"):
            arguments.check_seed(seed, count)


@pytest.mark.parametrize("seed", [-5, 2**32])
def test_evaluate_refuses_a_seed_before_reading_any_image(runner: CliRunner, tmp_path: Path,
                                                          seed: int) -> None:
    out = tmp_path / "eval"
    _refused(*invoke(runner, "evaluate", "--real", tmp_path / "real", "--synthetic",
                     tmp_path / "syn", "--out", out, "--seed", seed),
             f"--seed must be 0 to 4294967295 (got {seed})")
    with pytest.raises(UserError, match="--seed must be 0 to 4294967295"):
        evaluate(tmp_path / "real", tmp_path / "syn", out, EvaluateOptions(seed=seed))
    assert not out.exists()


@pytest.mark.parametrize("resolution", [0, -64, -1024, 1000, 32, MAX_SIZE + 64, 2**40,
                                        10**22 + 64])
def test_prepare_says_which_resolutions_it_takes(runner: CliRunner, isic2020: SyntheticSet,
                                                 tmp_path: Path, resolution: int) -> None:
    """0 and -64 are multiples of 64 too: the refusal names the least and the largest side
    (sd-scripts would loop over every bucket side up to twice a huge one) and a usual one."""
    out = tmp_path / "out"
    _refused(*invoke(runner, "prepare", isic2020.root, "--out", out, "--resolution",
                     resolution),
             f"--resolution must be a multiple of 64 from 64 to {MAX_SIZE}, such as 1024 "
             f"(SDXL's) or 512 (got {resolution})")
    assert not out.exists()


@pytest.mark.parametrize("setting", [f"resolution={MAX_SIZE + 64}",
                                     f"resolution=[1024, {MAX_SIZE + 32}]",
                                     f'resolution="{10**22}"'])
def test_train_refuses_a_resolution_past_the_largest_side(
        runner: CliRunner, prepared: Path, fake_sd: FakeSd, tmp_path: Path,
        setting: str) -> None:
    """The training side has the bound sample's images have: past it SDXL repeats its subject,
    memory grows with the square, and sd-scripts builds its buckets side by side up to twice
    it (a 20-digit one never ends)."""
    run = tmp_path / "run"
    _refused(*invoke(runner, "train", prepared, "--preset", "cpu-smoke", "--run-dir", run,
                     "--sd-scripts", fake_sd.sd_scripts, "--dry-run", "--set", setting),
             f"is past {MAX_SIZE} a side, where SDXL repeats its subject and its memory grows "
             f"with the square of the pixels: give at most {MAX_SIZE} a side, such as "
             '"1024,1024"')
    assert not (run / "config.toml").exists()


# --- --set values: finite, in sd-scripts' range, read as meant --------------------------------

@pytest.mark.parametrize(("setting", "needle"), [
    ("network_alpha=nan", "network_alpha = nan must be 0 (the same as network_dim) or above"),
    ("network_alpha=-1", "network_alpha = -1 must be 0"),
    ("noise_offset=nan", "noise_offset = nan must be 0 (off) or above"),
    ("noise_offset=-0.1", "noise_offset = -0.1 must be 0 (off) or above"),
    ("network_dropout=2", "network_dropout = 2 must be 0 to below 1"),
    ("network_dropout=1", "network_dropout = 1 must be 0 to below 1"),
    ("min_snr_gamma=-1", "min_snr_gamma = -1 must be above 0"),
    ("caption_dropout_rate=1.5", "caption_dropout_rate = 1.5 must be 0 to 1"),
    ("adaptive_noise_scale=inf", "adaptive_noise_scale = inf must be a finite number"),
    ("max_grad_norm=-inf", "max_grad_norm = -inf must be a finite number"),
    ("lr_warmup_steps=100.0", "lr_warmup_steps = 100.0 must be whole steps such as 100, or a "
                              "fraction of the run"),
    ("lr_decay_steps=1.5", "lr_decay_steps = 1.5 must be whole steps such as 100, or a fraction"),
    ("save_model_as=ckpt", "save_model_as = 'ckpt': train, sample and push take the LoRA only "
                           "as a .safetensors file"),
    ("resolution=32", "resolution = '32,32' is below the dataset's smallest bucket "
                      "(min_bucket_reso 64)"),
    ("resolution=[1024, 32]", "resolution = '1024,32' is below the dataset's smallest bucket"),
    ('network_args=["conv_dim = 4"]', "sd-scripts keeps the spaces round the key, so it is "
                                      "ignored: write conv_dim=4"),
    ('network_args=["conv_dmi=4"]', "network_args key 'conv_dmi' is not one networks.lora "
                                    "reads (it would be ignored); did you mean conv_dim?"),
    ('network_args=["conv_dim"]', "network_args entry 'conv_dim' must be key=value"),
    (f"max_train_steps={10**400}", "is past TOML's 64-bit integers"),  # was an OverflowError
])
def test_train_refuses_a_value_sd_scripts_would_fail_on_or_misread(
        runner: CliRunner, prepared: Path, fake_sd: FakeSd, tmp_path: Path, setting: str,
        needle: str) -> None:
    run = tmp_path / "run"
    _refused(*invoke(runner, "train", prepared, "--preset", "cpu-smoke", "--run-dir", run,
                     "--sd-scripts", fake_sd.sd_scripts, "--dry-run", "--set", setting), needle)
    assert not (run / "config.toml").exists()


@pytest.mark.parametrize(("settings", "needle"), [
    (["bucket_reso_steps=0"], "bucket_reso_steps = 0 must be a multiple of 32 above 0"),
    (["bucket_reso_steps=48"], "bucket_reso_steps = 48 must be a multiple of 32 above 0"),
    (["resolution=512", "min_bucket_reso=576"],
     "min_bucket_reso = 576 is above the shorter side of resolution '512,512'"),
    (["resolution=[1024, 768]", "min_bucket_reso=832"],
     "min_bucket_reso = 832 is above the shorter side of resolution '1024,768'"),
    (["resolution=512", "max_bucket_reso=256"],
     "max_bucket_reso = 256 is below the longer side of resolution '512,512'"),
    (["resolution=512", "max_bucket_reso=0"],
     "max_bucket_reso = 0 is below the longer side of resolution '512,512'"),
    (["resolution=512", "min_bucket_reso=32"], "min_bucket_reso = 32 is below "
                                               "bucket_reso_steps (64)"),
    (["resolution=96", "bucket_reso_steps=128"],
     "resolution = '96,96' is below the dataset's smallest bucket (min_bucket_reso 128)"),
    (["resolution=1000", "enable_bucket=false"],
     "resolution = '1000,1000' with enable_bucket = false is resized to as it is, and SDXL "
     "trains only on sides in multiples of 32"),
    (["resolution=[1024, 720]", "enable_bucket=false"],
     "resolution = '1024,720' with enable_bucket = false"),
])
def test_train_refuses_bucket_options_sd_scripts_stops_on(
        runner: CliRunner, prepared: Path, fake_sd: FakeSd, tmp_path: Path,
        settings: list[str], needle: str) -> None:
    """sd-scripts' SDXL trainer takes bucket sides in multiples of 32, and its dataset rounds
    the bucket range to that step and asserts it holds the resolution (or divides by zero)."""
    run = tmp_path / "run"
    sets = [part for setting in settings for part in ("--set", setting)]
    _refused(*invoke(runner, "train", prepared, "--preset", "cpu-smoke", "--run-dir", run,
                     "--sd-scripts", fake_sd.sd_scripts, "--dry-run", *sets), needle)
    assert not (run / "config.toml").exists()


@pytest.mark.parametrize(("sizes", "resolution", "first"), [
    (((640, 480), (48, 300)), "1024", "48x300"),
    (((640, 480), (3000, 20)), "768", "3000x20"),
    (((640, 480), (6000, 40)), "256", "6000x40"),  # shrunk to the area first: 40 -> 10
])
def test_train_refuses_bucket_no_upscale_where_a_photo_gets_no_bucket(
        runner: CliRunner, fake_sd: FakeSd, tmp_path: Path, sizes: tuple[tuple[int, int], ...],
        resolution: str, first: str) -> None:
    """With bucket_no_upscale sd-scripts rounds each photo's sides (shrunk to the training
    area when larger) down to bucket_reso_steps; a side below it becomes 0 and sd-scripts
    divides by it when it starts."""
    made = make_dataset(tmp_path / "src", n=8, sizes=sizes)
    prepared = prepare_set(made, tmp_path / "prepared")
    run = tmp_path / "run"
    common = ("train", prepared, "--preset", "t4-16gb", "--sd-scripts", fake_sd.sd_scripts,
              "--dry-run", "--set", f"resolution={resolution}")
    table = pd.read_csv(prepared / "manifest.csv")
    small = table[(table["width"] == sizes[1][0]) & (table["height"] == sizes[1][1])]
    assert 0 < len(small) < len(table)
    _refused(*invoke(runner, *common, "--run-dir", run, "--set", "bucket_no_upscale=true"),
             f"bucket_no_upscale = true leaves {len(small)} of {len(table)} training images "
             f"without a bucket (first: {min(small['id'])}, {first})")
    assert not (run / "config.toml").exists()
    code, stdout, stderr = invoke(runner, *common, "--run-dir", tmp_path / "upscaled")
    assert code == 0, stdout + stderr


@pytest.mark.parametrize(("settings", "buckets"), [
    (["resolution=512", "min_bucket_reso=500", "max_bucket_reso=1000"], (500, 1000)),
    (["resolution=[1000, 700]", "bucket_reso_steps=32"], (320, 1984)),
    (["resolution=512", "min_bucket_reso=1024", "enable_bucket=false"], (1024, 1024)),
])
def test_train_takes_bucket_options_sd_scripts_rounds_or_ignores(
        runner: CliRunner, prepared: Path, fake_sd: FakeSd, tmp_path: Path,
        settings: list[str], buckets: tuple[int, int]) -> None:
    """A bucket range sd-scripts rounds onto its step around the resolution, or one it does
    not use (no bucketing), is written as given."""
    import toml

    run = tmp_path / "run"
    sets = [part for setting in settings for part in ("--set", setting)]
    code, stdout, stderr = invoke(runner, "train", prepared, "--preset", "cpu-smoke",
                                  "--run-dir", run, "--sd-scripts", fake_sd.sd_scripts,
                                  "--dry-run", *sets)
    assert code == 0, stdout + stderr
    dataset = toml.load(run / "dataset.toml")["datasets"][0]
    assert (dataset["min_bucket_reso"], dataset["max_bucket_reso"]) == buckets


@pytest.mark.parametrize(("setting", "module"), [
    ("optimizer_type=DAdaptAdam", "dadaptation"), ("optimizer_type=Prodigy", "prodigyopt"),
    ("optimizer_type=Lion", "lion_pytorch"), ("optimizer_type=AdamWScheduleFree", "schedulefree"),
    ("log_with=wandb", "wandb"),
])
def test_a_dry_run_says_a_missing_optimizer_or_logger_package_would_stop_the_run(
        runner: CliRunner, prepared: Path, fake_sd: FakeSd, tmp_path: Path, setting: str,
        module: str) -> None:
    code, stdout, stderr = invoke(runner, "train", prepared, "--preset", "cpu-smoke", "--run-dir",
                                  tmp_path / "run", "--sd-scripts", fake_sd.sd_scripts,
                                  "--dry-run", "--set", setting)
    said = " ".join((stdout + stderr).split())
    assert code == 0 and (f"a real run would stop at: {module}: not installed: needed for "
                          in said), said
    _refused(*invoke(runner, "train", prepared, "--preset", "cpu-smoke", "--run-dir",
                     tmp_path / "real", "--sd-scripts", fake_sd.sd_scripts, "--set", setting),
             f"{module}: not installed")


def test_train_warns_of_a_warmup_as_long_as_the_run(runner: CliRunner, prepared: Path,
                                                    fake_sd: FakeSd, tmp_path: Path) -> None:
    code, stdout, stderr = invoke(runner, "train", prepared, "--preset", "cpu-smoke", "--run-dir",
                                  tmp_path / "run", "--sd-scripts", fake_sd.sd_scripts,
                                  "--dry-run", "--set", "lr_scheduler=cosine", "--set",
                                  "lr_warmup_steps=100", "--set", "max_train_steps=50")
    said = " ".join((stdout + stderr).split())
    assert code == 0 and ("Warning: lr_warmup_steps = 100 is not shorter than the run (50 "
                          "steps)" in said), said


def test_the_ranges_let_the_values_sd_scripts_takes_through() -> None:
    fine = {"network_alpha": 0, "noise_offset": 0.0357, "network_dropout": 0.0,
            "min_snr_gamma": 5, "caption_dropout_rate": 1.0, "max_grad_norm": 0.0,
            "learning_rate": 1e-4, "unet_lr": 0, "text_encoder_lr": [1e-5, 0]}
    assert sdopts.check(TRAIN, fine) == []
    assert sdopts.check(TRAIN, {"min_snr_gamma": 0}) == []  # sd-scripts' "off"
    assert sdopts.check(TRAIN, {"network_dropout": 0.999}) == []
    assert sdopts.check(TRAIN, {"network_alpha": float("inf"), "network_dim": 8}) == [
        "network_alpha = inf must be 0 (the same as network_dim) or above, such as 16"]
    assert sdopts.check("sdxl_gen_img", {"network_mul": [0.8, -1.0]}) == []


def test_sample_refuses_a_non_finite_network_mul(runner: CliRunner, trained: Path,
                                                 fake_gen: FakeGen, tmp_path: Path) -> None:
    out = tmp_path / "synth"
    _refused(*invoke(runner, "sample", "--lora", trained, "--n", 2, "--out", out,
                     "--sd-scripts", fake_gen.sd_scripts, "--python", PYTHON, "--dry-run",
                     "--set", "network_mul=nan"), "network_mul = [nan] must be finite numbers")
    assert fake_gen.calls() == []


# --- empty and absurd values --------------------------------------------------------------------

@pytest.mark.parametrize(("option", "needle"), [
    (("--height", 100_000), "--height 100000 must be a multiple of 32 (as SDXL's UNet needs) "
                            f"from 64 to {MAX_SIZE}: use {MAX_SIZE}"),
    (("--width", MAX_SIZE + 8), f"--width {MAX_SIZE + 8} must be a multiple of 32"),
    (("--width", 1000), "--width 1000 must be a multiple of 32 (as SDXL's UNet needs) from 64 "
                        f"to {MAX_SIZE}: use 992 or 1024"),
    (("--base-model", ""), "--base-model is empty"),
    (("--python", ""), "--python is empty"),
])
def test_sample_refuses_an_absurd_size_or_an_empty_value(
        runner: CliRunner, trained: Path, fake_gen: FakeGen, tmp_path: Path,
        option: tuple[object, ...], needle: str) -> None:
    out = tmp_path / "synth"
    _refused(*invoke(runner, "sample", "--lora", trained, "--n", 2, "--out", out,
                     "--sd-scripts", fake_gen.sd_scripts, "--dry-run", *option), needle)
    assert not out.exists()


def test_the_largest_size_is_accepted() -> None:
    settings = generation_settings(SampleOptions(width=MAX_SIZE, height=MAX_SIZE))
    assert (settings.width, settings.height) == (MAX_SIZE, MAX_SIZE)


def test_train_refuses_an_empty_python(runner: CliRunner, prepared: Path, fake_sd: FakeSd,
                                       tmp_path: Path) -> None:
    _refused(*invoke(runner, "train", prepared, "--preset", "cpu-smoke", "--run-dir",
                     tmp_path / "run", "--sd-scripts", fake_sd.sd_scripts, "--dry-run",
                     "--python", ""), "--python is empty")
    with pytest.raises(UserError, match="--python is empty"):
        checkout.python(" ")


def test_push_refuses_an_empty_endpoint(runner: CliRunner, trained: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_ENDPOINT", "https://hub.example")
    assert resolve_endpoint(None) == "https://hub.example"
    with pytest.raises(UserError, match="--endpoint '' must be an http:// or https:// URL"):
        resolve_endpoint("")
    _refused(*invoke(runner, "push", trained, "--repo-id", "alice/melanoma", "--endpoint", "",
                     "--dry-run"), "--endpoint '' must be an http")


def test_evaluate_refuses_an_empty_classifier(runner: CliRunner, tmp_path: Path) -> None:
    out = tmp_path / "eval"
    _refused(*invoke(runner, "evaluate", "--real", tmp_path / "real", "--synthetic",
                     tmp_path / "syn", "--out", out, "--classifier", ""),
             "--classifier '': give one of")
    assert not out.exists()


def test_doctor_says_a_workdir_does_not_exist_and_whose_free_space_it_shows(
        runner: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    missing = tmp_path / "nosuch" / "deeper"
    row = doctor._disk(missing)
    assert row.status != doctor.FAIL
    assert row.detail.endswith(f"free in {tmp_path} ({missing} does not exist yet: it is made "
                               "there)")
    assert doctor._disk(tmp_path).detail.endswith(f"free in {tmp_path}")
    afile = tmp_path / "a.txt"
    afile.write_text("x")
    assert doctor._disk(afile) == doctor.Check(
        "disk", doctor.FAIL, f"{afile} is a file, not a folder",
        "choose a folder to work in (a new one is made)")
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    _, stdout, _ = invoke(runner, "doctor", "--sd-scripts", tmp_path / "missing",
                          "--workdir", missing)
    assert squeezed(f"{missing} does not exist yet") in squeezed(stdout)
