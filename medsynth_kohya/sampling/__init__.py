"""Sampling stage: a trained LoRA -> a synthetic image set with ISIC-style metadata.

`prompts` draws generation prompts from a manifest with the training captions' template (also
used for `train`'s sample prompts); `sample` plans image ids, prompts and seeds, shards them
over GPUs, runs `sdxl_gen_img.py` and writes `metadata.csv` and the contact sheet.
"""
