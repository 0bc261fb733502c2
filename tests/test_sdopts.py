"""The packaged snapshot of sd-scripts' options, and the config check built on it."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
import toml

from medsynth_kohya.sdscripts import sdopts
from medsynth_kohya.sdscripts.checkout import PINNED_COMMIT

TRAIN, GEN = "sdxl_train_network", "sdxl_gen_img"


@pytest.fixture
def unmutated_child(monkeypatch: pytest.MonkeyPatch) -> None:
    """The snapshot child loads sdopts.py by path; under mutmut that copy is trampolined, and
    its statistics mode would read mutmut's config from sd-scripts' folder and fail there."""
    monkeypatch.delenv("MUTANT_UNDER_TEST", raising=False)


def test_snapshot_holds_the_options_as_declared() -> None:
    train = sdopts.load(TRAIN)
    assert train["learning_rate"].kind == "float"
    assert train["resolution"].kind == "str"
    assert train["network_dim"].kind == "int"
    assert train["xformers"] == sdopts.Option("xformers", ("--xformers",), "bool", False, None, 0)
    assert train["mixed_precision"].choices == ("no", "fp16", "bf16")
    assert train["mixed_precision"].default == "no"
    assert train["save_model_as"].choices == (None, "ckpt", "pt", "safetensors")
    assert train["network_args"].nargs == "*"
    assert train["lr_warmup_steps"].kind == "other:int_or_float"
    gen = sdopts.load(GEN)
    assert {"ckpt", "from_file", "outdir", "W", "H", "steps", "scale", "seed",
            "images_per_prompt", "sequential_file_name"} <= set(gen)
    assert gen["network_weights"].nargs == "*"
    assert "euler_a" in (gen["sampler"].choices or ())
    assert "config_file" not in gen
    assert sdopts.commit(TRAIN) == sdopts.commit(GEN) == PINNED_COMMIT


def test_packaged_json_is_sorted_and_has_no_help_text() -> None:
    for script in sdopts.SCRIPTS:
        path = sdopts.SNAPSHOTS / f"{script}.json"
        data = json.loads(path.read_text(encoding="utf-8"))
        names = [option["name"] for option in data["options"]]
        assert names == sorted(names)
        assert data["script"] == script
        assert path.read_text(encoding="utf-8") == sdopts.dump(data)
        assert all(set(option) == {"name", "flags", "kind", "default", "choices", "nargs"}
                   for option in data["options"])


def test_known_good_values_pass() -> None:
    values = {"learning_rate": 1e-4, "lr_warmup_steps": 100, "network_dim": 32,
              "resolution": "1024,1024", "mixed_precision": "bf16", "xformers": True,
              "network_args": ["conv_dim=4"], "save_precision": None, "seed": 42}
    assert sdopts.check(TRAIN, values) == []
    assert sdopts.check(GEN, {"network_module": ["networks.lora"], "network_mul": [1, 0.5],
                              "sampler": "k_euler_a", "W": 1024, "scale": 7,
                              "sequential_file_name": True}) == []


def test_unknown_key_gives_the_closest_names() -> None:
    assert sdopts.check(TRAIN, {"learning_rat": 1e-4}) == [
        "unknown sd-scripts option 'learning_rat'; did you mean learning_rate?"]
    (message,) = sdopts.check(TRAIN, {"network_dimm": 8})
    assert message.startswith("unknown sd-scripts option 'network_dimm'; did you mean network_dim")
    assert sdopts.check(TRAIN, {"qqqqzzzz": 1}) == [
        "unknown sd-scripts option 'qqqqzzzz'; no option has a similar name"]
    assert sdopts.check(GEN, {"config_file": "x.toml"})[0].startswith(
        "unknown sd-scripts option 'config_file'")


@pytest.mark.parametrize(("key", "value", "message"), [
    ("resolution", 1024, "resolution = 1024 must be a TOML string"),
    ("network_dim", 8.0, "network_dim = 8.0 must be a TOML integer"),
    ("network_dim", True, "network_dim = true must be a TOML integer"),
    ("learning_rate", "1e-4", 'learning_rate = "1e-4" must be a TOML number'),
    ("learning_rate", False, "learning_rate = false must be a TOML number"),
    ("xformers", 1, "xformers = 1 must be a TOML boolean"),
    ("xformers", "true", 'xformers = "true" must be a TOML boolean'),
    ("lr_warmup_steps", "100", 'lr_warmup_steps = "100" must be a TOML number'),
    ("max_train_epochs", [50], "max_train_epochs = [50] must be a TOML integer"),
    ("mixed_precision", None, "mixed_precision = null is not allowed (it has a default)"),
    ("dataset_config", 5, "dataset_config = 5 must be a TOML string"),  # a Path option
    ("lr_warmup_steps", True, "lr_warmup_steps = true must be a TOML number"),
])
def test_wrong_type_names_key_value_and_toml_type(key: str, value: Any, message: str) -> None:
    assert sdopts.check(TRAIN, {key: value}) == [message]


def test_null_is_taken_where_the_default_or_a_choice_is_none() -> None:
    """save_model_as lists None among its choices (its default is "safetensors")."""
    assert sdopts.check(TRAIN, {"save_model_as": None, "max_token_length": None}) == []
    assert sdopts.check(TRAIN, {"learning_rate": None}) == [
        "learning_rate = null is not allowed (it has a default)"]


def test_wrong_choice_lists_the_allowed_values() -> None:
    assert sdopts.check(TRAIN, {"mixed_precision": "bf17"}) == [
        'mixed_precision = "bf17" is not one of: no, fp16, bf16']
    assert sdopts.check(TRAIN, {"save_model_as": "bin"}) == [
        'save_model_as = "bin" is not one of: None, ckpt, pt, safetensors']
    (message,) = sdopts.check(GEN, {"sampler": "euler_b"})
    assert message.startswith('sampler = "euler_b" is not one of: ddim, pndm, lms, euler, ')


def test_lists() -> None:
    assert sdopts.check(TRAIN, {"network_args": [], "optimizer_args": ["weight_decay=0.1"]}) == []
    assert sdopts.check(TRAIN, {"network_args": "conv_dim=4"}) == [
        'network_args = "conv_dim=4" must be a TOML array of strings']
    assert sdopts.check(TRAIN, {"optimizer_args": ["a", 3]}) == [
        'optimizer_args = ["a", 3] must be a TOML array of strings']
    assert sdopts.check(GEN, {"network_weights": "lora.safetensors"}) == [
        'network_weights = "lora.safetensors" must be a TOML array of strings']
    assert sdopts.check(GEN, {"network_mul": [1, "x"]}) == [
        'network_mul = [1, "x"] must be a TOML array of numbers']
    # train_network.py still takes one text encoder learning rate as a number
    assert sdopts.check(TRAIN, {"text_encoder_lr": 5e-5}) == []
    assert sdopts.check(TRAIN, {"text_encoder_lr": [5e-5, 1e-5]}) == []
    assert sdopts.check(TRAIN, {"text_encoder_lr": "5e-5"}) == [
        'text_encoder_lr = "5e-5" must be a TOML array of numbers']


def test_errors_come_one_per_bad_key_in_order() -> None:
    errors = sdopts.check(TRAIN, {"resolution": 512, "learning_rate": 1e-4, "bogus_key": 1})
    assert len(errors) == 2
    assert errors[0].startswith("resolution = 512 ")
    assert errors[1].startswith("unknown sd-scripts option 'bogus_key'")


def test_original_2023_config_passes(seed_configs: Path) -> None:
    tables = toml.load(seed_configs / "config_file.toml")
    flat = {key: value for table in tables.values() for key, value in table.items()}
    assert len(flat) == 50
    assert sdopts.check(TRAIN, flat) == []


@pytest.mark.usefixtures("unmutated_child")
def test_snapshot_matches_the_checkout(sd_scripts: Path, sd_python: str, tmp_path: Path) -> None:
    try:
        written = sdopts.regenerate(sd_scripts, sd_python, out_dir=tmp_path)
    except sdopts.SnapshotImportError as exc:
        pytest.skip(f"sd-scripts' dependencies are not importable: {exc}")
    assert [path.name for path in written] == [f"{script}.json" for script in sdopts.SCRIPTS]
    for path in written:
        packaged = sdopts.SNAPSHOTS / path.name
        assert path.read_text(encoding="utf-8") == packaged.read_text(encoding="utf-8"), (
            f"{path.name} differs from the checkout: "
            "python -m medsynth_kohya.sdscripts.sdopts regenerate "
            f"--sd-scripts {sd_scripts}")


@pytest.mark.parametrize("value", [0, -1])
def test_the_generator_s_batch_size_must_be_at_least_1(value: int) -> None:
    """0 put a whole shard in one batch; -1 generated nothing."""
    assert sdopts.check(GEN, {"batch_size": value}) == [
        f"batch_size = {value} must be at least 1 (sdxl_gen_img.py's images made together; "
        "leave it out for 1)"]
    assert sdopts.check(GEN, {"batch_size": 4}) == []


@pytest.mark.usefixtures("unmutated_child")
def test_regenerating_with_a_python_that_cannot_import_sd_scripts_is_one_line(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The README's maintainer command printed a traceback ending in SnapshotImportError."""
    fake = tmp_path / "sd-scripts"
    fake.mkdir()
    for script in sdopts.SCRIPTS:
        (fake / f"{script}.py").write_text("import no_such_module_here\n", encoding="utf-8")
    assert sdopts.main(["regenerate", "--sd-scripts", str(fake), "--python",
                        sys.executable]) == 1
    said = capsys.readouterr()
    assert said.out == "" and said.err.startswith(
        "error: sd-scripts' Python could not import its scripts (IMPORT-FAILED No module "
        "named 'no_such_module_here'); give --python")


