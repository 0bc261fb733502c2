"""The TOML sd-scripts reads: placeholders filled with typed values, dropped keys, buckets."""

from __future__ import annotations

from pathlib import Path

import pytest
import toml
from typer.testing import CliRunner

from medsynth_kohya.sdscripts import render

from .conftest import invoke
from .fake_gen import PYTHON, FakeGen

TEMPLATE = """\
plain = "{{ plain }}"
inline = "a {{plain}}"
number = "{{number}}"
dropped = "{{nothing}}"
[table]
list = ["{{number}}", "kept"]
nested = [["{{plain}}"]]
[[rows]]
value = "{{number}}"
gone = "{{nothing}}"
"""


@pytest.fixture
def templates(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A templates folder of our own, in place of the packaged one."""
    folder = tmp_path / "templates"
    folder.mkdir()
    (folder / "t.toml").write_text(TEMPLATE, encoding="utf-8")
    monkeypatch.setattr(render, "data_dir", lambda name: tmp_path / name)
    return folder


def test_placeholders_take_typed_values_and_none_drops_the_key(templates: Path) -> None:
    document = render.render("t.toml", {"plain": "x y", "number": 7, "nothing": None})
    assert document == {"plain": "x y", "inline": "a {{plain}}", "number": 7,
                        "table": {"list": [7, "kept"], "nested": [["x y"]]}, "rows": [{"value": 7}]}


def test_a_missing_value_is_named(templates: Path) -> None:
    with pytest.raises(KeyError, match="template value 'nothing' was not provided"):
        render.render("t.toml", {"plain": "p", "number": 1})


def test_written_toml_reads_back(tmp_path: Path) -> None:
    document = {"general": {"caption_extension": ".txt"}, "datasets": [{"resolution": [64, 96]}]}
    path = tmp_path / "d.toml"
    render.write_toml(document, path)
    assert toml.load(path) == document
    assert [p.name for p in tmp_path.iterdir()] == ["d.toml"]


@pytest.mark.parametrize("text", [
    r"C:\xampp\runs", r"/tmp/runs\xmas/output", r"a\u0041b", r"C:\new\table", 'say "hi"',
    "tab\there", "line\nbreak", "ünï \u2013 😀", "\x7f\x01",
])
def test_written_strings_read_back_as_sd_scripts_reads_them(tmp_path: Path, text: str) -> None:
    """sd-scripts reads --config_file with toml 0.10.2, whose own writer leaves `\\x` unescaped."""
    document = {"output_dir": text, "datasets": [{"subsets": [{"image_dir": text}]}]}
    path = tmp_path / "c.toml"
    render.write_toml(document, path)
    assert toml.load(path) == document


def test_a_run_folder_with_a_backslash_gives_a_config_sd_scripts_reads(
        runner: CliRunner, tmp_path: Path, fake_gen: FakeGen, prepared: Path) -> None:
    run = tmp_path / "runs\\xmas"
    code, _, stderr = invoke(runner, "train", prepared, "--preset", "cpu-smoke", "--run-dir",
                             run, "--sd-scripts", fake_gen.sd_scripts, "--python", PYTHON,
                             "--dry-run")
    assert code == 0, stderr
    config = toml.load(run / "config.toml")
    assert Path(config["medsynth_run"]["output_dir"]).parent == run


@pytest.mark.parametrize(("resolution", "step", "expected"), [
    (1024, 64, (512, 2048)), (1000, 64, (448, 1984)), (1100, 32, (544, 2176)),
    (64, 64, (64, 128)), (100, 64, (64, 192)), (40, 64, (64, 64)),
])
def test_bucket_range_is_half_to_double_on_the_grid(resolution: int, step: int,
                                                    expected: tuple[int, int]) -> None:
    found = render.bucket_range(resolution, step)
    assert found == expected
    assert all(type(limit) is int for limit in found)  # sd-scripts' schema takes no 448.0


def test_bucket_range_steps_by_64_unless_told() -> None:
    assert render.bucket_range(1100) == render.bucket_range(1100, 64) != render.bucket_range(
        1100, 32)


@pytest.mark.parametrize(("resolution", "low", "high", "size"), [
    (1024, 512, 2048, [1024, 1024]), ((768, 1024), 384, 2048, [768, 1024]),
    ((1000, 640), 320, 1984, [1000, 640]),
])
def test_dataset_config_for_one_folder(tmp_path: Path, resolution: int | tuple[int, int],
                                       low: int, high: int, size: list[int]) -> None:
    document = render.dataset_config(tmp_path / "img" / "3_melanoma", repeats=3,
                                     class_tokens="melanoma", resolution=resolution,
                                     batch_size=2)
    assert document["general"] == {"caption_extension": ".txt", "shuffle_caption": False,
                                   "keep_tokens": 0}
    (dataset,) = document["datasets"]
    assert dataset == {"resolution": size, "batch_size": 2, "enable_bucket": True,
                       "min_bucket_reso": low, "max_bucket_reso": high,
                       "bucket_reso_steps": 64, "bucket_no_upscale": False,
                       "subsets": [{"image_dir": str(tmp_path / "img" / "3_melanoma"),
                                    "num_repeats": 3, "class_tokens": "melanoma"}]}
