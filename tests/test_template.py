"""The project template: what it bakes, what it refuses, and the pipeline it generates.

Fast tests bake ``templates/project`` into temporary folders and read the
files; slow tests run the generated pipeline for real (``dvc repro``, ``dvc
exp run``) on a tiny synthetic dataset inside a temporary git repository laid
out like this one (``packages/*/src`` beside ``projects/``).
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = ROOT / "templates" / "project"
BIN = Path(sys.executable).parent
FILES = {".cruft.json", ".gitignore", "README.md", "dvc.yaml", "params.yaml"}
SOURCES = ("folder", "synthetic")
PACKAGES = {"celestial-data": "data", "celestial-models": "models", "celestial-eval": "eval"}
ENV = {
    **os.environ,
    "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
    "GIT_AUTHOR_NAME": "celestial tests",
    "GIT_AUTHOR_EMAIL": "tests@celestial.invalid",
    "GIT_COMMITTER_NAME": "celestial tests",
    "GIT_COMMITTER_EMAIL": "tests@celestial.invalid",
}


def load_check_projects():
    spec = importlib.util.spec_from_file_location(
        "check_projects", ROOT / "templates" / "check_projects.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


check_projects = load_check_projects()


def bake(output_dir: Path, **answers: Any) -> Path:
    return check_projects.render(answers, output_dir)


def cookiecutter_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """Cookiecutter on the template as ``nox -s new`` runs it (``tools/new_project.py``)."""
    return subprocess.run(
        [
            sys.executable,
            str(ROOT / "tools" / "new_project.py"),
            str(TEMPLATE),
            "--no-input",
            *args,
        ],
        cwd=cwd,
        capture_output=True,
        text=True,
        env=ENV,
    )


def run(*args: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run(args, cwd=cwd, capture_output=True, text=True, env=ENV)
    if check and done.returncode != 0:
        raise AssertionError(f"{shlex.join(args)} failed:\n{done.stdout}\n{done.stderr}")
    return done


def stages(project: Path) -> dict[str, dict]:
    return yaml.safe_load((project / "dvc.yaml").read_text())["stages"]


def paths(stage: dict, *kinds: str) -> set[str]:
    return {e if isinstance(e, str) else next(iter(e)) for k in kinds for e in stage.get(k) or []}


# Baking


@pytest.mark.parametrize("source", SOURCES)
def test_bakes_exactly_the_project_files(tmp_path: Path, source: str) -> None:
    project = bake(tmp_path, dataset_name="Ring worlds", data_source=source)
    assert project == tmp_path / "ring-worlds"
    found = {p.relative_to(project).as_posix() for p in project.rglob("*") if p.is_file()}
    assert found == FILES
    for name in FILES:
        text = (project / name).read_text()
        assert "{{" not in text, name
        assert "{%" not in text, name
        if name != ".cruft.json":  # which records the "cookiecutter" context
            assert "cookiecutter" not in text, name


@pytest.mark.parametrize("source", SOURCES)
def test_the_first_stage_fits_the_source(tmp_path: Path, source: str) -> None:
    project = bake(tmp_path, data_source=source)
    found = stages(project)
    if source == "synthetic":
        assert list(found) == ["synth", "prepare", "train", "evaluate", "rejection"]
        # Read from params.yaml by the command, as every other stage does: no
        # ${...} to interpolate, which costs every dvc command in the repository
        # DVC's expression parser (about 40 ms).
        assert found["synth"]["cmd"] == "celestial-data synth data/raw --params params.yaml"
        assert found["synth"]["params"] == ["synth"]
    else:
        assert list(found) == ["prepare", "train", "evaluate", "rejection"]
        assert "synth" not in yaml.safe_load((project / "params.yaml").read_text())
        assert "dvc add data/raw" in (project / "README.md").read_text()


def test_params_yaml_holds_the_packages_defaults(tmp_path: Path) -> None:
    from celestial_data import PrepareParams, SynthParams
    from celestial_eval.drift import DriftParams
    from celestial_eval.evaluate import EvaluateParams
    from celestial_eval.rejection import RejectionParams
    from celestial_models.ood import OodParams
    from celestial_models.params import TrainParams

    project = bake(tmp_path, data_source="synthetic")
    written = yaml.safe_load((project / "params.yaml").read_text())
    sections = (
        SynthParams,
        PrepareParams,
        TrainParams,
        OodParams,
        EvaluateParams,
        RejectionParams,
        DriftParams,
    )
    assert list(written) == [model.section for model in sections]
    for model in sections:
        # Every key written is valid and, with the prompts' defaults, is the package's default.
        assert model.parse(written[model.section]) == model(), model.section


def test_the_prompts_offer_what_the_packages_accept() -> None:
    from celestial_data.image import COLOR_MODES
    from celestial_models.architectures import ARCHITECTURES

    questions = json.loads((TEMPLATE / "cookiecutter.json").read_text())
    assert set(questions["color_mode"]) == set(COLOR_MODES)
    assert set(questions["architecture"]) == set(ARCHITECTURES)


def test_every_path_a_command_names_is_a_dep_or_an_out(tmp_path: Path) -> None:
    project = bake(tmp_path, data_source="synthetic")
    for name, stage in stages(project).items():
        words = shlex.split(stage["cmd"])
        command, arguments = words[0], words[2:]
        declared = paths(stage, "deps", "outs", "metrics", "plots")
        named = {w for w in arguments if not w.startswith(("-", "$")) and w != "params.yaml"}
        assert named <= declared | {"evaluation"}, name
        # The package that runs the stage, and every package it imports, is a dep.
        sources = {p for p in paths(stage, "deps") if p.startswith("../../packages/")}
        needed = list(PACKAGES)[: list(PACKAGES).index(command) + 1]
        assert sources == {f"../../packages/{PACKAGES[c]}/src" for c in needed}, name
    assert paths(stages(project)["evaluate"], "deps") >= {"model", "data/prepared"}


def test_evaluate_declares_every_file_it_writes(tmp_path: Path) -> None:
    from celestial_eval.evaluate import OUTPUTS

    project = bake(tmp_path, data_source="folder")
    declared = paths(stages(project)["evaluate"], "outs", "metrics", "plots")
    assert declared == {f"evaluation/{name}" for name in OUTPUTS.values()}


def test_records_the_template_and_the_answers_for_cruft(tmp_path: Path) -> None:
    project = bake(tmp_path, dataset_name="Ice moons", data_source="synthetic", epochs=4)
    state = json.loads((project / ".cruft.json").read_text())
    assert state["directory"] == "templates/project"
    assert (project / state["template"] / state["directory"] / "cookiecutter.json").is_file()
    assert re.fullmatch(r"[0-9a-f]{40}", state["commit"])
    answers = state["context"]["cookiecutter"]
    assert (answers["slug"], answers["epochs"], answers["data_source"]) == (
        "ice-moons",
        "4",
        "synthetic",
    )
    assert not {"_output_dir", "_repo_dir"} & set(answers)  # nothing machine-specific
    # Recorded as cruft records them, so that its first update changes only the commit.
    declared = json.loads((ROOT / "templates" / "project" / "cookiecutter.json").read_text())
    assert list(answers) == [key for key in declared if key != "__prompts__"] + [
        "_template",
        "_commit",
    ]


# Refusals


@pytest.mark.parametrize("slug", ["Bad Slug", "1st-moons", "moons_", "moons--x", "MOONS"])
def test_a_bad_slug_is_refused_in_one_line_and_leaves_nothing(tmp_path: Path, slug: str) -> None:
    done = cookiecutter_cli(f"slug={slug}", "--output-dir", str(tmp_path), cwd=tmp_path)
    assert done.returncode != 0
    errors = [line for line in done.stderr.splitlines() if "error:" in line]
    assert errors == [
        f"celestial-template: error: slug must be kebab-case (lowercase letters and digits in "
        f"words joined by '-', starting with a letter, at most 48 characters). Received: "
        f"{slug!r}. Pass slug=<name>, e.g. slug=my-bodies."
    ]
    assert "Traceback" not in done.stderr + done.stdout
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("slug", ["ok/../../evil3", "../evil", "ok/nested", "..", "/abs/evil"])
def test_a_slug_that_names_another_folder_is_refused_and_creates_no_folder(
    tmp_path: Path, slug: str
) -> None:
    # Cookiecutter creates the project folder, parents included, before the
    # hook that refuses the slug runs; so the folder must not follow the slug.
    projects = tmp_path / "repo" / "projects"
    projects.mkdir(parents=True)
    slug = slug.replace("/abs", str(tmp_path))

    done = cookiecutter_cli(f"slug={slug}", "--output-dir", str(projects), cwd=tmp_path)

    assert done.returncode != 0
    assert "error: slug must be kebab-case" in done.stderr
    assert f"Received: {slug!r}" in done.stderr
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")) == [
        "repo",
        "repo/projects",
    ]


def test_a_bad_number_is_refused(tmp_path: Path) -> None:
    done = cookiecutter_cli("image_size=big", "--output-dir", str(tmp_path), cwd=tmp_path)
    assert done.returncode != 0
    assert "error: image_size must be a whole number from 4 to 1024" in done.stderr
    assert "Traceback" not in done.stderr + done.stdout
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("answer", "choices"),
    [
        ("architecture=resnet", "compact_cnn, simple_cnn"),
        ("color_mode=RGB", "rgb, grayscale"),
        ("data_source=s3", "folder, synthetic"),
    ],
)
def test_a_bad_choice_is_refused_in_one_line(tmp_path: Path, answer: str, choices: str) -> None:
    done = cookiecutter_cli(answer, "--output-dir", str(tmp_path), cwd=tmp_path)
    key, _, value = answer.partition("=")
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        f"celestial-template: error: {key} must be one of {choices}. Received: {value!r}. "
        f"Pass {key}=<choice>, e.g. {key}={choices.split(',')[0]}."
    ]
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("overwrite", [[], ["--overwrite-if-exists"]])
def test_an_existing_project_is_refused_and_left_as_it_was(
    tmp_path: Path, overwrite: list[str]
) -> None:
    project = bake(tmp_path, data_source="folder")
    (project / "params.yaml").write_text("train:\n  epochs: 1\n")
    before = {p: p.read_bytes() for p in project.rglob("*") if p.is_file()}

    done = cookiecutter_cli(*overwrite, "--output-dir", str(tmp_path), cwd=tmp_path)

    assert done.returncode != 0
    assert "already exists" in done.stderr + done.stdout
    assert {p: p.read_bytes() for p in project.rglob("*") if p.is_file()} == before


# The drift check


def test_a_fresh_bake_matches_and_edits_are_reported(tmp_path: Path) -> None:
    project = bake(tmp_path / "projects", data_source="synthetic")
    assert check_projects.check(project) == []

    (project / "params.yaml").write_text(
        (project / "params.yaml").read_text().replace("epochs:", "epoch:", 1)  # train's
    )
    (project / "dvc.yaml").write_text((project / "dvc.yaml").read_text() + "# local edit\n")
    (project / "train.py").write_text("print('copied code')\n")
    (project / "dvc.lock").write_text("schema: '2.0'\n")  # DVC writes it: allowed
    problems = check_projects.check(project)
    assert problems[0].startswith("dvc.yaml differs from the template:")
    assert "+# local edit" in problems[0]
    assert problems[1] == (
        "params.yaml keys differ: not in the template: train.epoch; missing: train.epochs"
    )
    assert problems[2:] == [
        "train.py is not from the template (move it into the template or a package)"
    ]


def repository_with_a_project(tmp_path: Path) -> Path:
    """A git repository holding the template and a project made from it, both committed."""
    shutil.copytree(TEMPLATE, tmp_path / "templates" / "project")
    run("git", "init", "-q", cwd=tmp_path)
    run("git", "add", "-A", cwd=tmp_path)
    run("git", "commit", "-q", "-m", "template", cwd=tmp_path)
    # The documented command, from the repository root (a relative template path).
    run(
        str(BIN / "cookiecutter"),
        "templates/project",
        "-o",
        "projects",
        "--no-input",
        "data_source=synthetic",
        cwd=tmp_path,
    )
    project = tmp_path / "projects" / "planets-and-moons"
    assert json.loads((project / ".cruft.json").read_text())["template"] == "../.."
    run("git", "add", "-A", cwd=tmp_path)
    run("git", "commit", "-q", "-m", "project", cwd=tmp_path)
    return project


@pytest.mark.slow
def test_cruft_update_rolls_a_committed_template_change_into_a_project(tmp_path: Path) -> None:
    project = repository_with_a_project(tmp_path)
    readme = tmp_path / "templates" / "project" / "{{cookiecutter.__folder}}" / "README.md"
    readme.write_text(readme.read_text() + "\nA line the template gained.\n")
    run("git", "commit", "-q", "-am", "template change", cwd=tmp_path)
    template = tmp_path / "templates" / "project"
    assert check_projects.check(project, template) != []

    assert (
        "+A line the template gained."
        in run(str(BIN / "cruft"), "diff", "--checkout", "HEAD", cwd=project).stdout
    )
    before = json.loads((project / ".cruft.json").read_text())
    run(str(BIN / "cruft"), "update", "--skip-apply-ask", cwd=project)

    assert (project / "README.md").read_text().endswith("A line the template gained.\n")
    assert check_projects.check(project, template) == []
    # The record the template wrote is the one cruft writes: only the commit moved.
    after = json.loads((project / ".cruft.json").read_text())
    commit = run("git", "rev-parse", "HEAD", cwd=tmp_path).stdout.strip()
    before["commit"] = before["context"]["cookiecutter"]["_commit"] = commit
    assert list(after["context"]["cookiecutter"]) == list(before["context"]["cookiecutter"])
    assert after == before


@pytest.mark.slow
def test_a_project_changed_by_hand_must_record_the_template_commit(tmp_path: Path) -> None:
    project = repository_with_a_project(tmp_path)
    template = tmp_path / "templates" / "project"
    readme = template / "{{cookiecutter.__folder}}" / "README.md"
    readme.write_text(readme.read_text() + "\nA line the template gained.\n")
    run("git", "commit", "-q", "-am", "template change", cwd=tmp_path)
    (project / "README.md").write_text(
        (project / "README.md").read_text() + "\nA line the template gained.\n"
    )
    run("git", "commit", "-q", "-am", "the same change, by hand", cwd=tmp_path)

    (problem,) = check_projects.check(project, template)
    assert problem.startswith(".cruft.json records template commit ")
    assert "(1 file(s), e.g. templates/project/{{cookiecutter.__folder}}/README.md)" in problem

    run(str(BIN / "cruft"), "update", "--skip-update", "--skip-apply-ask", cwd=project)
    assert check_projects.check(project, template) == []
    run("git", "commit", "-q", "-am", "record the template commit", cwd=tmp_path)
    run(str(BIN / "cruft"), "update", "--skip-apply-ask", cwd=project)  # nothing to replay
    assert (project / "README.md").read_text().count("A line the template gained.") == 1
    assert not list(project.glob("*.rej"))


def test_every_project_matches_the_template() -> None:
    projects = sorted(p.parent for p in (ROOT / "projects").glob("*/dvc.yaml"))
    assert {"planets-moons", "synthetic-bodies"} <= {p.name for p in projects}
    for project in projects:
        assert check_projects.check(project) == [], project.name


REFERENCE = ROOT.parent / "shared" / "datasets" / "planets-moons" / "raw"


@pytest.mark.slow
def test_dvc_sees_the_projects_pipelines_and_not_the_template() -> None:
    listed = run("dvc", "stage", "list", "--recursive", "--name-only", ".", cwd=ROOT).stdout.split()
    assert not [name for name in listed if not name.startswith("projects/")]
    ours = [n for n in listed if n.split("/")[1] in ("planets-moons", "synthetic-bodies")]
    assert sorted(ours) == sorted(
        [
            "projects/planets-moons/data/raw.dvc",
            *(
                f"projects/planets-moons/dvc.yaml:{s}"
                for s in ("prepare", "train", "evaluate", "rejection")
            ),
            *(
                f"projects/synthetic-bodies/dvc.yaml:{s}"
                for s in ("synth", "prepare", "train", "evaluate", "rejection")
            ),
        ]
    )


@pytest.mark.skipif(not REFERENCE.is_dir(), reason=f"reference dataset not at {REFERENCE}")
def test_planets_moons_records_exactly_the_reference_images() -> None:
    from dvc_data.hashfile.build import build
    from dvc_data.hashfile.db import HashFileDB
    from dvc_objects.fs.local import LocalFileSystem
    from dvc_objects.fs.memory import MemoryFileSystem

    staging = HashFileDB(MemoryFileSystem(), "/staging")
    _, meta, tree = build(staging, str(REFERENCE), LocalFileSystem(), "md5")
    recorded = yaml.safe_load((ROOT / "projects/planets-moons/data/raw.dvc").read_text())
    assert recorded["outs"] == [
        {
            "md5": tree.hash_info.value,
            "size": meta.size,
            "nfiles": 1500,
            "hash": "md5",
            "path": "raw",
        }
    ]


@pytest.mark.skipif(not REFERENCE.is_dir(), reason=f"reference dataset not at {REFERENCE}")
def test_planets_moons_prepares_exactly_what_its_dvc_lock_records(tmp_path: Path) -> None:
    # A change to prepare that moved an image or changed a byte would make
    # every clone rerun the pipeline (and disagree with the committed results).
    from dvc_data.hashfile.build import build
    from dvc_data.hashfile.db import HashFileDB
    from dvc_objects.fs.local import LocalFileSystem
    from dvc_objects.fs.memory import MemoryFileSystem

    from celestial_data.prepare import PrepareParams, prepare_dataset

    project = ROOT / "projects" / "planets-moons"
    params = PrepareParams.load(project / "params.yaml")
    prepare_dataset(REFERENCE, tmp_path / "prepared", params)
    staging = HashFileDB(MemoryFileSystem(), "/staging")
    _, _, tree = build(staging, str(tmp_path / "prepared"), LocalFileSystem(), "md5")
    lock = yaml.safe_load((project / "dvc.lock").read_text())
    (recorded,) = lock["stages"]["prepare"]["outs"]
    assert recorded["md5"] == tree.hash_info.value


# The generated pipeline, for real

TINY = {
    "synth": {"per_class": 6, "size": 16},
    "train": {"batch_size": 16, "conv_size": 4, "min_steps": 200},
    "rejection": {"classes": ["Moon"], "epochs": 1},
}


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A git + DVC repository with the packages' sources and a ``projects/`` folder."""
    root = tmp_path_factory.mktemp("monorepo")
    for folder in PACKAGES.values():
        shutil.copytree(
            ROOT / "packages" / folder / "src",
            root / "packages" / folder / "src",
            ignore=shutil.ignore_patterns("__pycache__"),
        )
    run("git", "init", "-q", cwd=root)
    run("dvc", "init", "-q", cwd=root)
    shutil.copy(ROOT / ".dvcignore", root / ".dvcignore")
    return root


