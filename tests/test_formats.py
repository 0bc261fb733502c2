"""One owner per on-disk format: the run record is read and written by training/record.py,
the prepared folder's state by data/prepared.py, the synthetic set's (metadata.csv included) by
sampling/synthset.py, and every other file one command writes and another reads by one module.

A second reader that spells `run.json` or indexes a record by its keys drifts from the writer
(the bug this layout removed: four readers, each with its own literal keys).
"""

from __future__ import annotations

import ast
import dataclasses
import json
import re
import shutil
import struct
from pathlib import Path

import pytest

import medsynth_kohya
from medsynth_kohya import files
from medsynth_kohya.data.archive import MELANOMA, MetadataStyle
from medsynth_kohya.data.prepare import HairAgreement, PrepareOptions
from medsynth_kohya.data.prepared import PreparedFolder
from medsynth_kohya.data.sources import Source
from medsynth_kohya.errors import UserError
from medsynth_kohya.machine.gpus import Gpu
from medsynth_kohya.sampling import prompts, synthset
from medsynth_kohya.sampling.plan import Plan
from medsynth_kohya.sampling.prompts import Drawn
from medsynth_kohya.sampling.synthset import SynthRow, write_metadata
from medsynth_kohya.training.record import (
    RECORD_FILE,
    DatasetRecord,
    GpuRecord,
    NotARecord,
    RunFolder,
    RunRecord,
    VersionsRecord,
)

PACKAGE = Path(medsynth_kohya.__file__).parent
OWNER = PACKAGE / "training" / "record.py"
PREPARED = PACKAGE / "data" / "prepared.py"
SYNTHSET = PACKAGE / "sampling" / "synthset.py"
OWNERS = {
    RECORD_FILE: {OWNER},
    "config.toml": {OWNER},
    "sample_prompts.toml": {OWNER},
    "accelerate.json": {OWNER},
    "dataset.toml": {OWNER, PREPARED},  # the run's and the prepared folder's
    "prepare.json": {PREPARED},
    "written-unfinished.json": {PREPARED},
    "manifest.csv": {PREPARED},
    "skipped.csv": {PREPARED},
    "scan-cache.json": {PACKAGE / "data" / "prepare.py"},
    "sample.json": {SYNTHSET},
    "metadata.csv": {SYNTHSET, PACKAGE / "data" / "sources.py"},  # and an ISIC download's
    "written.json": {SYNTHSET, PACKAGE / "data" / "prepare.py"},  # the set's and prepare's
    "shard.json": {PACKAGE / "sampling" / "shards.py"},
    "copies.json": {PACKAGE / "evaluation" / "copycheck.py"},
    "report.json": {PACKAGE / "evaluation" / "report.py"},
    "report-public.html": {PACKAGE / "evaluation" / "report.py"},
    "launch.json": {PACKAGE / "training" / "nodes.py"},
    "reproduce.json": {PACKAGE / "pipeline" / "reproduce.py"},
}
"""Every file a command writes and another reads, and the modules that may spell its name."""
KEYS = {f.name for part in (RunRecord, DatasetRecord, GpuRecord, VersionsRecord)
        for f in dataclasses.fields(part)} - {"extra"}


def _modules(owners: set[Path], root: Path = PACKAGE) -> list[Path]:
    """The package's modules (under `root`, a copy of it) but `owners`."""
    skipped = {root / owner.relative_to(PACKAGE) for owner in owners}
    found = sorted(p for p in root.rglob("*.py") if p not in skipped)
    assert len(found) > 30
    return found


