"""Sampling stage: a trained LoRA -> a synthetic image set with ISIC-style metadata.

`prompts` draws generation prompts from a manifest with the training captions' template (also
used for `train`'s sample prompts). `sample` runs the command from its parts: `lora` (which
LoRA, and what its train run says), `plan` (image ids, prompts and seeds), `generator`
(sdxl_gen_img.py's options), `shards` (work per GPU, harvested into images/), `synthset` (the
output folder, its claim and `metadata.csv`) and `grid` (the contact sheet).
"""
