"""`push --eval REPORT` and `--allow-copies` against the loopback Hub: what arrives."""

from __future__ import annotations

import base64
import json
import re
import shutil
from pathlib import Path
from typing import Any

import cv2
import pytest
from typer.testing import CliRunner

from medsynth_kohya import files
from medsynth_kohya.data import manifest
from medsynth_kohya.data.prepared import PreparedFolder
from medsynth_kohya.errors import UserError
from medsynth_kohya.evaluation import copycheck, features, sets
from medsynth_kohya.evaluation import report as report_files
from medsynth_kohya.evaluation.evaluate import EvaluateOptions, evaluate
from medsynth_kohya.hub import contents, eval_card
from medsynth_kohya.hub import push as hubmod
from medsynth_kohya.training.record import RunFolder

from .conftest import invoke, one_line_error
from .eval_data import isic_source, photo, synthetic_set
from .fake_hub import TOKEN, FakeHub
from .private import make_home
from .test_hub import REPO, make_run

TINY = "tests.eval_data:build"
pytestmark = [
    pytest.mark.filterwarnings("ignore:Use 'content=<...>':DeprecationWarning"),
    pytest.mark.skipif(bool(features.missing(TINY)), reason="the eval extra (torch, "
                       "torchmetrics, scikit-learn) is not installed")]


