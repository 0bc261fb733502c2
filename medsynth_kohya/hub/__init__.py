"""Publishing stage: a run folder (and a synthetic set) -> a model repository on the Hub.

`contents` plans what leaves the machine (and `privacy` scans it), `card` renders the model
card, `failures` maps Hub errors to one line, `push` uploads in one commit; `pull` downloads a
pushed LoRA for `sample`.
"""
