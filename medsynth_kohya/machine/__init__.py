"""This machine: its GPUs (`gpus`, from nvidia-smi) and whether it can train (`doctor`).

`doctor`'s checks run before every command that launches sd-scripts.
"""
