"""A random full-size SDXL checkpoint and tiny CLIP tokenizers, for CPU end-to-end checks.

Nothing here can make a useful image: the weights are random. It lets the `cpu-smoke` preset
run the real sd-scripts without downloading a model. Run it with sd-scripts' Python:

    python -m medsynth_kohya.sdscripts.smoke_model --out DIR [--sd-scripts DIR] [--seed N]

It writes `DIR/sdxl-random.safetensors` (fp16, built with sd-scripts' own model and
conversion code; ~6.5 GiB, ~1 min and ~14 GB of memory) and the two tokenizers that
sd-scripts' `--tokenizer_cache_dir DIR/tokenizers` loads. Outputs already there are kept.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from medsynth_kohya.sdscripts import checkout

CHECKPOINT = "sdxl-random.safetensors"
TOKENIZERS = "tokenizers"
TOKENIZER_NAMES = ("openai_clip-vit-large-patch14", "laion_CLIP-ViT-bigG-14-laion2B-39B-b160k")
"""The folder names sd-scripts looks for under --tokenizer_cache_dir (repo id, / -> _)."""
SEED = 0
_TEXT_ENCODERS = (
    {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12,
     "num_attention_heads": 12, "hidden_act": "quick_gelu", "projection_dim": 768},
    {"hidden_size": 1280, "intermediate_size": 5120, "num_hidden_layers": 32,
     "num_attention_heads": 20, "hidden_act": "gelu", "projection_dim": 1280},
)
"""SDXL's two text encoders: CLIP ViT-L/14 and OpenCLIP ViT-bigG/14 text towers."""


def write_tokenizers(folder: Path) -> list[Path]:
    """Byte-level CLIP tokenizers with no merges (one token per character), 77 tokens long."""
    targets = [folder / name for name in TOKENIZER_NAMES]
    if all((target / "vocab.json").is_file() for target in targets):
        return targets
    from transformers import CLIPTokenizer
    from transformers.models.clip.tokenization_clip import bytes_to_unicode

    characters = list(bytes_to_unicode().values())
    words = [*characters, *(c + "</w>" for c in characters), "<|startoftext|>", "<|endoftext|>"]
    with tempfile.TemporaryDirectory() as scratch:
        vocab, merges = Path(scratch) / "vocab.json", Path(scratch) / "merges.txt"
        vocab.write_text(json.dumps({word: i for i, word in enumerate(words)}), encoding="utf-8")
        merges.write_text("#version: 0.2\n", encoding="utf-8")
        for target in targets:
            tokenizer = CLIPTokenizer(str(vocab), str(merges), model_max_length=77)
            tokenizer.save_pretrained(str(target))
    return targets


def _text_encoder(index: int) -> Any:
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    config = CLIPTextConfig(vocab_size=49408, max_position_embeddings=77, layer_norm_eps=1e-5,
                            pad_token_id=1, bos_token_id=0, eos_token_id=2,
                            **_TEXT_ENCODERS[index])
    return (CLIPTextModel if index == 0 else CLIPTextModelWithProjection)(config).half()


def write_checkpoint(path: Path, sd_scripts: Path, seed: int = SEED) -> Path:
    """A random-initialised SDXL single-file checkpoint in sd-scripts' key layout, fp16."""
    if path.is_file():
        return path
    sys.path.insert(0, str(sd_scripts.resolve()))
    import torch
    from diffusers import AutoencoderKL
    from library import model_util, sdxl_model_util, sdxl_original_unet

    torch.manual_seed(seed)
    # Each model goes to fp16 as soon as it is built, so only one is ever held in fp32.
    unet = sdxl_original_unet.SdxlUNet2DConditionModel().half()
    text_encoder1, text_encoder2 = _text_encoder(0), _text_encoder(1)
    vae = AutoencoderKL(**model_util.create_vae_diffusers_config()).half()
    logit_scale = torch.tensor(100.0).log().half()
    partial = path.with_name(path.stem + ".partial.safetensors")
    path.parent.mkdir(parents=True, exist_ok=True)
    sdxl_model_util.save_stable_diffusion_checkpoint(
        str(partial), text_encoder1, text_encoder2, unet, 0, 0, None, vae, logit_scale,
        {"medsynth_kohya": "random SDXL weights for CPU smoke tests", "seed": str(seed)})
    partial.replace(path)
    return path


def build(out: Path, sd_scripts: Path, seed: int = SEED) -> tuple[Path, Path]:
    """The checkpoint and the tokenizer folder (`--tokenizer_cache_dir`) under `out`."""
    write_tokenizers(out / TOKENIZERS)
    return write_checkpoint(out / CHECKPOINT, sd_scripts, seed), out / TOKENIZERS


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m medsynth_kohya.sdscripts.smoke_model",
                                     description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--out", type=Path, required=True, help="Folder to write into.")
    parser.add_argument("--sd-scripts", type=Path, default=None,
                        help="sd-scripts checkout; default as for medsynth-kohya train.")
    parser.add_argument("--seed", type=int, default=SEED)
    args = parser.parse_args(argv)
    checkpoint, tokenizers = build(args.out, checkout.locate(args.sd_scripts), args.seed)
    print(f"checkpoint: {checkpoint}\ntokenizer_cache_dir: {tokenizers}")


if __name__ == "__main__":
    main()
