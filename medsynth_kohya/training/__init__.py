"""Training stage: a prepared folder + a preset -> a run folder with sd-scripts' files and a LoRA.

`train` resolves the options, runs the checks, renders the run's TOML files and launches
`sdxl_train_network.py` through `sdscripts.launch`, judging success by the LoRA file written.
`record` owns the run folder and its record (`run.json`), which later stages read through it.
"""