def test_the_lora_network_args_are_those_create_network_reads(sd_scripts: Path) -> None:
    """Read from networks/lora.py's source (create_network and parse_block_lr_kwargs), so a
    key a new release adds or drops shows here."""
    import re

    source = (sd_scripts / "networks" / "lora.py").read_text(encoding="utf-8")
    start = source.index("def parse_block_lr_kwargs")
    body = source[start:source.index("def get_block_dims_and_alphas", start)]
    read = set(re.findall(r"kwargs\.get\(\"(\w+)\"", body))
    assert read == set(sdopts.LORA_NETWORK_ARGS)


@pytest.mark.parametrize("value", [2**63, -2**63 - 1, 10**400, [1, 10**400]])
def test_an_integer_past_toml_s_64_bits_is_one_line(value: Any) -> None:
    """A 400-digit --set max_train_steps crashed the check with OverflowError (math.isfinite
    of an int too large for a float); TOML's integers are 64-bit and torch takes no more."""
    key = "network_mul" if isinstance(value, list) else "max_train_steps"
    script = GEN if isinstance(value, list) else TRAIN
    shown = f"[1, {10**400}]" if isinstance(value, list) else str(value)
    assert sdopts.check(script, {key: value}) == [
        f"{key} = {shown} is past TOML's 64-bit integers "
        f"(-9223372036854775808 to 9223372036854775807)"]
    assert sdopts.check(TRAIN, {"seed": 2**63 - 1, "max_train_steps": 2**63 - 1}) == []


