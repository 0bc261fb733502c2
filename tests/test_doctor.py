"""`doctor` against faked environments: no torch, torch without CUDA, a T4, two A100s,
a wrong sd-scripts commit."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest
from typer.testing import CliRunner

from medsynth_kohya.machine.doctor import FAIL, OK, WARN, Check, diagnose, pins, probe
from medsynth_kohya.sdscripts import checkout

from .conftest import InstallGpus, invoke

PINS = {"accelerate": "1.6.0", "transformers": "4.54.1", "voluptuous": "0.15.2"}


def _package(root: Path, name: str, version: str, body: str = "") -> None:
    """An importable stand-in package with installed-distribution metadata."""
    (root / name).mkdir(parents=True, exist_ok=True)
    (root / name / "__init__.py").write_text(body, encoding="utf-8")
    info = root / f"{name}-{version}.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
                                   encoding="utf-8")


def _environment(tmp_path: Path, *, torch: bool, cuda: bool = True,
                 versions: dict[str, str] | None = None, without: Sequence[str] = (),
                 broken: str = "") -> str:
    """A Python that sees only the standard library and the stand-in packages (all that
    sd-scripts imports but those `without`; a torch whose import raises `broken`)."""
    site = tmp_path / "site"
    for name in ("torchvision", "accelerate", "transformers", "diffusers", "safetensors",
                 "voluptuous", "toml", "einops", "cv2", "huggingface_hub", "imagesize"):
        if name not in without:
            _package(site, name, (versions or PINS).get(name, "1.0"))
    if torch:
        _package(site, "torch", "2.4.0+cu121",
                 f"raise OSError({broken!r})\n" if broken else
                 f"class cuda:\n    is_available = staticmethod(lambda: {cuda})\n"
                 "class version:\n    cuda = '12.1'\n")
    wrapper = tmp_path / "python"
    wrapper.write_text(f"#!/bin/sh\nPYTHONPATH={site} exec {sys.executable} -S \"$@\"\n",
                       encoding="utf-8")
    wrapper.chmod(0o755)
    return str(wrapper)


def _checkout(tmp_path: Path) -> Path:
    """A stand-in sd-scripts checkout: a git repository at some commit other than the pin."""
    folder = tmp_path / "sd-scripts"
    folder.mkdir()
    (folder / "sdxl_train_network.py").write_text("", encoding="utf-8")
    (folder / "requirements.txt").write_text(
        "".join(f"{name}=={version}\n" for name, version in PINS.items()) + "numpy\n-e .\n",
        encoding="utf-8")
    git = ["git", "-C", str(folder), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "x"], check=True)
    return folder


def _status(checks: Sequence[Check], name: str) -> str:
    return next(c.status for c in checks if c.name == name)


def _row(checks: Sequence[Check], name: str) -> Check:
    return next(c for c in checks if c.name == name)


def _table(stdout: str) -> dict[str, list[str]]:
    """The doctor's table as printed: row name -> its cells, lines a cell wraps onto joined."""
    rows: list[list[str]] = []
    for line in stdout.splitlines():
        cells = [cell.strip() for cell in line.split("│")[1:-1]]
        if len(cells) == 4 and cells[0]:
            rows.append(cells)
        elif len(cells) == 4 and rows:  # a wrapped row's next line
            rows[-1] = [" ".join(filter(None, pair)) for pair in zip(rows[-1], cells, strict=True)]
    return {cells[0]: cells[1:] for cells in rows[1:]}  # not the header


