"""Whole-pipeline commands built from the stages: `reproduce` (the 2023 run) and `demo`."""
