"""The prepared layout as sd-scripts' own code reads it (skipped without a checkout)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from medsynth_kohya.data.prepare import PrepareOptions, prepare
from medsynth_kohya.data.synth import SyntheticSet
from medsynth_kohya.sdscripts import presets
from medsynth_kohya.training.train import train

_LOAD = """
import json, sys
try:
    import voluptuous
    import sdxl_train_network
    from library import config_util, train_util
except ImportError as exc:
    print("IMPORT-FAILED", exc)
    sys.exit(3)
path = sys.argv[1]
sanitizer = config_util.ConfigSanitizer(True, True, False, True)
user_config = config_util.load_user_config(path)
try:
    sanitizer.sanitize_user_config(user_config)
except voluptuous.MultipleInvalid as exc:
    print("INVALID", exc)
    sys.exit(4)
args = sdxl_train_network.setup_parser().parse_args(["--dataset_config", path])
train_util.prepare_dataset_args(args, True)
blueprint = config_util.BlueprintGenerator(sanitizer).generate(user_config, args)
group, _ = config_util.generate_dataset_group_by_blueprint(blueprint.dataset_group)
dataset = group.datasets[0]
captions = {key: info.caption for key, info in dataset.image_data.items()}
print("RESULT" + json.dumps({"captions": captions, "repeats": dataset.num_train_images}))
"""


_TRAINING = """
import json, sys
try:
    import sdxl_train_network
    from library import config_util, train_util
except ImportError as exc:
    print("IMPORT-FAILED", exc)
    sys.exit(3)
config, dataset, prompts = sys.argv[1:4]
sys.argv = [sys.argv[0], "--config_file", config, "--dataset_config", dataset]
parser = sdxl_train_network.setup_parser()
args = parser.parse_args()
train_util.verify_command_line_training_args(args)
args = train_util.read_config_from_file(args, parser)
train_util.verify_training_args(args)
train_util.prepare_dataset_args(args, True)
sanitizer = config_util.ConfigSanitizer(True, True, False, True)
user_config = config_util.load_user_config(args.dataset_config)
blueprint = config_util.BlueprintGenerator(sanitizer).generate(user_config, args)
group, validation = config_util.generate_dataset_group_by_blueprint(blueprint.dataset_group)
sdxl_train_network.SdxlNetworkTrainer().assert_extra_args(args, group, validation)
loaded = train_util.load_prompts(prompts)
subset = group.datasets[0].subsets[0]
print("RESULT" + json.dumps({"learning_rate": args.learning_rate,
                             "caption_extension": args.caption_extension,
                             "shuffle_caption": subset.shuffle_caption,
                             "keep_tokens": subset.keep_tokens,
                             "enable_bucket": group.datasets[0].enable_bucket,
                             "resolution": list(args.resolution),
                             "output_dir": args.output_dir, "prompts": len(loaded),
                             "images": group.datasets[0].num_train_images}))