def _prose(tree: ast.AST) -> set[int]:
    """ids of the string constants that name no file the code opens: docstrings, `help=`
    texts of options, and template names given to `render` (files of templates/)."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
            found.add(id(node.value))
        elif isinstance(node, ast.Call):
            found |= {id(part) for keyword in node.keywords if keyword.arg == "help"
                      for part in ast.walk(keyword.value)}
            name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(
                node.func, "id", None)
            if name == "render" and node.args:
                found.add(id(node.args[0]))
    return found


def _spelled(source: str, name: str) -> list[int]:
    """Lines of `source` whose code names the file `name` as a path: a string that is the
    name or ends in `/name` (`out / "metadata.csv"`, `f"{out}/metadata.csv"`), not prose."""
    tree = ast.parse(source)
    prose = _prose(tree)
    path = re.compile(rf"(^|[/\\]){re.escape(name)}$")
    return [node.lineno for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str)
            and path.search(node.value.strip()) and id(node) not in prose]


def _stray_names(name: str, root: Path = PACKAGE) -> list[str]:
    """Where a module that does not own `name` spells it (module:line)."""
    return [f"{path.relative_to(root)}:{line}" for path in _modules(OWNERS[name], root)
            for line in _spelled(path.read_text(encoding="utf-8"), name)]


@pytest.mark.parametrize("name", sorted(OWNERS))
def test_no_module_but_the_owner_names_the_file(name: str) -> None:
    for owner in OWNERS[name]:
        assert _spelled(owner.read_text(encoding="utf-8"), name), owner
    assert _stray_names(name) == []


def _key(node: ast.AST) -> tuple[ast.expr, object] | None:
    """(what is indexed, the literal key) of `x["key"]` and `x.get("key", ...)`."""
    if isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant):
        return node.value, node.slice.value
    if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
            and node.func.attr in ("get", "pop", "setdefault") and node.args
            and isinstance(node.args[0], ast.Constant)):
        return node.func.value, node.args[0].value
    return None


def _read_by_key(owner: Path, keys: set[str], what: str, root: Path = PACKAGE) -> list[str]:
    """`x["key"]` and `x.get("key")` outside `owner` where the key is one of `keys` and `x`
    names `what` (a record, a state)."""
    read = []
    for path in _modules({owner}, root):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            found = _key(node)
            if found and found[1] in keys and what in ast.unparse(found[0]).lower():
                read.append(f"{path.relative_to(root)}: {ast.unparse(node)}")
    return read


def test_no_module_but_the_owner_reads_a_record_by_its_keys() -> None:
    assert _read_by_key(OWNER, KEYS, "record") == []


def _prepared_keys(folder: Path) -> set[str]:
    """The keys of prepare.json as prepare writes it: its own, its source's and options'."""
    prepared = PreparedFolder(folder)
    (folder / "isic.csv").write_text("isic_id,diagnosis\n", encoding="utf-8")
    prepared.write_state(Source("archive", folder / "isic.csv", (folder,)), PrepareOptions(),
                         HairAgreement("detector", 2, 1, 1, 1), "melanoma")
    data = json.loads(prepared.state_file.read_text(encoding="utf-8"))
    return {*data, *data["source"], *data["options"]}


def test_no_module_but_the_owner_reads_the_prepared_state_by_its_keys(tmp_path: Path) -> None:
    keys = _prepared_keys(tmp_path)
    assert {"options", "source", "diagnosis", "trigger", "image_dirs"} <= keys
    assert _read_by_key(PREPARED, keys, "state") == []


def test_the_checks_above_find_what_they_look_for(tmp_path: Path) -> None:
    tree = ast.parse('record.get("config", {}).get("output_name")\nrun_record["status"]\n'
                     'x = "RUN/run.json"\n')
    keys = [found[1] for node in ast.walk(tree) if (found := _key(node))]
    assert "config" in keys and "status" in keys
    assert any(isinstance(n, ast.Constant) and n.value == "RUN/run.json" for n in ast.walk(tree))
    code = ('"""See OUT/metadata.csv"""\nopt = Option(help="the set\'s metadata.csv")\n'
            'doc = render("config.toml", {})\npath = out / "metadata.csv"\n'
            'line = f"{out}/metadata.csv"\nwhy = "metadata.csv leaves it blank"\n')
    assert _spelled(code, "metadata.csv") == [4, 5] and _spelled(code, "config.toml") == []
    copy = tmp_path / "package"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    (copy / "sampling" / "stray.py").write_text(  # reads a set's metadata and a state alone
        '"""A stray reader."""\nMETA = "metadata.csv"\n'
        'def trigger(state: dict) -> str:\n    return state["options"]["trigger"]\n',
        encoding="utf-8")
    assert _stray_names("metadata.csv", copy) == ["sampling/stray.py:2"]
    assert len(_read_by_key(PREPARED, _prepared_keys(tmp_path), "state", copy)) == 2


def test_a_record_keeps_what_it_does_not_know_and_writes_no_empty_keys(tmp_path: Path) -> None:
    folder = RunFolder(tmp_path / "run")
    folder.path.mkdir()
    written = {"tool": "medsynth-kohya", "status": "running", "pid": 7, "start": "t0",
               "end": None, "cache_hint": 2, "dataset": {"prepared": "/p", "future": True}}
    folder.record_file.write_text(json.dumps(written), encoding="utf-8")
    record = folder.load()
    assert record.status == "running" and record.pid == 7 and record.config is None
    assert record.prepared == Path("/p") and record.extra == {"cache_hint": 2}
    folder.save(record)
    again = json.loads(folder.record_file.read_text(encoding="utf-8"))
    assert again == {**written, "exit_status": None}
    assert "config" not in again and "lora_files" not in again  # not yet rendered: absent


def test_a_push_is_appended_and_everything_else_kept(tmp_path: Path) -> None:
    folder = RunFolder(tmp_path)
    folder.save(RunRecord(status="succeeded", config={"output_name": "melanoma"},
                          dataset=DatasetRecord(prepared="/p", repeats=3)))
    folder.add_push({"repo_id": "a/b"})
    folder.add_push({"repo_id": "a/c"})
    record = folder.load()
    assert [p["repo_id"] for p in record.pushes or []] == ["a/b", "a/c"]
    assert record.output_name == "melanoma" and record.dataset == DatasetRecord("/p", repeats=3)
    assert folder.final_lora(record.output_name) == tmp_path / "output" / "melanoma.safetensors"


def test_gpus_and_versions_are_typed_and_keep_what_they_do_not_know(tmp_path: Path) -> None:
    written = {"versions": {"medsynth_kohya": "0.1.0", "sd_scripts_commit": "ae72efb9",
                            "torch": "2.5.1", "accelerate": "1.6.0"},
               "gpus": [{"name": "NVIDIA A100", "memory_mib": 81920, "compute_capability": [8, 0],
                         "uuid": "GPU-1"}, {"name": "NVIDIA T4"}],
               "command": ["python", "-m", "accelerate.commands.launch", "--num_processes", "2",
                           "sdxl_train_network.py"]}
    record = RunRecord.from_dict(written)
    assert record.versions == VersionsRecord("0.1.0", "ae72efb9",
                                             {"torch": "2.5.1", "accelerate": "1.6.0"})
    assert record.gpus == [GpuRecord("NVIDIA A100", 81920, [8, 0], {"uuid": "GPU-1"}),
                           GpuRecord("NVIDIA T4")]
    assert [gpu.memory_gib for gpu in record.gpus] == [80, None] and record.processes == 2
    assert RunRecord().processes is None and RunRecord(command=["x", "--num_processes"]
                                                       ).processes is None
    folder = RunFolder(tmp_path)
    folder.save(record)
    again = json.loads(folder.record_file.read_text(encoding="utf-8"))
    assert {key: again[key] for key in written} == written


def test_a_gpu_entry_is_the_gpu_a_machine_is_checked_against() -> None:
    entry = GpuRecord.from_dict({"name": "NVIDIA A100", "memory_mib": 81920,
                                 "compute_capability": [8, 0], "uuid": "GPU-1"})
    assert entry.gpu() == Gpu("NVIDIA A100", 81920, (8, 0)) and entry.extra == {"uuid": "GPU-1"}
    assert GpuRecord.of(entry.gpu()).to_dict() == {"name": "NVIDIA A100", "memory_mib": 81920,
                                                   "compute_capability": [8, 0]}
    assert GpuRecord.from_dict({"memory_mib": "lots"}).gpu() == Gpu("GPU", None, None)
    with pytest.raises(NotARecord):
        GpuRecord.from_dict("A100")


def _safetensors(header: bytes, length: int | None = None, tail: bytes = b"\0" * 16) -> bytes:
    return struct.pack("<Q", len(header) if length is None else length) + header + tail


@pytest.mark.parametrize(("data", "header"), [
    (_safetensors(b'{"__metadata__": {"ss_output_name": "melanoma"}}'),
     {"__metadata__": {"ss_output_name": "melanoma"}}),
    (_safetensors(b"{}", tail=b""), {}),
    (b"", None),
    (b"\x02\0\0", None),
    (_safetensors(b"{}", length=10**6), None),  # longer than the file
    (_safetensors(b"{}", length=0), None),
    (_safetensors(b'{"a": '), None),
    (_safetensors(b"[1, 2]"), None),
    (_safetensors(b"\xff\xfe{}"), None),
])
def test_the_safetensors_header_or_none(tmp_path: Path, data: bytes,
                                        header: dict[str, object] | None) -> None:
    (tmp_path / "lora.safetensors").write_bytes(data)
    assert files.safetensors_header(tmp_path / "lora.safetensors") == header
    assert files.safetensors_header(tmp_path / "missing.safetensors") is None


@pytest.mark.parametrize("text", ["[]", '"x"', '{"config": []}', '{"dataset": "p"}',
                                  '{"pushes": {}}', '{"versions": []}', '{"gpus": {}}',
                                  '{"gpus": ["A100"]}'])
def test_json_that_is_no_record_is_refused(tmp_path: Path, text: str) -> None:
    (tmp_path / RECORD_FILE).write_text(text, encoding="utf-8")
    with pytest.raises(NotARecord):
        RunFolder(tmp_path).load()


def test_a_prepared_state_reads_what_later_stages_need(tmp_path: Path) -> None:
    folder = PreparedFolder(tmp_path)
    folder.state_dir.mkdir()
    folder.state_file.write_text(json.dumps({
        "options": {"class_name": "melanoma", "trigger": "me1anoma", "target_steps": None,
                    "caption_template": "photo of {trigger}"},
        "source": {"metadata": "/isic/metadata.csv", "image_dirs": ["/isic/images"]}}),
        encoding="utf-8")
    state = folder.state()
    assert (state.class_name, state.trigger, state.target_steps) == ("melanoma", "me1anoma", None)
    assert not state.diagnosis_recorded  # a folder prepared before the diagnosis was kept
    assert state.source_images == (Path("/isic/images"),)
    assert folder.manifest == tmp_path / "manifest.csv"


def test_a_folder_prepare_did_not_make_is_refused_in_one_line(tmp_path: Path) -> None:
    assert PreparedFolder(tmp_path).state_if_any() is None
    with pytest.raises(UserError, match="was not made by medsynth-kohya prepare"):
        PreparedFolder(tmp_path).state()


# --- the synthetic set's metadata.csv: one writer, one reader ---------------------------------

def _plan(tmp_path: Path) -> Plan:
    drawn = Drawn(prompts=["photo of male skin, me1anoma, hairy", 'a "quoted", prompt',
                           "photo of skin, me1anoma"],
                  sex=["male", "female", None], age=[40, None, 70],
                  site=["torso", "head/neck", None], hairy=[True, False, None],
                  skin_tone=["light", None, "dark"])
    return Plan(n=3, seed=9, id_prefix="SYN_", drawn=drawn,
                settings=prompts.original_settings(), lora=tmp_path / "m.safetensors",
                lora_sha256="ab" * 32, base_model="stabilityai/stable-diffusion-xl-base-1.0",
                diagnosis=MELANOMA)


@pytest.mark.parametrize("style", list(MetadataStyle))
def test_metadata_reads_what_sample_writes_in_either_style(tmp_path: Path,
                                                           style: MetadataStyle) -> None:
    plan = _plan(tmp_path)
    write_metadata(plan, [2, 0], tmp_path / synthset.METADATA, style)
    rows = synthset.read_metadata(tmp_path)
    assert [row.id for row in rows] == ["SYN_0000000", "SYN_0000002"]  # id order, present only
    assert rows[0] == SynthRow("SYN_0000000", "photo of male skin, me1anoma, hairy",
                               plan.settings.negative_prompt, True, "light", "ab" * 32)
    assert (rows[1].hairy, rows[1].skin_tone, rows[1].prompt) == (None, "dark",
                                                                 "photo of skin, me1anoma")
    write_metadata(plan, [1], tmp_path / synthset.METADATA, style)
    assert synthset.read_metadata(tmp_path) == [
        SynthRow("SYN_0000001", 'a "quoted", prompt', plan.settings.negative_prompt, False, "",
                 "ab" * 32)]


def test_metadata_with_only_an_id_column_reads_blank_values(tmp_path: Path) -> None:
    (tmp_path / synthset.METADATA).write_text("image_name\nSYN_1\n\nSYN_2\n",
                                              encoding="utf-8-sig")  # as a spreadsheet saves it
    assert synthset.read_metadata(tmp_path) == [SynthRow("SYN_1"), SynthRow("SYN_2")]


@pytest.mark.parametrize(("text", "message"), [
    (None, "has no metadata.csv"),
    (b"", "has no isic_id or image_name column"),
    (b"id,prompt\nSYN_1,a\n", "has no isic_id or image_name column"),
    (b'isic_id,prompt\nSYN_1,"never closed\n', "cannot read"),
    (b'isic_id,prompt\nSYN_1,"a"b\n', "cannot read"),
    (b"isic_id,prompt\nSYN_1,a,extra\n", "line 2 has 3 fields, the header 2"),
    (b"isic_id,prompt\nSYN_1\n", "line 2 has 1 fields, the header 2"),
    (b"isic_id,prompt\nSYN_1,\xff\xfe\n", "cannot read"),
])
def test_broken_metadata_is_one_line_saying_how_to_mend_it(tmp_path: Path, text: bytes | None,
                                                          message: str) -> None:
    if text is not None:
        (tmp_path / synthset.METADATA).write_bytes(text)
    with pytest.raises(UserError, match=re.escape(message)) as caught:
        synthset.read_metadata(tmp_path)
    assert len(str(caught.value).splitlines()) == 1
    assert "medsynth-kohya sample" in str(caught.value)
