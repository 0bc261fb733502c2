"""What a sample output folder holds and who may write into it (sampling/synthset.py), called
directly: the files a run writes, the record of them, an unfinished set, `claim`'s refusals and
the images found by name."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from medsynth_kohya import locks
from medsynth_kohya.errors import UserError
from medsynth_kohya.sampling import prompts, synthset
from medsynth_kohya.sampling.plan import Plan
from medsynth_kohya.sampling.prompts import Drawn

IDENTITY = {"seed": 40, "lora_sha256": "ab" * 32, "id_prefix": "SYN_"}


def _plan(n: int, prefix: str = "SYN_") -> Plan:
    drawn = Drawn(prompts=["photo of skin"] * n, sex=[None] * n, age=[None] * n,
                  site=[None] * n, hairy=[None] * n, skin_tone=[None] * n)
    return Plan(n=n, seed=40, id_prefix=prefix, drawn=drawn,
                settings=prompts.original_settings(), lora=Path("m.safetensors"),
                lora_sha256="ab" * 32, base_model="base")


def _images(out: Path, *indices: int, prefix: str = "SYN_") -> None:
    (out / "images").mkdir(parents=True, exist_ok=True)
    for i in indices:
        (out / "images" / f"{prefix}{i:07d}.png").write_bytes(b"png")


def _sample_json(out: Path, **record: Any) -> None:
    (out / ".medsynth").mkdir(parents=True, exist_ok=True)
    (out / ".medsynth" / "sample.json").write_text(json.dumps(record), encoding="utf-8")


def test_a_runs_outputs_are_the_metadata_grid_logs_and_images() -> None:
    assert synthset.outputs(_plan(2, "X-"), 3) == [
        "metadata.csv", "grid.jpg", "logs/shard-0.log", "logs/shard-1.log", "logs/shard-2.log",
        "images/X-0000000.png", "images/X-0000001.png"]


def test_the_record_of_written_files_grows_and_is_sorted(tmp_path: Path) -> None:
    synthset.record_outputs(tmp_path, ["grid.jpg", "metadata.csv"])
    synthset.record_outputs(tmp_path, ["images/A0000000.png", "grid.jpg"])
    text = (tmp_path / ".medsynth" / "written.json").read_text(encoding="utf-8")
    assert text == '["grid.jpg", "images/A0000000.png", "metadata.csv"]'
    (tmp_path / ".medsynth" / "written.json").write_text("not json", encoding="utf-8")
    synthset.record_outputs(tmp_path, ["grid.jpg"])  # a damaged record starts again
    assert json.loads((tmp_path / ".medsynth" / "written.json").read_text()) == ["grid.jpg"]


@pytest.mark.parametrize(("status", "said"), [
    ("interrupted", "sample was interrupted with 2 of 4 images"),
    ("failed", "sample failed with 2 of 4 images"),
    ("running", "sample stopped before the end with 2 of 4 images"),
    ("planned", "sample stopped before the end with 2 of 4 images"),
    ("incomplete", "sample ended short of the set with 2 of 4 images"),
    ("sharded", "its shards have made 2 of 4 images")])
def test_an_unfinished_set_says_why_and_how_far_it_got(tmp_path: Path, status: str,
                                                      said: str) -> None:
    _sample_json(tmp_path, status=status, n=4, identity={"id_prefix": "SYN_"})
    _images(tmp_path, 0, 3, 4, 7)  # 4 and 7 are beyond n
    _images(tmp_path, 1, prefix="OTHER_")
    assert synthset.unfinished(tmp_path) == f"{tmp_path} is unfinished: {said}"


@pytest.mark.parametrize("record", [
    {"status": "succeeded", "n": 2, "identity": {"id_prefix": "SYN_"}},
    {"status": "sharded", "n": "2", "identity": {"id_prefix": "SYN_"}},
    {"n": 2, "identity": {"id_prefix": "SYN_"}}])
def test_a_finished_set_is_not_unfinished(tmp_path: Path, record: Any) -> None:
    _sample_json(tmp_path, **record)
    _images(tmp_path, 0, 1)
    assert synthset.unfinished(tmp_path) is None
    assert synthset.unfinished(tmp_path / "elsewhere") is None


@pytest.mark.parametrize("record", [
    {"status": "interrupted", "n": 2}, {"status": "interrupted", "n": 2, "identity": None},
    {"status": "succeeded", "n": 2, "identity": [1]}])
def test_a_record_without_its_settings_is_damaged_not_finished(tmp_path: Path,
                                                               record: Any) -> None:
    """A sample.json that is no record sample writes cannot tell a finished set: every reader
    (unfinished, made_with, claim) stops with one line naming it."""
    _sample_json(tmp_path, **record)
    _images(tmp_path, 0, 1)
    plan = _plan(2)
    for read in (lambda: synthset.unfinished(tmp_path), lambda: synthset.made_with(tmp_path),
                 lambda: synthset.claim(tmp_path, IDENTITY, plan, synthset.outputs(plan, 1),
                                        force=True)):
        with pytest.raises(UserError, match=r"sample.json is damaged \(not the JSON record "
                                            r"sample writes\): restore it, or make the set "
                                            r"again in another --out"):
            read()


def test_an_unreadable_count_reads_as_no_images(tmp_path: Path) -> None:
    _sample_json(tmp_path, status="interrupted", n="two", identity={"id_prefix": "SYN_"})
    _images(tmp_path, 0, 1)
    assert synthset.unfinished(tmp_path) == (f"{tmp_path} is unfinished: sample was "
                                            "interrupted with 0 of 0 images")


def test_claim_refuses_a_file_and_a_folder_of_other_files(tmp_path: Path) -> None:
    plan, names = _plan(2), synthset.outputs(_plan(2), 1)
    (tmp_path / "file").write_text("x", encoding="utf-8")
    with pytest.raises(UserError) as caught:
        synthset.claim(tmp_path / "file", IDENTITY, plan, names, force=True)
    assert str(caught.value) == f"--out {tmp_path / 'file'} is a file; choose a folder"
    assert synthset.claim(tmp_path / "new", IDENTITY, plan, names, force=False) is False
    out = tmp_path / "photos"
    out.mkdir()
    (out / locks.LOCK_NAME).write_text("{}", encoding="utf-8")
    (out / ".medsynth").mkdir()
    assert synthset.claim(out, IDENTITY, plan, names, force=False) is False  # only ours there
    (out / "holiday.jpg").write_bytes(b"jpeg")
    with pytest.raises(UserError) as caught:
        synthset.claim(out, IDENTITY, plan, names, force=False)
    assert str(caught.value) == (f"--out {out} is not empty (it holds holiday.jpg) and was not "
                                 "made by medsynth-kohya sample; choose an empty folder or pass "
                                 "--force to write into it")
    assert synthset.claim(out, IDENTITY, plan, names, force=True) is False


def test_claim_with_force_still_keeps_files_sample_did_not_write(tmp_path: Path) -> None:
    plan = _plan(2)
    names = synthset.outputs(plan, 1)
    (tmp_path / "grid.jpg").write_bytes(b"mine")
    _images(tmp_path, 1)
    with pytest.raises(UserError) as caught:
        synthset.claim(tmp_path, IDENTITY, plan, names, force=True)
    assert str(caught.value) == (
        f"2 files in {tmp_path} that sample did not write would be overwritten, removed or "
        f"taken into the set (first: {tmp_path / 'grid.jpg'}); move them out of {tmp_path} and "
        "run this again (--force keeps them too)")
    synthset.record_outputs(tmp_path, ["grid.jpg"])
    with pytest.raises(UserError, match=r"^1 file in .* \(first: .*SYN_0000001.png\)"):
        synthset.claim(tmp_path, IDENTITY, plan, names, force=True)
    synthset.record_outputs(tmp_path, names)
    assert synthset.claim(tmp_path, IDENTITY, plan, names, force=True) is False


def test_shard_files_in_a_folder_that_is_no_set_are_foreign(tmp_path: Path) -> None:
    plan = _plan(1)
    shard = tmp_path / ".medsynth" / "shards" / "0" / "prompts.txt"
    shard.parent.mkdir(parents=True)
    shard.write_text("x", encoding="utf-8")
    (tmp_path / ".medsynth" / "shards" / "1").mkdir()
    with pytest.raises(UserError, match=rf"^1 file in .*\(first: {shard}\)"):
        synthset.claim(tmp_path, IDENTITY, plan, synthset.outputs(plan, 1), force=True)
    _sample_json(tmp_path, identity=IDENTITY)  # a set's own shard folder is its own
    assert synthset.claim(tmp_path, IDENTITY, plan, synthset.outputs(plan, 1), force=False)


def test_claim_refuses_a_set_of_other_settings_or_more_images(tmp_path: Path) -> None:
    plan, names = _plan(3), synthset.outputs(_plan(3), 1)
    _sample_json(tmp_path, identity={**IDENTITY, "steps": 30})
    assert synthset.claim(tmp_path, IDENTITY, plan, names, force=False) is False  # no images
    _images(tmp_path, 0, 1)
    with pytest.raises(UserError) as caught:
        synthset.claim(tmp_path, {**IDENTITY, "seed": 41}, plan, names, force=True)
    assert str(caught.value) == (f"{tmp_path} holds 2 images made with other settings (--seed "
                                 "41 here, 40 in that set; --steps: none here, 30 in that set): "
                                 "use another --out, or give that set's values (--seed 40 "
                                 "--steps 30), or delete it")
    _sample_json(tmp_path, identity=IDENTITY)
    assert synthset.claim(tmp_path, IDENTITY, plan, names, force=False) is True
    _images(tmp_path, 3, 5)
    with pytest.raises(UserError) as caught:
        synthset.claim(tmp_path, IDENTITY, plan, names, force=False)
    assert str(caught.value) == (f"{tmp_path} already holds 6 images; --n 3 would leave some "
                                 "out of its metadata.csv: use --n 6 or more, or choose "
                                 "another --out")
    assert synthset.claim(tmp_path, IDENTITY, _plan(6), synthset.outputs(_plan(6), 1),
                          force=False) is True


def test_a_generator_option_sample_sets_itself_is_named_by_samples_option_alone(
        tmp_path: Path) -> None:
    """--width changes the generator's W too: the refusal names --width, not the generator;
    a difference in sdxl_gen_img.py's options that no option names is still said."""
    plan = _plan(2)
    made = {**IDENTITY, "width": 64, "generator": {"W": 64, "network_mul": [1.0]}}
    _sample_json(tmp_path, identity=made)
    _images(tmp_path, 0)
    with pytest.raises(UserError) as caught:
        synthset.claim(tmp_path, {**made, "width": 128, "generator": {"W": 128,
                                                                     "network_mul": [1.0]}},
                       plan, synthset.outputs(plan, 1), force=False)
    assert str(caught.value) == (f"{tmp_path} holds 1 image made with other settings (--width "
                                 "128 here, 64 in that set): use another --out, or give that "
                                 "set's values (--width 64), or delete it")
    with pytest.raises(UserError) as caught:
        synthset.claim(tmp_path, {**made, "generator": {"W": 128, "network_mul": [1.0]}},
                       plan, synthset.outputs(plan, 1), force=False)
    assert str(caught.value) == (f"{tmp_path} holds 1 image made with other settings "
                                 "(sdxl_gen_img.py's options differ from that set's): use "
                                 "another --out, or delete it")


