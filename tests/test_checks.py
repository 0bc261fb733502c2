"""The option checks on their own: each refused combination, its message, and what passes."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from medsynth_kohya.machine.gpus import Gpu
from medsynth_kohya.sdscripts import checks, sdopts

T4 = Gpu("Tesla T4", 15360, (7, 5))
A100 = Gpu("NVIDIA A100-SXM4-40GB", 40960, (8, 0))
H100 = Gpu("NVIDIA H100 80GB HBM3", 81559, (9, 0))
CACHED = {"cache_text_encoder_outputs": True, "network_train_unet_only": True}

TRAIN = "sdxl_train_network"


@pytest.mark.parametrize(("value", "expected"), [
    ("1024,1024", (1024, 1024)), ("768, 1024", (768, 1024)), ("896", (896, 896)), ("1", (1, 1)),
    (" 64 ,128 ", (64, 128)), ("1024,1024,3", None), ("0,1024", None), ("1024,", None),
    ("-64", None), ("1e3", None), ("", None), (1024, None), ([1024, 1024], None), (None, None),
])
def test_resolution(value: Any, expected: tuple[int, int] | None) -> None:
    assert checks.resolution(value) == expected


def test_a_plain_config_passes() -> None:
    options = {"resolution": "1024,1024", "mixed_precision": "bf16", "full_bf16": True,
               "cache_latents": True, "caption_extension": ".txt", **CACHED}
    assert checks.config_errors(options) == []
    assert checks.config_errors({}) == []


@pytest.mark.parametrize("key", ["cache_text_encoder_outputs",
                                 "cache_text_encoder_outputs_to_disk"])
def test_cached_text_encoder_needs_unet_only(key: str) -> None:
    assert checks.config_errors({key: True}) == [
        "cache_text_encoder_outputs needs network_train_unet_only = true"]
    assert checks.config_errors({key: True, "network_train_unet_only": True}) == []
    assert checks.config_errors({key: False}) == []
    assert checks.config_errors({key: "true"}) == []  # only a TOML true switches it on


def test_cached_text_encoder_refuses_what_changes_captions() -> None:
    options = {**CACHED, "shuffle_caption": True, "token_warmup_step": 10,
               "caption_dropout_rate": 0.1, "caption_dropout_every_n_epochs": 2,
               "caption_tag_dropout_rate": 0.05}
    assert checks.config_errors(options) == [
        "cache_text_encoder_outputs cannot be used with shuffle_caption = true",
        "cache_text_encoder_outputs cannot be used with token_warmup_step > 0",
        "cache_text_encoder_outputs cannot be used with caption dropout "
        "(caption_dropout_rate > 0)",
        "cache_text_encoder_outputs cannot be used with caption dropout "
        "(caption_dropout_every_n_epochs > 0)",
        "cache_text_encoder_outputs cannot be used with caption dropout "
        "(caption_tag_dropout_rate > 0)",
    ]
    harmless = {**CACHED, "shuffle_caption": False, "token_warmup_step": 0,
                "caption_dropout_rate": 0.0, "caption_dropout_every_n_epochs": True,
                "caption_tag_dropout_rate": "0.1"}
    assert checks.config_errors(harmless) == []
    assert checks.config_errors({"shuffle_caption": True, "token_warmup_step": 5,
                                 "caption_dropout_rate": 0.5}) == []


@pytest.mark.parametrize("key", ["cache_latents", "cache_latents_to_disk"])
def test_cached_latents_refuse_augmentation(key: str) -> None:
    assert checks.config_errors({key: True, "color_aug": True, "random_crop": True}) == [
        "cache_latents cannot be used with color_aug = true",
        "cache_latents cannot be used with random_crop = true"]
    assert checks.config_errors({key: True, "color_aug": False}) == []
    assert checks.config_errors({key: False, "color_aug": True, "random_crop": True}) == []
    both = checks.config_errors({key: True, "color_aug": True, "cache_text_encoder_outputs": True})
    assert both == ["cache_text_encoder_outputs needs network_train_unet_only = true",
                    "cache_latents cannot be used with color_aug = true"]


def test_caption_extension_and_resolution_format() -> None:
    assert checks.config_errors({"caption_extension": ".caption"}) == [
        "caption_extension = '.caption': prepare writes captions as .txt files; "
        "remove the override"]
    assert checks.config_errors({"caption_extension": ".txt"}) == []
    for bad in ("1024x1024", "0,0", "1024,-8"):
        assert checks.config_errors({"resolution": bad}) == [
            f"resolution = {bad!r} must be a width and height above 0 such as \"1024,1024\" "
            "or \"1024\""]
    assert checks.config_errors({"resolution": [1024, 1024]}) == []  # a type: sdopts says it


@pytest.mark.parametrize("value", ["32", "1024,32", "63,1024"])
def test_a_resolution_below_the_smallest_bucket_is_refused(value: str) -> None:
    """The dataset config's min_bucket_reso is at least 64; sd-scripts refuses a smaller side."""
    assert checks.config_errors({"resolution": value}) == [
        f"resolution = {value!r} is below the dataset's smallest bucket (min_bucket_reso 64), "
        'which sd-scripts refuses: give at least 64 a side, such as "1024,1024"']
    assert checks.config_errors({"resolution": "64,1024"}) == []


