"""`sample` through the CLI against a stand-in sdxl_gen_img.py: prompts, shards, resume, errors,
and files it did not write kept as they are (`--force` included)."""

from __future__ import annotations

import collections
import json
import os
import shlex
import shutil
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import toml
from typer.testing import CliRunner

from medsynth_kohya.data import archive, manifest
from medsynth_kohya.data.captions import DEFAULT_TEMPLATE, DEFAULT_TRIGGER
from medsynth_kohya.data.synth import SyntheticSet
from medsynth_kohya.errors import UserError
from medsynth_kohya.sampling import prompts
from medsynth_kohya.sampling.plan import DEFAULT_PREFIX, Plan
from medsynth_kohya.sampling.sample import SampleOptions, sample
from medsynth_kohya.sampling.shards import (
    clear_shards,
    counter,
    folders,
    generated_name,
    harvest,
    write_shard_files,
)
from medsynth_kohya.sampling.synthset import COLUMNS, write_metadata
from medsynth_kohya.training.train import train

from .conftest import invoke, one_line_error, prepare_set, squeezed
from .disk import checksums, entries
from .fake_gen import PYTHON, FakeGen, install_gpus, interrupt_at_third_image, write_lora, write_run

SMALL = ("--width", 64, "--height", 64, "--steps", 2)


@pytest.fixture
def prepared(isic2020: SyntheticSet, tmp_path: Path) -> Path:
    """Prepared with another trigger and template than prepare's defaults."""
    return prepare_set(isic2020, tmp_path / "prepared", repeats=2, trigger="sks melanoma",
                       caption_template="dermoscopy of {trigger} on {site}, {sex}, age {age}")


@pytest.fixture
def run(trained: Path) -> Path:
    """The finished run folder of this module's `prepared` (another trigger and template)."""
    return trained


def _sample(runner: CliRunner, fake: FakeGen, *args: object) -> tuple[int, str, str]:
    return invoke(runner, "sample", *args, "--sd-scripts", fake.sd_scripts, "--python", PYTHON)


def _metadata(out: Path) -> pd.DataFrame:
    return pd.read_csv(out / "metadata.csv", dtype={"isic_id": str})


def _images(out: Path) -> set[str]:
    return {p.stem for p in (out / "images").glob("*.png")}


def _planned(run: Path, out: Path, fake: FakeGen, **options: object) -> dict[str, str]:
    """Prompt line of every image a dry run plans, by id: what the shards' prompt files would
    hold (a dry run writes none)."""
    result = sample(run, out, SampleOptions(**options),  # type: ignore[arg-type]
                    sd_scripts=fake.sd_scripts, python=PYTHON, dry_run=True)
    assert result.status == "dry-run" and not out.exists()
    return {result.plan.image_id(i): result.plan.line(i) for shard in result.shards
            for i in shard.images}


def _lines(out: Path) -> dict[str, str]:
    """Prompt line of every image in the current shards' prompt files, by id."""
    found: dict[str, str] = {}
    for folder in sorted((out / ".medsynth" / "shards").iterdir()):
        ids = json.loads((folder / "shard.json").read_text())["ids"]
        lines = (folder / "prompts.txt").read_text(encoding="utf-8").splitlines()
        assert len(ids) == len(lines)
        found.update(zip(ids, lines, strict=True))
    return found


def test_sample_generates_the_set_with_its_metadata(runner: CliRunner, run: Path,
                                                    fake_gen: FakeGen, prepared: Path,
                                                    tmp_path: Path) -> None:
    out = tmp_path / "synth"
    code, stdout, stderr = _sample(runner, fake_gen, "--lora", run, "--n", 6, "--out", out,
                                   "--seed", 100, *SMALL)
    assert code == 0, stdout + stderr
    assert _images(out) == {f"SYN_{i:07d}" for i in range(6)}
    metadata = _metadata(out)
    assert tuple(metadata.columns) == COLUMNS
    assert list(metadata["isic_id"]) == sorted(_images(out))
    assert list(metadata["seed"]) == list(range(100, 106))
    assert set(metadata["image_manipulation"]) == {"synthetic"}
    assert set(metadata["diagnosis_2"]) == {"Malignant melanocytic proliferations (Melanoma)"}
    assert metadata["diagnosis_3"].isna().all() and set(metadata["sampler"]) == {"euler_a"}
    assert set(metadata["steps"]) == {2} and set(metadata["scale"]) == {12.0}
    assert set(metadata["lora_file"]) == {"melanoma.safetensors"}
    assert set(metadata["lora_sha256"].str.len()) == {64}
    negative = prompts.original_settings().negative_prompt
    assert set(metadata["negative_prompt"]) == {negative}
    captions = set(manifest.read(prepared / "manifest.csv")["caption"])
    assert set(metadata["prompt"]) <= captions
    assert all(p.startswith("dermoscopy of sks melanoma") for p in metadata["prompt"])
    sites = metadata["anatom_site_general"].fillna(metadata["anatom_site_general_challenge"])
    for site, sex, age, text in zip(sites, metadata["sex"], metadata["age_approx"],
                                    metadata["prompt"], strict=True):
        clauses = str(text).split(", ")
        assert pd.isna(site) or f"sks melanoma on {site}" in clauses[0]
        assert pd.isna(sex) or sex in clauses
        assert pd.isna(age) or f"age {age:.0f}" in clauses
    grid = cv2.imread(str(out / "grid.jpg"))
    assert grid is not None and grid.shape[1] == 4 * 256
    [call] = fake_gen.calls()
    args = call["args"]
    assert args["ckpt"] == str((tmp_path / "base.safetensors").resolve())
    assert args["network_weights"] == [str((run / "output" / "melanoma.safetensors").resolve())]
    assert args["network_module"] == ["networks.lora"] and args["network_mul"] == [1.0]
    assert args["sequential_file_name"] and args["sdpa"] and args["no_half_vae"]
    assert (args["W"], args["H"], args["steps"], args["scale"]) == (64, 64, 2, 12.0)
    assert args["sampler"] == "euler_a" and "fp16" not in args
    assert Path(call["cwd"]) == fake_gen.sd_scripts
    line = _lines(out)["SYN_0000003"]
    assert line.endswith(f" --n {negative} --w 64 --h 64 --s 2 --l 12 --d 103")
    assert "SYN_0000000" in stdout and "6" in stdout


def test_drawn_prompts_follow_the_manifest_proportions(runner: CliRunner, run: Path,
                                                       fake_gen: FakeGen, prepared: Path,
                                                       tmp_path: Path) -> None:
    out = tmp_path / "synth"
    n = 4000
    lines = _planned(run, out, fake_gen, n=n)
    assert fake_gen.calls() == []
    drawn = collections.Counter(line.split(" --")[0] for line in lines.values())
    table = manifest.read(prepared / "manifest.csv")
    expected = table["caption"].value_counts(normalize=True)
    assert set(drawn) == set(expected.index)
    for caption, share in expected.items():
        assert abs(drawn[str(caption)] / n - share) < 0.03, caption
    women = sum(count for text, count in drawn.items() if "female" in text.split(", "))
    assert abs(women / n - (table["sex"] == "female").fillna(False).mean()) < 0.03


