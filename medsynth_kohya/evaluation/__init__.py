"""Evaluation stage: is a synthetic set faithful, free of copied patients, useful to a classifier?

`sets` reads the real data (an ISIC source or a prepared folder) and the synthetic set;
`copies` finds near-copies of training photos with a crop- and flip-robust perceptual hash;
`adherence` measures each synthetic image as `prepare` measures real ones and compares with its
prompt; `features` runs a frozen network in batches (torch, the `eval` extra); `fidelity` gives
FID/KID (torchmetrics) and precision/recall; `utility` trains a classifier on real and on real +
synthetic melanomas; `report` writes `report.html` and `report.json`; `evaluate` runs them.
"""