@pytest.fixture(scope="module")
def _evaluated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An ISIC source, a synthetic set with one planted copy (SYN_0000005) and its report."""
    from medsynth_kohya.evaluation import utility

    root = tmp_path_factory.mktemp("evaluated")
    paths = isic_source(root / "isic", 8, 10, seed=11, patients=9)
    planted: Any = cv2.imread(str(paths[sorted(paths)[3]]))
    synthetic_set(root / "synth", [photo(8100 + i, hairy=i % 2 == 0) for i in range(5)]
                  + [cv2.resize(planted, (320, 240))], [i % 2 == 0 for i in range(5)] + [None])
    bootstrap = utility.BOOTSTRAP
    utility.BOOTSTRAP = 50
    try:
        evaluate(root / "isic", root / "synth", root / "report",
                 EvaluateOptions(features=TINY, mixes=(0.0, 1.0), repeats=1))
    finally:
        utility.BOOTSTRAP = bootstrap
    return root


@pytest.fixture
def evaluated(_evaluated: Path, tmp_path: Path) -> Path:
    shutil.copytree(_evaluated, tmp_path / "evaluated")
    return tmp_path / "evaluated"


def _card(text: str) -> Any:
    from huggingface_hub import ModelCard

    return ModelCard(text)


def test_the_report_arrives_byte_for_byte_and_its_figures_are_the_model_index(
        fake_hub: FakeHub, evaluated: Path, tmp_path: Path) -> None:
    report = evaluated / "report"
    run = make_run(tmp_path / "first")
    result = hubmod.push(run, REPO, samples=evaluated / "synth", evaluation=report,
                         allow_copies=True, endpoint=fake_hub.url, token=TOKEN)

    repo = fake_hub.repos[REPO]
    for name, local in (("report.html", "report-public.html"), ("report.json", "report.json")):
        assert repo.files[f"evaluation/{name}"] == (report / local).read_bytes(), name
        assert (f"evaluation/{name}", (report / local).stat().st_size) in result.files
    document = json.loads((report / "report.json").read_text(encoding="utf-8"))
    card = _card(repo.files["README.md"].decode())
    results = card.data.eval_results
    assert card.data.model_name == "melanoma-lora" and results
    by_type: dict[str, list[Any]] = {}
    for entry in results:
        by_type.setdefault(entry.metric_type, []).append(entry)
    fidelity = document["sections"]["fidelity"]["figures"]
    for kind, key in (("fid", "fid"), ("kid", "kid_mean"), ("precision", "precision"),
                      ("recall", "recall")):
        [entry] = by_type[kind]
        assert entry.metric_value == pytest.approx(fidelity[key])
        assert entry.task_type == "text-to-image"
        assert entry.metric_args["n_real"] == fidelity["n_real"] == 8
        assert entry.metric_args["n_synthetic"] == fidelity["n_synthetic"] == 6
    assert by_type["kid"][0].metric_args["std"] == pytest.approx(fidelity["kid_std"])
    [copies] = by_type["near_copies"]
    assert copies.metric_value == 1 and copies.metric_args == {
        "n_synthetic": 6, "threshold": document["sections"]["copies"]["threshold"]}
    assert copies.metric_name == ("Near-copies of training photos (hash distance <= "
                                  f"{document['sections']['copies']['threshold']:g})")
    assert by_type["prompt_adherence_hair"][0].metric_args["n_prompted"] == 5
    mixes = document["sections"]["utility"]["figures"]["mixes"]
    auc = sorted(by_type["roc_auc"], key=lambda e: e.metric_config)
    assert [e.metric_config for e in auc] == ["mix-0", "mix-1"]
    for entry, mix in zip(auc, mixes, strict=True):
        assert entry.task_type == "image-classification" and entry.dataset_split == "test"
        assert entry.metric_value == pytest.approx(mix["auc"]["value"])
        assert entry.metric_args["ci95"] == pytest.approx([mix["auc"]["low"],
                                                           mix["auc"]["high"]])
        assert entry.metric_args["bootstrap"] == "patient"
    assert len(by_type["balanced_accuracy"]) == 2
    figures = document["sections"]["utility"]["figures"]
    for entry in by_type["roc_auc"] + by_type["balanced_accuracy"]:
        assert entry.task_name == "Melanoma vs other lesions on held-out patients"
        assert entry.dataset_name == (
            f"isic: {figures['n_test']} images ({figures['n_test_melanoma']} melanomas) of "
            f"held-out patients, {figures['n_patients']} patients in all")
    text = card.text
    assert "## Evaluation" in text and "(evaluation/report.html)" in text
    for row in document["verdict"]:
        assert f"| {row['check']} | {row['status']} |" in text
    assert str(tmp_path) not in repo.files["README.md"].decode()
    assert not fake_hub.unknown


def test_an_older_report_s_figures_still_reach_the_card_saying_how_they_were_made(
        evaluated: Path) -> None:
    """A report from before the bootstrap was recorded resampled images, and says so on the
    card; a KID with no spread measured (too few images for subsets) carries no std, not 0."""
    from medsynth_kohya.hub.eval_card import card_evaluation

    report = evaluated / "report"
    document = json.loads((report / "report.json").read_text(encoding="utf-8"))
    del document["sections"]["utility"]["figures"]["bootstrap"]
    document["sections"]["fidelity"]["figures"]["kid_std"] = None
    files.write_json(report / "report.json", document)
    results = card_evaluation(report).results
    assert {(r.metric_args or {}).get("bootstrap") for r in results
            if r.metric_type == "roc_auc"} == {"image"}
    [kid] = [r.metric_args or {} for r in results if r.metric_type == "kid"]
    assert "std" not in kid and kid["subset_size"] > 0


def test_every_card_figure_is_the_report_s_in_its_own_words(evaluated: Path) -> None:
    """Each model-index entry names the figure, the data it was measured on and its sizes as
    the report gives them; the summary's files, verdict and provenance are the report's."""
    report = evaluated / "report"
    document = json.loads((report / "report.json").read_text(encoding="utf-8"))
    inputs, sections = document["inputs"], document["sections"]
    assert sections["adherence"]["skin_tone"]["agreement"] is None  # no prompt names one
    sections["adherence"]["skin_tone"].update(agreement=0.5, n_prompted=2)  # as if two did
    (report / "report.json").write_text(json.dumps(document), encoding="utf-8")
    attached = eval_card.card_evaluation(report)
    assert attached.files == (("evaluation/report.html", report / "report-public.html"),
                              ("evaluation/report.json", report / "report.json"))
    assert attached.verdict == tuple((v["check"], v["status"], v["detail"])
                                     for v in document["verdict"])
    assert (attached.n_synthetic, attached.version, attached.real) == (
        6, document["version"], "isic")
    assert (attached.lora_sha256, attached.manifest_sha256, attached.source_sha256) == (
        inputs["lora_sha256"], None, inputs["source_sha256"])
    assert attached.source_sha256 and len(attached.checked) == 6
    by_type = {entry.metric_type: entry for entry in attached.results}
    generation = "isic: 8 training photos vs 6 synthetic images"
    fidelity = sections["fidelity"]["figures"]
    sizes = {"n_real": 8, "n_synthetic": 6, "features": TINY}
    k = fidelity["neighbours"]
    expected = {
        "prompt_adherence_hair": ("Prompt adherence: hair found as prompted",
                                  sections["adherence"]["hair"]["agreement"],
                                  {"n_prompted": 5}),
        "prompt_adherence_skin_tone": ("Prompt adherence: skin tone found as prompted", 0.5,
                                       {"n_prompted": 2}),
        "fid": (f"FID ({TINY} features)", fidelity["fid"], sizes),
        "kid": ("KID (mean over subsets)", fidelity["kid_mean"],
                {"std": fidelity["kid_std"], "subset_size": fidelity["kid_subset_size"],
                 **sizes}),
        "precision": (f"Precision (Kynkaanniemi et al. 2019, k={k})", fidelity["precision"],
                      sizes),
        "recall": (f"Recall (Kynkaanniemi et al. 2019, k={k})", fidelity["recall"], sizes)}
    for kind, (name, value, args) in expected.items():
        entry = by_type[kind]
        assert (entry.task_type, entry.task_name, entry.dataset_type, entry.dataset_name) == (
            "text-to-image", "Synthetic dermoscopy images", "isic", generation), kind
        assert (entry.metric_name, entry.metric_value, entry.metric_args) == (
            name, value, args), kind
    figures = sections["utility"]["figures"]
    classified = [entry for entry in attached.results
                  if entry.task_type == "image-classification"]
    assert [(e.metric_type, e.metric_config, e.metric_name) for e in classified] == [
        ("roc_auc", "mix-0", "ROC-AUC, 0 synthetic per real melanoma"),
        ("balanced_accuracy", "mix-0", "Balanced accuracy, 0 synthetic per real melanoma"),
        ("roc_auc", "mix-1", "ROC-AUC, 1 synthetic per real melanoma"),
        ("balanced_accuracy", "mix-1", "Balanced accuracy, 1 synthetic per real melanoma")]
    for entry, (mix, key) in zip(classified, [(m, key) for m in figures["mixes"]
                                              for key in ("auc", "balanced_accuracy")],
                                 strict=True):
        interval = mix[key]
        assert (entry.dataset_type, entry.dataset_split, entry.metric_value) == (
            "isic", "test", interval["value"])
        assert entry.metric_args == {"ci95": [interval["low"], interval["high"]],
                                     "repeats": 1, "synthetic_used": mix["synthetic_used"],
                                     "classifier": "logistic",
                                     "bootstrap": sections["utility"]["figures"]["bootstrap"]}


def test_a_split_by_image_is_not_said_to_hold_out_patients(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Real data that records no patient ids is split image by image: the card's classifier
    figures are on held-out images, and each photo counted as a patient of its own is no
    patient count."""
    import pandas as pd

    from medsynth_kohya.evaluation import utility

    monkeypatch.setattr(utility, "BOOTSTRAP", 20)
    isic_source(tmp_path / "isic", 8, 8, seed=7)
    table = pd.read_csv(tmp_path / "isic" / "train.csv").assign(patient_id="")
    table.to_csv(tmp_path / "isic" / "train.csv", index=False)
    synthetic_set(tmp_path / "syn", [photo(6300 + i, size=(320, 240)) for i in range(3)])
    evaluate(tmp_path / "isic", tmp_path / "syn", tmp_path / "report",
             EvaluateOptions(features=TINY, mixes=(0.0, 1.0), repeats=1))
    document = json.loads((tmp_path / "report" / "report.json").read_text(encoding="utf-8"))
    figures = document["sections"]["utility"]["figures"]
    assert figures["unit"] == "image"
    for recorded in (True, False):  # a report written before `unit`: from its method
        if not recorded:
            del figures["unit"]
            (tmp_path / "report" / "report.json").write_text(json.dumps(document),
                                                             encoding="utf-8")
        found = [entry for entry in eval_card.card_evaluation(tmp_path / "report").results
                 if entry.task_type == "image-classification"]
        assert len(found) == 4
        for entry in found:
            assert entry.task_name == "Melanoma vs other lesions on held-out images"
            assert entry.dataset_name == (
                f"isic: {figures['n_test']} held-out images ({figures['n_test_melanoma']} "
                "melanomas); no patient ids recorded, so split image by image")