def test_same_seed_same_prompts_and_seeds_whatever_n_or_shards(
        runner: CliRunner, run: Path, fake_gen: FakeGen, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    install_gpus(fake_gen, tmp_path, monkeypatch, 3)
    plans = {}
    for name, n, gpus, seed in (("a", 40, 1, 7), ("b", 40, 3, 7), ("c", 25, 2, 7),
                                ("d", 40, 1, 8)):
        plans[name] = _planned(run, tmp_path / name, fake_gen, n=n, seed=seed, num_gpus=gpus)
    assert plans["a"] == plans["b"]
    assert plans["c"] == {k: v for k, v in plans["a"].items() if k < "SYN_0000025"}
    assert plans["d"] != plans["a"]
    assert plans["a"]["SYN_0000000"].endswith("--d 7")
    assert plans["d"]["SYN_0000039"].endswith("--d 47")


def test_shards_cover_every_image_once_one_gpu_each(runner: CliRunner, run: Path,
                                                    fake_gen: FakeGen, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    install_gpus(fake_gen, tmp_path, monkeypatch, 4)
    single, sharded = tmp_path / "one", tmp_path / "three"
    code, stdout, stderr = _sample(runner, fake_gen, "--lora", run, "--n", 10, "--out", single,
                                   *SMALL)
    assert code == 0, stdout + stderr
    fake_gen.forget()
    code, stdout, stderr = _sample(runner, fake_gen, "--lora", run, "--n", 10, "--out", sharded,
                                   "--num-gpus", 3, *SMALL)
    assert code == 0, stdout + stderr
    calls = fake_gen.calls()
    assert [c["device"] for c in calls] == ["0", "1", "2"]
    assert all(c["args"]["outdir"] != calls[0]["args"]["outdir"] for c in calls[1:])
    ids: list[str] = []
    for call in calls:
        shard = Path(call["args"]["from_file"]).parent
        ids += json.loads((shard / "shard.json").read_text())["ids"]
    assert sorted(ids) == [f"SYN_{i:07d}" for i in range(10)] and len(set(ids)) == 10
    assert _images(sharded) == _images(single)
    pd.testing.assert_frame_equal(_metadata(sharded), _metadata(single))
    for image_id in _images(single):
        assert (single / "images" / f"{image_id}.png").read_bytes() == (
            sharded / "images" / f"{image_id}.png").read_bytes()


def test_a_crashed_shard_is_reported_and_a_rerun_makes_only_the_missing(
        runner: CliRunner, run: Path, fake_gen: FakeGen, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    install_gpus(fake_gen, tmp_path, monkeypatch, 2)
    out = tmp_path / "synth"
    monkeypatch.setenv("FAKE_GEN_CRASH", "1:1")
    args = ("--lora", run, "--n", 8, "--out", out, "--num-gpus", 2, *SMALL)
    code, stdout, stderr = _sample(runner, fake_gen, *args)
    assert code == 1
    assert "CUDA out of memory" in stdout and "--- GPU 1, last lines of" in stdout
    assert "GPU 1: sdxl_gen_img.py exited with 1 after 1/4 images" in " ".join(stderr.split())
    made = _images(out)
    assert made == {f"SYN_{i:07d}" for i in (0, 1, 2, 3, 4)}
    assert set(_metadata(out)["isic_id"]) == made
    log = (out / "logs" / "shard-1.log").read_text(encoding="utf-8")
    assert "RuntimeError" in log
    monkeypatch.delenv("FAKE_GEN_CRASH")
    fake_gen.forget()
    code, stdout, stderr = _sample(runner, fake_gen, *args)
    assert code == 0, stdout + stderr
    calls = fake_gen.calls()
    assert len(calls) == 2
    remade = sorted(i for c in calls for i in json.loads(
        (Path(c["args"]["from_file"]).parent / "shard.json").read_text())["ids"])
    assert remade == [f"SYN_{i:07d}" for i in (5, 6, 7)]
    assert _lines(out)["SYN_0000006"].endswith("--d 6")
    assert _images(out) == {f"SYN_{i:07d}" for i in range(8)}
    assert list(_metadata(out)["isic_id"]) == sorted(_images(out))
    fake_gen.forget()
    code, stdout, stderr = _sample(runner, fake_gen, *args)
    assert code == 0 and fake_gen.calls() == [] and "already there" in stdout
    code, stdout, stderr = _sample(runner, fake_gen, "--lora", run, "--n", 5, "--out", out,
                                   *SMALL)
    assert code == 1 and "--n 8" in stderr


def _shard(out: Path, name: str, spec: str, made: int, highres: bool = False) -> Path:
    """A shard folder as a killed run leaves it: its shard.json (`spec`, as written) and
    `made` finished images, not yet harvested."""
    folder = out / ".medsynth" / "shards" / name
    (folder / "out").mkdir(parents=True)
    (folder / "shard.json").write_text(spec, encoding="utf-8")
    for position in range(1, made + 1):
        cv2.imwrite(str(folder / "out" / generated_name(position, highres)),
                    np.full((4, 4, 3), position, np.uint8))
    return folder


def test_a_highres_shard_s_images_are_harvested_by_the_names_sd_scripts_gives_them(
        tmp_path: Path) -> None:
    """Under highres fix sdxl_gen_img.py puts a 1 before the number: im_1000001.png."""
    assert generated_name(3, True) == "im_1000003.png"
    assert generated_name(12, False) == "im_000012.png"
    out = tmp_path / "synth"
    _shard(out, "0", json.dumps({"ids": ["SYN_0000000", "SYN_0000001"], "highres": True}), 2,
           highres=True)
    assert harvest(out) == 2 and _images(out) == {"SYN_0000000", "SYN_0000001"}


def test_the_shards_of_one_machine_are_cleared_and_counted_alone(tmp_path: Path) -> None:
    """Machines sharing OUT each clear and count their own shard folders (those of its tag),
    never another's still at work, nor a stray file among them."""
    out = tmp_path / "synth"
    mine = _shard(out, "2-of-2-0", json.dumps({"ids": ["SYN_0000004"]}), 1)
    theirs = _shard(out, "1-of-2-0", json.dumps({"ids": ["SYN_0000000", "SYN_0000001"]}), 2)
    (out / ".medsynth" / "shards" / "notes.txt").write_text("a stray file", encoding="utf-8")
    assert folders(out) == [theirs, mine] and folders(out, "2-of-2") == [mine]
    seen: list[tuple[int, int]] = []
    count = counter(out, 3, lambda made, wanted: seen.append((made, wanted)), "2-of-2")
    assert count is not None and seen == [(0, 3)]
    count(0, "a line")
    assert seen[-1] == (1, 3)  # its one image, not the other machine's two
    _shard(out, "2-of-2-1", json.dumps({"ids": ["SYN_0000005"]}), 1)
    count(0, "at once")  # within half a second: files are not counted again
    assert seen[-1] == (1, 3) and len(seen) == 2
    clear_shards(out, "2-of-2")
    assert folders(out) == [theirs] and len(list((theirs / "out").iterdir())) == 2
    assert counter(out, 3, None) is None


@pytest.mark.parametrize("spec", [
    "{}", "[]", "null", '"ids"', '{"ids": 5}', '{"ids": "SYN_0000000"}', '{"ids": [7]}',
    '{"ids": ["SYN_0000000", null]}', '{"ids": {"SYN_0000000": 1}}', "{not json", ""])
def test_a_shard_whose_shard_json_is_broken_is_left_unharvested(tmp_path: Path,
                                                                 spec: str) -> None:
    """A shard.json edited by hand or cut short names no image surely: its images are not
    harvested (the same seeds make them again), and the shards beside it still are."""
    out = tmp_path / "synth"
    _shard(out, "0", spec, 2)
    good = _shard(out, "1", json.dumps({"ids": ["SYN_0000002", "SYN_0000003"]}), 2)
    assert harvest(out) == 2
    assert _images(out) == {"SYN_0000002", "SYN_0000003"}
    assert list((good / "out").iterdir()) == []


@pytest.mark.parametrize("image_id", [
    "../escape", "../../escape", "sub/../../escape", "sub/name", "..\\escape", ".", "..", "",
    ".hidden", "nul\0byte", "{outside}"])
def test_a_shard_json_whose_id_is_no_plain_file_name_is_left_unharvested(
        tmp_path: Path, image_id: str) -> None:
    """Ids become images/<id>.png: one naming another folder (or an absolute path, a hidden
    or empty name) would move a file out of images/, so its shard is left as a broken one."""
    out = tmp_path / "sets" / "synth"
    image_id = image_id.replace("{outside}", str(tmp_path / "outside"))
    shard = _shard(out, "0", json.dumps({"ids": ["SYN_0000000", image_id]}), 2)
    (out / "images").mkdir()
    before = checksums(tmp_path)
    assert harvest(out) == 0
    assert checksums(tmp_path) == before and entries(out / "images") == []
    assert sorted(p.name for p in (shard / "out").iterdir()) == [generated_name(1, False),
                                                                generated_name(2, False)]


@pytest.mark.parametrize("prefix", [DEFAULT_PREFIX, "a", "9", "ISIC_", "x-y_z9"])
def test_the_ids_write_shard_files_writes_are_harvested(tmp_path: Path, prefix: str) -> None:
    """Every --id-prefix sample takes gives ids (prefix + number) that are plain file names."""
    frame = pd.DataFrame({"sex": ["male", "female"], "age": [40, 70],
                          "site": ["torso", None], "hairy": [True, False]})
    plan = Plan(n=12, seed=9, id_prefix=prefix,
                drawn=prompts.draw(frame, 12, 1, DEFAULT_TEMPLATE, DEFAULT_TRIGGER),
                settings=prompts.original_settings(), lora=tmp_path / "a.safetensors",
                lora_sha256="ab" * 32, base_model="stabilityai/stable-diffusion-xl-base-1.0")
    written = tmp_path / "written"
    write_shard_files(plan, written, [0, 11], highres=False)
    out = tmp_path / "synth"
    _shard(out, "0", (written / "shard.json").read_text(encoding="utf-8"), 2)
    assert harvest(out) == 2 and _images(out) == {plan.image_id(0), plan.image_id(11)}


def test_a_run_whose_prepared_folder_is_gone_or_lost_its_manifest_says_which(
        runner: CliRunner, run: Path, prepared: Path, fake_gen: FakeGen, tmp_path: Path) -> None:
    """Without --like, the prompts come from the prepared folder the run names: a deleted
    manifest is not a folder "not on this machine"."""
    args = ("--lora", run, "--n", 2, "--out", tmp_path / "synth", *SMALL, "--dry-run")
    (prepared / "manifest.csv").unlink()
    code, _, stderr = _sample(runner, fake_gen, *args)
    said = " ".join(stderr.split())
    assert code == 1 and (f"the LoRA was trained on {prepared}, which has no manifest.csv any "
                          "more: run the prepare command that made it again to rewrite it, or "
                          "give --like PREPARED") in said, said
    prepared.rename(tmp_path / "elsewhere")
    code, _, stderr = _sample(runner, fake_gen, *args)
    said = " ".join(stderr.split())
    assert code == 1 and (f"the LoRA was trained on {prepared}, which is not on this machine: "
                          "give --like PREPARED") in said, said


def test_a_rerun_makes_again_the_images_emptied_or_cut_short_since(
        runner: CliRunner, run: Path, fake_gen: FakeGen, tmp_path: Path) -> None:
    """A full disk or a copy cut short leaves images/ holding files named like the set's that
    are no whole PNG: they count as missing (a dry run says so too), a re-run removes and makes
    them again, with the same pixels, and says so; the whole ones are kept."""
    out = tmp_path / "synth"
    args = ("--lora", run, "--n", 4, "--out", out, *SMALL)
    code, _, stderr = _sample(runner, fake_gen, *args)
    assert code == 0, stderr
    images = out / "images"
    made = {path.name: path.read_bytes() for path in images.glob("*.png")}
    (images / "SYN_0000001.png").write_bytes(b"")
    (images / "SYN_0000002.png").write_bytes(made["SYN_0000002.png"][:300])
    kept = (images / "SYN_0000003.png").stat().st_mtime_ns
    fake_gen.forget()
    code, stdout, stderr = _sample(runner, fake_gen, *args, "--dry-run")
    assert code == 0 and fake_gen.calls() == [], stderr
    said = " ".join(stdout.split())
    assert "images │ 2 of 4 present" in said and "2 images: SYN_0000001..SYN_0000002" in said
    code, stdout, stderr = _sample(runner, fake_gen, *args)
    assert code == 0, stdout + stderr
    remade = sorted(i for c in fake_gen.calls() for i in json.loads(
        (Path(c["args"]["from_file"]).parent / "shard.json").read_text())["ids"])
    assert remade == ["SYN_0000001", "SYN_0000002"]
    assert {path.name: path.read_bytes() for path in images.glob("*.png")} == made
    assert (images / "SYN_0000003.png").stat().st_mtime_ns == kept
    assert (f"2 images in {images} were not whole (emptied or cut short since made: "
            "SYN_0000001..SYN_0000002); made again") in " ".join(stderr.split())


def test_finalize_leaves_a_damaged_image_and_odd_entries_are_no_images(
        runner: CliRunner, run: Path, fake_gen: FakeGen, tmp_path: Path) -> None:
    """--finalize generates nothing, so it removes nothing either; a folder named like an image,
    or a name with more digits than the set's ids, is no image of the set to remake."""
    out = tmp_path / "synth"
    args = ("--lora", run, "--n", 4, "--out", out, *SMALL)
    assert _sample(runner, fake_gen, *args)[0] == 0
    images = out / "images"
    (images / "SYN_0000001.png").write_bytes(b"")
    fake_gen.forget()
    code, stdout, stderr = _sample(runner, fake_gen, *args, "--finalize")
    assert code == 0 and fake_gen.calls() == [] and "made again" not in stderr, stdout + stderr
    assert (images / "SYN_0000001.png").read_bytes() == b""
    (images / "SYN_0000001.png").unlink()
    (images / "SYN_0000001.png").mkdir()
    (images / "SYN_0000002.png").rename(images / "SYN_00000002.png")
    code, stdout, stderr = _sample(runner, fake_gen, *args)
    assert code == 0 and "made again" not in stderr, stdout + stderr
    assert (images / "SYN_0000001.png").is_dir()


def test_ctrl_c_keeps_finished_images_and_a_rerun_completes(
        run: Path, fake_gen: FakeGen, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_GEN_SLOW", "0.3")
    out = tmp_path / "synth"
    options = SampleOptions(n=30, width=64, height=64, steps=2)
    interrupt_at_third_image(out)
    first = sample(run, out, options, sd_scripts=fake_gen.sd_scripts, python=PYTHON,
                   detect=lambda: [])
    assert first.status == "interrupted"
    assert 2 <= first.present < 30
    assert len(_metadata(out)) == first.present == len(_images(out))
    monkeypatch.delenv("FAKE_GEN_SLOW")
    second = sample(run, out, options, sd_scripts=fake_gen.sd_scripts, python=PYTHON,
                    detect=lambda: [])
    assert second.status == "succeeded" and second.present == 30
    assert second.generated == 30 - first.present


def test_prompt_and_prompts_file(runner: CliRunner, run: Path, fake_gen: FakeGen,
                                 tmp_path: Path) -> None:
    listing = tmp_path / "prompts.txt"
    listing.write_text("# mine\nsks melanoma on the back\n\nsks melanoma on the arm\n")
    out = tmp_path / "listed"
    code, stdout, stderr = _sample(runner, fake_gen, "--lora", run, "--prompts", listing,
                                   "--out", out, *SMALL)
    assert code == 0, stdout + stderr
    metadata = _metadata(out)
    assert list(metadata["prompt"]) == ["sks melanoma on the back", "sks melanoma on the arm"]
    assert metadata["sex"].isna().all() and metadata["age_approx"].isna().all()
    out = tmp_path / "single"
    code, stdout, stderr = _sample(runner, fake_gen, "--lora", run, "--prompt", "a mole",
                                   "--n", 3, "--out", out, *SMALL)
    assert code == 0, stdout + stderr
    assert set(_metadata(out)["prompt"]) == {"a mole"} and len(_images(out)) == 3
    assert "trigger" in stderr


def test_a_dry_run_counts_the_prompts_that_lack_the_trigger(runner: CliRunner, run: Path,
                                                           fake_gen: FakeGen,
                                                           tmp_path: Path) -> None:
    listing = tmp_path / "prompts.txt"
    listing.write_text("sks melanoma on the back\na mole\nsks melanoma on the arm\n")
    code, stdout, stderr = _sample(runner, fake_gen, "--lora", run, "--prompts", listing,
                                   "--out", tmp_path / "synth", *SMALL, "--dry-run")
    assert code == 0, stdout + stderr
    assert squeezed(f"1 of 3 prompts of {listing} do not mention the trigger 'sks melanoma' "
                    "the LoRA was trained with: prompt 2 'a mole';") in squeezed(stderr), stderr


def test_a_lora_file_finds_its_run_or_needs_a_base_model(runner: CliRunner, run: Path,
                                                        fake_gen: FakeGen, prepared: Path,
                                                        tmp_path: Path) -> None:
    lora = run / "output" / "melanoma.safetensors"
    code, stdout, stderr = _sample(runner, fake_gen, "--lora", lora, "--n", 2, "--out",
                                   tmp_path / "a", *SMALL)
    assert code == 0, stdout + stderr
    loose = write_lora(tmp_path / "loose" / "mine.safetensors")
    code, _, stderr = _sample(runner, fake_gen, "--lora", loose, "--n", 2, "--out",
                              tmp_path / "b", "--like", prepared / "manifest.csv", *SMALL)
    assert code == 1 and "--base-model" in stderr
    code, stdout, stderr = _sample(runner, fake_gen, "--lora", loose, "--n", 2, "--out",
                                   tmp_path / "b", "--like", prepared / "manifest.csv",
                                   "--base-model", tmp_path / "base.safetensors", *SMALL)
    assert code == 0, stdout + stderr
    assert all(p.startswith("dermoscopy of sks melanoma") for p in _metadata(tmp_path / "b")
               ["prompt"])


def test_set_passes_checked_options(runner: CliRunner, run: Path, fake_gen: FakeGen,
                                    tmp_path: Path) -> None:
    out = tmp_path / "synth"
    code, stdout, stderr = _sample(runner, fake_gen, "--lora", run, "--n", 2, "--out", out,
                                   "--set", "network_mul=0.5", "--set", "sdpa=",
                                   "--set", "xformers=true", "--set", "clip_skip=2", *SMALL)
    assert code == 0, stdout + stderr
    [call] = fake_gen.calls()
    assert call["args"]["network_mul"] == [0.5] and call["args"]["clip_skip"] == 2
    assert "sdpa" not in call["args"] and call["args"]["xformers"]


def test_dry_run_prints_the_plan_and_commands(runner: CliRunner, run: Path, fake_gen: FakeGen,
                                              tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    install_gpus(fake_gen, tmp_path, monkeypatch, 2)
    out = tmp_path / "synth"
    code, stdout, stderr = _sample(runner, fake_gen, "--lora", run, "--n", 5, "--out", out,
                                   "--num-gpus", 2, "--dry-run")
    assert code == 0, stdout + stderr
    assert fake_gen.calls() == [] and not (out / "images").exists()
    assert stdout.count("sdxl_gen_img.py") == 2
    assert "CUDA_VISIBLE_DEVICES=0" in stdout and "CUDA_VISIBLE_DEVICES=1" in stdout
    assert "--from_file" in stdout and "--sequential_file_name" in stdout


def test_a_missing_base_model_stops_a_run_and_warns_a_dry_run(runner: CliRunner, run: Path,
                                                              fake_gen: FakeGen,
                                                              tmp_path: Path) -> None:
    """As in train: a dry run shows what a real run would stop at, and writes nothing."""
    absent = tmp_path / "nowhere" / "base.safetensors"
    out = tmp_path / "synth"
    args = ("--lora", run, "--n", 2, "--out", out, "--base-model", absent, *SMALL)
    code, stdout, stderr = _sample(runner, fake_gen, *args, "--dry-run")
    assert code == 0, stdout + stderr
    assert f"a real run would stop at: base model {absent} is not a file" in " ".join(
        stderr.split())  # worded as train's dry run words it
    assert not out.exists()
    code, stdout, stderr = _sample(runner, fake_gen, *args)
    assert code == 1 and f"base model {absent} is not a file" in " ".join(stderr.split())
    assert fake_gen.calls() == []


@pytest.mark.parametrize(("change", "message"), [
    (("--sampler", "euler_b"), "unknown sampler 'euler_b'"),
    (("--width", 100), "multiple of 32"),
    (("--steps", 0), "between 1 and 1000"),
    (("--set", "W=64"), "use --width"),
    (("--set", "outdir=x"), "use --out"),
    (("--set", "stepz=3"), "unknown sd-scripts option 'stepz'; did you mean steps"),
    (("--set", "sampler_x"), "key=value"),
    (("--num-gpus", 2), "no NVIDIA GPU"),
    (("--prompt", "a --n b"), "' --'"),
    (("--prompt", "{a|b} mole"), "dynamic-prompt"),
    (("--prompt", ""), "--prompt '' is empty: give the text to generate from, or leave "
     "--prompt out"),
    (("--id-prefix", "A/B"), "--id-prefix"),
    (("--seed", -1), "--seed"),
])
def test_bad_options_fail_before_any_process(runner: CliRunner, run: Path, fake_gen: FakeGen,
                                             tmp_path: Path, change: tuple[object, ...],
                                             message: str) -> None:
    out = tmp_path / "synth"
    code, stdout, stderr = _sample(runner, fake_gen, "--lora", run, "--n", 2, "--out", out,
                                   *change)
    assert code == 1, stdout
    assert message in stderr and "Traceback" not in stderr
    assert len(stderr.strip().splitlines()) == 1
    assert fake_gen.calls() == [] and not out.exists()


def test_bad_lora_and_manifest_fail_in_one_line(runner: CliRunner, run: Path, fake_gen: FakeGen,
                                                prepared: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "empty.safetensors").write_bytes(b"")
    (bad / "text.safetensors").write_bytes(b"this is not a tensor file at all")
    (bad / "json.safetensors").write_bytes((8).to_bytes(8, "little") + b"not json")
    empty = bad / "manifest.csv"
    empty.write_text(",".join(manifest.COLUMNS) + "\n")
    cases = [
        (("--lora", bad / "missing.safetensors"), "does not exist"),
        (("--lora", bad / "empty.safetensors"), "is empty"),
        (("--lora", bad / "text.safetensors"), "not a safetensors file"),
        (("--lora", bad / "json.safetensors"), "not a safetensors file"),
        (("--lora", bad), "without run.json"),
        (("--lora", run, "--like", empty), "has no rows"),
        (("--lora", run, "--like", bad / "nope.csv"), "does not exist"),
        (("--lora", run, "--like", prepared / "manifest.csv", "--query", "age > 500"),
         "matches no rows"),
        (("--lora", run, "--like", prepared / "manifest.csv", "--query", "age + 1"),
         "must give one True/False per row"),
        (("--lora", run, "--like", prepared / "manifest.csv", "--query", "age >"),
         "--query 'age >' is not a valid expression"),
        (("--lora", run, "--prompt", "x", "--like", prepared / "manifest.csv"), "one of"),
    ]
    for args, message in cases:
        code, stdout, stderr = _sample(runner, fake_gen, *args, "--n", 2, "--out",
                                       tmp_path / "synth")
        assert code == 1, (args, stdout)
        assert message in stderr, (args, stderr)
        assert len(stderr.strip().splitlines()) == 1, stderr
    assert fake_gen.calls() == [] and not (tmp_path / "synth").exists()


def test_like_values_the_lora_cannot_be_prompted_with_are_refused_before_any_image(
        runner: CliRunner, run: Path, fake_gen: FakeGen, prepared: Path,
        tmp_path: Path) -> None:
    """A --like manifest's age, sex or site that prepare never writes, or that the LoRA's
    training manifest never holds, stops the run in one line before sdxl_gen_img.py runs."""
    trained = manifest.read(prepared / "manifest.csv")
    unseen = next(site for site in archive.site_terms() if site not in set(trained["site"]))
    text = pd.read_csv(prepared / "manifest.csv", dtype=str, keep_default_na=False)
    cases = [("age", "-5", "age -5"), ("age", "400", "age 400"), ("sex", "F", "sex 'F'"),
             ("site", "elbow", "site 'elbow'"), ("skin_tone", "green", "skin_tone 'green'"),
             ("site", unseen, f"site {unseen!r} never occurs in the data the LoRA was trained")]
    for column, value, message in cases:
        like = tmp_path / f"like-{column}-{value.replace('/', '_')}.csv"
        edited = text.copy()
        edited.loc[len(edited) - 1, column] = value  # one row of many
        edited.to_csv(like, index=False)
        code, stdout, stderr = _sample(runner, fake_gen, "--lora", run, "--n", 2, "--out",
                                       tmp_path / "synth", "--like", like, *SMALL)
        assert code == 1, (value, stdout)
        assert message in stderr and str(like) in stderr, stderr
        assert len(stderr.strip().splitlines()) == 1, stderr
    assert fake_gen.calls() == [] and not (tmp_path / "synth").exists()
    for value in sorted(set(trained["site"].dropna())):
        assert value in stderr  # the values the LoRA knows are listed
    code, stdout, stderr = _sample(runner, fake_gen, "--lora", run, "--n", 2, "--out",
                                   tmp_path / "synth", "--like", like, "--query",
                                   f"site != {unseen!r}", *SMALL)
    assert code == 0, stdout + stderr


def test_like_ages_beyond_the_trained_ones_are_a_warning(run: Path, fake_gen: FakeGen,
                                                         prepared: Path, tmp_path: Path) -> None:
    """Ages prepare writes but the LoRA never saw (younger or older than all its training
    photos) are drawn, with a warning naming the range and the --query that keeps to it."""
    trained = manifest.read(prepared / "manifest.csv")["age"].dropna()
    low, high = int(trained.min()), int(trained.max())
    text = pd.read_csv(prepared / "manifest.csv", dtype=str, keep_default_na=False)
    plain = sample(run, tmp_path / "a", SampleOptions(n=2, like=prepared),
                   sd_scripts=fake_gen.sd_scripts, python=PYTHON, dry_run=True)
    assert not [w for w in plain.warnings if "ages outside" in w]
    like = tmp_path / "older.csv"
    text.loc[len(text) - 1, "age"] = str(high + 5)
    text.to_csv(like, index=False)
    result = sample(run, tmp_path / "b", SampleOptions(n=2, like=like),
                    sd_scripts=fake_gen.sd_scripts, python=PYTHON, dry_run=True)
    [warning] = [w for w in result.warnings if "ages outside" in w]
    assert warning == (f"--like {like}: 1 of {len(text)} rows have ages outside {low}-{high}, "
                       f"those the LoRA was trained on (first: {high + 5}), so it may not "
                       f"follow them; leave them out with --query 'age >= {low} and age <= "
                       f"{high}'")


def test_a_row_metadata_csv_cannot_hold_stops_the_run_before_any_image(
        runner: CliRunner, run: Path, fake_gen: FakeGen, prepared: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Whatever lets a value through, metadata.csv's rows are checked before generating."""
    monkeypatch.setattr(manifest, "value_problem", lambda frame: None)
    like = tmp_path / "like.csv"
    pd.read_csv(prepared / "manifest.csv", dtype=str, keep_default_na=False).assign(
        age="-5").to_csv(like, index=False)
    code, stdout, stderr = _sample(runner, fake_gen, "--lora", run, "--n", 2, "--out",
                                   tmp_path / "synth", "--like", like, *SMALL)
    assert code == 1 and "ISIC Archive schema" in stderr, stdout + stderr
    assert fake_gen.calls() == [] and not (tmp_path / "synth").exists()


def test_other_settings_in_the_same_out_are_refused(runner: CliRunner, run: Path,
                                                    fake_gen: FakeGen, tmp_path: Path) -> None:
    out = tmp_path / "synth"
    code, stdout, stderr = _sample(runner, fake_gen, "--lora", run, "--n", 2, "--out", out,
                                   *SMALL)
    assert code == 0, stdout + stderr
    code, _, stderr = _sample(runner, fake_gen, "--lora", run, "--n", 2, "--out", out,
                              "--seed", 5, *SMALL)
    assert code == 1 and "seed" in stderr and "another --out" in stderr
    other = tmp_path / "other"
    other.mkdir()
    (other / "keep.txt").write_text("mine")
    code, _, stderr = _sample(runner, fake_gen, "--lora", run, "--n", 2, "--out", other, *SMALL)
    assert code == 1 and "--force" in stderr


def test_other_settings_are_named_by_their_options_with_both_values(
        runner: CliRunner, run: Path, fake_gen: FakeGen, tmp_path: Path) -> None:
    """The refusal of a set made otherwise says, for each option, what it is now and what the
    set was made with, and how to go on: the options the set's values take."""
    out = tmp_path / "synth"
    code, stdout, stderr = _sample(runner, fake_gen, "--lora", run, "--n", 2, "--out", out,
                                   *SMALL, "--query", 'sex == "female"')
    assert code == 0, stdout + stderr
    code, stdout, stderr = _sample(runner, fake_gen, "--lora", run, "--n", 2, "--out", out,
                                   "--width", 128, "--height", 64, "--steps", 2, "--seed", 5,
                                   "--set", "network_mul=0.5")
    assert one_line_error(code, stdout, stderr) == (
        f"Error: {out} holds 2 images made with other settings (--query: none here, "
        "'sex == \"female\"' in that set; --seed 5 here, 0 in that set; --width 128 here, 64 "
        "in that set; --set network_mul=0.5 here, 1.0 in that set): use another --out, or "
        "give that set's values (--query 'sex == \"female\"' --seed 0 --width 64 --set "
        "network_mul=1.0), or delete it")
    assert len(fake_gen.calls()) == 1  # the refused run generated nothing


def test_rows_depend_on_seed_and_index_only() -> None:
    first = prompts.rows_for(3, 50, 17).tolist()
    assert prompts.rows_for(3, 10, 17).tolist() == first[:10]
    assert prompts.rows_for(4, 50, 17).tolist() != first
    assert all(0 <= row < 17 for row in first)
    many = collections.Counter(prompts.rows_for(0, 70000, 7).tolist())
    assert all(abs(count / 70000 - 1 / 7) < 0.01 for count in many.values())


def test_prompt_lines_read_back_as_sd_scripts_reads_them() -> None:
    settings = prompts.Settings("ugly, blurry", 64, 96, 3, 7.5, "ddim")
    line = prompts.prompt_line("photo of me1anoma", settings, 12)
    assert line == "photo of me1anoma --n ugly, blurry --w 64 --h 96 --s 3 --l 7.5 --d 12"
    assert prompts.format_number(12.0) == "12" and prompts.format_number(1e-5) == "0.00001"
    for text in ("", "# x", "a\nb", "x --w 3", "{a|b}"):
        with pytest.raises(UserError):
            prompts.check_prompt(text, "test")


def test_train_samples_are_the_first_images_of_the_default_set(prepared: Path,
                                                               tmp_path: Path) -> None:
    result = train(prepared, "cpu-smoke", run_dir=tmp_path / "run", dry_run=True)
    subsets = toml.load(result.sample_prompts)["prompt"]["subset"]
    table = manifest.read(prepared / "manifest.csv")
    drawn = prompts.draw(table, prompts.TRAINING_DRAWS, 0, "dermoscopy of {trigger} on "
                         "{site}, {sex}, age {age}", "sks melanoma")
    # the first distinct prompts of the default set, each with its image's seed
    assert [s["seed"] for s in subsets] == sorted(drawn.prompts.index(p)
                                                  for p in set(drawn.prompts))[:len(subsets)]
    assert [s["prompt"] for s in subsets] == [drawn.prompts[s["seed"]] for s in subsets]
    assert len({s["prompt"] for s in subsets}) == len(subsets) == 4
    assert drawn.prompts != prompts.draw(table, prompts.TRAINING_DRAWS, 0, DEFAULT_TEMPLATE,
                                         DEFAULT_TRIGGER).prompts


def test_query_narrows_the_rows_drawn(runner: CliRunner, run: Path, fake_gen: FakeGen,
                                      prepared: Path, tmp_path: Path) -> None:
    out = tmp_path / "synth"
    lines = _planned(run, out, fake_gen, n=200, query='sex == "female"')
    table = manifest.read(prepared / "manifest.csv")
    women = set(table.loc[table["sex"] == "female", "caption"])
    assert {line.split(" --")[0] for line in lines.values()} == women
    for like in (prepared, prepared / "manifest.csv"):  # the folder prepare wrote, or its file
        assert _planned(run, out, fake_gen, n=200, query='sex == "female"', like=like) == lines
    download = tmp_path / "isic"  # a folder prepare did not write: named, with how to
    download.mkdir()
    (download / "metadata.csv").write_text("isic_id,sex\nISIC_1,male\n", encoding="utf-8")
    with pytest.raises(UserError) as caught:
        _planned(run, out, fake_gen, n=2, like=download)
    assert str(caught.value) == (
        f"{download} was not made by medsynth-kohya prepare (no .medsynth/prepare.json); run "
        f"`medsynth-kohya prepare {download} --out {download}-prepared` first and give that "
        "folder")
    with pytest.raises(UserError) as caught:
        _planned(run, out, fake_gen, n=2, like=download / "metadata.csv")
    assert str(caught.value) == (
        f"{download / 'metadata.csv'} is not a manifest written by prepare (no column id or "
        "caption): give the manifest.csv that prepare wrote, or run `medsynth-kohya prepare` "
        "to write it again")
    shutil.copytree(prepared, tmp_path / "copy")  # a prepared folder that lost its manifest
    (tmp_path / "copy" / "manifest.csv").unlink()
    with pytest.raises(UserError, match=f"--like {tmp_path / 'copy' / 'manifest.csv'} does "
                                        "not exist"):
        _planned(run, out, fake_gen, n=2, like=tmp_path / "copy")


def test_metadata_file_matches_its_frame(tmp_path: Path) -> None:
    frame = pd.DataFrame({"sex": ["male", None, "female"], "age": [40, None, 70],
                          "site": ["torso", "head/neck", None], "hairy": [True, False, True]})
    drawn = prompts.draw(frame, 50, 1, DEFAULT_TEMPLATE, DEFAULT_TRIGGER)
    plan = Plan(n=50, seed=9, id_prefix="SYN_", drawn=drawn,
                settings=prompts.original_settings(), lora=tmp_path / "a.safetensors",
                lora_sha256="ab" * 32, base_model="stabilityai/stable-diffusion-xl-base-1.0")
    present = [40, 3, 0, 17]
    write_metadata(plan, present, tmp_path / "metadata.csv")
    written = pd.read_csv(tmp_path / "metadata.csv", dtype={
        "sex": "string", "anatom_site_general": "string", "age_approx": "Int64",
        "hairy": "boolean"})
    rows = sorted(present)
    assert list(written.columns) == list(COLUMNS)
    assert list(written["prompt"]) == [drawn.prompts[i] for i in rows]
    archive_sites = [None if site == "torso" else site for site in drawn.site]
    for column, values in (("sex", drawn.sex), ("age_approx", drawn.age),
                           ("anatom_site_general", archive_sites), ("hairy", drawn.hairy)):
        expected = [values[i] for i in rows]
        assert [None if pd.isna(v) else v for v in written[column]] == expected, column
    assert set(written["negative_prompt"]) == {plan.settings.negative_prompt}
    assert set(written["lora_sha256"]) == {"ab" * 32}
    assert set(written["image_manipulation"]) == {"synthetic"}
    assert set(written["diagnosis_1"]) == {"Malignant"}
    assert list(written["isic_id"]) == ["SYN_0000000", "SYN_0000003", "SYN_0000017",
                                        "SYN_0000040"]
    assert list(written["seed"]) == [9, 12, 26, 49]


def test_help_teaches_the_command(runner: CliRunner) -> None:
    code, stdout, _ = invoke(runner, "sample", "--help")
    assert code == 0
    for option in ("--lora", "--n", "--like", "--prompts", "--seed", "--num-gpus", "--set",
                   "--dry-run", "metadata.csv"):
        assert option in stdout


def test_help_says_when_n_is_required(runner: CliRunner) -> None:
    """--n has a default only with --prompts or --prompt: the help says it is needed otherwise."""
    _, stdout, _ = invoke(runner, "sample", "--help")
    assert "required,exceptwith--prompts" in squeezed(stdout), stdout


def test_prompt_length_follows_the_training_run(runner: CliRunner, prepared: Path,
                                                fake_gen: FakeGen, tmp_path: Path) -> None:
    run = tmp_path / "long"
    run.mkdir()
    write_run(run, prepared, tmp_path / "base.safetensors", max_token_length=225)
    code, _, stderr = _sample(runner, fake_gen, "--lora", run, "--n", 1, "--out",
                              tmp_path / "out", "--width", 64, "--height", 64, "--steps", 2)
    assert code == 0, stderr
    [call] = fake_gen.calls()
    assert call["args"]["max_embeddings_multiples"] == 3


def _sample_into(runner: CliRunner, fake: FakeGen, run: Path, out: Path,
                 *extra: object) -> tuple[int, str, str]:
    return _sample(runner, fake, "--lora", run, "--out", out, *SMALL, *extra)


def _mine(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def test_force_keeps_every_file_sample_did_not_write(runner: CliRunner, run: Path,
                                                     fake_gen: FakeGen, tmp_path: Path) -> None:
    out = tmp_path / "my-images"
    first = f"{DEFAULT_PREFIX}0000000"
    clashing = {"metadata.csv": b"isic_id,mine\nX,1\n", "grid.jpg": b"my grid",
                f"images/{first}.png": b"my own photo", "logs/shard-0.log": b"my log"}
    for name, data in clashing.items():
        _mine(out / name, data)
    _mine(out / "notes.txt", b"my notes")
    _mine(out / "images" / "holiday.png", b"another photo")
    before, listing = checksums(out), entries(out)
    for extra in ((), ("--dry-run",), ("--force",), ("--force", "--dry-run")):
        code, stdout, stderr = _sample_into(runner, fake_gen, run, out, "--n", 2, *extra)
        assert code == 1, (extra, stdout + stderr)
        assert len(stderr.strip().splitlines()) == 1 and "Traceback" not in stderr
        assert ("did not write" if "--force" in extra else "--force") in stderr
        assert checksums(out) == before and entries(out) == listing, extra

    for name in clashing:
        (out / name).rename(tmp_path / name.replace("/", "-"))
    before = checksums(out)
    code, stdout, stderr = _sample_into(runner, fake_gen, run, out, "--n", 2, "--force")
    assert code == 0, stdout + stderr
    assert sorted(_metadata(out)["isic_id"]) == [first, f"{DEFAULT_PREFIX}0000001"]
    after = checksums(out)
    assert all(after[name] == digest for name, digest in before.items())

    _mine(out / "images" / f"{DEFAULT_PREFIX}0000002.png", b"dropped in by hand")
    before, listing = checksums(out), entries(out)
    code, stdout, stderr = _sample_into(runner, fake_gen, run, out, "--n", 3)
    assert code == 1 and "did not write" in stderr, stdout + stderr
    assert checksums(out) == before and entries(out) == listing
    (out / "images" / f"{DEFAULT_PREFIX}0000002.png").unlink()
    code, stdout, stderr = _sample_into(runner, fake_gen, run, out, "--n", 3)
    assert code == 0, stdout + stderr
    assert len(_metadata(out)) == 3 and (out / "notes.txt").read_bytes() == b"my notes"


def test_a_refused_sample_leaves_its_own_set_as_it_was(runner: CliRunner, run: Path,
                                                       fake_gen: FakeGen,
                                                       tmp_path: Path) -> None:
    out = tmp_path / "synth"
    code, stdout, stderr = _sample_into(runner, fake_gen, run, out, "--n", 2)
    assert code == 0, stdout + stderr
    _mine(out / "my-notes.txt", b"mine")
    before, listing = checksums(out), entries(out)
    for extra in (("--seed", 5), ("--n", 1), ("--set", "no_such_option=1"),
                  ("--num-gpus", 2), ("--seed", 5, "--force")):
        code, stdout, stderr = _sample_into(runner, fake_gen, run, out, "--n", 2, *extra)
        assert code == 1, (extra, stdout + stderr)
        assert checksums(out) == before and entries(out) == listing, extra


def test_a_run_that_did_not_finish_is_sampled_with_a_warning(run: Path, fake_gen: FakeGen,
                                                             tmp_path: Path) -> None:
    plain = sample(run, tmp_path / "a", SampleOptions(n=1), sd_scripts=fake_gen.sd_scripts,
                   python=PYTHON, dry_run=True)
    assert not [w for w in plain.warnings if "did not finish" in w]
    (run / "output" / "melanoma.safetensors").rename(
        write_lora(run / "output" / "melanoma-step00000002.safetensors"))
    record = json.loads((run / "run.json").read_text(encoding="utf-8"))
    (run / "run.json").write_text(json.dumps({**record, "status": "failed"}), encoding="utf-8")
    result = sample(run, tmp_path / "b", SampleOptions(n=1), sd_scripts=fake_gen.sd_scripts,
                    python=PYTHON, dry_run=True)
    (warning,) = [w for w in result.warnings if "did not finish" in w]
    assert "status failed" in warning and "melanoma-step00000002.safetensors" in warning
    resume = ["medsynth-kohya", "train", record["dataset"]["prepared"], "--run-dir", str(run),
              "--resume", "--force"]  # no state was saved: over again, quoted to paste
    assert ("it saved no training state to resume from: fix what failed and start over with "
            f"`{shlex.join(resume)}` (same settings)") in warning
    record["dataset"]["prepared"] = None  # not recorded: train still needs PREPARED first
    (run / "run.json").write_text(json.dumps({**record, "status": "failed"}), encoding="utf-8")
    result = sample(run, tmp_path / "c", SampleOptions(n=1, prompt="me1anoma"),
                    sd_scripts=fake_gen.sd_scripts, python=PYTHON, dry_run=True)
    (warning,) = [w for w in result.warnings if "did not finish" in w]
    assert (f"`medsynth-kohya train PREPARED --run-dir {shlex.quote(str(run))} --resume "
            "--force`") in warning


def test_a_copied_run_that_did_not_finish_is_sampled_with_its_latest_save(
        runner: CliRunner, run: Path, fake_gen: FakeGen, tmp_path: Path) -> None:
    """A copy (cp -r, a synced folder) rewrites the saves' times: the latest save is the one
    of the highest step, not the one copied last."""
    (run / "output" / "melanoma.safetensors").unlink()
    for step in (10, 50):
        write_lora(run / "output" / f"melanoma-step{step:08d}.safetensors",
                   {"ss_steps": str(step)})
    record = json.loads((run / "run.json").read_text(encoding="utf-8"))
    (run / "run.json").write_text(json.dumps({**record, "status": "interrupted"}),
                                  encoding="utf-8")
    copy = Path(shutil.copytree(run, tmp_path / "run-copy"))
    for step, when in ((10, 2 * 10**18), (50, 10**18)):
        os.utime(copy / "output" / f"melanoma-step{step:08d}.safetensors", ns=(when, when))
    code, stdout, stderr = _sample(runner, fake_gen, "--lora", copy, "--n", 1, "--out",
                                   tmp_path / "synth", "--dry-run", *SMALL)
    assert code == 0, stdout + stderr
    assert "latest save, melanoma-step00000050.safetensors" in " ".join((stdout + stderr).split())


@pytest.mark.parametrize("status", ["failed", "interrupted", "running"])
def test_a_final_lora_written_before_the_run_failed_is_sampled_with_a_warning(
        run: Path, fake_gen: FakeGen, tmp_path: Path, status: str) -> None:
    """train says "written, but the run then failed": sample says so too."""
    record = json.loads((run / "run.json").read_text(encoding="utf-8"))
    (run / "run.json").write_text(json.dumps({**record, "status": status}), encoding="utf-8")
    result = sample(run, tmp_path / "a", SampleOptions(n=1), sd_scripts=fake_gen.sd_scripts,
                    python=PYTHON, dry_run=True)
    (warning,) = [w for w in result.warnings if "final LoRA" in w]
    assert warning == (f"run {run} wrote its final LoRA melanoma.safetensors, but its status "
                       f"is {status} (see {run / 'train.log'}): check why before trusting the "
                       "images")


@pytest.mark.parametrize("damage", ["{oops", "[1, 2]", "", '{"status": "succeeded"}'])
def test_a_damaged_record_is_one_line_for_sample_push_and_evaluate(
        runner: CliRunner, run: Path, fake_gen: FakeGen, tmp_path: Path, damage: str) -> None:
    """A sample.json or prepare.json that is not the record the tool writes (a hand edit, a
    disk error) stops every command that reads it with one line naming it, not a traceback;
    a set whose record is damaged is not taken for a finished one."""
    out = tmp_path / "set"
    code, stdout, stderr = _sample_into(runner, fake_gen, run, out, "--n", 2)
    assert code == 0, stdout + stderr
    state = out / ".medsynth" / "sample.json"
    state.write_text(damage, encoding="utf-8")
    before = checksums(out)
    for command in (("sample", "--lora", run, "--out", out, *SMALL, "--n", 2),
                    ("sample", "--lora", run, "--out", out, *SMALL, "--n", 2, "--dry-run"),
                    ("push", run, "--repo-id", "alice/mel", "--samples", out, "--dry-run"),
                    ("evaluate", "--synthetic", out, "--out", tmp_path / "report", "--lora",
                     run, "--no-classifier")):
        code, stdout, stderr = invoke(runner, *command, "--sd-scripts", fake_gen.sd_scripts,
                                      "--python", PYTHON) if command[0] == "sample" else invoke(
                                          runner, *command)
        assert code == 1, (command, stdout + stderr)
        assert f"{state} is damaged" in " ".join(stderr.split()), stderr
        assert "Traceback" not in stdout + stderr
    assert checksums(out) == before
    prepared = Path(json.loads((run / "run.json").read_text(encoding="utf-8"))
                    ["dataset"]["prepared"])
    (prepared / ".medsynth" / "prepare.json").write_text(damage, encoding="utf-8")
    code, stdout, stderr = invoke(runner, "train", prepared, "--run-dir", tmp_path / "again",
                                  "--preset", "cpu-smoke", "--dry-run")
    assert code == 1 and "Traceback" not in stdout + stderr
    assert "prepare.json is damaged" in " ".join(stderr.split()), stderr


def test_shard_summaries_say_what_the_shard_made_and_whether_the_set_is_complete(
        runner: CliRunner, run: Path, fake_gen: FakeGen, tmp_path: Path) -> None:
    """The first shard does not list a metadata.csv that does not exist yet; the shard that
    completes the set counts the whole set and says it is complete."""
    out = tmp_path / "synth"
    args = ("--lora", run, "--n", 5, "--out", out, *SMALL)
    code, stdout, stderr = _sample(runner, fake_gen, *args, "--shard", "1/2")
    assert code == 0, stderr
    assert not (out / "metadata.csv").exists() and str(out / "metadata.csv") not in stdout
    assert "metadata │ written when the set is complete" in " ".join(stdout.split())
    assert f"shard 1/2: 3 images made; the set has 3 of 5 in {out / 'images'}" in stdout
    assert "complete (" not in stdout
    code, stdout, stderr = _sample(runner, fake_gen, *args, "--shard", "2/2")
    assert code == 0, stderr
    assert len(_images(out)) == 5 and (out / "metadata.csv").is_file()
    said = " ".join(stdout.split())
    assert (f"shard 2/2: 2 images made; 5 images in {out / 'images'}: the set is complete "
            "(metadata.csv, grid.jpg written)") in said
    assert f"metadata │ {out / 'metadata.csv'}" in said


def test_a_rerun_counts_only_the_images_it_makes(run: Path, fake_gen: FakeGen,
                                                 tmp_path: Path) -> None:
    """The progress bar of a re-run goes to the images missing, not the whole set."""
    out = tmp_path / "synth"
    options = SampleOptions(n=7, width=64, height=64, steps=2)
    sample(run, out, options, sd_scripts=fake_gen.sd_scripts, python=PYTHON, detect=lambda: [])
    for image in sorted((out / "images").glob("*.png"))[2:4]:
        image.unlink()
    seen: list[tuple[int, int]] = []
    again = sample(run, out, options, sd_scripts=fake_gen.sd_scripts, python=PYTHON,
                   detect=lambda: [], on_progress=lambda done, total: seen.append((done, total)))
    assert again.generated == 2 and seen[0] == (0, 2) and seen[-1] == (2, 2)
    assert {total for _, total in seen} == {2}
    assert again.message == f"2 images made; 7 images in {out / 'images'}"
    seen.clear()
    sample(run, out, options, sd_scripts=fake_gen.sd_scripts, python=PYTHON, detect=lambda: [],
           on_progress=lambda done, total: seen.append((done, total)))
    assert seen == []


def test_a_set_of_one_is_counted_in_the_singular(runner: CliRunner, run: Path,
                                                 fake_gen: FakeGen, tmp_path: Path) -> None:
    """Counts meet their noun through one helper: no "1 images" in any summary line."""
    out = tmp_path / "one"
    args = ("--lora", run, "--n", 1, "--out", out, *SMALL)
    code, stdout, stderr = _sample(runner, fake_gen, *args)
    assert code == 0, stderr
    said = " ".join(stdout.split())
    assert "1 image: SYN_0000000, made 1" in said and f"1 image in {out / 'images'}" in said
    code, stdout, stderr = _sample(runner, fake_gen, *args, "--check-copies")
    assert code == 0, stderr
    said = " ".join(stdout.split())
    assert "the 1 image was already there" in said and "no near-copies: 1 image checked" in said
    assert "1 images" not in said


def test_a_shard_is_named_as_shard_names_it_and_one_without_images_says_so(
        runner: CliRunner, run: Path, fake_gen: FakeGen, tmp_path: Path) -> None:
    """--shard 1/8's row counts from 1 as --shard does; --shard 6/8 of 4 images has none of
    them: it says so, not that they were "already there"."""
    out = tmp_path / "synth"
    code, stdout, stderr = _sample(runner, fake_gen, "--lora", run, "--n", 4, "--out", out,
                                   *SMALL, "--shard", "1/8")
    assert code == 0, stderr
    assert "shard1/8(GPU0)1image:SYN_0000000,made1" in squeezed(stdout), stdout
    assert "shard 0" not in stdout
    code, stdout, stderr = _sample(runner, fake_gen, "--lora", run, "--n", 4, "--out", out,
                                   *SMALL, "--shard", "6/8")
    assert code == 0, stderr
    said = " ".join(stdout.split())
    assert (f"shard 6/8 has none of the set's 4 images (more shards than images): nothing to "
            f"do; the set has 1 of 4 in {out / 'images'}") in said, said
    assert "already there" not in said and len(fake_gen.calls()) == 1


def test_a_rerun_that_fills_gaps_names_exactly_the_images_it_makes(
        runner: CliRunner, run: Path, fake_gen: FakeGen, tmp_path: Path) -> None:
    out = tmp_path / "synth"
    args = ("--lora", run, "--n", 10, "--out", out, *SMALL)
    assert _sample(runner, fake_gen, *args)[0] == 0
    for gaps, said in (((1, 4, 5), "3 images: SYN_0000001, SYN_0000004..SYN_0000005, made 3"),
                       ((0, 2, 4, 6, 9), "5 images: SYN_0000000, SYN_0000002, SYN_0000004 "
                                         "and 2 more, made 5")):
        for index in gaps:
            (out / "images" / f"SYN_{index:07d}.png").unlink()
        code, stdout, stderr = _sample(runner, fake_gen, *args)
        assert code == 0, stdout + stderr
        assert said in " ".join(stdout.replace("│", " ").split())
        assert _images(out) == {f"SYN_{i:07d}" for i in range(10)}


@pytest.mark.parametrize(("visible", "gpus", "said"), [
    ("", 4, "CUDA_VISIBLE_DEVICES is set but empty, which hides every GPU"),
    ("0,0", 4, "CUDA_VISIBLE_DEVICES=0,0 names a GPU twice"),
    ("0", 4, "CUDA_VISIBLE_DEVICES=0 shows fewer GPUs"),
    (None, 1, "nvidia-smi lists only 1 GPU")])
def test_the_gpus_a_set_is_spread_over_are_visible_distinct_ones(
        monkeypatch: pytest.MonkeyPatch, visible: str | None, gpus: int, said: str) -> None:
    from medsynth_kohya.machine.gpus import Gpu
    from medsynth_kohya.sampling.shards import shard_devices

    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    if visible is not None:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    with pytest.raises(UserError, match=f"^--num-gpus 2: {said}"):
        shard_devices(2, [Gpu("A100", 81920, (8, 0))] * gpus)


@pytest.mark.parametrize(("listed", "given"), [(1, "0,1"), (4, "0,5,1"), (2, "1,2")])
def test_visible_entries_naming_no_gpu_here_are_refused_not_run_on(
        monkeypatch: pytest.MonkeyPatch, listed: int, given: str) -> None:
    """CUDA sees the listed GPUs CUDA_VISIBLE_DEVICES names up to the first naming none: a
    generator given a later entry would find no GPU, so too few seen is refused up front."""
    from medsynth_kohya.machine.gpus import Gpu, visible
    from medsynth_kohya.sampling.shards import shard_devices

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", given)
    gpus = visible([Gpu("A100", 81920, (8, 0))] * listed)
    with pytest.raises(UserError) as refused:
        shard_devices(2, gpus)
    assert str(refused.value) == (
        f"--num-gpus 2: CUDA_VISIBLE_DEVICES={given} shows only {len(gpus)} GPU of this machine "
        "(CUDA reads its entries up to the first naming no GPU nvidia-smi lists); list GPUs "
        "this machine has")


@pytest.mark.parametrize("given", [None, "", "5", "GPU-7f8e,GPU-0a1b"])
def test_the_gpus_of_a_job_planned_here_are_its_own_whatever_this_shell_shows(
        monkeypatch: pytest.MonkeyPatch, given: str | None) -> None:
    """A --slurm task's GPUs are SLURM's, numbered 0..N-1 in the task's own variable: this
    shell's CUDA_VISIBLE_DEVICES and GPUs are not theirs."""
    from medsynth_kohya.sampling.shards import shard_devices

    if given is not None:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", given)
    assert shard_devices(3, [], own=False) == ["0", "1", "2"]
    assert shard_devices(1, [], own=False) == ["0"]


def test_mig_instances_may_outnumber_the_gpus_nvidia_smi_lists(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from medsynth_kohya.machine.gpus import Gpu
    from medsynth_kohya.sampling.shards import shard_devices

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "MIG-a,MIG-b")
    assert shard_devices(2, [Gpu("A100", 81920, (8, 0))]) == ["MIG-a", "MIG-b"]
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert shard_devices(2, [Gpu("A100", 81920, (8, 0))] * 2) == ["0", "1"]


def test_gpus_cuda_visible_devices_hides_are_not_generated_on(
        runner: CliRunner, prepared: Path, fake_gen: FakeGen, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """With every GPU nvidia-smi lists hidden from CUDA, the generator runs on the CPU, as
    torch will: no half precision it cannot run there, and a warning that says why."""
    install_gpus(fake_gen, tmp_path, monkeypatch, 1)
    run = tmp_path / "fp16"
    run.mkdir()
    write_run(run, prepared, tmp_path / "base.safetensors", mixed_precision="fp16")
    seen = {}
    for visible in (None, ""):
        if visible is not None:
            monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
        out = tmp_path / f"synth-{visible is None}"
        code, stdout, stderr = _sample(runner, fake_gen, "--lora", run, "--n", 1, "--out", out,
                                       *SMALL)
        assert code == 0, stdout + stderr
        [call] = fake_gen.calls()
        fake_gen.forget()
        seen[visible] = (call["args"], squeezed(stdout + stderr), call["device"])
    (on_gpu, said_gpu, _), (on_cpu, said_cpu, device) = seen[None], seen[""]
    assert on_gpu.get("fp16") and "fp16" not in on_cpu
    assert device == "", "the generator must stay hidden from every GPU, as the user asked"
    assert "noGPU1image:SYN_0000000" in said_cpu and "GPU01image:SYN_0000000" in said_gpu
    assert "generatingontheCPU" not in said_gpu
    assert "noNVIDIAGPUvisible(CUDA_VISIBLE_DEVICES=):generatingontheCPU" in said_cpu
    code, _, stderr = _sample(runner, fake_gen, "--lora", run, "--n", 2, "--out",
                              tmp_path / "two", "--num-gpus", 2, *SMALL)
    assert code == 1 and " ".join(stderr.split()) == (
        "Error: --num-gpus 2: no NVIDIA GPU visible (CUDA_VISIBLE_DEVICES=); unset "
        "CUDA_VISIBLE_DEVICES or list the GPUs to use in it")


def _bf16_run_sampled_on(runner: CliRunner, prepared: Path, fake_gen: FakeGen, tmp_path: Path,
                         monkeypatch: pytest.MonkeyPatch, gpu: str) -> tuple[Path, int, str]:
    """A run trained in bf16, sampled (one image, into tmp_path/out) on a GPU that nvidia-smi
    lists as the line `gpu`: the run, the exit code and what was said, on one line."""
    install_gpus(fake_gen, tmp_path, monkeypatch, 1)
    (tmp_path / "gpu-bin" / "nvidia-smi").write_text(f"#!/bin/sh\necho '{gpu}'\n",
                                                     encoding="utf-8")
    run = tmp_path / "bf16"
    run.mkdir()
    write_run(run, prepared, tmp_path / "base.safetensors", mixed_precision="bf16")
    code, stdout, stderr = _sample(runner, fake_gen, "--lora", run, "--n", 1, "--out",
                                   tmp_path / "out", *SMALL)
    return run, code, " ".join((stdout + stderr).split())


def test_a_bf16_run_sampled_on_a_gpu_without_bf16_is_warned_with_the_fp16_fix(
        runner: CliRunner, prepared: Path, fake_gen: FakeGen, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A LoRA trained in bf16 on an A100 and sampled on a free Colab T4: generation repeats
    the run's bf16, which a T4 does not compute; the warning's fix is taken as written."""
    run, code, said = _bf16_run_sampled_on(runner, prepared, fake_gen, tmp_path, monkeypatch,
                                           "Tesla T4, 15360 MiB, 7.5")
    assert code == 0, said
    assert fake_gen.calls()[-1]["args"].get("bf16")
    assert ("the run trained in bf16, which generation repeats, and Tesla T4 (compute "
            "capability 7.5) has no bf16: it may run slowly or fail; --set bf16= --set "
            "fp16=true --set no_half_vae=true generates in fp16 with the VAE in full "
            "precision") in said
    code, stdout, stderr = _sample(runner, fake_gen, "--lora", run, "--n", 1, "--out",
                                   tmp_path / "fp16", "--set", "bf16=", "--set", "fp16=true",
                                   "--set", "no_half_vae=true", *SMALL)
    assert code == 0 and "has no bf16" not in stdout + stderr, stdout + stderr
    args = fake_gen.calls()[-1]["args"]
    assert args.get("fp16") and args.get("no_half_vae") and "bf16" not in args


def test_a_bf16_run_sampled_on_a_gpu_of_unknown_capability_is_not_warned(
        runner: CliRunner, prepared: Path, fake_gen: FakeGen, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """nvidia-smi prints [N/A] for the compute capability and memory of some boards (unified
    memory): unknown is not "no bf16", so generation is not warned of it."""
    _, code, said = _bf16_run_sampled_on(runner, prepared, fake_gen, tmp_path, monkeypatch,
                                         "NVIDIA GH200 480GB, [N/A], [N/A]")
    assert code == 0 and "has no bf16" not in said and "capability" not in said, said
    assert fake_gen.calls()[-1]["args"].get("bf16")


def test_a_machine_that_cannot_generate_says_every_problem_on_one_line(
        runner: CliRunner, run: Path, tmp_path: Path) -> None:
    """Its problems were printed one a line; now they are counted on one line, each with its
    fix, as reproduce's are."""
    from .conftest import counted_problems, one_line_error

    out = tmp_path / "out"
    line = one_line_error(*invoke(runner, "sample", "--lora", run, "--out", out, "--n", 2,
                                  "--base-model", tmp_path / "gone.safetensors",
                                  "--sd-scripts", tmp_path / "missing"))
    problems = counted_problems(line, "this machine cannot run the generation")
    assert any(p.startswith(f"base model {tmp_path / 'gone.safetensors'} is not a file")
               for p in problems), line
    assert any(p.startswith(f"sd-scripts not found at {tmp_path / 'missing'}")
               for p in problems), line
    assert line.endswith("; fix each, or sample on a machine that can (--dry-run "
                         "plans it here)"), line
    assert not out.exists()


def test_settings_the_generation_cannot_take_are_named_on_one_line(
        runner: CliRunner, run: Path, fake_gen: FakeGen, tmp_path: Path) -> None:
    from .conftest import counted_problems, one_line_error

    line = one_line_error(*_sample(runner, fake_gen, "--lora", run, "--out", tmp_path / "out",
                                   "--n", 2, "--set", "no_such_option=1", "--set",
                                   "other_unknown=2"))
    problems = counted_problems(line, "the generation cannot run with these settings")
    assert any("no_such_option" in p for p in problems), line
    assert any("other_unknown" in p for p in problems), line
    assert line.endswith("; fix each"), line


@pytest.mark.parametrize("given", ["{run}", "{run}/.", "{run}/output/../."])
@pytest.mark.parametrize("lora", ["{run}", "{run}/output/melanoma.safetensors"])
def test_out_cannot_be_the_run_folder_it_samples_from(runner: CliRunner, run: Path,
                                                      fake_gen: FakeGen, given: str,
                                                      lora: str) -> None:
    """It was refused as "being read by" its own pid, telling the user to wait for itself."""
    before, listing = checksums(run), entries(run)
    code, stdout, stderr = _sample(runner, fake_gen, "--lora", lora.format(run=run), "--out",
                                   given.format(run=run), "--n", 2, *SMALL)
    error = one_line_error(code, stdout, stderr)
    assert "is being read by" not in error and str(os.getpid()) not in error, error
    assert f"--out {Path(given.format(run=run))} is the run folder --lora samples from" in error
    assert "give another --out" in error
    assert checksums(run) == before and entries(run) == listing
    assert fake_gen.calls() == []
