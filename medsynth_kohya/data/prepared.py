"""The prepared folder that `prepare` writes: the one module that knows its file names and
reads its state, so `train`, `sample`, the model card, `evaluate` and `reproduce` go through it.

    OUT/img/<R>_<class>/          kohya's DreamBooth layout (data/layout.py places the files)
    OUT/val/1_<class>/            held-out images (--val-frac)
    OUT/manifest.csv              one row per prepared image (schema: data/manifest.py)
    OUT/skipped.csv               the rows left out, with the reason
    OUT/dataset.toml              sd-scripts' --dataset_config for this folder
    OUT/.medsynth/prepare.json    how it was made: source, options, the class's diagnosis
    OUT/.medsynth/written-unfinished.json  present while a prepare run writes the layout, and
                                  after one was interrupted there: later stages refuse OUT
"""

from __future__ import annotations

import hashlib
import json
import shlex
import unicodedata
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medsynth_kohya import __version__, files, outputs
from medsynth_kohya.data.layout import TRAIN_ROOT, VAL_ROOT, image_file
from medsynth_kohya.data.sources import LICENCE_COLUMNS, origin
from medsynth_kohya.errors import UserError
from medsynth_kohya.sdscripts import render

if TYPE_CHECKING:
    import pandas as pd

    from medsynth_kohya.data.prepare import HairAgreement, PrepareOptions
    from medsynth_kohya.data.sources import Source

STATE_DIR = outputs.STATE_DIR
STATE_FILE = "prepare.json"
UNFINISHED_FILE = "written-unfinished.json"
"""The layout files a prepare run places before its manifest is written, each with the contents
it gives them: present only while a run writes the layout, or after one was interrupted there."""


class DamagedState(UserError, ValueError):
    """A prepare.json that is not JSON or not a state: one line for the user, and a ValueError
    for readers that go on without the state (the model card)."""


@dataclass(frozen=True)
class PreparedState:
    """OUT/.medsynth/prepare.json: how the folder was prepared, as later stages need it."""

    options: dict[str, Any]
    """prepare's options (PrepareOptions' fields), as recorded."""
    diagnosis: str | None = None
    """The ISIC Archive diagnosis the class's images share (None: none is shared)."""
    diagnosis_recorded: bool = False
    """False for a folder prepared before the diagnosis was recorded."""
    source_metadata: Path | None = None
    source_metadata_sha256: str | None = None
    """The metadata file's sha256 when prepare read it (None: not recorded, an older prepare)."""
    source_images: tuple[Path, ...] = ()
    hair_agreement: dict[str, Any] | None = None
    source_kind: str | None = None
    """The metadata's layout (sources.ISIC2020, ISIC2019, ISIC2018, ISIC2017, ISIC2016, ARCHIVE
    or HAM10000); None when not recorded."""
    licence_columns: tuple[str, ...] | None = None
    """The sources.LICENCE_COLUMNS the metadata has (None: not recorded, an older prepare)."""
    written_sha256: dict[str, str] = field(default_factory=dict)
    """The sha256 of manifest.csv and dataset.toml, by name, as prepare wrote them (empty: not
    recorded, an older prepare): what tells a hand edit a re-run would replace."""

    @property
    def origin(self) -> str | None:
        """Where the images come from (sources.origin: ISIC 2020, the Archive or the user's
        own data); None when the source was not recorded."""
        return None if self.source_kind is None else origin(self.source_kind, self.columns)

    @property
    def columns(self) -> dict[str, str]:
        """prepare --column, field to metadata column (empty when none or not recorded)."""
        given = self.options.get("columns")
        return {str(k): str(v) for k, v in given.items()} if isinstance(given, dict) else {}

    @property
    def class_name(self) -> str | None:
        return _text(self.options.get("class_name"))

    @property
    def trigger(self) -> str | None:
        return _text(self.options.get("trigger"))

    @property
    def caption_template(self) -> str | None:
        return _text(self.options.get("caption_template"))

    @property
    def hair(self) -> str | None:
        """prepare's --hair mode (None when not recorded)."""
        return _text(self.options.get("hair"))

    @property
    def resolution(self) -> int | None:
        """prepare --resolution, the side its photo checks and dataset.toml were for (None when
        not recorded)."""
        value = self.options.get("resolution")
        return value if isinstance(value, int) and not isinstance(value, bool) else None

    @property
    def target_steps(self) -> Any:
        """prepare --target-steps (None when not given)."""
        return self.options.get("target_steps")

    @classmethod
    def from_dict(cls, data: Any) -> PreparedState:
        """The state from its JSON form; ValueError when it is not one."""
        if not isinstance(data, dict) or not isinstance(data.get("options"), dict):
            raise ValueError("not a prepare state (a JSON object with options)")
        found = data.get("source")
        source: dict[str, Any] = found if isinstance(found, dict) else {}
        metadata = source.get("metadata")
        agreement = data.get("hair_agreement")
        licences = source.get("licence_columns")
        written = data.get("written")
        return cls(options=dict(data.get("options", {})), diagnosis=_text(data.get("diagnosis")),
                   diagnosis_recorded="diagnosis" in data,
                   source_metadata=Path(str(metadata)) if metadata else None,
                   source_metadata_sha256=_text(source.get("metadata_sha256")),
                   source_images=tuple(Path(str(d)) for d in source.get("image_dirs") or []),
                   hair_agreement=agreement if isinstance(agreement, dict) else None,
                   source_kind=_text(source.get("kind")),
                   licence_columns=tuple(map(str, licences)) if isinstance(licences, list)
                   else None,
                   written_sha256={str(name): str(digest) for name, digest in written.items()}
                   if isinstance(written, dict) else {})


