"""Publishing stage: a run folder (and a synthetic set) -> a model repository on the Hub.

`push` plans what leaves the machine, renders the model card and uploads in one commit.
"""
