"""How `sample` finds the LoRA and what its run says about it (sampling/lora.py): a file inside
a moved run still finds the run's record, an old record without a status is no unfinished run,
and a caption template is taken only together with its trigger."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

from medsynth_kohya.data.captions import DEFAULT_TEMPLATE, DEFAULT_TRIGGER
from medsynth_kohya.sampling.lora import lora_source, resolve_lora, training_captions
from medsynth_kohya.training.record import RunFolder

from .fake_gen import write_lora


def test_a_lora_file_in_a_moved_run_finds_its_record(trained: Path, tmp_path: Path) -> None:
    """The record names the run's old output folder; the file's own run folder still holds
    the record, so what it was trained on (prepared folder, captions) is found."""
    moved = tmp_path / "elsewhere" / "run"
    moved.parent.mkdir()
    shutil.move(trained, moved)
    file = next((moved / "output").glob("*.safetensors"))
    found, record = resolve_lora(file)
    assert found == file and record is not None
    assert record.preset == RunFolder(moved).load().preset and record.prepared is not None
    loose = write_lora(tmp_path / "loose" / "output" / "lora.safetensors")
    assert resolve_lora(loose) == (loose, None)  # no run folder around it


def test_a_record_without_a_status_is_no_unfinished_run(trained: Path) -> None:
    """Records written before runs had a status say nothing of how the run ended: no note."""
    record = json.loads((trained / "run.json").read_text(encoding="utf-8"))
    record.pop("status", None)
    (trained / "run.json").write_text(json.dumps(record), encoding="utf-8")
    assert lora_source(trained, None).notes == ()
    (trained / "run.json").write_text(json.dumps({**record, "status": "interrupted"}),
                                      encoding="utf-8")
    (note,) = lora_source(trained, None).notes
    assert "its status is interrupted" in note


def test_a_template_without_its_trigger_is_not_taken(trained: Path) -> None:
    """A run record whose dataset has a template but no trigger (an older or edited record)
    gives way to the prepared folder's pair, never a template with a trigger of None."""
    record = RunFolder(trained).load()
    assert record.dataset is not None
    half = replace(record, dataset=replace(record.dataset, caption_template="x {trigger}",
                                           trigger=None))
    found = training_captions(half, None)
    assert (found.template, found.trigger, found.known) == (DEFAULT_TEMPLATE, DEFAULT_TRIGGER,
                                                            True)