@pytest.mark.parametrize("key", ["max_train_steps", "max_train_epochs", "train_batch_size",
                                 "network_dim", "gradient_accumulation_steps",
                                 "save_every_n_steps", "save_every_n_epochs",
                                 "sample_every_n_steps", "sample_every_n_epochs"])
def test_counts_below_one_are_refused(key: str) -> None:
    for value in (0, -5):
        assert sdopts.check("sdxl_train_network", {key: value}) == [
            f"{key} = {value} must be at least 1 (remove the override for the preset's value)"]
    assert sdopts.check("sdxl_train_network", {key: 1}) == []
    assert sdopts.check("sdxl_train_network", {key: True}) == [
        f"{key} = true must be a TOML integer"]
    assert checks.config_errors({key: 0}) == []  # said once, by sdopts


@pytest.mark.parametrize(("flag", "precision"), [("full_fp16", "fp16"), ("full_bf16", "bf16")])
def test_full_precision_needs_its_mixed_precision(flag: str, precision: str) -> None:
    other = "bf16" if precision == "fp16" else "fp16"
    assert checks.config_errors({flag: True, "mixed_precision": other}) == [
        f'{flag} needs mixed_precision = "{precision}"']
    assert checks.config_errors({flag: True}) == [f'{flag} needs mixed_precision = "{precision}"']
    assert checks.config_errors({flag: True, "mixed_precision": precision}) == []
    assert checks.config_errors({flag: False, "mixed_precision": other}) == []


def test_bf16_use() -> None:
    assert checks.uses_bf16({"mixed_precision": "bf16"})
    assert checks.uses_bf16({"full_bf16": True, "mixed_precision": "fp16"})
    assert not checks.uses_bf16({"mixed_precision": "fp16", "full_bf16": False})
    assert not checks.uses_bf16({})


def test_cpu_errors() -> None:
    assert checks.cpu_errors({}) == []
    assert checks.cpu_errors({"mixed_precision": "no", "xformers": False}) == []
    assert checks.cpu_errors({"mixed_precision": "fp16", "xformers": True}) == [
        "mixed_precision = 'fp16' needs a GPU; use mixed_precision = \"no\" on CPU",
        "xformers needs a CUDA GPU; use sdpa = true on CPU"]


def test_gpu_errors_on_fitting_gpus() -> None:
    options = {"mixed_precision": "bf16"}
    assert checks.gpu_errors(options, [A100], 1, 40.0) == []
    assert checks.gpu_errors(options, [H100, H100], 2, 40.0) == []
    assert checks.gpu_errors({"mixed_precision": "fp16"}, [T4], 1, 15.0) == []


