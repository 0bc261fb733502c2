"""RUN/run.json read and written field by field (training/record.py): what a run records, what
its readers take from it, the refusals of JSON that is no record, and the run folder's files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from medsynth_kohya import files
from medsynth_kohya.data.prepared import PreparedFolder
from medsynth_kohya.machine.gpus import Gpu
from medsynth_kohya.training.record import (
    PUBLISHED_RECORD,
    RECORD_FILE,
    DatasetRecord,
    GpuRecord,
    NotARecord,
    RunFolder,
    RunRecord,
    VersionsRecord,
    run_instead,
)

FULL: dict[str, Any] = {
    "tool": "medsynth-kohya", "version": "0.3.0", "preset": "sdxl-24gb",
    "preset_file": "/presets/sdxl-24gb.toml", "overrides": ["learning_rate=1e-4"],
    "config": {"output_name": "melanoma", "output_dir": "/runs/a/output",
               "pretrained_model_name_or_path": "stabilityai/stable-diffusion-xl-base-1.0"},
    "command": ["python", "-m", "accelerate.commands.launch", "--num_processes", "4", "t.py"],
    "cwd": "/sd-scripts", "expected_steps": 1200, "plan": {"saves": 3},
    "versions": {"medsynth_kohya": "0.3.0", "sd_scripts_commit": "ae72efb9", "torch": "2.5.1"},
    "gpus": [{"name": "NVIDIA L4", "memory_mib": 23034, "compute_capability": [8, 9]}],
    "dataset": {"prepared": "/data/prepared", "manifest_sha256": "ab" * 32, "train_images": 40,
                "repeats": 10, "trigger": "mlnm", "caption_template": "{trigger} on {site}",
                "class_name": "melanoma", "source": "isic2020"},
    "start": "2026-01-01T10:00:00", "end": "2026-01-01T11:00:00", "exit_status": 0,
    "lora_files": ["output/melanoma.safetensors"], "status": "succeeded", "pid": 4242,
    "host": "node1", "resumed_from": "/runs/a/output/state", "interrupted": False,
    "message": "done", "pushes": [{"repo": "a/b"}],
    "machines": {"count": 2, "main_process_ip": "10.0.0.1"},
    "nodes": [{"host": "node1"}, {"host": "node2"}], "later_key": [1, 2]}
"""A record with every key this version knows, and one of a later version."""


def test_every_key_of_a_record_is_read_into_its_field_and_written_back_in_order() -> None:
    record = RunRecord.from_dict(FULL)
    assert (record.tool, record.version, record.preset) == ("medsynth-kohya", "0.3.0",
                                                            "sdxl-24gb")
    assert record.preset_file == "/presets/sdxl-24gb.toml"
    assert record.overrides == ["learning_rate=1e-4"] and record.cwd == "/sd-scripts"
    assert record.expected_steps == 1200 and record.plan == {"saves": 3}
    assert record.versions == VersionsRecord("0.3.0", "ae72efb9", {"torch": "2.5.1"})
    assert record.gpus == [GpuRecord("NVIDIA L4", 23034, [8, 9])]
    assert record.dataset == DatasetRecord("/data/prepared", "ab" * 32, 40, 10, "mlnm",
                                           "{trigger} on {site}", "melanoma",
                                           extra={"source": "isic2020"})
    assert (record.start, record.end, record.exit_status) == (FULL["start"], FULL["end"], 0)
    assert record.lora_files == ["output/melanoma.safetensors"] and record.status == "succeeded"
    assert (record.pid, record.host, record.resumed_from) == (4242, "node1", FULL["resumed_from"])
    assert record.interrupted is False and record.message == "done"
    assert record.pushes == [{"repo": "a/b"}] and record.machines == FULL["machines"]
    assert record.nodes == FULL["nodes"] and record.extra == {"later_key": [1, 2]}
    assert record.to_dict() == FULL
    assert list(record.to_dict()) == list(FULL)  # the fields' order, a later version's last


def test_an_empty_record_writes_only_the_keys_every_record_has() -> None:
    assert RunRecord().to_dict() == {"start": None, "end": None, "exit_status": None}
    assert list(RunRecord(status="running", extra={"z": 1}).to_dict()) == [
        "start", "end", "exit_status", "status", "z"]
    assert RunRecord.from_dict({}) == RunRecord()
    nulls = RunRecord.from_dict({key: None for key in FULL if key != "later_key"})
    assert nulls == RunRecord() and nulls.to_dict() == RunRecord().to_dict()


def test_nested_objects_write_their_recorded_fields_then_what_they_kept() -> None:
    dataset = DatasetRecord(prepared="/p", repeats=0, trigger="", extra={"new": None})
    assert list(RunRecord(dataset=dataset).to_dict()["dataset"].items()) == [
        ("prepared", "/p"), ("repeats", 0), ("trigger", ""), ("new", None)]
    versions = VersionsRecord(sd_scripts_commit="abc", extra={"torch": "2.5.1"})
    assert RunRecord(versions=versions).to_dict()["versions"] == {"sd_scripts_commit": "abc",
                                                                  "torch": "2.5.1"}
    gpus = [GpuRecord("T4", extra={"uuid": "GPU-1"}), GpuRecord(memory_mib=0)]
    assert RunRecord(gpus=gpus).to_dict()["gpus"] == [{"name": "T4", "uuid": "GPU-1"},
                                                      {"memory_mib": 0}]
    assert GpuRecord().to_dict() == {} and GpuRecord.from_dict({}) == GpuRecord()


@pytest.mark.parametrize(("data", "message"), [
    ([], "not a JSON object"), ("run", "not a JSON object"), (None, "not a JSON object"),
    ({"config": []}, "config is not a JSON object"), ({"plan": "x"}, "plan is not a JSON object"),
    ({"overrides": "a=b"}, "overrides is not a JSON list"),
    ({"command": "python t.py"}, "command is not a JSON list"),
    ({"gpus": {}}, "gpus is not a JSON list"),
    ({"lora_files": "a.safetensors"}, "lora_files is not a JSON list"),
    ({"pushes": {}}, "pushes is not a JSON list"),
    ({"dataset": "/p"}, "dataset is not a JSON object"),
    ({"versions": ["1.0"]}, "versions is not a JSON object"),
    ({"gpus": ["A100"]}, "a gpus entry is not a JSON object"),
])
def test_json_that_is_no_record_says_which_key_is_wrong(data: Any, message: str) -> None:
    with pytest.raises(NotARecord) as raised:
        RunRecord.from_dict(data)
    assert str(raised.value) == message


def test_a_run_folder_names_its_files(tmp_path: Path) -> None:
    folder = RunFolder(tmp_path / "run")
    assert RECORD_FILE == "run.json" and PUBLISHED_RECORD == "training/run.json"
    assert folder.record_file == tmp_path / "run" / "run.json"
    assert folder.config == tmp_path / "run" / "config.toml"
    assert folder.dataset_config == tmp_path / "run" / "dataset.toml"
    assert folder.sample_prompts == tmp_path / "run" / "sample_prompts.toml"
    assert folder.training_files == (folder.config, folder.dataset_config, folder.sample_prompts)
    assert folder.output == tmp_path / "run" / "output"
    assert folder.samples == tmp_path / "run" / "output" / "sample"
    assert folder.logs == tmp_path / "run" / "logs" and folder.log == tmp_path / "run" / "train.log"
    assert folder.final_lora("m") == tmp_path / "run" / "output" / "m.safetensors"
    assert not folder.exists()
    folder.record_file.mkdir(parents=True)  # a folder of that name is no record
    assert not folder.exists()


def test_a_saved_record_is_loaded_as_it_was_and_a_push_keeps_the_rest(tmp_path: Path) -> None:
    folder = RunFolder(tmp_path)
    record = RunRecord.from_dict(FULL)
    folder.save(record)
    assert folder.exists() and folder.load() == record
    assert json.loads(folder.record_file.read_text(encoding="utf-8")) == FULL
    folder.add_push({"repo": "a/c"})
    assert folder.load().pushes == [{"repo": "a/b"}, {"repo": "a/c"}]
    assert folder.load().to_dict() == {**FULL, "pushes": [{"repo": "a/b"}, {"repo": "a/c"}]}
    first = RunFolder(tmp_path / "first")
    first.save(RunRecord(status="succeeded"))
    first.add_push({"repo": "a/b"})
    assert first.load().pushes == [{"repo": "a/b"}]


def test_what_readers_take_from_the_options_and_the_command() -> None:
    record = RunRecord.from_dict(FULL)
    assert record.options == FULL["config"] and RunRecord().options == {}
    assert record.output_name == "melanoma" and RunRecord().output_name == ""
    assert RunRecord(config={"output_name": None}).output_name == ""
    assert RunRecord(config={"output_name": 7}).output_name == "7"
    assert record.output_dir == "/runs/a/output" and RunRecord().output_dir is None
    assert RunRecord(config={"output_dir": 0}).output_dir == "0"
    assert record.base_model == "stabilityai/stable-diffusion-xl-base-1.0"
    assert RunRecord().base_model == ""
    assert RunRecord(config={"pretrained_model_name_or_path": Path("/m.safetensors")}
                     ).base_model == "/m.safetensors"
    assert record.processes == 4
    commands: tuple[tuple[list[Any], int | None], ...] = (
        (["--num_processes", "1"], 1), (["x", "--num_processes", 8], 8),
        (["--num_processes", "two"], None), (["--num_processes"], None),
        (["--num_processes", "-1"], None), (["--processes", "2"], None), ([], None))
    for command, processes in commands:
        assert RunRecord(command=command).processes == processes, command


def test_the_prepared_folder_a_run_trained_on(tmp_path: Path) -> None:
    assert RunRecord().prepared is None
    assert RunRecord(dataset=DatasetRecord()).prepared is None
    assert RunRecord(dataset=DatasetRecord(prepared="")).prepared is None
    assert RunRecord(dataset=DatasetRecord(prepared="/data/p")).prepared == Path("/data/p")

    prepared = tmp_path / "prepared"
    manifest = PreparedFolder(prepared).manifest
    manifest.parent.mkdir(parents=True)
    manifest.write_text("id\nISIC_1\n", encoding="utf-8")
    digest = files.sha256(manifest)
    record = RunRecord(dataset=DatasetRecord(prepared=str(prepared), manifest_sha256=digest))
    assert not record.prepared_again() and not record.prepared_again(digest)
    assert record.prepared_again("0" * 64)
    manifest.write_text("id\nISIC_2\n", encoding="utf-8")
    assert record.prepared_again()
    manifest.unlink()
    assert not record.prepared_again()  # gone: nothing to compare
    assert record.prepared_again("0" * 64)
    unrecorded = RunRecord(dataset=DatasetRecord(prepared=str(prepared)))
    assert not unrecorded.prepared_again("0" * 64)
    nowhere = RunRecord(dataset=DatasetRecord(manifest_sha256=digest))
    assert not nowhere.prepared_again("0" * 64)


def test_a_run_folder_given_for_a_prepared_one_is_named_with_what_it_trained_on(
        tmp_path: Path) -> None:
    run = RunFolder(tmp_path / "run")
    run.path.mkdir()
    assert run_instead(run.path) is None  # no record: no run
    assert run_instead(tmp_path / "missing") is None
    head = f"{run.path} is a training run folder, not a prepared folder: give the prepared folder"
    for record, said in ((RunRecord(tool="medsynth-kohya", dataset=DatasetRecord(
            prepared="/data/p")), f"{head} it trained on, /data/p"),
                         (RunRecord(tool="medsynth-kohya"), f"{head} it trained on"),
                         (RunRecord(tool="another-tool"), None)):
        run.save(record)
        assert run_instead(run.path) == said
    run.record_file.write_text("not json", encoding="utf-8")
    assert run_instead(run.path) is None


def test_a_gpu_as_recorded_and_as_checked() -> None:
    assert GpuRecord.of(Gpu("NVIDIA H100", 81559, (9, 0))) == GpuRecord("NVIDIA H100", 81559,
                                                                        [9, 0])
    assert [GpuRecord(memory_mib=m).memory_gib for m in (0, 1023, 1024, 2047, 24576)] == [
        0, 0, 1, 1, 24]
    assert GpuRecord(memory_mib=None).memory_gib is None
    capabilities: tuple[tuple[Any, tuple[int, int] | None], ...] = (
        ([8, 6], (8, 6)), ([8, 6, 1], (8, 6)), ([8], None), ([], None), (None, None),
        (["8", 6, 1], (6, 1)), ([8, None, 0], (8, 0)))
    for capability, expected in capabilities:
        assert GpuRecord("L4", 23034, capability).gpu() == Gpu("L4", 23034, expected), capability
    assert GpuRecord().gpu() == Gpu("GPU", None, None)
    assert GpuRecord(name="", memory_mib=1.5).gpu() == Gpu("GPU", None, None)  # type: ignore[arg-type]
    # nvidia-smi's [N/A] is recorded as not known, and read back as not known
    unknown = Gpu("NVIDIA GH200 480GB", None, None)
    assert GpuRecord.of(unknown) == GpuRecord("NVIDIA GH200 480GB", None, None)
    assert GpuRecord.from_dict(GpuRecord.of(unknown).to_dict()).gpu() == unknown
    with pytest.raises(NotARecord, match=r"^a gpus entry is not a JSON object$"):
        GpuRecord.from_dict(["L4"])


def test_a_key_named_extra_is_kept_as_read_like_any_other_unknown_key() -> None:
    data = {"status": "failed", "extra": {"a": 1}, "dataset": {"repeats": 2, "extra": [3]},
            "versions": {"extra": "x"}, "gpus": [{"name": "T4", "extra": None}]}
    record = RunRecord.from_dict(data)
    assert record.extra == {"extra": {"a": 1}} and record.status == "failed"
    assert record.dataset == DatasetRecord(repeats=2, extra={"extra": [3]})
    assert record.versions == VersionsRecord(extra={"extra": "x"})
    assert record.gpus == [GpuRecord("T4", extra={"extra": None})]
    assert {key: record.to_dict()[key] for key in data} == data