def test_claim_counts_the_images_of_the_recorded_prefix(tmp_path: Path) -> None:
    plan = _plan(2, "NEW_")
    _sample_json(tmp_path, identity=IDENTITY)
    _images(tmp_path, 0, 1, 2)  # SYN_: the set's own
    with pytest.raises(UserError, match="holds 3 images made with other settings"):
        synthset.claim(tmp_path, {**IDENTITY, "id_prefix": "NEW_"}, plan,
                       synthset.outputs(plan, 1), force=False)
    _sample_json(tmp_path, identity={"seed": 40})  # recorded before the prefix was
    _images(tmp_path, 0, 1, 2, prefix="NEW_")
    with pytest.raises(UserError, match="already holds 3 images; --n 2"):
        synthset.claim(tmp_path, {"seed": 40}, plan, synthset.outputs(plan, 1), force=False)


@pytest.mark.parametrize(("identity", "digest"), [
    ({"lora_sha256": "cd" * 32}, "cd" * 32), ({"lora_sha256": ""}, None),
    ({"lora_sha256": 7}, None), ({}, None)])
def test_made_with_is_the_recorded_lora_digest(tmp_path: Path, identity: Any,
                                               digest: str | None) -> None:
    _sample_json(tmp_path, identity=identity)
    assert synthset.made_with(tmp_path) == digest
    assert synthset.made_with(tmp_path / "elsewhere") is None


