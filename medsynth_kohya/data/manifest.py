"""The manifest: one row per prepared image, the single source of captions and layout.

Schema of `OUT/manifest.csv`, in column order:

| column     | type          | meaning                                                        |
|------------|---------------|----------------------------------------------------------------|
| id         | text          | ISIC id (image_name / isic_id); also the output file stem       |
| source     | text          | absolute path of the source image (never modified)             |
| patient_id | text, blank   | patient, used for the patient-level validation split           |
| sex        | text, blank   | "male" / "female" as in the metadata                            |
| age        | integer, blank| approximate age in years                                        |
| site       | text, blank   | general anatomic site ("torso", "lower extremity", …)          |
| hairy      | true/false    | hair found by the detector (false with `--hair off`)           |
| hair_score | number, blank | the detector's score (blank with `--hair off`)                  |
| caption    | text          | the caption written to `<id>.txt`                              |
| width      | integer       | image width in pixels                                          |
| height     | integer       | image height in pixels                                         |
| split      | text          | "train" (under img/) or "val" (under val/)                      |
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from medsynth_kohya.files import replacing

if TYPE_CHECKING:
    import pandas as pd

COLUMNS = ("id", "source", "patient_id", "sex", "age", "site", "hairy", "hair_score",
           "caption", "width", "height", "split")
DTYPES = {"id": "string", "source": "string", "patient_id": "string", "sex": "string",
          "age": "Int64", "site": "string", "hairy": "bool", "hair_score": "Float64",
          "caption": "string", "width": "int64", "height": "int64", "split": "string"}
SKIPPED_COLUMNS = ("id", "source", "reason")


def conform(frame: pd.DataFrame) -> pd.DataFrame:
    """The manifest columns, in order, with the schema's types."""
    conformed: pd.DataFrame = frame.loc[:, list(COLUMNS)].astype(DTYPES).reset_index(drop=True)
    return conformed


def write(frame: pd.DataFrame, path: Path) -> None:
    """Write atomically, so a crash never leaves half a manifest behind."""
    with replacing(path) as temporary:
        frame.to_csv(temporary, index=False)


def read(path: Path) -> pd.DataFrame:
    """Read a manifest written by `write`, restoring the schema's types."""
    import pandas as pd

    frame = pd.read_csv(path, dtype={"id": str, "patient_id": str}, keep_default_na=True)
    return conform(frame)