def test_gpu_errors_name_each_problem() -> None:
    assert checks.gpu_errors({"mixed_precision": "bf16"}, [T4], 1, 24.0) == [
        "Tesla T4 (compute capability 7.5) has no bf16: --set mixed_precision=fp16 "
        "--set save_precision=fp16, or the t4-16gb preset",
        "Tesla T4 has 15 GiB; this preset needs 24 GiB: choose the t4-16gb preset or lower "
        "train_batch_size"]
    assert checks.gpu_errors({}, [A100], 2, 16.0) == [
        "2 training processes need 2 GPUs; 1 found: use --gpus 1"]


def test_a_gpu_whose_capability_or_memory_is_unknown_is_refused_for_neither() -> None:
    """nvidia-smi prints [N/A] for a unified-memory board's memory (and may for its compute
    capability): unknown is not "no bf16" nor "0 GiB", so nothing is refused on it."""
    unknown = Gpu("NVIDIA GH200 480GB", None, None)
    assert checks.gpu_errors({"mixed_precision": "bf16"}, [unknown], 1, 40.0) == []
    assert checks.gpu_errors({"full_bf16": True}, [Gpu("GB10", None, (12, 1))], 1, 40.0) == []
    assert checks.gpu_errors({"mixed_precision": "bf16"}, [Gpu("old", None, (7, 5))], 1,
                             40.0) == ["old (compute capability 7.5) has no bf16: --set "
                                       "mixed_precision=fp16 --set save_precision=fp16, or the "
                                       "t4-16gb preset"]
    assert checks.gpu_errors({}, [Gpu("small", 8192, None)], 1, 40.0) == [
        "small has 8 GiB; this preset needs 40 GiB: choose the t4-16gb preset or lower "
        "train_batch_size"]


def test_only_the_gpus_that_train_are_checked() -> None:
    assert checks.gpu_errors({"full_bf16": True}, [A100, T4], 1, 16.0) == []
    assert len(checks.gpu_errors({"full_bf16": True}, [A100, T4], 2, 15.0)) == 1
    assert checks.gpu_errors({}, [Gpu("small", 16384, (8, 6))], 1, 16.0) == []
    assert checks.gpu_errors({}, [Gpu("small", 16383, (8, 6))], 1, 16.0) != []
    assert checks.gpu_errors({}, [Gpu("odd", 11780, (8, 6))], 1, 16.0) == [
        "odd has 12 GiB; this preset needs 16 GiB: choose the t4-16gb preset or lower "
        "train_batch_size"]  # 11780 MiB is 11.504 GiB


@pytest.mark.parametrize("key", ["learning_rate", "unet_lr"])
@pytest.mark.parametrize("value", [0, 0.0, -1e-4, float("nan"), float("inf"), float("-inf")])
def test_a_learning_rate_that_trains_nothing_is_refused(key: str, value: float) -> None:
    errors = sdopts.check(TRAIN, {key: value})
    if key == "unet_lr" and value == 0:  # networks.lora leaves the U-Net untrained
        assert errors == []
    else:
        what = "0 (not trained) or a number above 0" if key == "unet_lr" else "a number above 0"
        assert errors == [f"{key} = {value} must be {what} such as 1e-4 (remove the override "
                          "for the preset's value)"]
    assert sdopts.check(TRAIN, {key: 1e-4}) == sdopts.check(TRAIN, {key: 1}) == []
    assert checks.config_errors({key: value}) == []  # said once, by sdopts


@pytest.mark.parametrize("value", [[1e-5, float("nan")], [-1.0], float("inf"), [0, -0.5]])
def test_a_text_encoder_rate_that_breaks_the_run_is_refused(value: Any) -> None:
    [error] = sdopts.check(TRAIN, {"text_encoder_lr": value})
    assert error.startswith(f"text_encoder_lr = {value} must be 0 (not trained) or a number "
                            "above 0")
    for frozen in ([1e-5, 2e-5], [], [1e-5, 0], [0.0], 0, 5e-5):  # 0: that encoder stays as is
        assert sdopts.check(TRAIN, {"text_encoder_lr": frozen}) == [], frozen


