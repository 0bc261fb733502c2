"""The random SDXL model for CPU smoke runs: its command line, kept outputs and tokenizers."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from medsynth_kohya.sdscripts import smoke_model

PACKAGE_ROOT = Path(smoke_model.__file__).resolve().parents[2]


def test_outputs_already_there_are_kept_and_named(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """A second run (the e2e cache) rebuilds nothing and prints where sd-scripts finds both."""
    out = tmp_path / "model"
    checkpoint = out / smoke_model.CHECKPOINT
    checkpoint.parent.mkdir()
    checkpoint.write_bytes(b"an earlier checkpoint")
    for name in smoke_model.TOKENIZER_NAMES:
        (out / smoke_model.TOKENIZERS / name).mkdir(parents=True)
        (out / smoke_model.TOKENIZERS / name / "vocab.json").write_text("{}", encoding="utf-8")
    smoke_model.main(["--out", str(out), "--sd-scripts", str(tmp_path / "sd-scripts"),
                      "--seed", "3"])
    assert capsys.readouterr().out == (f"checkpoint: {checkpoint}\n"
                                       f"tokenizer_cache_dir: {out / smoke_model.TOKENIZERS}\n")
    assert checkpoint.read_bytes() == b"an earlier checkpoint"
    assert sorted(p.name for p in out.iterdir()) == sorted([smoke_model.CHECKPOINT,
                                                            smoke_model.TOKENIZERS])


def test_the_help_says_what_it_writes_and_takes(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stopped:
        smoke_model.main(["--help"])
    assert stopped.value.code == 0
    said = " ".join(capsys.readouterr().out.split())
    assert said.startswith("usage: python -m medsynth_kohya.sdscripts.smoke_model [-h] --out OUT "
                           "[--sd-scripts SD_SCRIPTS] [--seed SEED]")
    assert "[--seed SEED] A random full-size SDXL checkpoint and tiny CLIP tokenizers" in said
    assert "--out OUT Folder to write into." in said
    assert "--sd-scripts SD_SCRIPTS sd-scripts checkout; default as for medsynth-kohya train." \
        in said


def test_an_out_is_required(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stopped:
        smoke_model.main([])
    assert stopped.value.code == 2
    assert "the following arguments are required: --out" in capsys.readouterr().err


TOKENIZE = """
import json, sys
from pathlib import Path
from transformers import CLIPTokenizer
from medsynth_kohya.sdscripts.smoke_model import write_tokenizers
folder = Path(sys.argv[1])
said = []
for target in write_tokenizers(folder):
    tokenizer = CLIPTokenizer.from_pretrained(str(target))
    said.append({"folder": str(target), "max": tokenizer.model_max_length,
                 "vocab": tokenizer.get_vocab(), "ids": tokenizer(sys.argv[2])["input_ids"]})
print(json.dumps(said))
"""


def test_the_tokenizers_give_one_token_per_character_in_each_folder_sd_scripts_reads(
        tmp_path: Path, sd_python: str) -> None:
    """sd-scripts loads TOKENIZERS/<repo id, / as _> with CLIPTokenizer: 77 tokens, every
    byte its own token (no merges), start and end tokens; a second run keeps the files."""
    python = sd_python
    if subprocess.run([python, "-c", "import transformers"], capture_output=True,
                      check=False).returncode != 0:
        pytest.skip(f"{python} cannot import transformers (set MEDSYNTH_SD_PYTHON)")
    folder, text = tmp_path / smoke_model.TOKENIZERS, "a mole 5 mm"

    def tokenize() -> list[dict[str, object]]:
        done = subprocess.run([python, "-c", TOKENIZE, str(folder), text], capture_output=True,
                              text=True, check=True, timeout=600,
                              env={**os.environ, "PYTHONPATH": str(PACKAGE_ROOT)})
        said: list[dict[str, object]] = json.loads(done.stdout.splitlines()[-1])
        return said

    said = tokenize()
    assert [entry["folder"] for entry in said] == [
        str(folder / name) for name in ("openai_clip-vit-large-patch14",
                                        "laion_CLIP-ViT-bigG-14-laion2B-39B-b160k")]
    for entry in said:
        vocab = entry["vocab"]
        assert isinstance(vocab, dict) and len(vocab) == 2 * 256 + 2
        assert entry["max"] == 77
        ids = entry["ids"]
        assert isinstance(ids, list)
        assert ids == [vocab["<|startoftext|>"],
                       *(vocab[token] for word in text.split()
                         for token in (*word[:-1], word[-1] + "</w>")),
                       vocab["<|endoftext|>"]]
    written = {path: path.stat().st_mtime_ns for path in folder.rglob("*") if path.is_file()}
    assert tokenize() == said
    assert {path: path.stat().st_mtime_ns for path in folder.rglob("*")
            if path.is_file()} == written


def test_the_options_reach_the_checkpoint_builder(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """--sd-scripts (else $MEDSYNTH_SD_SCRIPTS) and --seed (else 0) pick the code and the
    weights the checkpoint is built with."""
    built: list[tuple[Path, Path, int]] = []

    def record(path: Path, sd_scripts: Path, seed: int = -1) -> Path:
        built.append((path, sd_scripts, seed))
        return path

    monkeypatch.setattr(smoke_model, "write_checkpoint", record)
    monkeypatch.setattr(smoke_model, "write_tokenizers", lambda folder: [])
    monkeypatch.setenv("MEDSYNTH_SD_SCRIPTS", str(tmp_path / "from-env"))
    out = tmp_path / "model"
    smoke_model.main(["--out", str(out), "--sd-scripts", str(tmp_path / "given"),
                      "--seed", "7"])
    smoke_model.main(["--out", str(out)])
    assert built == [(out / smoke_model.CHECKPOINT, tmp_path / "given", 7),
                     (out / smoke_model.CHECKPOINT, tmp_path / "from-env", smoke_model.SEED)]