def test_made_with_falls_back_to_the_lora_metadata_csv_names(tmp_path: Path) -> None:
    """A set copied without its hidden .medsynth/ still says which LoRA made it."""
    header = "isic_id,prompt,lora_sha256\n"
    (tmp_path / "metadata.csv").write_text(header + f"SYN_0000000,p,{'EF' * 32}\n"
                                           "SYN_0000001,p,\n", encoding="utf-8")
    assert synthset.made_with(tmp_path) == "ef" * 32
    _sample_json(tmp_path, identity={})  # an older record without the digest
    assert synthset.made_with(tmp_path) == "ef" * 32
    _sample_json(tmp_path, identity={"lora_sha256": "cd" * 32})
    assert synthset.made_with(tmp_path) == "cd" * 32
    (tmp_path / "metadata.csv").write_text(header + "SYN_0000000,p,\n", encoding="utf-8")
    _sample_json(tmp_path, identity={})
    assert synthset.made_with(tmp_path) is None


def test_present_images_are_the_prefixs_numbered_pngs(tmp_path: Path) -> None:
    assert synthset.present_images(tmp_path / "images", "A.") == []
    _images(tmp_path, 12, 3, 10**7, prefix="A.")
    for name in ("AX0000001.png", "A.000001.png", "A.0000002.jpg", "A.0000004.png.tmp",
                 "xA.0000005.png", "A.00000x6.png"):
        (tmp_path / "images" / name).write_bytes(b"")
    assert synthset.present_images(tmp_path / "images", "A.") == [3, 12, 10**7]