def test_a_seed_outside_numpys_range_is_refused() -> None:
    for seed in (-1, 2**32, 2**40):
        assert checks.config_errors({"seed": seed}) == [
            f"seed = {seed} is out of range: use 0 to 4294967295 (or remove the override for "
            "the preset's value)"]
    for seed in (0, 42, 2**32 - 1):
        assert checks.config_errors({"seed": seed}) == []


@pytest.mark.parametrize("name", ["AdamW", "adamw8bit", "AdamW8bit", "PagedAdamW8bit", "Lion",
                                  "Prodigy", "DAdaptAdam", "Adafactor", "AdamWScheduleFree",
                                  "SGD", "RMSprop", "bitsandbytes.optim.AdEMAMix8bit",
                                  "prodigyplus.ProdigyPlusScheduleFree", ""])
def test_optimizers_sd_scripts_finds_pass(name: str) -> None:
    assert checks.config_errors({"optimizer_type": name}) == []


@pytest.mark.parametrize(("name", "close"), [("AdamW8bitt", "AdamW8bit"), ("adamww", "AdamW"),
                                             ("sgd", "SGD"), ("Prodigyy", "Prodigy")])
def test_an_optimizer_typo_is_refused_with_the_nearest_name(name: str, close: str) -> None:
    [error] = checks.config_errors({"optimizer_type": name})
    assert error.startswith(f"optimizer_type = {name!r} is neither one of sd-scripts' "
                            "optimizers nor a class of torch.optim")
    assert error.endswith(f"did you mean {close}?") and "module.Class" in error
    assert checks.config_errors({"optimizer_type": "torch..Adam"}) == [
        "optimizer_type = 'torch..Adam' is not a module.Class path"]


def test_lr_schedulers_sd_scripts_builds_pass_and_a_typo_is_refused() -> None:
    for name in ("constant", "cosine", "cosine_with_restarts", "polynomial",
                 "constant_with_warmup", "linear", "warmup_stable_decay", "piecewise_constant"):
        assert checks.config_errors({"lr_scheduler": name}) == []
    [error] = checks.config_errors({"lr_scheduler": "cosine_with_restart"})
    assert error.startswith("lr_scheduler = 'cosine_with_restart' is not one of: constant, ")
    assert error.endswith("(a custom scheduler goes in lr_scheduler_type); did you mean "
                          "cosine_with_restarts?")
    assert checks.config_errors({"lr_scheduler": "Cosine"}) != []  # case matters there
    custom = {"lr_scheduler": "cosine_with_restart", "lr_scheduler_type": "mine.Scheduler"}
    assert checks.config_errors(custom) == []  # lr_scheduler is then ignored


def test_the_adafactor_schedule_needs_its_rate_and_optimizer() -> None:
    ada = {"optimizer_type": "Adafactor"}
    assert checks.config_errors({**ada, "lr_scheduler": "adafactor:1e-4"}) == []
    assert checks.config_errors({**ada, "lr_scheduler": "adafactor"}) == [
        "lr_scheduler = 'adafactor' needs the initial learning rate, e.g. \"adafactor:1e-4\""]
    assert checks.config_errors({"optimizer_type": "AdamW", "lr_scheduler": "adafactor:1e-4"}) \
        == ["lr_scheduler = 'adafactor:1e-4' needs optimizer_type = \"Adafactor\""]
    for optimizer in ("adafactor", "ADAFACTOR", "transformers.optimization.Adafactor"):
        assert checks.config_errors({"optimizer_type": optimizer,  # what sd-scripts asserts
                                     "lr_scheduler": "adafactor:1e-4"}) == [], optimizer
    assert checks.config_errors({"optimizer_type": "my.optim.Adafactor",
                                 "lr_scheduler": "adafactor:1e-4"}) != []


