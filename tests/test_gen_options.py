"""sampling.generator's options for sdxl_gen_img.py: what generation repeats of the training
run, what it sets itself, and what `--set` changes or removes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from medsynth_kohya.errors import UserError
from medsynth_kohya.sampling import prompts
from medsynth_kohya.sampling.generator import (
    gen_options,
    parse_overrides,
    recorded_base_model,
    resolve_base_model,
)
from medsynth_kohya.training.record import RunRecord

from .fake_gen import write_lora

SETTINGS = prompts.Settings(negative_prompt="blurry", width=896, height=1152, steps=28,
                            scale=6.5, sampler="euler_a")


def _options(tmp_path: Path, config: dict[str, Any] | None, on_gpu: bool = True,
             overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    record = None if config is None else RunRecord(config=config)
    sd_dir = tmp_path / "sd-scripts"
    sd_dir.mkdir(exist_ok=True)
    return gen_options(record, "base.safetensors", tmp_path / "run" / "m.safetensors",
                       SETTINGS, overrides or {}, sd_dir, on_gpu)


def test_generation_repeats_the_training_runs_attention_vae_and_network(
        tmp_path: Path) -> None:
    (tmp_path / "vae.safetensors").write_bytes(b"v")
    options = _options(tmp_path, {
        "xformers": True, "vae": str(tmp_path / "vae.safetensors"), "clip_skip": 2,
        "network_args": ["conv_dim=4", "conv_alpha=1"], "network_module": "networks.dylora",
        "no_half_vae": False, "tokenizer_cache_dir": [], "mixed_precision": "bf16"})
    assert options["xformers"] is True and "sdpa" not in options
    assert options["vae"] == str((tmp_path / "vae.safetensors").resolve())
    assert options["clip_skip"] == 2
    assert options["network_args"] == ["conv_dim=4;conv_alpha=1"]
    assert options["network_module"] == ["networks.dylora"]
    assert "no_half_vae" not in options and "tokenizer_cache_dir" not in options
    assert options["bf16"] is True


@pytest.mark.parametrize("given", ["conv_dim=4;conv_alpha=1", ["conv_dim=4", "conv_alpha=1"]])
def test_network_args_are_one_entry_whether_recorded_as_a_list_or_a_string(
        tmp_path: Path, given: str | list[str]) -> None:
    """A record written by hand may hold network_args as one string: it is one entry, not
    split into its letters."""
    options = _options(tmp_path, {"network_args": given})
    assert options["network_args"] == ["conv_dim=4;conv_alpha=1"]


def test_what_sample_sets_itself(tmp_path: Path) -> None:
    options = _options(tmp_path, None)
    assert options["ckpt"] == "base.safetensors" and options["sdpa"] is True
    assert options["network_module"] == ["networks.lora"]
    assert options["network_weights"] == [str((tmp_path / "run" / "m.safetensors").resolve())]
    assert options["network_mul"] == [1.0]
    assert (options["W"], options["H"], options["steps"], options["scale"],
            options["sampler"]) == (896, 1152, 28, 6.5, "euler_a")
    assert (options["images_per_prompt"], options["batch_size"]) == (1, 1)
    assert options["sequential_file_name"] is True


@pytest.mark.parametrize(("tokens", "multiples"), [(75, None), (150, 2), (225, 3), (None, None)])
def test_prompts_are_as_long_as_training_read_them(tmp_path: Path, tokens: int | None,
                                                   multiples: int | None) -> None:
    options = _options(tmp_path, {"max_token_length": tokens})
    assert options.get("max_embeddings_multiples") == multiples


@pytest.mark.parametrize(("precision", "on_gpu", "flag"), [
    ("fp16", True, "fp16"), ("bf16", True, "bf16"), ("fp16", False, None), ("no", True, None)])
def test_half_precision_is_repeated_on_a_gpu_only(tmp_path: Path, precision: str, on_gpu: bool,
                                                 flag: str | None) -> None:
    options = _options(tmp_path, {"mixed_precision": precision}, on_gpu=on_gpu)
    assert [key for key in ("fp16", "bf16") if options.get(key)] == ([flag] if flag else [])


def test_set_overrides_change_remove_and_place_files(tmp_path: Path) -> None:
    (tmp_path / "other-vae.safetensors").write_bytes(b"v")
    options = _options(tmp_path, {"xformers": True, "clip_skip": 2}, overrides={
        "clip_skip": None, "network_mul": [0.7], "vae": str(tmp_path / "other-vae.safetensors"),
        "xformers": None})
    assert "clip_skip" not in options and "xformers" not in options
    assert options["network_mul"] == [0.7]
    assert options["vae"] == str((tmp_path / "other-vae.safetensors").resolve())


def test_set_parses_values_and_refuses_what_sample_decides() -> None:
    assert parse_overrides(["clip_skip=2", "vae=", "network_mul=0.5"]) == {
        "clip_skip": 2, "vae": None, "network_mul": [0.5]}
    for item, words in (("W=512", "use --width"), ("network_mul=", "without the LoRA"),
                        ("clip skip=2", "key=value"), ("clip_skip", "key=value")):
        with pytest.raises(UserError, match=words):
            parse_overrides([item])


@pytest.mark.parametrize(("item", "said"), [
    ("clip_skip", "--set 'clip_skip' must look like key=value, e.g. --set network_mul=0.8"),
    ("seed=3", "--set seed is decided by sample; use --seed"),
    ("n_iter=2", "--set n_iter is decided by sample (it numbers and names the images)"),
    ("network_module=", "--set network_module= would generate without the LoRA "
                        "(sdxl_gen_img.py applies it only with network_module and "
                        "network_mul); give a value, e.g. --set network_mul=0.8")])
def test_a_set_refusal_says_why_and_what_to_give_instead(item: str, said: str) -> None:
    with pytest.raises(UserError) as refused:
        parse_overrides([item])
    assert str(refused.value) == said


def test_vae_files_given_from_home_are_written_out_for_sd_scripts(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """sdxl_gen_img.py runs in the sd-scripts folder and expands no `~`: the training run's
    VAE and a --set one, given from the home folder, reach it as absolute paths."""
    monkeypatch.setenv("HOME", str(tmp_path))
    for name in ("vae.safetensors", "other.safetensors"):
        (tmp_path / name).write_bytes(b"v")
    trained = _options(tmp_path, {"vae": "~/vae.safetensors"})
    assert trained["vae"] == str((tmp_path / "vae.safetensors").resolve())
    overridden = _options(tmp_path, {}, overrides={"vae": "~/other.safetensors"})
    assert overridden["vae"] == str((tmp_path / "other.safetensors").resolve())


def test_the_base_model_is_the_given_one_else_the_runs_and_a_missing_file_is_said(
        tmp_path: Path) -> None:
    sd_dir = tmp_path / "sd-scripts"
    (sd_dir / "models").mkdir(parents=True)
    (sd_dir / "models" / "sdxl.safetensors").write_bytes(b"m")
    record = RunRecord(config={"pretrained_model_name_or_path": "models/sdxl.safetensors"})
    assert resolve_base_model(None, record, sd_dir) == ("models/sdxl.safetensors", [])
    assert resolve_base_model("owner/model", record, sd_dir) == ("owner/model", [])
    resolved, problems = resolve_base_model("models/gone.safetensors", record, sd_dir)
    assert resolved == "models/gone.safetensors"
    assert problems and "base model models/gone.safetensors is not a file" in problems[0]
    with pytest.raises(UserError, match="give --base-model"):
        resolve_base_model(None, RunRecord(), sd_dir)


def test_a_base_model_that_cannot_be_found_is_refused_naming_where_it_came_from(
        tmp_path: Path) -> None:
    """The refusal says which base model is at fault (the run's, or --base-model) and the fix."""
    sd_dir = tmp_path / "sd-scripts"
    sd_dir.mkdir()
    with pytest.raises(UserError) as none:
        resolve_base_model(None, RunRecord(), sd_dir)
    assert str(none.value) == ("give --base-model (a .safetensors checkpoint or a Hub id): the "
                               "LoRA has no train run record naming its base model")
    nobody = "~no-such-user-medsynth/sdxl.safetensors"
    record = RunRecord(config={"pretrained_model_name_or_path": nobody})
    with pytest.raises(UserError, match=r"^the run's base model ~no-such-user"):
        resolve_base_model(None, record, sd_dir)
    with pytest.raises(UserError, match=r"^--base-model ~no-such-user"):
        resolve_base_model(nobody, None, sd_dir)


def test_metadata_names_a_local_base_model_without_its_folders(tmp_path: Path) -> None:
    sd_dir = tmp_path / "sd-scripts"
    (sd_dir / "diffusers" / "sdxl").mkdir(parents=True)
    assert recorded_base_model("diffusers/sdxl", sd_dir) == "<local>/sdxl"
    assert recorded_base_model(str(tmp_path / "x.safetensors"), sd_dir) == "<local>/x.safetensors"
    assert recorded_base_model("stabilityai/stable-diffusion-xl-base-1.0", sd_dir) == (
        "stabilityai/stable-diffusion-xl-base-1.0")


@pytest.mark.parametrize("xformers", [False, True])
def test_preflight_passes_on_what_generation_uses_and_warns_of_the_cpu(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, xformers: bool) -> None:
    """Training's own concerns (bitsandbytes, accelerate's config) and xformers, unless the
    generation uses it, are no warning of `sample`'s; no GPU is."""
    from medsynth_kohya.machine import doctor
    from medsynth_kohya.machine.gpus import Gpu
    from medsynth_kohya.sampling.generator import preflight
    from medsynth_kohya.sdscripts import checkout

    asked: list[list[str]] = []

    def diagnose(**kwargs: Any) -> doctor.Report:
        asked.append(list(kwargs["needs"]))
        assert kwargs["python"] == "python3"  # the Python that runs the generator is checked
        return doctor.Report((
            doctor.Check("bitsandbytes", doctor.WARN, "missing", "pip install bitsandbytes"),
            doctor.Check("accelerate config", doctor.WARN, "none", "accelerate config"),
            doctor.Check("xformers", doctor.WARN, "missing", "pip install xformers"),
            doctor.Check("disk", doctor.WARN, "3 GiB free", "free some space"),
            doctor.Check("torch", doctor.FAIL, "missing", "pip install torch")))

    monkeypatch.setattr(doctor, "diagnose", diagnose)
    sd_dir = tmp_path / "sd-scripts"
    sd_dir.mkdir()
    location = checkout.Location(sd_dir, checkout.GIVEN)
    gen = {"xformers": True} if xformers else {}
    missing, _ = preflight(location, "python3", tmp_path, [], gen)
    assert missing and "sd-scripts not found" in missing[0] and not asked
    (sd_dir / "sdxl_gen_img.py").write_text("", encoding="utf-8")
    problems, warnings = preflight(location, "python3", tmp_path, [], gen)
    assert problems == ["torch: missing; pip install torch"]
    assert asked == [["xformers"] if xformers else []]
    assert [w.split(":")[0] for w in warnings] == [
        *(["xformers"] if xformers else []), "disk", "no NVIDIA GPU found (nvidia-smi)"]
    _, on_gpu = preflight(location, "python3", tmp_path, [Gpu("T4", 15360, (7, 5))], gen)
    assert not any("no NVIDIA GPU" in w for w in on_gpu)


def test_a_lora_file_without_a_run_record_is_loaded_as_the_network_it_names(
        tmp_path: Path) -> None:
    """A LoHa file given alone was loaded as networks.lora, which builds no modules from its
    keys (sd-scripts loads the weights non-strictly): the bare base model, recorded as made
    with the LoRA."""
    lora = write_lora(tmp_path / "run" / "m.safetensors", {
        "ss_network_module": "lycoris.kohya",
        "ss_network_args": json.dumps({"algo": "loha", "conv_dim": "4"})})
    options = _options(tmp_path, None)
    assert options["network_module"] == ["lycoris.kohya"]
    assert options["network_args"] == ["algo=loha;conv_dim=4"]
    assert options["network_weights"] == [str(lora.resolve())]
    write_lora(lora, {"ss_network_args": "not json"})
    options = _options(tmp_path, None)
    assert options["network_module"] == ["networks.lora"] and "network_args" not in options
    write_lora(lora, {"ss_network_module": "lycoris.kohya"})  # a run record says otherwise
    assert _options(tmp_path, {"network_module": "networks.lora"})["network_module"] == [
        "networks.lora"]
