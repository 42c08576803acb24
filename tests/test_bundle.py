"""The Gradescope autograder bundle (issue 13): its contents, and the whole of it end to end."""

from __future__ import annotations

import hashlib
import importlib.metadata as md
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from gradescope_schema import errors, load_schema

from conformance.grading.bundle import (
    GRADER_REQUIREMENTS,
    build_bundle,
    build_wheel,
    pinned_requirements,
    source_checkout,
)

ROOT = Path(__file__).resolve().parent.parent
STUDENT = ROOT / "conformance" / "examples" / "student_numpy.py"


def _names(lines: list[str]) -> dict[str, str]:
    return {line.split("==")[0].split(";")[0].split(">")[0].strip(): line for line in lines}


def test_pinned_requirements_pin_what_is_installed_and_leave_torch_out() -> None:
    lines = _names(pinned_requirements(GRADER_REQUIREMENTS))
    assert lines["numpy"] == f"numpy=={md.version('numpy')}"
    assert lines["pytest"] == f"pytest=={md.version('pytest')}"
    assert lines["pytest-timeout"] == f"pytest-timeout=={md.version('pytest-timeout')}"
    assert lines["execnet"] == f"execnet=={md.version('execnet')}"  # a dependency's dependency
    assert "torch" not in lines
    if sys.version_info >= (3, 11):  # not installed here: kept with its marker, unpinned
        assert lines["tomli"] == 'tomli; python_version < "3.11"'


def test_pinned_requirements_with_torch_use_the_public_version() -> None:
    lines = _names(pinned_requirements([*GRADER_REQUIREMENTS, "torch"]))
    assert lines["torch"] == f"torch=={md.version('torch').split('+')[0]}"
    with pytest.raises(ValueError, match="'no-such-package-xyz' is not installed"):
        pinned_requirements(["no-such-package-xyz"])


def _fake_wheel(tmp_path: Path) -> Path:
    wheel = tmp_path / "dl_ch2-0.1.0-py3-none-any.whl"
    wheel.write_bytes(b"not really a wheel")
    return wheel


@pytest.mark.parametrize("uses_torch", [False, True])
def test_bundle_holds_the_scripts_rubric_requirements_and_wheel(
    tmp_path: Path, uses_torch: bool
) -> None:
    rubric = tmp_path / "rubric.toml"
    rubric.write_text(
        f'[assignment]\nrequires = ["training"]\nuses_torch = {str(uses_torch).lower()}\n'
    )
    out = tmp_path / "autograder.zip"
    build_bundle(out, rubric, wheel=_fake_wheel(tmp_path))
    with zipfile.ZipFile(out) as zf:
        names = sorted(zf.namelist())
        assert names == sorted(
            [
                "dl_ch2-0.1.0-py3-none-any.whl",
                "requirements.txt",
                "rubric.toml",
                "run_autograder",
                "setup.sh",
            ]
        )
        for script in ("setup.sh", "run_autograder"):
            assert (zf.getinfo(script).external_attr >> 16) & 0o111 == 0o111
            assert zf.read(script).startswith(b"#!/usr/bin/env bash\n")
        assert zf.read("rubric.toml") == rubric.read_bytes()
        assert zf.read("dl_ch2-0.1.0-py3-none-any.whl") == b"not really a wheel"
        reqs = _names(zf.read("requirements.txt").decode().splitlines())
        setup = zf.read("setup.sh").decode()
    assert ("torch" in reqs) is uses_torch
    assert "--no-deps" in setup and "dl_ch2-*.whl" in setup


def test_bundle_rejects_a_wheel_that_is_not_dl_ch2(tmp_path: Path) -> None:
    other = tmp_path / "numpy-1.0-py3-none-any.whl"
    other.write_bytes(b"")
    with pytest.raises(ValueError, match="not a dl_ch2 wheel"):
        build_bundle(tmp_path / "a.zip", None, wheel=other)
    assert not (tmp_path / "a.zip").exists()