def test_a_warmup_for_a_schedule_without_one_is_refused() -> None:
    """t4-16gb's lr_warmup_steps = 100 with --set lr_scheduler=constant fails in sd-scripts."""
    assert checks.config_errors({"lr_scheduler": "constant", "lr_warmup_steps": 100}) == [
        "lr_scheduler = 'constant' takes no warmup (lr_warmup_steps = 100): use "
        '"constant_with_warmup", or --set lr_warmup_steps=0']
    assert checks.config_errors({"lr_warmup_steps": 0.1}) != []  # constant is the default
    ada = {"optimizer_type": "Adafactor", "lr_scheduler": "adafactor:1e-4", "lr_warmup_steps": 5}
    assert len(checks.config_errors(ada)) == 1
    assert checks.config_errors({"lr_scheduler_type": "mine.Cyclic", "lr_warmup_steps": 5}) == [
        "lr_scheduler_type = 'mine.Cyclic' takes no warmup: --set lr_warmup_steps=0"]
    for fine in ({"lr_scheduler": "constant", "lr_warmup_steps": 0},
                 {"lr_scheduler": "cosine", "lr_warmup_steps": 100},
                 {"lr_scheduler": "constant_with_warmup", "lr_warmup_steps": 0.05},
                 {"optimizer_type": "AdamWScheduleFree", "lr_warmup_steps": 100}):
        assert checks.config_errors(fine) == [], fine


@pytest.mark.parametrize("value", ["ckpt", "pt", "diffusers", "diffusers_safetensors"])
def test_a_lora_saved_other_than_as_safetensors_is_refused(value: str) -> None:
    """train judges the run, and sample and push find the LoRA, by its .safetensors file."""
    assert checks.config_errors({"save_model_as": value}) == [
        f"save_model_as = {value!r}: train, sample and push take the LoRA only as a "
        ".safetensors file; remove the override"]
    assert checks.config_errors({"save_model_as": "safetensors"}) == []


def test_a_lora_saved_without_its_metadata_is_refused() -> None:
    """Without ss_steps a resumed launch's step saves could not be told apart from earlier ones."""
    assert checks.config_errors({"no_metadata": True}) == [
        "no_metadata = true: train reads each LoRA's steps from its metadata, to keep its saves "
        "apart across --resume and tell a finished run; remove the override"]
    assert checks.config_errors({"no_metadata": False}) == []


@pytest.mark.parametrize(("entry", "said"), [
    ("conv_dim = 4", "network_args entry 'conv_dim = 4': sd-scripts keeps the spaces round the "
                     "key, so it is ignored: write conv_dim=4"),
    ("conv_dim", 'network_args entry \'conv_dim\' must be key=value, such as "conv_dim=4"'),
    ("=4", 'network_args entry \'=4\' must be key=value, such as "conv_dim=4"'),
    ("conv_dmi=4", "network_args key 'conv_dmi' is not one networks.lora reads (it would be "
                   "ignored); did you mean conv_dim?"),
])
def test_a_network_arg_sd_scripts_misreads_or_ignores_is_refused(entry: str, said: str) -> None:
    """sd-scripts splits each entry at its first "=" without stripping, and networks.lora
    ignores keys it does not read: conv layers then silently do not train."""
    lora = {"network_module": "networks.lora"}
    assert checks.config_errors({**lora, "network_args": ["conv_alpha=1", entry]}) == [said]
    fine = [f"{key}=1" for key in sdopts.LORA_NETWORK_ARGS] + ["conv_dim= 4"]
    assert checks.config_errors({**lora, "network_args": fine}) == []


def test_another_network_modules_args_are_checked_for_their_form_only() -> None:
    lycoris = {"network_module": "lycoris.kohya"}
    assert checks.config_errors({**lycoris, "network_args": ["algo=lokr", "factor=8"]}) == []
    assert len(checks.config_errors({**lycoris, "network_args": ["algo = lokr", "x"]})) == 2