def _embedded(page: str, alt: str) -> list[str]:
    """The base64 payloads of the page's images with this alt text."""
    return re.findall(rf"<img src='data:image/jpeg;base64,([^']+)' alt='{alt}'>", page)


def _payload(path: Path) -> str:
    """The base64 of `path`'s thumbnail as evaluate embeds it."""
    image = sets.decode(path)
    assert image is not None
    return report_files.thumbnail(image).split(",", 1)[1]


def test_no_training_photo_leaves_the_machine_with_the_report(
        fake_hub: FakeHub, evaluated: Path, tmp_path: Path, runner: CliRunner,
        monkeypatch: pytest.MonkeyPatch) -> None:
    report, synth = evaluated / "report", evaluated / "synth"
    local = (report / "report.html").read_text(encoding="utf-8")
    training = sorted((evaluated / "isic" / "train").glob("*.jpg"))
    planted = training[3]  # SYN_0000005 is a copy of it
    shown = _embedded(local, "training")
    assert _payload(planted) in shown and len(shown) == 6  # the user still sees every pair
    copy, fresh = _payload(synth / "images" / "SYN_0000005.png"), _payload(
        synth / "images" / "SYN_0000000.png")
    assert copy in _embedded(local, "synthetic")
    private = [payload.encode() for payload in (*shown, copy)]
    for path in training:
        raw = path.read_bytes()
        private += [raw, base64.b64encode(raw), _payload(path).encode()]
    public = (report / "report-public.html").read_bytes()

    run = make_run(tmp_path / "first")
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    code, stdout, stderr = invoke(runner, "push", run, "--repo-id", REPO, "--eval", report,
                                  "--endpoint", fake_hub.url, "--dry-run")
    assert code == 0, stderr
    assert re.search(rf"evaluation/report\.html\W+{len(public)} B", stdout), stdout
    code, shown_page, stderr = invoke(runner, "push", run, "--repo-id", REPO, "--eval", report,
                                      "--show", "evaluation/report.html")
    assert code == 0 and shown_page.encode() == public, stderr
    assert REPO not in fake_hub.repos

    result = hubmod.push(run, REPO, evaluation=report, endpoint=fake_hub.url, token=TOKEN)
    uploaded = fake_hub.repos[REPO].files
    assert uploaded["evaluation/report.html"] == public
    assert ("evaluation/report.html", len(public)) in result.files
    for name, data in uploaded.items():
        assert not any(secret in data for secret in private), name
    page = public.decode()
    assert fresh in _embedded(page, "synthetic") and not _embedded(page, "training")
    assert page.count("training photo withheld") == 6 and "near-copy withheld" in page
    assert f"SYN_0000005 ~ {planted.stem}: " in page

    (report / "report.html").unlink()  # the private page is not needed to publish
    hubmod.push(run, REPO, evaluation=report, endpoint=fake_hub.url, token=TOKEN)
    assert fake_hub.repos[REPO].files["evaluation/report.html"] == public
    (report / "report.html").write_text(local, encoding="utf-8")
    (report / "report-public.html").unlink()  # as an older evaluate left it
    code, _, stderr = invoke(runner, "push", run, "--repo-id", REPO, "--eval", report,
                             "--dry-run")
    assert code == 1 and "has no report-public.html" in stderr and "--force" in stderr