# -- end to end: setup.sh into a fresh virtual environment, then run_autograder -----------


def _wheelhouse(requirements: str) -> Path:
    """The pinned wheels, downloaded once into a cache folder (offline here: local index)."""
    digest = hashlib.sha256(requirements.encode()).hexdigest()[:12]
    base = Path(
        os.environ.get("DL_CH2_WHEELHOUSE", Path.home() / ".cache" / "dl-ch2" / "wheelhouse")
    )
    house = base / digest
    if (house / ".complete").exists():
        return house
    house.mkdir(parents=True, exist_ok=True)
    req = house / "requirements.txt"
    req.write_text(requirements)
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "download", "-q", "-r", str(req), "-d", str(house)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["?"]
        pytest.skip(f"cannot build the wheelhouse offline: {tail[0]}")
    (house / ".complete").write_text("")
    return house


@pytest.mark.slow
def test_bundle_end_to_end_grades_a_numpy_submission_without_torch(tmp_path: Path) -> None:
    try:
        wheel = build_wheel(tmp_path / "wheel", source=ROOT)  # the checkout under test
    except RuntimeError as exc:
        pytest.skip(f"cannot build the dl-ch2 wheel here: {exc}")
    bundle = tmp_path / "autograder.zip"
    build_bundle(bundle, None, wheel=wheel)
    root = tmp_path / "autograder"
    with zipfile.ZipFile(bundle) as zf:
        zf.extractall(root / "source")
        requirements = zf.read("requirements.txt").decode()
    for script in ("setup.sh", "run_autograder"):
        (root / "source" / script).chmod(0o755)
    house = _wheelhouse(requirements)
    (root / "submission").mkdir()
    shutil.copy(STUDENT, root / "submission" / "adapter.py")

    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "PYTHON"))}
    env.update(
        DL_CH2_AUTOGRADER_ROOT=str(root),
        DL_CH2_PYTHON=sys.executable,
        DL_CH2_PIP_ARGS=f"--no-index --find-links {house}",
        PIP_CONFIG_FILE=os.devnull,  # only the wheelhouse: no index, no other find-links
    )
    setup = subprocess.run(
        ["bash", str(root / "source" / "setup.sh")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert setup.returncode == 0, setup.stdout[-3000:] + setup.stderr[-3000:]
    vpy = root / "venv" / "bin" / "python"
    no_torch = subprocess.run(
        [
            str(vpy),
            "-c",
            "import importlib.util as u, sys; sys.exit(u.find_spec('torch') is not None)",
        ],
        env=env,
    )
    assert no_torch.returncode == 0, "setup.sh installed torch for a NumPy assignment"

    run = subprocess.run(
        [str(root / "source" / "run_autograder")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    results = json.loads((root / "results" / "results.json").read_text())
    assert errors(results, load_schema()) == []
    statuses = [t["status"] for t in results["tests"]]
    assert len(statuses) >= 10 and set(statuses) == {"passed"}, results["output"][:2000]
    assert results["score"] == 100  # the default course rubric's full marks
    # graded by the installed wheel, not this checkout
    assert str(ROOT) not in run.stdout
    if os.geteuid() == 0:  # as on Gradescope: the submission ran as someone else
        assert "isolation: unprivileged" in results["output"], results["output"][:2000]
    examples = subprocess.run(
        [str(vpy), "-I", "-c", "import conformance, pathlib; c = pathlib.Path(conformance.__file__)"
         "; print(c.parent.parent.name, (c.parent / 'examples').exists())"],
        env=env, capture_output=True, text=True, cwd=tmp_path,
    )  # fmt: skip
    assert examples.stdout.split() == ["site-packages", "False"], examples.stdout
    assert STUDENT.exists()  # the checkout's own copy is untouched
    # the NumPy reference itself grades in that torch-free environment
    ref = subprocess.run(
        [
            str(vpy),
            "-m",
            "conformance",
            "grade",
            "numpy",
            "--report-json",
            str(tmp_path / "r.json"),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert ref.returncode == 0, ref.stdout[-3000:] + ref.stderr[-3000:]
    assert json.loads((tmp_path / "r.json").read_text())["complete"] is True
    # a notebook written as the book's code, no adapter: nbformat is in the bundle's venv
    from fixtures.book_notebooks import book_cells, write_notebook

    shutil.rmtree(root / "submission")
    (root / "submission").mkdir()
    write_notebook(book_cells("numpy"), root / "submission" / "chapter02.ipynb")
    run = subprocess.run([str(root / "source" / "run_autograder")], env=env,
                         capture_output=True, text=True, timeout=300)  # fmt: skip
    results = json.loads((root / "results" / "results.json").read_text())
    assert results["score"] == 100, results["output"][:3000]


# -- issue 27: notebooks, and the wheel built from the folder the bundle is made in ---------


def test_bundle_requirements_hold_nbformat_for_notebook_submissions(tmp_path: Path) -> None:
    out = tmp_path / "autograder.zip"
    build_bundle(out, None, wheel=_fake_wheel(tmp_path))
    with zipfile.ZipFile(out) as zf:
        reqs = _names(zf.read("requirements.txt").decode().splitlines())
    assert reqs["nbformat"] == f"nbformat=={md.version('nbformat')}"


def test_the_wheel_is_built_from_the_checkout_the_bundle_is_made_in(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a dl-ch2 checkout that cannot build: the error names it, so it was the one used
    checkout = tmp_path / "course" / "dl-ch2"
    (checkout / "sub").mkdir(parents=True)
    (checkout / "pyproject.toml").write_text(
        '[project]\nname = "dl-ch2"\nversion = "not a version"\n'
    )
    assert source_checkout(checkout / "sub") == checkout
    monkeypatch.chdir(checkout / "sub")
    with pytest.raises(RuntimeError, match=f"from {checkout} failed"):
        build_wheel(tmp_path / "w")
    monkeypatch.chdir(tmp_path)  # no checkout here: say so, never fall back on the installed one
    with pytest.raises(ValueError, match="--source DIR or --wheel PATH"):
        build_wheel(tmp_path / "w")
    with pytest.raises(ValueError, match="not a dl-ch2 checkout"):
        build_wheel(tmp_path / "w", source=tmp_path)


def test_run_autograder_grades_a_book_notebook_by_its_names(tmp_path: Path) -> None:
    """The bundle's run_autograder script on a notebook submission written as the book's
    code (no adapter), in this environment standing for the bundle's venv (cheap)."""
    from fixtures.book_notebooks import book_cells, write_notebook

    bundle = tmp_path / "autograder.zip"
    build_bundle(bundle, ROOT / "conformance" / "grading" / "rubric.default.toml",
                 wheel=_fake_wheel(tmp_path))  # fmt: skip
    root = tmp_path / "autograder"
    with zipfile.ZipFile(bundle) as zf:
        zf.extractall(root / "source")
    (root / "source" / "run_autograder").chmod(0o755)
    venv_python = root / "venv" / "bin" / "python"
    venv_python.parent.mkdir(parents=True)
    venv_python.write_text(f'#!/bin/sh\nexec {sys.executable} "$@"\n')
    venv_python.chmod(0o755)
    (root / "submission").mkdir()
    write_notebook(book_cells("numpy"), root / "submission" / "chapter02.ipynb")
    env = {**os.environ, "DL_CH2_AUTOGRADER_ROOT": str(root), "DL_CH2_ISOLATION": "process"}
    run = subprocess.run([str(root / "source" / "run_autograder")], env=env,
                         capture_output=True, text=True, timeout=300)  # fmt: skip
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    results = json.loads((root / "results" / "results.json").read_text())
    assert errors(results, load_schema()) == []
    assert results["score"] == 100, results["output"][:3000]
    assert all(t["max_score"] > 0 for t in results["tests"])  # by objective, no 0/0 rows
    assert len(results["tests"]) == 11, [t["name"] for t in results["tests"]]