@pytest.fixture
def no_token(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No Hub token in the environment; the path a stored login would be read from."""
    import huggingface_hub.constants

    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_OIDC_RESOURCE", "HF_OIDC_ID_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    stored = tmp_path / "hf-home" / "token"
    monkeypatch.setattr(huggingface_hub.constants, "HF_TOKEN_PATH", str(stored))
    return stored


def test_pins_are_read_from_requirements(tmp_path: Path) -> None:
    assert pins(_checkout(tmp_path)) == PINS


def test_no_torch_fails_with_the_fix(tmp_path: Path, nvidia_smi: InstallGpus) -> None:
    nvidia_smi("Tesla T4, 15360 MiB, 7.5")
    report = diagnose(sd_scripts=_checkout(tmp_path),
                      python=_environment(tmp_path, torch=False), workdir=tmp_path)
    assert not report.ok
    assert _row(report.checks, "torch") == Check(
        "torch", FAIL, "not installed", "pip install torch for your CUDA version (see "
        "pytorch.org), then pip install 'medsynth-kohya[train]'")
    assert _status(report.checks, "sd-scripts packages") == FAIL


def test_torch_without_cuda_fails(tmp_path: Path, nvidia_smi: InstallGpus) -> None:
    nvidia_smi("Tesla T4, 15360 MiB, 7.5")
    report = diagnose(sd_scripts=_checkout(tmp_path),
                      python=_environment(tmp_path, torch=True, cuda=False), workdir=tmp_path)
    torch = next(c for c in report.checks if c.name == "torch")
    assert torch.status == FAIL and "without CUDA" in torch.detail


def test_a_gpu_whose_capability_and_memory_nvidia_smi_does_not_know_says_so(
        tmp_path: Path, nvidia_smi: InstallGpus) -> None:
    """[N/A] (a unified-memory board's memory) is shown as unknown, not as 0 GiB or no bf16."""
    nvidia_smi("NVIDIA GH200 480GB, [N/A], [N/A]")
    report = diagnose(sd_scripts=_checkout(tmp_path), python=_environment(tmp_path, torch=True),
                      workdir=tmp_path)
    assert _row(report.checks, "GPU 0") == Check(
        "GPU 0", OK, "NVIDIA GH200 480GB, memory unknown, compute capability unknown, bf16 "
        "unknown")


def test_a_t4_passes_without_bf16(tmp_path: Path, nvidia_smi: InstallGpus) -> None:
    nvidia_smi("Tesla T4, 15360 MiB, 7.5")
    report = diagnose(sd_scripts=_checkout(tmp_path), python=_environment(tmp_path, torch=True),
                      workdir=tmp_path)
    gpu = next(c for c in report.checks if c.name == "GPU 0")
    assert gpu.status == OK and "no bf16" in gpu.detail and "7.5" in gpu.detail
    assert _row(report.checks, "torch") == Check("torch", OK, "2.4.0+cu121, CUDA 12.1")
    assert _status(report.checks, "sd-scripts packages") == OK
    assert report.ok


def test_an_optional_module_a_run_needs_fails_and_one_it_does_not_is_left_out(
        tmp_path: Path, nvidia_smi: InstallGpus) -> None:
    """DAdapt*, Prodigy, Lion, *ScheduleFree and wandb are imported only once the model is
    loaded: the run that needs one is refused without it; others do not list them."""
    nvidia_smi("Tesla T4, 15360 MiB, 7.5")
    python, sd_scripts = _environment(tmp_path, torch=True), _checkout(tmp_path)
    report = diagnose(sd_scripts=sd_scripts, python=python, workdir=tmp_path,
                      needs=["dadaptation", "wandb"])
    failed = {c.name: c for c in report.failures()}
    assert set(failed) == {"dadaptation", "wandb"}
    assert failed["dadaptation"].detail == "not installed: needed for the DAdapt* optimizers"
    assert failed["wandb"].fix == "pip install wandb"
    names = [c.name for c in diagnose(sd_scripts=sd_scripts, python=python,
                                      workdir=tmp_path).checks]
    assert "xformers" in names and "prodigyopt" not in names and "tensorboard" not in names


def test_two_a100s_and_packages_off_their_pins(tmp_path: Path, nvidia_smi: InstallGpus) -> None:
    nvidia_smi("NVIDIA A100-SXM4-80GB, 81920 MiB, 8.0", "NVIDIA A100-SXM4-80GB, 81920 MiB, 8.0")
    python = _environment(tmp_path, torch=True, versions={**PINS, "accelerate": "0.30.0"})
    report = diagnose(sd_scripts=_checkout(tmp_path), python=python, workdir=tmp_path)
    gpus = [c for c in report.checks if c.name.startswith("GPU ")]
    assert len(gpus) == 2 and all(", bf16" in c.detail for c in gpus)
    packages = next(c for c in report.checks if c.name == "sd-scripts packages")
    assert packages.status == WARN and "accelerate 0.30.0 (pinned 1.6.0)" in packages.detail
    assert packages.fix == "pip install 'medsynth-kohya[train]' to match sd-scripts' pins"


def test_only_the_gpus_cuda_visible_devices_leaves_are_listed(
        tmp_path: Path, nvidia_smi: InstallGpus, monkeypatch: pytest.MonkeyPatch) -> None:
    """On a box whose scheduler gave this shell one GPU of two, the doctor shows the one
    train and sample will use, as CUDA numbers it, and says how many are hidden."""
    nvidia_smi("Tesla T4, 15360 MiB, 7.5", "NVIDIA A100-SXM4-80GB, 81920 MiB, 8.0")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    report = diagnose(sd_scripts=_checkout(tmp_path), python=_environment(tmp_path, torch=True),
                      workdir=tmp_path)
    gpus = {c.name: c for c in report.checks if c.name.startswith("GPU")}
    assert list(gpus) == ["GPU 0"] and "A100" in gpus["GPU 0"].detail
    hidden = next(c for c in report.checks if c.name == "hidden GPUs")
    assert hidden.status == OK
    assert hidden.detail == ("1 of 2 hidden by CUDA_VISIBLE_DEVICES=1: train and sample use "
                             "only the 1 above")


def test_a_cuda_visible_devices_hiding_every_gpu_fails(
        runner: CliRunner, tmp_path: Path, nvidia_smi: InstallGpus,
        monkeypatch: pytest.MonkeyPatch) -> None:
    nvidia_smi("Tesla T4, 15360 MiB, 7.5")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    sd_scripts, python = _checkout(tmp_path), _environment(tmp_path, torch=True)
    code, stdout, _ = invoke(runner, "doctor", "--sd-scripts", sd_scripts, "--python", python)
    assert code == 1
    said = " ".join(stdout.replace("│", " ").split())
    assert "no NVIDIA GPU visible (CUDA_VISIBLE_DEVICES=)" in said
    assert "unset CUDA_VISIBLE_DEVICES or list the GPUs to use in it" in said
    assert "GPU 0" not in stdout
    assert diagnose(sd_scripts=sd_scripts, python=python, workdir=tmp_path, device="cpu").ok


def test_cuda_visible_devices_on_a_machine_without_gpus_is_no_reason_given(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Set on a machine where nvidia-smi lists no GPU, the variable hides nothing: the row
    says no GPU was found, with the fix for that, not advice to unset it."""
    sd_scripts, python = _checkout(tmp_path), _environment(tmp_path, torch=True)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    report = diagnose(sd_scripts=sd_scripts, python=python, workdir=tmp_path)
    gpu = next(c for c in report.checks if c.name == "GPU")
    assert gpu.status == FAIL and gpu.detail == "no NVIDIA GPU found (nvidia-smi)"
    assert gpu.fix == ("train on a machine with a CUDA GPU (a free Colab T4 works); the "
                       "cpu-smoke preset runs without one")


def test_wrong_commit_warns_with_the_exact_fix(tmp_path: Path, nvidia_smi: InstallGpus) -> None:
    nvidia_smi("Tesla T4, 15360 MiB, 7.5")
    repo = _checkout(tmp_path)
    report = diagnose(sd_scripts=repo, python=_environment(tmp_path, torch=True),
                      workdir=tmp_path)
    row = next(c for c in report.checks if c.name == "sd-scripts")
    assert row.status == WARN and checkout.PINNED_COMMIT in row.fix


def test_cli_exits_non_zero_without_a_gpu(runner: CliRunner, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.setenv("HF_TOKEN", "hf_secret_value_123")
    code, stdout, stderr = invoke(runner, "doctor", "--sd-scripts", tmp_path / "missing",
                                  "--python", _environment(tmp_path, torch=True))
    assert code == 1
    assert "no NVIDIA GPU" in stdout
    assert "medsynth-kohya install-sd-scripts --dir" in stdout
    assert "hf_secret_value_123" not in stdout + stderr
    assert "Hub token" in stdout and "fix the failing rows" in stderr


@pytest.mark.parametrize(("device", "status"), [("cpu", OK), ("cuda", FAIL)])
def test_a_cpu_run_needs_no_gpu_and_no_cuda_build_of_torch(tmp_path: Path, device: str,
                                                          status: str) -> None:
    report = diagnose(sd_scripts=_checkout(tmp_path), gpus=[], device=device, hub=False,
                      python=_environment(tmp_path, torch=True, cuda=False), workdir=tmp_path)
    assert _status(report.checks, "GPU") == _status(report.checks, "torch") == status
    assert report.ok is (status == OK)


def test_pins_are_matched_whatever_the_case_requirements_write_them_in(tmp_path: Path) -> None:
    repo = _checkout(tmp_path)
    (repo / "requirements.txt").write_text("Accelerate==1.6.0\nTransformers[torch]==4.54.1\n",
                                           encoding="utf-8")
    assert pins(repo) == {"accelerate": "1.6.0", "transformers": "4.54.1"}


def test_the_probe_reads_its_own_line_past_what_the_python_prints_first(tmp_path: Path) -> None:
    """A sitecustomize or a wrapper may print to stdout, even the word PROBE; a Python that
    prints but cannot run the probe is a failing row with its last error line."""
    python = _environment(tmp_path, torch=True)
    noisy = tmp_path / "noisy"
    noisy.write_text(f"#!/bin/sh\necho 'loading PROBE hooks'\nexec {python} \"$@\"\n",
                     encoding="utf-8")
    noisy.chmod(0o755)
    assert probe(str(noisy), ["accelerate"])["versions"] == {"accelerate": PINS["accelerate"]}
    broken = tmp_path / "broken"
    broken.write_text("#!/bin/sh\necho 'starting'\necho 'ImportError: no site' >&2\nexit 1\n",
                      encoding="utf-8")
    broken.chmod(0o755)
    assert probe(str(broken), ["accelerate"]) == {"error": "ImportError: no site"}


@pytest.mark.parametrize(("free_gib", "status"), [(40.0, OK), (5.0, WARN), (1.0, FAIL)])
def test_the_disk_row_judges_the_nearest_existing_folder(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, free_gib: float, status: str) -> None:
    import shutil

    from medsynth_kohya.machine import doctor

    asked: list[Path] = []

    def usage(path: Path) -> shutil._ntuple_diskusage:
        asked.append(Path(path))
        return shutil._ntuple_diskusage(0, 0, int(free_gib * 2**30))

    monkeypatch.setattr(shutil, "disk_usage", usage)
    row = doctor._disk(tmp_path / "runs" / "new")
    assert (row.name, row.status, asked) == ("disk", status, [tmp_path])
    assert f"{tmp_path} ({tmp_path / 'runs' / 'new'} does not exist yet" in row.detail
    if status != OK:
        assert row.detail.endswith("; about 10 GiB needed")
        assert row.fix == "free space or choose another work folder"


def test_the_disk_row_fails_a_work_folder_that_cannot_be_made(tmp_path: Path) -> None:
    """A file on its path, or a symlink to nothing or to itself: train and prepare refuse
    such a folder, so doctor does not call it ok."""
    from medsynth_kohya import files
    from medsynth_kohya.machine import doctor

    (tmp_path / "notes.txt").write_text("x", encoding="utf-8")
    (tmp_path / "gone").symlink_to(tmp_path / "nowhere")
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    for workdir, why in ((tmp_path / "notes.txt" / "runs", f"{tmp_path / 'notes.txt'} is a file"),
                         (tmp_path / "gone", "which does not exist"),
                         (tmp_path / "loop" / "runs", f"{tmp_path / 'loop'} is a symlink to")):
        row = doctor._disk(workdir)
        assert (row.name, row.status) == ("disk", FAIL), row
        assert row.detail.startswith(f"cannot create {workdir}: ") and why in row.detail
        # the refusal's wording is files' alone: the row is it, less the fix it gives itself
        assert row.detail == files.folder_problem(workdir, files.blocked_by(workdir) or "")
        with pytest.raises(files.FolderError, match=re.escape(row.detail)):
            files.make_folder(workdir)
        assert row.fix == "choose a folder to work in (a new one is made)"


def test_the_disk_row_names_a_relative_work_folder_in_full(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The default work folder, the current one, was named "." in the row."""
    from medsynth_kohya.machine import doctor

    monkeypatch.chdir(tmp_path)
    assert f"GiB free in {tmp_path}" in doctor._disk(Path()).detail
    assert f"free in {tmp_path} ({tmp_path / 'runs'} does not exist yet: it is made there)" in \
        doctor._disk(Path("runs")).detail


def test_a_python_without_imagesize_cannot_train(runner: CliRunner, tmp_path: Path,
                                                 nvidia_smi: InstallGpus) -> None:
    """sd-scripts' library/train_util.py imports imagesize, which none of the other packages
    brings: a Python with all the rest passed the doctor, and train stopped at that import."""
    nvidia_smi("Tesla T4, 15360 MiB, 7.5")
    python = _environment(tmp_path, torch=True, without=["imagesize"])
    code, stdout, stderr = invoke(runner, "doctor", "--sd-scripts", _checkout(tmp_path),
                                  "--python", python, "--workdir", tmp_path)
    assert code == 1 and "training cannot run here: fix the failing rows above" in stderr
    assert _table(stdout)["sd-scripts packages"] == [
        "fail", "cannot import imagesize", "pip install 'medsynth-kohya[train]' into that Python"]


def test_a_torch_that_cannot_load_says_why(tmp_path: Path) -> None:
    """A torch whose import fails (a CUDA library missing) is installed but unusable: its
    row gives the import's own error, not only that CUDA is unavailable."""
    python = _environment(tmp_path, torch=True, broken="libcudart.so.12: cannot open")
    report = diagnose(sd_scripts=_checkout(tmp_path), python=python, gpus=[], hub=False,
                      workdir=tmp_path)
    assert _row(report.checks, "torch") == Check(
        "torch", FAIL, "2.4.0+cu121 without CUDA (OSError: libcudart.so.12: cannot open)",
        "install a CUDA build of torch matching the driver")


def test_a_python_that_does_not_run_is_the_one_failing_row_of_its_own(tmp_path: Path) -> None:
    report = diagnose(sd_scripts=_checkout(tmp_path), python=str(tmp_path / "no-python"),
                      gpus=[], hub=False, workdir=tmp_path)
    python = _row(report.checks, "Python")
    assert python.status == FAIL and python.detail.startswith(f"{tmp_path / 'no-python'} could "
                                                              "not run: ")
    assert python.fix == "pass --python with the interpreter that has sd-scripts' packages"
    assert "torch" not in [c.name for c in report.checks]


def test_the_hub_token_may_be_a_stored_login(tmp_path: Path, no_token: Path) -> None:
    """`hf auth login` stores the token in a file, not in HF_TOKEN; a file that cannot be
    read (the Hub library passes on every error but a missing file) is a warning, not a
    traceback."""
    python, sd_scripts = _environment(tmp_path, torch=True), _checkout(tmp_path)

    def row() -> Check:
        report = diagnose(sd_scripts=sd_scripts, python=python, gpus=[], workdir=tmp_path)
        return _row(report.checks, "Hub token")

    assert row() == Check("Hub token", WARN, "not set: needed only by push",
                          "hf auth login, or export HF_TOKEN")
    no_token.mkdir(parents=True)  # unreadable, as one a `sudo hf auth login` left is
    unreadable = row()
    assert (unreadable.status, unreadable.fix) == (
        WARN, "hf auth login, or export HF_TOKEN; needed only by push")
    assert unreadable.detail.startswith("cannot be read: [Errno 21] Is a directory")
    no_token.rmdir()
    no_token.write_text("hf_stored_login_token", encoding="utf-8")
    assert row() == Check("Hub token", OK, "set (HF_TOKEN or a stored login)")


def test_a_hub_token_that_cannot_be_read_is_a_warning_not_a_crash(
        runner: CliRunner, tmp_path: Path, nvidia_smi: InstallGpus, no_token: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """huggingface_hub raises on HF_OIDC_RESOURCE without an id token to exchange (outside
    GitHub Actions): the doctor printed a traceback instead of its table."""
    import huggingface_hub.errors

    if not hasattr(huggingface_hub.errors, "OIDCError"):
        pytest.skip("this huggingface_hub has no OIDC token exchange")
    nvidia_smi("Tesla T4, 15360 MiB, 7.5")
    monkeypatch.setenv("HF_OIDC_RESOURCE", "someone/model")
    monkeypatch.delenv("ACTIONS_ID_TOKEN_REQUEST_URL", raising=False)
    code, stdout, _ = invoke(runner, "doctor", "--sd-scripts", _checkout(tmp_path),
                             "--python", _environment(tmp_path, torch=True),
                             "--workdir", tmp_path)
    status, detail, fix = _table(stdout)["Hub token"]
    assert (code, status) == (0, WARN)
    assert detail.startswith("cannot be read: HF_OIDC_RESOURCE is set but no OIDC id token")
    assert fix == "unset HF_OIDC_RESOURCE (or set HF_OIDC_ID_TOKEN); needed only by push"
    monkeypatch.setenv("HF_TOKEN", "hf_not_the_one_push_takes")  # the exchange comes first
    assert _row(diagnose(sd_scripts=tmp_path / "sd-scripts", python=sys.executable, gpus=[],
                         workdir=tmp_path).checks, "Hub token").detail == detail


def test_a_hub_error_without_words_is_named_by_its_kind(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub

    def unreadable() -> str:
        raise PermissionError

    monkeypatch.setattr(huggingface_hub, "get_token", unreadable)
    row = _row(diagnose(sd_scripts=tmp_path / "missing", python=str(tmp_path / "no-python"),
                        gpus=[], workdir=tmp_path).checks, "Hub token")
    assert row.detail == "cannot be read: PermissionError"


def test_warnings_alone_leave_the_exit_code_zero(
        runner: CliRunner, tmp_path: Path, nvidia_smi: InstallGpus, no_token: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """No token, sd-scripts at another commit, packages off their pins and no xformers: each
    a warning with its fix, and training can still run, so the doctor exits 0."""
    import shutil

    nvidia_smi("Tesla T4, 15360 MiB, 7.5")
    monkeypatch.setattr(shutil, "disk_usage", lambda _: shutil._ntuple_diskusage(0, 0, 2**40))
    python = _environment(tmp_path, torch=True, versions={**PINS, "accelerate": "0.30.0"})
    code, stdout, stderr = invoke(runner, "doctor", "--sd-scripts", _checkout(tmp_path),
                                  "--python", python, "--workdir", tmp_path)
    table = _table(stdout)
    assert (code, stderr) == (0, "")
    assert {name for name, cells in table.items() if cells[0] == WARN} == {
        "sd-scripts", "sd-scripts packages", "xformers", "bitsandbytes", "Hub token"}
    assert all(cells[0] == OK for name, cells in table.items() if cells[0] != WARN)
    assert all(cells[2] for cells in table.values() if cells[0] == WARN)


def test_a_users_own_accelerate_config_is_named_as_not_read(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    own = ("train launches with the run's own RUN/accelerate.json (or --accelerate-config "
           "FILE)")

    def row() -> Check:
        report = diagnose(sd_scripts=tmp_path / "missing", python=str(tmp_path / "no-python"),
                          gpus=[], hub=False, workdir=tmp_path)
        return _row(report.checks, "accelerate config")

    assert row() == Check("accelerate config", OK, f"none; not needed: {own}")
    config = tmp_path / "hf" / "accelerate" / "default_config.yaml"
    config.parent.mkdir(parents=True)
    config.write_text("num_processes: 8\n", encoding="utf-8")
    assert row() == Check("accelerate config", OK, f"{config} is not read: {own}")


def test_no_visible_gpu_asks_nvidia_smi_once_more_not_twice(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """nvidia-smi can take seconds on a busy or unwell driver: the no-GPU row asks once
    whether CUDA_VISIBLE_DEVICES hides the GPUs, for both its detail and its fix."""
    log, folder = tmp_path / "asked", tmp_path / "bin"
    folder.mkdir()
    smi = folder / "nvidia-smi"
    smi.write_text(f"#!/bin/sh\necho x >> '{log}'\necho 'Tesla T4, 15360 MiB, 7.5'\n",
                   encoding="utf-8")
    smi.chmod(0o755)
    monkeypatch.setenv("PATH", f"{folder}:{os.environ['PATH']}")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    report = diagnose(sd_scripts=tmp_path / "missing", python=str(tmp_path / "no-python"),
                      hub=False, workdir=tmp_path)
    gpu = _row(report.checks, "GPU")
    assert (gpu.detail, gpu.fix) == ("no NVIDIA GPU visible (CUDA_VISIBLE_DEVICES=)",
                                     "unset CUDA_VISIBLE_DEVICES or list the GPUs to use in it")
    assert log.read_text(encoding="utf-8").count("x") == 2  # the GPUs, then what hides them


def test_a_copy_inside_another_repository_is_not_given_that_repositorys_commit(
        tmp_path: Path) -> None:
    """It said the copy was at the user's own repository's commit, with a fix that ran git
    fetch and checkout in that repository."""
    project = tmp_path / "project"
    project.mkdir()
    copy = _checkout(project)
    (copy / ".git").rename(project / ".git")  # the repository is now the one around the copy
    row = _row(diagnose(sd_scripts=copy, python=sys.executable, gpus=[], hub=False,
                        workdir=tmp_path).checks, "sd-scripts")
    assert row == Check(
        "sd-scripts", WARN, f"{copy}: git reads no commit of its own (no git clone, or no "
        f"git), so it is not checked against {checkout.PINNED_RELEASE}; found by --sd-scripts",
        "medsynth-kohya install-sd-scripts --dir NEW (a new folder), then point --sd-scripts "
        "at NEW")


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0,
                    reason="giving the checkout to another user needs root")
def test_a_clone_another_user_owns_is_named_with_git_s_own_fix(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """git refuses a repository another user owns (safe.directory); the row said it was no
    clone and sent the user to install a new one."""
    copy = _checkout(tmp_path)
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(tmp_path / "empty-gitconfig"))
    for path in (copy, *copy.rglob("*")):
        os.chown(path, 65534, 65534, follow_symlinks=False)
    row = _row(diagnose(sd_scripts=copy, python=sys.executable, gpus=[], hub=False,
                        workdir=tmp_path).checks, "sd-scripts")
    assert row == Check(
        "sd-scripts", WARN, f"{copy}: git refuses to read it (another user owns it), so it is "
        f"not checked against {checkout.PINNED_RELEASE}; found by --sd-scripts",
        f"git config --global --add safe.directory {copy}, if you trust it")
    monkeypatch.setenv("GIT_CONFIG_COUNT", "1")
    monkeypatch.setenv("GIT_CONFIG_KEY_0", "safe.directory")
    monkeypatch.setenv("GIT_CONFIG_VALUE_0", str(copy))
    assert checkout.head(copy) == (checkout.commit(copy), None) and checkout.commit(copy)