def _nfc(name: str) -> str:
    """A file name as ids are compared (Unicode NFC): macOS's file systems return NFD."""
    return unicodedata.normalize("NFC", name)


def _size(path: Path) -> int:
    """A file's size in bytes, -1 when it is not there."""
    try:
        return path.stat().st_size
    except OSError:
        return -1


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


@dataclass(frozen=True)
class PreparedFolder:
    """A prepared folder's files, by what they are."""

    path: Path

    @property
    def manifest(self) -> Path:
        return self.path / "manifest.csv"

    @property
    def skipped(self) -> Path:
        return self.path / "skipped.csv"

    @property
    def dataset_config(self) -> Path:
        return self.path / "dataset.toml"

    @property
    def train_root(self) -> Path:
        return self.path / TRAIN_ROOT

    @property
    def val_root(self) -> Path:
        return self.path / VAL_ROOT

    @property
    def state_dir(self) -> Path:
        """prepare's own files (state, scan journal, the list of files it placed)."""
        return self.path / STATE_DIR

    @property
    def state_file(self) -> Path:
        return self.state_dir / STATE_FILE

    @property
    def unfinished_file(self) -> Path:
        return self.state_dir / UNFINISHED_FILE

    def is_prepared(self) -> bool:
        """Whether `prepare` finished writing this folder at least once."""
        return self.state_file.is_file()

    def ensure_finished(self) -> None:
        """Refuse, in one line, a folder whose last prepare run was interrupted: its state,
        manifest and dataset.toml may still be an earlier run's while its captions are new."""
        if self.unfinished_file.exists():
            raise UserError(f"{self.path}: prepare was interrupted; re-run the same prepare "
                            "command to finish it")

    def state(self) -> PreparedState:
        """The state; a UserError when the folder was not prepared, its last prepare run was
        interrupted or its state file is damaged."""
        holder = self._holder() if self.path.is_file() else None
        files.ensure_folder(self.path, f"give the prepared folder it lies in, {holder}" if holder
                            else "give the --out folder of `medsynth-kohya prepare`")
        self.ensure_finished()
        if not self.is_prepared() and self.state_dir.is_dir() and self.skipped.is_file():
            raise UserError(f"prepare into {self.path} prepared no image (see {self.skipped}); "
                            "fix the source and run prepare again")
        if not self.is_prepared():
            holder = self._holder()  # img/ or a class folder: what kohya users give
            if holder is not None:
                raise UserError(f"{self.path} is inside the prepared folder {holder}: give "
                                f"{holder}")
            data = any(self.path.iterdir())  # an ISIC download, say: prepare it elsewhere
            target = self.path.with_name(f"{self.path.name}-prepared") if data else self.path
            source = shlex.quote(str(self.path)) if data else "SOURCE"
            raise UserError(f"{self.path} was not made by medsynth-kohya prepare (no "
                            f"{STATE_DIR}/{STATE_FILE}); run `medsynth-kohya prepare {source} "
                            f"--out {shlex.quote(str(target))}` first"
                            + (" and give that folder" if data else ""))
        return self._recorded()

    def _holder(self) -> Path | None:
        """The prepared folder this one lies inside (its img/, a class folder), from the
        working folder as a relative path was given, unless it is that folder or above it;
        None when there is none."""
        found = next((folder for folder in self.path.resolve().parents  # "a/../b": not in a
                      if PreparedFolder(folder).is_prepared()), None)
        if found is None or self.path.is_absolute():
            return found
        try:
            named = found.relative_to(Path.cwd().resolve())
        except ValueError:  # above the working folder
            return found
        return named if named.parts else found

    def _recorded(self) -> PreparedState:
        """The state file as it is, whether or not a later run was interrupted; DamagedState
        when it is not JSON or not a state."""
        try:
            return PreparedState.from_dict(json.loads(self.state_file.read_text(
                encoding="utf-8")))
        except ValueError as exc:  # a hand edit, a disk error: not JSON or not a state
            raise DamagedState(f"{self.state_file} is damaged ({str(exc).splitlines()[0]}): "
                               f"run the prepare command that made {self.path} again to "
                               "rewrite it") from None

    def other_source(self, metadata: Path) -> Path | None:
        """The metadata file this folder was last prepared from when `metadata` is another
        source: neither that file (edited or not) nor a copy of its bytes (the same download,
        moved); None when it is the same, or the folder records none to compare."""
        if not self.is_prepared():
            return None
        try:
            state = self._recorded()
        except (OSError, DamagedState):
            return None
        recorded = state.source_metadata
        if recorded is None or recorded == metadata.resolve():
            return None
        return None if state.source_metadata_sha256 == files.sha256(metadata) else recorded

    def train_folder(self) -> tuple[Path, int]:
        """The `img/<R>_<class>` folder sd-scripts trains on, and its repeats R; a UserError
        when img/ does not hold exactly one."""
        root = self.train_root
        folders = sorted(p for p in root.glob("*_*") if p.is_dir())
        if len(folders) != 1 or not folders[0].name.split("_", 1)[0].isdigit():
            raise UserError(f"{root} should hold one <repeats>_<class> folder; "
                            f"re-run `medsynth-kohya prepare ... --out {self.path}`")
        return folders[0], int(folders[0].name.split("_", 1)[0])

    def placed_images(self, rows: pd.DataFrame, folder: Path) -> list[Path]:
        """Where manifest `rows` place their images in the class folder `folder` (the files
        sd-scripts reads, whether they are still there or not)."""
        return [image_file(folder, str(row.id), Path(str(row.source)))
                for row in rows.itertuples(index=False)]

    def missing_images(self, rows: pd.DataFrame, folder: Path) -> list[Path]:
        """The images manifest `rows` place in the class folder `folder` that are not there
        (deleted or moved since prepare); one stat each."""
        return [path for path in self.placed_images(rows, folder) if not path.is_file()]

    def trained_digests(self, rows: pd.DataFrame, folder: Path) -> tuple[str, str]:
        """sha256 of the names and sizes of the images manifest `rows` place in the class folder
        `folder`, and of their captions' texts: what sd-scripts trains on beyond the manifest,
        for one stat and one small read per image."""
        images, captions = hashlib.sha256(), hashlib.sha256()
        for path in self.placed_images(rows, folder):
            caption = path.with_suffix(".txt")  # `<id>.txt`, as missing_captions finds it
            images.update(f"{path.name}\0{_size(path)}\0".encode())
            captions.update(f"{caption.name}\0{_size(caption)}\0".encode())
            captions.update(caption.read_bytes() if caption.is_file() else b"")
        return images.hexdigest(), captions.hexdigest()

    def missing_captions(self, rows: pd.DataFrame, folder: Path) -> list[Path]:
        """The captions (`<id>.txt`) of manifest `rows` that are not in the class folder
        `folder`; one stat each."""
        paths = (folder / f"{row.id}.txt" for row in rows.itertuples(index=False))
        return [path for path in paths if not path.is_file()]

    def unlisted_images(self, rows: pd.DataFrame, folder: Path) -> list[Path]:
        """The images sd-scripts would train on in the class folder `folder` that manifest
        `rows` do not place there (put there by hand since prepare), sorted."""
        listed = {_nfc(image_file(folder, str(row.id), Path(str(row.source))).name)
                  for row in rows.itertuples(index=False)}
        return sorted(path for path in folder.iterdir()
                      if path.suffix in render.IMAGE_SUFFIXES and not path.name.startswith(".")
                      and _nfc(path.name) not in listed and not path.is_dir())

    @property
    def outputs(self) -> tuple[Path, Path]:
        """The files prepare writes beside the layout that a user may edit by hand."""
        return self.manifest, self.dataset_config

    def edited_outputs(self) -> list[Path]:
        """Those of `outputs` changed since prepare wrote them (their sha256 is not the one its
        state recorded), which a re-run would replace; none where no sha256 was recorded, the
        state is unreadable, or a run was interrupted (it may have rewritten them itself)."""
        if self.unfinished_file.exists() or not self.is_prepared():
            return []
        try:
            recorded = self.state().written_sha256
        except (OSError, DamagedState):
            return []
        return [path for path in self.outputs if path.name in recorded and path.is_file()
                and files.sha256(path) != recorded[path.name]]

    def state_if_any(self) -> PreparedState | None:
        """The state, None when the folder was not prepared; a UserError when its last
        prepare run was interrupted."""
        self.ensure_finished()
        return self.state() if self.is_prepared() else None

    def write_state(self, source: Source, options: PrepareOptions,
                    agreement: HairAgreement | None, diagnosis: str | None) -> None:
        """Mark the folder as made by `prepare` and record how, for later stages and re-runs:
        with the class's Archive diagnosis (for `sample`'s metadata) and the hair detector's
        agreement."""
        record = {"tool": "medsynth-kohya", "command": "prepare", "version": __version__,
                  "source": {"kind": source.kind, "metadata": str(source.metadata.resolve()),
                             "metadata_sha256": files.sha256(source.metadata),
                             "image_dirs": [str(d.resolve()) for d in source.image_dirs],
                             "licence_columns": [c for c in LICENCE_COLUMNS
                                                 if c in source.header]},
                  "options": {**asdict(options), "hair": options.hair.value,
                              "link": options.link.value,
                              "columns": dict(options.columns)},
                  "diagnosis": diagnosis,
                  "written": {path.name: files.sha256(path) for path in self.outputs
                              if path.is_file()},
                  "hair_agreement": None if agreement is None else {
                      **asdict(agreement), "accuracy": round(agreement.accuracy, 4)}}
        files.write_json(self.state_file, record, sort_keys=True)