@pytest.mark.parametrize("key", ["lr_warmup_steps", "lr_decay_steps"])
def test_a_float_of_steps_is_refused_as_sd_scripts_reads_it_as_a_fraction(key: str) -> None:
    """From a config file sd-scripts takes 100.0 as a share of the run (100 x its steps)."""
    for value in (100.0, 1.5, 1.0, -1):
        errors = sdopts.check(TRAIN, {key: value})
        assert len(errors) == 1 and errors[0].startswith(f"{key} = {value} must be whole steps "
                                                         "such as 100, or a fraction"), errors
    for fine in (0, 1, 100, 0.0, 0.05, 0.999):
        assert sdopts.check(TRAIN, {key: fine}) == [], fine


def test_a_warmup_as_long_as_the_run_is_warned_of() -> None:
    """sd-scripts counts warmup over steps x processes; a float is a share of them."""
    cosine = {"lr_scheduler": "cosine", "lr_warmup_steps": 100}
    assert checks.warmup_warning(cosine, 50, 1) == (
        "lr_warmup_steps = 100 is not shorter than the run (50 steps), so the learning rate "
        "never reaches learning_rate: lower it, or give a share of the run such as --set "
        "lr_warmup_steps=0.05")
    assert "(100 steps x 2 processes)" in str(checks.warmup_warning(
        {**cosine, "lr_warmup_steps": 200}, 100, 2))
    assert checks.warmup_warning(cosine, 100, 1) is not None
    for fine, steps, processes in ((cosine, 101, 1), (cosine, 60, 2),
                                   ({**cosine, "lr_warmup_steps": 0.99}, 1, 1),
                                   ({**cosine, "lr_warmup_steps": 0}, 1, 1),
                                   ({**cosine, "lr_scheduler": "constant"}, 50, 1),
                                   ({**cosine, "optimizer_type": "AdamWScheduleFree"}, 50, 1)):
        assert checks.warmup_warning(fine, steps, processes) is None, (fine, steps)


def test_network_module_must_be_importable_where_sd_scripts_runs(tmp_path: Path) -> None:
    sd = tmp_path / "sd-scripts"
    (sd / "networks").mkdir(parents=True)
    (sd / "sdxl_train_network.py").write_text("")
    for name in ("lora", "dylora", "oft"):
        (sd / "networks" / f"{name}.py").write_text("")
    (sd / "mine" / "net").mkdir(parents=True)
    (sd / "mine" / "net" / "__init__.py").write_text("")
    python = sys.executable
    for module in ("networks.lora", "networks.oft", "mine.net", "json", "email.mime"):
        assert checks.config_errors({"network_module": module}, sd, python) == [], module
    [error] = checks.config_errors({"network_module": "networks.lorra"}, sd, python)
    assert error == (f"network_module = 'networks.lorra' is neither a module of sd-scripts in "
                     f"{sd} nor installed in {python}; did you mean networks.lora?")
    for module in ("lycoris_missing.kohya", "json.nope", "networks/lora"):
        [error] = checks.config_errors({"network_module": module}, sd, python)
        assert error.startswith(f"network_module = {module!r} is neither"), error
    # without the checkout (or without sd-scripts in it) the doctor says what is missing
    assert checks.config_errors({"network_module": "networks.lorra"}) == []
    assert checks.config_errors({"network_module": "x"}, tmp_path / "none", python) == []


def test_a_local_model_path_that_is_not_there_is_named(tmp_path: Path) -> None:
    sd = tmp_path / "sd"
    (sd / "vae").mkdir(parents=True)
    (sd / "vae" / "sdxl_vae.safetensors").write_bytes(b"v")
    (tmp_path / "base.safetensors").write_bytes(b"m")
    (tmp_path / "diffusers-model").mkdir()
    present = [{"pretrained_model_name_or_path": "stabilityai/stable-diffusion-xl-base-1.0",
                "vae": "madebyollin/sdxl-vae-fp16-fix"},
               {"pretrained_model_name_or_path": str(tmp_path / "base.safetensors"),
                "vae": "vae/sdxl_vae.safetensors"},
               {"pretrained_model_name_or_path": str(tmp_path / "diffusers-model"),
                "vae": "./vae/sdxl_vae.safetensors"}, {}]
    for options in present:
        assert checks.missing_models(options, sd) == [], options
    missing = {"pretrained_model_name_or_path": str(tmp_path / "gone.safetensors"),
               "vae": "sdxl_vae.safetensors"}
    assert checks.missing_models(missing, sd) == [
        f"pretrained_model_name_or_path = '{tmp_path / 'gone.safetensors'}' is not there "
        f"(relative paths start at {sd}): --set pretrained_model_name_or_path=PATH, or a Hub id "
        "such as stabilityai/stable-diffusion-xl-base-1.0",
        f"vae = 'sdxl_vae.safetensors' is not there (relative paths start at {sd}): --set "
        "vae=PATH, or --set vae= to use the base model's VAE"]
    for path in ("./models/x", "../x", str(tmp_path / "folder"), "model.ckpt"):
        assert len(checks.missing_models({"pretrained_model_name_or_path": path}, sd)) == 1


