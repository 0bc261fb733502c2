"""The patient-level validation split on its own: whole patients, the asked share, stable."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
import pytest

from medsynth_kohya.data.split import patient_split


def _frame(patients: Sequence[str | None]) -> pd.DataFrame:
    frame: pd.DataFrame = pd.DataFrame({"id": [f"ISIC_{i:07d}" for i in range(len(patients))],
                         "patient_id": pd.array(patients, dtype="string")})
    return frame


# 30 rows: patients with 1 to 4 photos each, and 4 photos without a patient id
PATIENTS: list[str | None] = (["IP_A"] * 4 + ["IP_B"] * 3 + ["IP_C"] * 3 + ["IP_D"] * 2
                              + ["IP_E"] * 2 + ["IP_F"] * 2 + ["IP_G"] * 2 + ["IP_H"]
                              + ["IP_I"] + ["IP_J"] * 3 + ["IP_K"] * 2 + [None] * 4 + ["IP_L"])


def _val(split: pd.Series, frame: pd.DataFrame) -> list[str]:
    return sorted(frame.loc[split == "val", "id"])


@pytest.mark.parametrize("fraction", [0.1, 0.2, 0.25, 0.5])
@pytest.mark.parametrize("seed", [0, 1, 7])
def test_whole_patients_and_the_asked_share(fraction: float, seed: int) -> None:
    frame = _frame(PATIENTS)
    split = patient_split(frame, fraction, seed)
    assert set(split) <= {"train", "val"} and split.index.equals(frame.index)
    assert split.dtype == "string"  # the manifest schema's type of the split column
    groups = frame["patient_id"].fillna(frame["id"])
    for _, sides in split.groupby(groups):
        assert sides.nunique() == 1  # no patient on both sides
    val = int((split == "val").sum())
    target = round(fraction * len(frame))
    largest = 4
    assert target <= val < target + largest  # stops at the first group that reaches it
    assert (split == "train").any()


def test_rows_without_a_patient_are_their_own_groups() -> None:
    frame = _frame([None] * 10)
    split = patient_split(frame, 0.3, seed=3)
    assert int((split == "val").sum()) == 3


def test_the_split_is_pinned_and_independent_of_row_order() -> None:
    frame = _frame(PATIENTS)
    split = patient_split(frame, 0.2, seed=0)
    shuffled = frame.sample(frac=1.0, random_state=5)
    again = patient_split(shuffled, 0.2, seed=0)
    assert _val(again, shuffled) == _val(split, frame)
    assert _val(split, frame) == PINNED_VAL
    assert _val(patient_split(frame, 0.2), frame) == PINNED_VAL  # seed 0 unless given
    assert _val(patient_split(frame, 0.2, seed=1), frame) != PINNED_VAL


PINNED_VAL = ["ISIC_0000000", "ISIC_0000001", "ISIC_0000002", "ISIC_0000003", "ISIC_0000018",
              "ISIC_0000019", "ISIC_0000028"]
"""Seed 0, a fifth: patient IP_A, IP_H, IP_I and one photo without a patient id. A change here
changes every user's validation set for the same seed."""


@pytest.mark.parametrize("fraction", [0.0, -0.5])
def test_no_validation_share_keeps_every_row_in_training(fraction: float) -> None:
    frame = _frame(PATIENTS)
    assert set(patient_split(frame, fraction)) == {"train"}


def test_an_empty_frame_and_a_tiny_share() -> None:
    assert patient_split(_frame([]), 0.3).empty
    frame = _frame(["IP_A", "IP_A", "IP_B", "IP_C", "IP_C", "IP_D"])
    split = patient_split(frame, 0.01, seed=0)
    assert int((split == "val").sum()) >= 1  # at least one image is held out
    singles = _frame(["IP_A", "IP_B", "IP_C", "IP_D"])
    assert int((patient_split(singles, 0.01) == "val").sum()) == 1  # and no more


def test_one_patient_is_never_moved_whole_to_validation() -> None:
    frame = _frame(["IP_A"] * 5)
    assert set(patient_split(frame, 0.5)) == {"train"}
    frame = _frame(["IP_A"] * 5 + ["IP_B"])
    for seed in range(6):
        split = patient_split(frame, 0.9, seed=seed)
        assert (split == "train").any() and (split == "val").any()