def tiny(project: Path) -> None:
    """Shrink the baked params so that the whole pipeline runs in seconds."""
    params = yaml.safe_load((project / "params.yaml").read_text())
    for section, values in TINY.items():
        if section in params:
            params[section].update(values)
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def commit(root: Path, message: str) -> None:
    run("git", "add", "-A", cwd=root)
    run("git", "commit", "-q", "-m", message, cwd=root)


def stages_run(output: str) -> list[str]:
    return re.findall(r"Running stage '([\w-]+)'", output)


@pytest.fixture(scope="module")
def synthetic(workspace: Path) -> dict[str, Any]:
    """A synthetic project baked, committed and reproduced once."""
    project = bake(
        workspace / "projects", dataset_name="Tiny bodies", data_source="synthetic", image_size=16
    )
    tiny(project)
    commit(workspace, "Add the tiny-bodies project")
    done = run("dvc", "repro", cwd=project, check=False)
    return {"project": project, "repro": done, "lock": (project / "dvc.lock").read_bytes()}


@pytest.mark.slow
def test_the_pipeline_runs_every_stage_and_writes_every_output(synthetic) -> None:
    project, done = synthetic["project"], synthetic["repro"]
    assert done.returncode == 0, done.stdout + done.stderr
    assert stages_run(done.stdout) == ["synth", "prepare", "train", "evaluate", "rejection"]
    for name in ("model.keras", "metadata.json", "history.json"):
        assert (project / "model" / name).is_file()
    metrics = json.loads((project / "evaluation" / "metrics.json").read_text())
    assert 0 <= metrics["accuracy"] <= 1
    history = (project / "evaluation" / "history.csv").read_text().splitlines()
    assert history[0] == "epoch,loss,accuracy,val_loss,val_accuracy"
    assert (project / "evaluation" / "confusion.csv").read_text().startswith("actual,predicted")
    # No stage rewrote the configuration (DVCLive must not touch dvc.yaml), the
    # .gitignore already covered every cached output, and the project still
    # matches its template.
    status = run("git", "status", "--porcelain", "--untracked-files=all", ".", cwd=project)
    changed = sorted(
        line[3:].removeprefix("projects/tiny-bodies/") for line in status.stdout.splitlines()
    )
    assert changed == [
        "dvc.lock",
        "evaluation/confusion.csv",
        "evaluation/history.csv",
        "evaluation/metrics.json",
        "evaluation/misclassified.csv",
        "evaluation/rejection.json",
    ]
    assert check_projects.check(project) == []