@pytest.mark.parametrize(("options", "needed"), [
    ({"optimizer_type": "AdamW8bit"}, ["bitsandbytes"]),
    ({"optimizer_type": "PagedAdamW"}, ["bitsandbytes"]),
    ({"optimizer_type": "PagedAdamW32bit"}, ["bitsandbytes"]),
    ({"optimizer_type": "bitsandbytes.optim.AdEMAMix8bit"}, ["bitsandbytes"]),
    ({"use_8bit_adam": True}, ["bitsandbytes"]),
    ({"optimizer_type": "AdamW", "xformers": True}, ["xformers"]),
    ({"optimizer_type": "Adafactor"}, []),
    ({"optimizer_type": "DAdaptAdam"}, ["dadaptation"]),
    ({"optimizer_type": "prodigy"}, ["prodigyopt"]),
    ({"optimizer_type": "Lion"}, ["lion_pytorch"]),
    ({"use_lion_optimizer": True}, ["lion_pytorch"]),
    ({"optimizer_type": "Lion8bit"}, ["bitsandbytes"]),
    ({"optimizer_type": "PagedLion8bit"}, ["bitsandbytes"]),
    ({"optimizer_type": "AdamWScheduleFree"}, ["schedulefree"]),
    ({"optimizer_type": "AdamW", "optimizer_schedulefree_wrapper": True}, ["schedulefree"]),
    ({"log_with": "wandb", "logging_dir": "/logs"}, ["wandb"]),
    ({"log_with": "all"}, ["wandb"]),
    ({"log_with": "tensorboard"}, []),  # accelerate passes over it where it is not installed
    ({"logging_dir": "/logs"}, []),
])
def test_optional_packages_an_optimizer_needs(options: dict[str, Any], needed: list[str]) -> None:
    assert checks.needs(options) == needed


def test_one_rule_tells_a_local_model_from_a_hub_id() -> None:
    """train's missing-model check, sample's and the shared metadata's `<local>/NAME` agree."""
    from medsynth_kohya.sampling.generator import recorded_base_model

    for local in ("./m", "../m", "~/m", "/abs/m", "sd_xl_base_1.0.safetensors", ".cache/m",
                  "old.ckpt", "weights.pt"):
        assert checks.names_file(local), local
        assert recorded_base_model(local, Path("/nonexistent")) == f"<local>/{Path(local).name}"
    for hub in ("stabilityai/stable-diffusion-xl-base-1.0", "owner/model"):
        assert not checks.names_file(hub), hub
        assert recorded_base_model(hub, Path("/nonexistent")) == hub