def test_flagged_samples_are_refused_unless_allowed(fake_hub: FakeHub, evaluated: Path,
                                                    tmp_path: Path, runner: CliRunner,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    synth = evaluated / "synth"
    copycheck.write(synth, copycheck.check(synth, evaluated / "isic"))
    run = make_run(tmp_path / "first")
    with pytest.raises(UserError, match="SYN_0000005 ~ ISIC_11"):
        hubmod.push(run, REPO, samples=synth, endpoint=fake_hub.url, token=TOKEN)
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    code, _, stderr = invoke(runner, "push", run, "--repo-id", REPO, "--samples", synth,
                             "--endpoint", fake_hub.url)
    assert code == 1 and "Traceback" not in stderr
    error = stderr.strip().splitlines()[-1]
    assert error.startswith("Error: ") and "1 sample image is a near-copy" in error
    assert "--allow-copies" in error
    assert fake_hub.requests == [] and REPO not in fake_hub.repos

    hubmod.push(run, REPO, samples=synth, allow_copies=True, endpoint=fake_hub.url,
                token=TOKEN)
    assert "samples/SYN_0000005.png" in fake_hub.repos[REPO].files


def test_the_report_alone_flags_samples_and_an_unchecked_set_is_a_warning(
        fake_hub: FakeHub, evaluated: Path, tmp_path: Path) -> None:
    run = make_run(tmp_path / "first")
    with pytest.raises(UserError, match=r"near-copy of a training photo.*evaluation report"):
        contents.plan(run, REPO, samples=evaluated / "synth", evaluation=evaluated / "report")
    clean = tmp_path / "clean"
    synthetic_set(clean, [photo(8200 + i) for i in range(3)])
    planned = contents.plan(run, REPO, samples=clean)
    assert any("not checked for near-copies" in w for w in planned.warnings)


def test_images_flagged_by_their_features_are_not_counted_as_hash_matches(
        evaluated: Path) -> None:
    """With --deep-threshold, evaluate also flags images whose features are as close as a
    training photo's: the card's near-copy count says both rules it counts by."""
    path = evaluated / "report" / "report.json"
    document = json.loads(path.read_text(encoding="utf-8"))
    copies = document["sections"]["copies"]
    [hashed] = copies["flagged"]
    other = next(n["synthetic_id"] for n in copies["nearest"]
                 if n["synthetic_id"] != hashed["synthetic_id"])
    copies["deep"]["threshold"] = 0.875
    copies["flagged"].append({"synthetic_id": other, "training_id": hashed["training_id"],
                              "similarity": 0.9})
    path.write_text(json.dumps(document), encoding="utf-8")
    [found] = [entry for entry in eval_card.card_evaluation(evaluated / "report").results
               if entry.metric_type == "near_copies"]
    assert found.metric_value == 2
    assert found.metric_name == (
        f"Near-copies of training photos (hash distance <= {copies['threshold']:g}, or "
        "feature similarity >= 0.875)")
    assert found.metric_args == {"n_synthetic": 6, "threshold": copies["threshold"],
                                 "deep_threshold": 0.875}


def test_the_report_vouches_only_for_the_images_it_checked_not_for_their_ids(
        evaluated: Path, tmp_path: Path) -> None:
    """Every set numbers its images SYN_0000000, …: the report on one set must not pass
    another set's near-copy, nor an image replaced since it was evaluated, as checked."""
    run, report = make_run(tmp_path / "first"), evaluated / "report"
    planned = contents.plan(run, REPO, samples=evaluated / "synth", evaluation=report,
                            allow_copies=True)
    assert not any("not checked" in w for w in planned.warnings), planned.warnings
    training: Any = cv2.imread(str(sorted((evaluated / "isic").rglob("*.jpg"))[0]))
    other = tmp_path / "other"
    synthetic_set(other, [photo(8300), cv2.resize(training, (320, 240)), photo(8302)])
    planned = contents.plan(run, REPO, samples=other, evaluation=report)
    assert ("3 published sample images were not checked for near-copies of training photos"
            in " ".join(planned.warnings)), planned.warnings
    replaced = evaluated / "synth" / "images" / "SYN_0000001.png"
    shutil.copy(other / "images" / "SYN_0000001.png", replaced)
    planned = contents.plan(run, REPO, samples=evaluated / "synth", evaluation=report,
                            allow_copies=True)
    assert ("1 published sample image was not checked for near-copies of training photos"
            in " ".join(planned.warnings)), planned.warnings


@pytest.mark.parametrize("login", ["may", "private"])
def test_a_login_that_is_a_word_of_the_report_s_prose_does_not_block_the_push(
        evaluated: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, login: str) -> None:
    """The public page says the training photos "may be private": the tool's wording; the
    login in what the report says of the user's data still is a leak."""
    run = make_run(tmp_path / "first")
    report = evaluated / "report"
    page = (report / "report-public.html").read_text(encoding="utf-8")
    assert f" {login} " in page or f"{login})" in page
    make_home(tmp_path, monkeypatch, login)
    planned = contents.plan(run, REPO, evaluation=report)
    assert planned.findings == (), planned.findings
    document = json.loads((report / "report.json").read_text(encoding="utf-8"))
    document["notes"].append(f"real photos copied by {login}")
    (report / "report.json").write_text(json.dumps(document), encoding="utf-8")
    planned = contents.plan(run, REPO, evaluation=report)
    assert planned.findings == (("evaluation/report.json", f"the user name {login!r}"),)


def test_a_report_holding_a_local_path_is_refused_by_the_last_scan(
        fake_hub: FakeHub, evaluated: Path, tmp_path: Path) -> None:
    report = evaluated / "report"
    document = json.loads((report / "report.json").read_text(encoding="utf-8"))
    document["notes"].append(f"read from {evaluated / 'isic'}")
    (report / "report.json").write_text(json.dumps(document), encoding="utf-8")
    run = make_run(tmp_path / "first")
    with pytest.raises(UserError, match=r"evaluation/report\.json"):
        hubmod.push(run, REPO, evaluation=report, endpoint=fake_hub.url, token=TOKEN)
    assert REPO not in fake_hub.repos


def test_a_report_naming_a_patient_of_the_run_is_refused_in_one_line(
        fake_hub: FakeHub, evaluated: Path, tmp_path: Path, runner: CliRunner,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Photos named after their patient (own data, `IP_1234500_Smith_John_019.jpg`) put the
    manifest's patient id in the report's training ids; ISIC-style ids, which hold none, and
    short or common patient ids (`p`, `1`, `unknown`) stop no push."""
    report = evaluated / "report"
    patient = "IP_1234500"
    run = make_run(tmp_path / "first", patients=[patient, "IP_7654321", "p", "1", "unknown"])
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    push = ["push", run, "--repo-id", REPO, "--eval", report, "--endpoint", fake_hub.url]
    code, stdout, stderr = invoke(runner, *push, "--dry-run")
    assert code == 0 and "Privacy scan passed" in stdout, stderr
    planted = sorted((evaluated / "isic" / "train").glob("*.jpg"))[3].stem
    for name in ("report-public.html", "report.json"):
        text = (report / name).read_text(encoding="utf-8")
        assert planted in text, name
        (report / name).write_text(text.replace(planted, f"{patient}_Smith_John_019"),
                                   encoding="utf-8")
    line = one_line_error(*invoke(runner, *push, "--dry-run"))
    assert (f"evaluation/report.html would publish the patient id {patient!r}") in line, line
    assert "rename the photos so their ids hold no patient id and prepare again" in line, line
    assert line.endswith("or push without --eval"), line
    code, _, stderr = invoke(runner, *push, "--show", "evaluation/report.json")
    assert code == 0 and (f"evaluation/report.json would publish the patient id {patient!r}"
                          in stderr), stderr
    assert REPO not in fake_hub.repos


def test_a_folder_without_a_report_is_one_line(runner: CliRunner, tmp_path: Path) -> None:
    run = make_run(tmp_path / "first")
    (tmp_path / "empty").mkdir()
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "report.json").write_text('{"tool": "else"}', encoding="utf-8")
    (tmp_path / "other" / "report.html").write_text("<html></html>", encoding="utf-8")
    shutil.copytree(tmp_path / "other", tmp_path / "shaped")  # a report's shape, not its tool
    (tmp_path / "shaped" / "report.json").write_text(json.dumps(
        {"tool": "else", "sections": {key: {} for key in ("copies", "adherence", "fidelity",
                                                          "utility")},
         "verdict": [], "inputs": {}}),
        encoding="utf-8")
    shutil.copytree(tmp_path / "other", tmp_path / "broken")
    (tmp_path / "broken" / "report.json").write_text('{"tool": "medsynth', encoding="utf-8")
    for folder, message in ((tmp_path / "empty", "holds no report.json and report.html"),
                            (tmp_path / "broken", "is not a report of `medsynth-kohya evaluate`"),
                            (tmp_path / "other", "is not a report of `medsynth-kohya evaluate`"),
                            (tmp_path / "shaped", "is not a report of `medsynth-kohya evaluate`"),
                            (tmp_path / "gone",
                             "give the --out folder of `medsynth-kohya evaluate`")):
        code, _, stderr = invoke(runner, "push", run, "--repo-id", REPO, "--eval", folder,
                                 "--dry-run")
        assert code == 1 and message in stderr, stderr
        assert stderr.strip().splitlines()[-1].startswith("Error: ")


def test_a_report_on_other_real_data_or_an_unknown_lora_is_not_taken_for_the_run_s(
        evaluated: Path, tmp_path: Path) -> None:
    """A report that compared the set with another prepared folder than the run trained on is
    refused (its near-copy verdict is about other photos); one that cannot be tied to the run's
    data (an ISIC source) or to a LoRA is published with a warning saying so."""
    run = make_run(tmp_path / "first")
    report = evaluated / "report"
    path = report / "report.json"
    document = json.loads(path.read_text(encoding="utf-8"))
    assert document["inputs"]["manifest_sha256"] is None  # compared with an ISIC source
    warnings = contents.plan(run, REPO, evaluation=report).warnings
    assert any("cannot be matched with this run's prepared data" in w for w in warnings)
    assert any("does not record the LoRA" in w for w in warnings)

    record = json.loads((run / "run.json").read_text(encoding="utf-8"))
    document["inputs"]["manifest_sha256"] = files.sha256(path)  # another prepared folder
    path.write_text(json.dumps(document), encoding="utf-8")
    with pytest.raises(UserError, match=r"compared the set with other real data .* than this "
                                        r"run's prepared data .* --lora RUN"):
        contents.plan(run, REPO, evaluation=report)

    lora = files.sha256(run / "output" / "melanoma.safetensors")
    document["inputs"].update(manifest_sha256=record["dataset"]["manifest_sha256"],
                              lora_sha256=lora)
    path.write_text(json.dumps(document), encoding="utf-8")
    warnings = contents.plan(run, REPO, evaluation=report).warnings
    assert not any("--eval" in w for w in warnings)


def test_a_report_on_the_run_s_folder_prepared_again_is_refused_as_such(
        evaluated: Path, tmp_path: Path) -> None:
    """A report made against the run's prepared folder after it was prepared again (`evaluate
    --lora RUN --force`) is refused saying so; since `evaluate --lora RUN` now refuses that
    folder, the way on is --real or training again, for any report on other data alike."""
    run = make_run(tmp_path / "first")
    prepared = RunFolder(run).load().prepared
    assert prepared is not None
    path = PreparedFolder(prepared).manifest
    manifest.write(manifest.read(path).iloc[:3], path)  # prepared again, with fewer images
    report = evaluated / "report"
    document = json.loads((report / "report.json").read_text(encoding="utf-8"))
    document["inputs"].update(real=prepared.name, manifest_sha256=files.sha256(path))
    (report / "report.json").write_text(json.dumps(document), encoding="utf-8")
    with pytest.raises(UserError) as caught:
        contents.plan(run, REPO, evaluation=report)
    message = str(caught.value)
    assert (f"compared the set with {prepared.name} as it was prepared again after this run "
            "trained on it") in message
    assert "--real <the ISIC download" in message and "train again" in message
    assert "--lora RUN" not in message

    document["inputs"]["real"] = "elsewhere"  # another folder's report: the same way on
    (report / "report.json").write_text(json.dumps(document), encoding="utf-8")
    with pytest.raises(UserError, match="compared the set with other real data") as caught:
        contents.plan(run, REPO, evaluation=report)
    assert "--lora RUN" not in str(caught.value) and "--real" in str(caught.value)


def test_a_report_on_the_download_the_run_was_prepared_from_covers_the_run(
        evaluated: Path, tmp_path: Path) -> None:
    """`evaluate --real DOWNLOAD` (the README's first example) on the very ISIC download the
    run's data was prepared from is tied to the run by the metadata file's sha256 prepare
    recorded, also once the download is gone; a report on another metadata file (edited, or
    another download) cannot be matched."""
    from medsynth_kohya.data.prepare import prepare

    run = make_run(tmp_path / "first")
    report = evaluated / "report"
    document = json.loads((report / "report.json").read_text(encoding="utf-8"))
    source = sets.load_real(evaluated / "isic")
    assert document["inputs"]["source_sha256"] == source.source_sha256 is not None
    prepared = prepare(evaluated / "isic", tmp_path / "prepared", workers=1)
    record = json.loads((run / "run.json").read_text(encoding="utf-8"))
    record["dataset"]["prepared"] = str(prepared.out)
    (run / "run.json").write_text(json.dumps(record), encoding="utf-8")
    warnings = contents.plan(run, REPO, evaluation=report).warnings
    assert not any("cannot be matched" in w for w in warnings), warnings
    metadata = next((evaluated / "isic").glob("*.csv"))
    edited = tmp_path / "edited.csv"
    edited.write_text(metadata.read_text(encoding="utf-8") + "\n", encoding="utf-8")
    shutil.rmtree(evaluated / "isic")  # the download is gone: prepare's record still ties it
    warnings = contents.plan(run, REPO, evaluation=report).warnings
    assert not any("cannot be matched" in w for w in warnings), warnings
    document["inputs"]["source_sha256"] = files.sha256(edited)
    (report / "report.json").write_text(json.dumps(document), encoding="utf-8")
    warnings = contents.plan(run, REPO, evaluation=report).warnings
    assert any("cannot be matched with this run's prepared data" in w for w in warnings)