@pytest.mark.slow
def test_a_forced_repro_rewrites_the_same_lock_and_a_plain_one_runs_nothing(synthetic) -> None:
    project = synthetic["project"]
    run("dvc", "repro", "-f", cwd=project)
    after = (project / "dvc.lock").read_bytes()
    if after != synthetic["lock"]:
        before, now = yaml.safe_load(synthetic["lock"]), yaml.safe_load(after)
        changed = [
            f"{name}: {out['path']}"
            for name, stage in now["stages"].items()
            for out, old in zip(
                stage.get("outs", []), before["stages"][name].get("outs", []), strict=True
            )
            if out != old
        ]
        pytest.fail(f"dvc repro -f wrote other outputs: {changed}")
    assert "Data and pipelines are up to date." in run("dvc", "repro", cwd=project).stdout


@pytest.mark.slow
def test_metrics_params_and_plots_each_once(synthetic, workspace: Path) -> None:
    project = synthetic["project"]
    commit(workspace, "Reproduce tiny-bodies")
    assert run("dvc", "metrics", "diff", cwd=project).returncode == 0
    assert run("dvc", "params", "diff", cwd=project).returncode == 0
    shown = json.loads(run("dvc", "plots", "diff", "--json", cwd=project).stdout)["data"]
    # DVC names the plots of a dvc.yaml "dvc.yaml::<title>" once the repository has several.
    ours = sorted(name.removeprefix("dvc.yaml::") for name in shown if not name.startswith("../"))
    assert ours == [
        "Accuracy per epoch",
        "Confusion matrix",
        "Loss per epoch",
        "evaluation/confusion.png",
        "evaluation/history.png",
        "evaluation/preview.png",
    ]