def test_a_set_whose_record_has_other_settings_is_refused(tmp_path: Path) -> None:
    plan = _plan(2)
    _sample_json(tmp_path, status="succeeded", n=2, identity={})
    _images(tmp_path, 0)
    with pytest.raises(UserError) as caught:
        synthset.claim(tmp_path, IDENTITY, plan, synthset.outputs(plan, 1), force=False)
    assert str(caught.value) == (f"{tmp_path} holds 1 image made with other settings (--lora: "
                                 f"a LoRA of sha256 {'ab' * 6}… here, none recorded in that "
                                 "set; --seed: 40 here, none in that set; --id-prefix: SYN_ "
                                 "here, none in that set): use another --out, or delete it")


def test_unreadable_metadata_names_the_reason(tmp_path: Path) -> None:
    (tmp_path / "metadata.csv").write_bytes(b"isic_id,prompt\nSYN_0000000,\xff\n")
    with pytest.raises(UserError) as caught:
        synthset.read_metadata(tmp_path)
    assert str(caught.value).startswith(f"cannot read {tmp_path / 'metadata.csv'} ('utf-8' "
                                        "codec can't decode byte 0xff")


def test_shards_recording_their_files_side_by_side_lose_none(tmp_path: Path) -> None:
    """record_outputs read, added and wrote unlocked: two shards at once kept 394 of 600."""
    import subprocess
    import sys

    code = ("import sys; from pathlib import Path; from medsynth_kohya.sampling import synthset\n"
            "for i in range(150): synthset.record_outputs(Path(sys.argv[1]), "
            "[f'images/{sys.argv[2]}{i:07d}.png'])")
    writers = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path), prefix])
               for prefix in ("A_", "B_")]
    assert [writer.wait(timeout=120) for writer in writers] == [0, 0]
    recorded = json.loads((tmp_path / ".medsynth" / "written.json").read_text())
    assert len(recorded) == 300


def test_a_machine_shard_s_logs_are_recorded_as_it_names_them() -> None:
    plan = _plan(1)
    assert synthset.outputs(plan, 2, "1-of-3.")[:4] == [
        "metadata.csv", "grid.jpg", "logs/shard-1-of-3.0.log", "logs/shard-1-of-3.1.log"]


def test_a_set_folder_under_a_file_has_no_record_and_an_unreadable_one_is_one_line(
        tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("a file", encoding="utf-8")
    assert synthset.read_state(tmp_path / "notes.txt" / "synthetic") is None
    (tmp_path / "set" / synthset.STATE_DIR / synthset.STATE_FILE).mkdir(parents=True)
    with pytest.raises(UserError, match=r"^cannot read .*sample\.json \(.+\): restore it"):
        synthset.read_state(tmp_path / "set")


def test_a_changed_manifest_is_not_blamed_on_a_like_never_given() -> None:
    """Resuming a set drawn from the run's own prepared folder, prepared again since, was
    refused as "--like: another manifest.csv ... give that set's values (its --like
    manifest)", though no --like was given."""
    said, fix = synthset.other_settings(
        {"kind": "like", "manifest_sha256": "a" * 64, "query": None},
        {"kind": "like", "manifest_sha256": "b" * 64, "query": None})
    assert said == ["the manifest.csv the prompts are drawn from (--like, else the run's "
                    "prepared folder) is not that set's: another one, or prepared again since"]
    assert fix == "the manifest.csv it was drawn from" and "--like manifest" not in fix
