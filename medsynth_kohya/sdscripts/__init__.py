"""Everything that knows kohya-ss sd-scripts: where it is, its options, and how to run it.

`checkout` finds the sd-scripts folder, its commit and the Python that runs it; `install`
clones it at the pinned release; `sdopts` holds
the snapshot of its argparse options (`sd_options/*.json`) and checks values against it;
`presets` reads `configs/`; `render` writes its TOML files from `templates/`; `checks` refuses
configs it would only reject late; `launch` is the one place that builds command lines and runs
them; `smoke_model` makes a random SDXL checkpoint for CPU end-to-end runs.
"""