@pytest.mark.slow
def test_an_experiment_on_epochs_reruns_the_stages_after_prepare_only(synthetic) -> None:
    project = synthetic["project"]
    # The tiny project makes 3 steps an epoch: the template's min_steps would
    # raise 3 epochs to 67 (train.min_steps), so it is turned off here.
    three = ["-S", "train.epochs=3", "-S", "train.min_steps=0", "-n", "three-epochs"]
    done = run("dvc", "exp", "run", *three, cwd=project)
    assert stages_run(done.stdout) == ["train", "evaluate", "rejection"]
    history = (project / "evaluation" / "history.csv").read_text().splitlines()
    assert len(history) == 1 + 3
    table = json.loads(run("dvc", "exp", "show", "--json", cwd=project).stdout)
    names = [e["name"] for row in table for e in (row.get("experiments") or [])]
    assert "three-epochs" in names


@pytest.mark.slow
def test_an_experiment_up_to_evaluate_leaves_the_rejection_stage_out(synthetic) -> None:
    # docs/experiments.md: name the stage to stop at, through nox -s exp (tools/exp.py).
    project = synthetic["project"]
    exp = [sys.executable, str(ROOT / "tools" / "exp.py"), str(project)]
    two = ["-S", "train.epochs=2", "-S", "train.min_steps=0", "-n", "two-epochs"]
    done = run(*exp, "evaluate", *two, cwd=project)
    assert stages_run(done.stdout) == ["train", "evaluate"]
    history = (project / "evaluation" / "history.csv").read_text().splitlines()
    assert len(history) == 1 + 2