def test_a_custom_optimizer_or_scheduler_module_must_be_importable(tmp_path: Path) -> None:
    """sd-scripts imports the module of a module.Class optimizer_type or lr_scheduler_type
    only once the model is loaded: a module missing where it runs is refused before."""
    sd = tmp_path / "sd-scripts"
    (sd / "library").mkdir(parents=True)
    (sd / "sdxl_train_network.py").write_text("")
    (sd / "library" / "my_optim.py").write_text("")
    python = sys.executable
    for fine in ({"optimizer_type": "library.my_optim.Lion"}, {"optimizer_type": "json.Adam"},
                 {"lr_scheduler_type": "email.mime.Cyclic"}, {"optimizer_type": "AdamW"}):
        assert checks.config_errors(fine, sd, python) == [], fine
    [error] = checks.config_errors({"optimizer_type": "prodigyoptt.Prodigy"}, sd, python)
    assert error == (f"optimizer_type = 'prodigyoptt.Prodigy': its module 'prodigyoptt' is "
                     f"neither in sd-scripts in {sd} nor installed in {python}; install it "
                     "there or correct the name")
    [error] = checks.config_errors({"lr_scheduler_type": "library.my_sched.Cyclic"}, sd,
                                   python)
    assert error.startswith("lr_scheduler_type = 'library.my_sched.Cyclic': its module "
                            "'library.my_sched' is neither")
    assert checks.config_errors({"optimizer_type": "torch..Adam"}, sd, python) == [
        "optimizer_type = 'torch..Adam' is not a module.Class path"]
    assert checks.config_errors({"optimizer_type": "prodigyoptt.Prodigy"}) == []


def test_bucket_ranges_are_judged_as_sd_scripts_rounds_them_onto_the_step() -> None:
    """min_bucket_reso rounds down and max_bucket_reso up to bucket_reso_steps before sd-scripts
    asserts they hold the resolution; a step SDXL cannot take or a range from 0 is refused."""
    square = {"resolution": "512"}
    for fine in ({"min_bucket_reso": 512}, {"min_bucket_reso": 575}, {"max_bucket_reso": 449},
                 {"max_bucket_reso": 512}, {"bucket_reso_steps": 32}, {"min_bucket_reso": 64},
                 {"min_bucket_reso": 32, "bucket_no_upscale": True},
                 {"min_bucket_reso": 4096, "max_bucket_reso": 0, "enable_bucket": False}):
        assert checks.config_errors({**square, **fine}) == [], fine
    assert checks.config_errors({**square, "min_bucket_reso": 576}) == [
        "min_bucket_reso = 576 is above the shorter side of resolution '512', which sd-scripts "
        "refuses: give at most 512, or remove the override"]
    assert checks.config_errors({**square, "max_bucket_reso": 448}) == [
        "max_bucket_reso = 448 is below the longer side of resolution '512', which sd-scripts "
        "refuses: give at least 512, or remove the override"]
    assert checks.config_errors({**square, "min_bucket_reso": 63}) == [
        "min_bucket_reso = 63 is below bucket_reso_steps (64): sd-scripts rounds it down to 0 "
        "and fails dividing by it; give at least 64"]
    for step in (0, -32, 16, 48):
        assert checks.config_errors({**square, "bucket_reso_steps": step}) == [
            f"bucket_reso_steps = {step} must be a multiple of 32 above 0 (SDXL's latent grid, "
            "which sd-scripts requires), such as 64"]


def test_a_photo_without_a_bucket_under_bucket_no_upscale_is_found() -> None:
    """sd-scripts' no-upscale bucket: the photo shrunk to the training area when larger, its
    sides rounded down to the step; a side of 0 stops it."""
    kept = {"bucket_no_upscale": True}
    fits = [("a", 64, 64), ("b", 2000, 300), ("c", 640, 480)]
    assert checks.bucketless(kept, (256, 256), fits) is None
    for lost in (("d", 63, 64), ("e", 64, 63), ("f", 6000, 40)):
        found = checks.bucketless(kept, (256, 256), [*fits, lost])
        assert found is not None and found.startswith(
            f"bucket_no_upscale = true leaves 1 of 4 training images without a bucket (first: "
            f"{lost[0]}, {lost[1]}x{lost[2]})")
    assert checks.bucketless({**kept, "bucket_reso_steps": 32}, (256, 256),
                             [("d", 63, 64)]) is None
    assert checks.bucketless({}, (256, 256), [("d", 63, 64)]) is None
    assert checks.bucketless({**kept, "enable_bucket": False}, (256, 256),
                             [("d", 63, 64)]) is None