FAKE_SCRIPT = '''
import argparse
from pathlib import Path


def int_or_float(value):
    return float(value)


def setup_parser():
    parser = argparse.ArgumentParser()
    parser.add_argument("--version", action="version", version="1")
    parser.add_argument("--name", default="x")
    parser.add_argument("--text", type=str)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--rate", type=float, default=1e-4)
    parser.add_argument("--warmup", type=int_or_float, default=0)
    parser.add_argument("--dataset_config", type=Path, default=Path("set.toml"))
    parser.add_argument("--log", type=argparse.FileType("w"))
    parser.add_argument("--sizes", type=int, nargs=2, default=(512, 768))
    parser.add_argument("--mode", choices=("no", "fp16"), default="no")
    parser.add_argument("--weights", nargs="*")
    parser.add_argument("--flag", action="store_true")
    parser.add_argument("--no_flag", dest="flag", action="store_false")
    parser.add_argument("--fast", action="store_const", const="fast")
    parser.add_argument("--extra", action="append")
    return parser
'''


@pytest.fixture
def fake_sd_scripts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A checkout whose two scripts declare one option of every kind the snapshot tells apart.
    The packaged folder is moved aside, so that nothing (a mutant dropping --out) writes the
    fake's options over the real ones."""
    monkeypatch.setattr(sdopts, "SNAPSHOTS", tmp_path / "packaged")
    folder = tmp_path / "fake-sd-scripts"
    folder.mkdir()
    for script in sdopts.SCRIPTS:
        (folder / f"{script}.py").write_text(FAKE_SCRIPT, encoding="utf-8")
    return folder


def test_the_snapshot_tells_each_kind_of_option_apart(
        fake_sd_scripts: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(fake_sd_scripts))
    data = sdopts.snapshot(TRAIN)
    assert data["script"] == TRAIN
    options = {(option["name"], tuple(option["flags"])): option for option in data["options"]}
    assert list(options) == [
        ("dataset_config", ("--dataset_config",)), ("extra", ("--extra",)), ("fast", ("--fast",)),
        ("flag", ("--flag",)), ("flag", ("--no_flag",)), ("log", ("--log",)),
        ("mode", ("--mode",)), ("name", ("--name",)), ("rate", ("--rate",)),
        ("sizes", ("--sizes",)), ("steps", ("--steps",)), ("text", ("--text",)),
        ("warmup", ("--warmup",)), ("weights", ("--weights",))]
    kinds = {name: option["kind"] for (name, _), option in options.items()}
    assert kinds == {"dataset_config": "other:Path", "extra": "other:AppendAction",
                     "fast": "const", "flag": "bool", "log": "other:FileType", "mode": "str",
                     "name": "str", "rate": "float", "sizes": "int", "steps": "int",
                     "text": "str", "warmup": "other:int_or_float", "weights": "str"}
    assert options[("sizes", ("--sizes",))] == {
        "name": "sizes", "flags": ["--sizes"], "kind": "int", "default": [512, 768],
        "choices": None, "nargs": 2}
    assert options[("mode", ("--mode",))]["choices"] == ["no", "fp16"]
    assert options[("dataset_config", ("--dataset_config",))]["default"] == "set.toml"
    assert options[("flag", ("--no_flag",))]["default"] is True
    assert options[("weights", ("--weights",))]["nargs"] == "*"
    assert json.loads(json.dumps(data)) == data