"""


def _load(sd_scripts: Path, sd_python: str, *files: Path,
          code: str = _LOAD) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, "PYTHONPATH": str(sd_scripts)}
    return subprocess.run([sd_python, "-c", code, *map(str, files)], cwd=sd_scripts, text=True,
                          capture_output=True, env=environment, timeout=600, check=False)


def test_sd_scripts_accepts_and_reads_the_dataset(isic2020: SyntheticSet, tmp_path: Path,
                                                  sd_scripts: Path, sd_python: str) -> None:
    result = prepare(isic2020.root, tmp_path / "out", options=PrepareOptions(repeats=3),
                     workers=1)
    loaded = _load(sd_scripts, sd_python, result.dataset_config)
    if loaded.returncode == 3:
        pytest.skip(f"sd-scripts' dependencies are not importable: {loaded.stdout.strip()}")
    assert loaded.returncode == 0, loaded.stdout + loaded.stderr[-2000:]
    payload = json.loads(loaded.stdout.split("RESULT", 1)[1])
    captions = {Path(key).stem: text for key, text in payload["captions"].items()}
    expected = dict(zip(result.manifest["id"], result.manifest["caption"], strict=True))
    assert captions == expected
    assert payload["repeats"] == 3 * len(expected)


def test_sd_scripts_rejects_a_misspelt_key(tmp_path: Path, sd_scripts: Path,
                                           sd_python: str) -> None:
    config = tmp_path / "bad.toml"
    config.write_text('[general]\ncaption_extention = ".txt"\n', encoding="utf-8")
    loaded = _load(sd_scripts, sd_python, config)
    if loaded.returncode == 3:
        pytest.skip(f"sd-scripts' dependencies are not importable: {loaded.stdout.strip()}")
    assert loaded.returncode == 4 and "caption_extention" in loaded.stdout


def _trained_as_sd_scripts_reads_it(isic2020: SyntheticSet, tmp_path: Path, sd_scripts: Path,
                                    sd_python: str, preset: str,
                                    overrides: list[str]) -> tuple[int, dict[str, Any]]:
    """A run rendered (dry run) on 2 repeats of `isic2020`, as sd-scripts' own code reads it:
    the images prepared and what _TRAINING prints."""
    result = prepare(isic2020.root, tmp_path / "out", options=PrepareOptions(repeats=2),
                     workers=1)
    run = train(result.out, preset, run_dir=tmp_path / "run", dry_run=True, detect=lambda: [],
                sd_scripts=sd_scripts, overrides=overrides)
    loaded = _load(sd_scripts, sd_python, run.config, run.dataset_config, run.sample_prompts,
                   code=_TRAINING)
    if loaded.returncode == 3:
        pytest.skip(f"sd-scripts' dependencies are not importable: {loaded.stdout.strip()}")
    assert loaded.returncode == 0, loaded.stdout[-2000:] + loaded.stderr[-3000:]
    return len(result.manifest), json.loads(loaded.stdout.split("RESULT", 1)[1])


@pytest.mark.parametrize("preset", sorted(presets.available()))
def test_sd_scripts_loads_every_rendered_preset(isic2020: SyntheticSet, tmp_path: Path,
                                                sd_scripts: Path, sd_python: str,
                                                preset: str) -> None:
    images, payload = _trained_as_sd_scripts_reads_it(isic2020, tmp_path, sd_scripts,
                                                      sd_python, preset, [])
    assert payload["learning_rate"] == presets.load(preset).options["learning_rate"]
    assert payload["caption_extension"] == ".txt"
    assert payload["output_dir"] == str((tmp_path / "run" / "output").resolve())
    assert payload["prompts"] >= 1 and payload["images"] == 2 * images


def test_sd_scripts_trains_with_the_dataset_options_a_run_sets(
        isic2020: SyntheticSet, tmp_path: Path, sd_scripts: Path, sd_python: str) -> None:
    """--set shuffle_caption, keep_tokens and enable_bucket reach sd-scripts' dataset, which
    takes the dataset config's values over the config file's."""
    _, payload = _trained_as_sd_scripts_reads_it(
        isic2020, tmp_path, sd_scripts, sd_python, "t4-16gb",
        ["shuffle_caption=true", "cache_text_encoder_outputs=false", "keep_tokens=2",
         "enable_bucket=false"])
    assert (payload["shuffle_caption"], payload["keep_tokens"], payload["enable_bucket"]) == (
        True, 2, False)


@pytest.mark.parametrize(("overrides", "size"), [
    (["resolution=512"], [512, 512]),
    (["resolution=[1024, 768]"], [1024, 768]),
    (["resolution=[1000, 700]", "bucket_reso_steps=32"], [1000, 700]),
    (["resolution=768", "min_bucket_reso=800", "max_bucket_reso=1000"], [768, 768]),
    (["resolution=512", "min_bucket_reso=1024", "enable_bucket=false"], [512, 512]),
])
def test_sd_scripts_takes_the_resolutions_and_buckets_train_takes(
        isic2020: SyntheticSet, tmp_path: Path, sd_scripts: Path, sd_python: str,
        overrides: list[str], size: list[int]) -> None:
    """What train's checks let through at other resolutions and bucket ranges (rounded onto
    the bucket step by sd-scripts) is what sd-scripts' dataset and SDXL trainer start with."""
    images, payload = _trained_as_sd_scripts_reads_it(isic2020, tmp_path, sd_scripts,
                                                      sd_python, "t4-16gb", overrides)
    assert payload["resolution"] == size and payload["images"] == 2 * images