@pytest.mark.slow
@pytest.mark.parametrize("committed", [True, False])
def test_a_failed_experiment_gives_back_the_uncached_outputs_dvc_removed(
    synthetic, workspace: Path, committed: bool
) -> None:
    # As docs/new-dataset.md has it, experiments may come before the first commit.
    project = synthetic["project"]
    rejection = project / "evaluation" / "rejection.json"
    before = rejection.read_bytes()
    if committed:
        commit(workspace, "The reproduced outputs")
    try:
        exp = [sys.executable, str(ROOT / "tools" / "exp.py"), str(project)]
        done = run(*exp, "rejection", "-S", "rejection.classes=[Nope]", cwd=project, check=False)
        assert done.returncode != 0
        # DVC removed rejection.json (cache: false) before the stage failed.
        assert "restored evaluation/rejection.json as they were before it" in done.stderr
        assert rejection.read_bytes() == before
        if committed:
            assert run("git", "status", "--porcelain", ".", cwd=project).stdout == ""
    finally:
        if committed:
            run("git", "reset", "-q", "HEAD~1", cwd=workspace)  # the outputs uncommitted again


@pytest.mark.slow
def test_a_params_typo_stops_the_stage_with_one_line(synthetic) -> None:
    project = synthetic["project"]
    params = project / "params.yaml"
    original = params.read_text()
    params.write_text(original.replace("image_size:", "image_sise:"))
    try:
        done = run("dvc", "repro", cwd=project, check=False)
    finally:
        params.write_text(original)
    assert done.returncode != 0
    output = done.stdout + done.stderr
    errors = [line for line in output.splitlines() if line.startswith("celestial-data: error:")]
    assert len(errors) == 1
    assert "Unknown key 'image_sise'" in errors[0] and "Did you mean 'image_size'?" in errors[0]
    assert "Traceback" not in output