@pytest.mark.usefixtures("unmutated_child")
def test_regenerating_writes_each_script_s_options_and_commit(
        fake_sd_scripts: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The maintainer command, on a checkout that is a git clone, into a folder not yet made
    and again into the same folder."""
    import subprocess

    for args in (["init", "-q"], ["add", "."], ["-c", "user.name=t", "-c", "user.email=t@t",
                                                "commit", "-qm", "release"]):
        subprocess.run(["git", "-C", str(fake_sd_scripts), *args], check=True)
    head = subprocess.run(["git", "-C", str(fake_sd_scripts), "rev-parse", "HEAD"], check=True,
                          capture_output=True, text=True).stdout.strip()
    out = tmp_path / "new" / "sd_options"
    assert sdopts.main(["regenerate", "--sd-scripts", str(fake_sd_scripts), "--python",
                        sys.executable, "--out", str(out)]) == 0
    written = [out / f"{script}.json" for script in sdopts.SCRIPTS]
    assert capsys.readouterr().out.splitlines() == [str(path) for path in written]
    for script, path in zip(sdopts.SCRIPTS, written, strict=True):
        data = json.loads(path.read_text(encoding="utf-8"))
        assert path.read_text(encoding="utf-8") == sdopts.dump(data)
        assert data["script"] == script and data["sd_scripts_commit"] == head
        assert [option["name"] for option in data["options"]][:3] == [
            "dataset_config", "extra", "fast"]
    # Again into the folder, which now exists (as the packaged one always does).
    written[0].write_text("{}", encoding="utf-8")
    assert sdopts.main(["regenerate", "--sd-scripts", str(fake_sd_scripts), "--python",
                        sys.executable, "--out", str(out)]) == 0
    assert json.loads(written[0].read_text(encoding="utf-8"))["script"] == TRAIN
    assert not sdopts.SNAPSHOTS.exists()


@pytest.mark.usefixtures("unmutated_child")
@pytest.mark.parametrize("broken", ["folder", "python", "script", "hang"])
def test_regenerating_from_a_broken_checkout_or_python_is_one_line(
        broken: str, fake_sd_scripts: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """Each of these printed a traceback (FileNotFoundError, RuntimeError, TimeoutExpired)."""
    folder, python = fake_sd_scripts, sys.executable
    if broken == "folder":
        folder = tmp_path / "not-sd-scripts"
        folder.mkdir()
    elif broken == "python":
        python = str(tmp_path / "no-python")
    elif broken == "script":
        (folder / f"{GEN}.py").write_text("raise SystemExit('sd-scripts says no')\n",
                                          encoding="utf-8")
    else:
        monkeypatch.setattr(sdopts, "SNAPSHOT_TIMEOUT_S", 1)
        (folder / f"{GEN}.py").write_text("import time\ntime.sleep(30)\n", encoding="utf-8")
    out = tmp_path / "out"
    assert sdopts.main(["regenerate", "--sd-scripts", str(folder), "--python", python,
                        "--out", str(out)]) == 1
    said = capsys.readouterr()
    assert said.out == "" and len(said.err.strip().splitlines()) == 1
    assert not sdopts.SNAPSHOTS.exists()
    assert said.err.startswith("error: ")
    assert {
        "folder": f"{folder} holds no {TRAIN}.py, {GEN}.py: give --sd-scripts the sd-scripts "
                  "checkout",
        "python": f"cannot run {python} (No such file or directory): give --python the Python "
                  "that has sd-scripts' requirements",
        "script": "snapshot failed (exit 1): sd-scripts says no",
        "hang": "importing sd-scripts' scripts took over 1 s",
    }[broken] in said.err
    assert not out.exists()


def test_the_maintainer_command_says_what_it_does(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["--help"], ["regenerate", "--help"]):
        with pytest.raises(SystemExit) as done:
            sdopts.main(argv)
        assert done.value.code == 0
    said = " ".join(capsys.readouterr().out.split())
    assert "regenerate rewrite the packaged option snapshots" in said
    assert "--out OUT folder to write the snapshots into (default: the packaged one)" in said