@pytest.mark.slow
def test_a_folder_project_tracks_its_images_with_dvc_add(workspace: Path) -> None:
    project = bake(
        workspace / "projects", dataset_name="Tiny folder", data_source="folder", image_size=16
    )
    tiny(project)
    # Other images than tiny-bodies', or DVC's run cache would restore its stages' outputs.
    synth = ("celestial-data", "synth", "data/raw", "--per-class", "6", "--size", "16")
    run(*synth, "--seed", "1", cwd=project)
    run("dvc", "add", "data/raw", cwd=project)
    assert (project / "data" / "raw.dvc").is_file()
    assert not (project / "data" / ".gitignore").exists()  # the template's covers it
    commit(workspace, "Add the tiny-folder project")

    done = run("dvc", "repro", cwd=project)

    assert stages_run(done.stdout) == ["prepare", "train", "evaluate", "rejection"]
    assert check_projects.check(project) == []


@pytest.mark.slow
def test_an_experiment_with_a_misspelt_key_stops_with_the_projects_message(
    workspace: Path,
) -> None:
    # The documented way (docs/experiments.md): nox -s exp runs tools/exp.py.
    project = bake(
        workspace / "projects", dataset_name="Tiny exp", data_source="folder", image_size=16
    )
    commit(workspace, "Add the tiny-exp project")
    params = project / "params.yaml"
    original = params.read_bytes()
    exp = [sys.executable, str(ROOT / "tools" / "exp.py"), str(project)]

    from celestial_models.params import TrainParams

    accepted = ", ".join(TrainParams.model_fields)  # a parameter added later is listed too
    for typo in ("train.epoch=3", "+train.epoch=3"):
        done = run(*exp, "-S", typo, cwd=workspace, check=False)
        assert done.returncode == 2
        assert done.stderr.splitlines() == [
            "celestial-exp: error: Unknown key 'epoch' in params train. Did you mean 'epochs'? "
            f"Accepted keys: {accepted}."
        ]
        assert params.read_bytes() == original

    # A valid key, but no images at all: said before DVC runs.
    done = run(*exp, "-S", "train.epochs=3", cwd=workspace, check=False)
    assert done.returncode == 1
    assert "data/raw does not exist and no stage or .dvc file provides it" in done.stderr
    assert params.read_bytes() == original

    # An empty image folder: the experiment fails in prepare, after DVC has
    # written the value into params.yaml, and it is taken back.
    (project / "data" / "raw").mkdir(parents=True)
    done = run(*exp, "-S", "train.epochs=3", cwd=workspace, check=False)
    assert done.returncode != 0
    assert "is as it was" in done.stderr
    assert params.read_bytes() == original
