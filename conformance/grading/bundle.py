"""The Gradescope autograder bundle: ``dl-ch2 gradescope-bundle --rubric R -o autograder.zip``.

The zip holds what Gradescope expects at its root, plus what they need:

- ``setup.sh``: run once when Gradescope builds the image; makes a virtual environment in
  ``/autograder/venv``, installs the pinned grader dependencies from ``requirements.txt``,
  then dl-ch2's own wheel (it is on no package index) with ``--no-deps``, so a NumPy
  assignment never installs torch (unless the rubric's ``uses_torch`` is true);
- ``run_autograder``: grades the adapter found in ``/autograder/submission`` with the rubric
  and writes ``/autograder/results/results.json``
  (``conformance.grading.gradescope.run_autograder``);
- ``rubric.toml``, ``requirements.txt`` and ``dl_ch2-<version>-py3-none-any.whl``.

Both scripts read ``$DL_CH2_AUTOGRADER_ROOT`` (default ``/autograder``), setup.sh also
``$DL_CH2_PYTHON`` (default ``python3``) and ``$DL_CH2_PIP_ARGS`` (e.g. ``--no-index
--find-links /wheelhouse`` to install offline, or a torch CPU index), so the bundle can be
tested outside Gradescope.
"""

from __future__ import annotations

import importlib.metadata as md
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterable
from pathlib import Path

from conformance.atomic import atomic_path
from conformance.grading.rubric import Rubric, load_rubric

__all__ = [
    "GRADER_REQUIREMENTS",
    "build_bundle",
    "build_wheel",
    "pinned_requirements",
    "source_checkout",
]

#: What grading needs besides dl-ch2 itself (the suite imports no torch; nbformat reads a
#: notebook submission's cells).
GRADER_REQUIREMENTS = (
    "numpy",
    "nbformat",
    "pytest",
    "pytest-xdist",
    "pytest-timeout",
    "hypothesis",
    'tomli; python_version < "3.11"',
)
TORCH_REQUIREMENTS = ("torch",)

SETUP_SH = """\
#!/usr/bin/env bash
# Gradescope runs this once, as root, when it builds the autograder image.
set -euo pipefail
ROOT="${DL_CH2_AUTOGRADER_ROOT:-/autograder}"
SOURCE="$ROOT/source"
cd "$ROOT"  # never import a package from wherever this was started (-I below, too)
PYTHON="${DL_CH2_PYTHON:-python3}"
if ! "$PYTHON" -c "import venv, ensurepip" >/dev/null 2>&1 && command -v apt-get >/dev/null; then
    apt-get update && apt-get install -y python3-venv python3-pip
fi
"$PYTHON" -m venv "$ROOT/venv"
VPY="$ROOT/venv/bin/python"
# DL_CH2_PIP_ARGS: extra pip options, e.g. "--no-index --find-links /wheelhouse"
# shellcheck disable=SC2086
"$VPY" -m pip install --disable-pip-version-check ${DL_CH2_PIP_ARGS:-} -r "$SOURCE/requirements.txt"
# dl-ch2 itself is on no index: its wheel is in the bundle; --no-deps keeps torch out
"$VPY" -m pip install --disable-pip-version-check --no-index --no-deps "$SOURCE"/dl_ch2-*.whl
# the worked student example is an answer: not part of the grading install
"$VPY" -I -c "import conformance, pathlib, shutil; \\
    shutil.rmtree(pathlib.Path(conformance.__file__).parent / 'examples', ignore_errors=True)"
# the submission's interpreter sees the allowed libraries only: a copy, readable by anyone
# (outside /autograder, which the grader and its answers keep to root)
"$VPY" -I -c "from conformance.grading.sandbox import worker_site; \\
    print('worker site:', worker_site($ALLOWED))"
chmod 700 "$ROOT/venv" "$SOURCE"
"$VPY" -I -c "import conformance.plugin, conformance.grading.gradescope; \\
    print('dl-ch2 grader ready')"
"""

RUN_AUTOGRADER = """\
#!/usr/bin/env bash
# Gradescope runs this for each submission; it always writes results/results.json.
set -uo pipefail
ROOT="${DL_CH2_AUTOGRADER_ROOT:-/autograder}"
export DL_CH2_AUTOGRADER_ROOT="$ROOT"
mkdir -p "$ROOT/results"
# root's own: the submission runs as an unprivileged user on a copy, never on these
chmod 700 "$ROOT/results" "$ROOT/submission" 2>/dev/null || true
cd "$ROOT"
exec "$ROOT/venv/bin/python" -I -m conformance gradescope-run --root "$ROOT" \\
    --rubric "$ROOT/source/rubric.toml"
"""


def _canonical(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def _public_version(version: str) -> str:
    return version.split("+", 1)[0]  # 2.13.0+cpu -> 2.13.0 (local builds are not on PyPI)


def pinned_requirements(top: Iterable[str]) -> list[str]:
    """Pin ``top`` and their dependencies to the versions installed here.

    A dependency whose marker does not hold here (e.g. ``python_version < "3.11"`` on a
    newer Python) is kept with its marker and its own specifier, since nothing is installed
    to pin it to. Raises ValueError naming a top-level requirement that is not installed.
    """
    from packaging.requirements import Requirement

    lines: dict[str, str] = {}
    queue = [(Requirement(r), True) for r in top]
    while queue:
        req, is_top = queue.pop(0)
        key = _canonical(req.name)
        marker = f"; {req.marker}" if req.marker is not None else ""
        applies = req.marker is None or req.marker.evaluate({"extra": ""})
        if key in lines and (applies or lines[key].startswith(f"{key}==")):
            continue
        if not applies:
            lines.setdefault(key, f"{key}{req.specifier}{marker}")
            continue
        try:
            dist = md.distribution(req.name)
        except md.PackageNotFoundError as exc:
            if is_top:
                raise ValueError(
                    f"requirement {req.name!r} is not installed here, so it cannot be pinned"
                ) from exc
            lines[key] = f"{key}{req.specifier}{marker}"
            continue
        lines[key] = f"{key}=={_public_version(dist.version)}{marker}"
        for dep in dist.requires or []:
            sub = Requirement(dep)
            if sub.marker is not None and "extra" in str(sub.marker):
                continue  # optional extras are not installed by a plain requirement
            queue.append((sub, False))
    return [lines[k] for k in sorted(lines)]


def source_checkout(start: Path | None = None) -> Path | None:
    """The dl-ch2 source checkout holding ``start`` (default: the current folder), found
    upwards by its pyproject.toml naming dl-ch2; None if there is none. The bundle is built
    from the folder it is run in, never from wherever the installed package lives."""
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        project = folder / "pyproject.toml"
        if project.is_file() and _names_dl_ch2(project):
            return folder
    return None


def _names_dl_ch2(project: Path) -> bool:
    try:
        text = project.read_text(encoding="utf-8")
    except OSError:
        return False
    return any(
        line.replace(" ", "") in ('name="dl-ch2"', "name='dl-ch2'", 'name="dl_ch2"')
        for line in text.splitlines()
    )


def build_wheel(dest: Path, source: Path | None = None) -> Path:
    """Build dl-ch2's wheel with ``pip wheel --no-deps`` from ``source``, a dl-ch2 checkout
    (default: the one the current folder is in); returns its path."""
    if source is not None and (not (source / "pyproject.toml").is_file() or
                               not _names_dl_ch2(source / "pyproject.toml")):  # fmt: skip
        raise ValueError(f"--source {source}: not a dl-ch2 checkout (no pyproject.toml naming it)")
    source = source or source_checkout()
    if source is None:
        raise ValueError(
            f"no dl-ch2 source checkout at or above {Path.cwd()} to build the wheel from: "
            "run this in the checkout, or pass --source DIR or --wheel PATH"
        )
    dest.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "-q", "-w", str(dest)],
        capture_output=True,
        text=True,
    )
    wheels = sorted(dest.glob("dl_ch2-*.whl"))
    if proc.returncode != 0 or not wheels:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        raise RuntimeError(f"building the dl-ch2 wheel from {source} failed: {tail[0]}")
    return wheels[-1]


def _add(zf: zipfile.ZipFile, name: str, data: bytes, executable: bool = False) -> None:
    info = zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0))
    info.compress_type = zipfile.ZIP_DEFLATED
    info.external_attr = ((0o755 if executable else 0o644) | 0o100000) << 16
    zf.writestr(info, data)


def build_bundle(
    out: Path,
    rubric_path: Path | None = None,
    *,
    wheel: Path | None = None,
    source: Path | None = None,
) -> list[str]:
    """Write the autograder zip to ``out``; returns the names it holds. The wheel is
    ``wheel``, else built from ``source`` (else the checkout the current folder is in)."""
    rubric: Rubric = load_rubric(rubric_path)
    top = [*GRADER_REQUIREMENTS, *(TORCH_REQUIREMENTS if rubric.uses_torch else ())]
    requirements = "\n".join(pinned_requirements(top)) + "\n"
    with tempfile.TemporaryDirectory(prefix="dl-ch2-bundle-") as tmp:
        if wheel is None:
            wheel = build_wheel(Path(tmp), source)
        elif not wheel.is_file() or not wheel.name.startswith("dl_ch2-"):
            raise ValueError(f"--wheel {wheel}: not a dl_ch2 wheel file")
        members = {
            "setup.sh": (
                SETUP_SH.replace(
                    "$ALLOWED", repr(["numpy", "torch"] if rubric.uses_torch else ["numpy"])
                ).encode(),
                True,
            ),
            "run_autograder": (RUN_AUTOGRADER.encode(), True),
            "requirements.txt": (requirements.encode(), False),
            "rubric.toml": (rubric.text.encode("utf-8"), False),
            wheel.name: (wheel.read_bytes(), False),
        }
        with atomic_path(out) as tmp_zip, zipfile.ZipFile(tmp_zip, "w") as zf:
            for name, (data, executable) in members.items():
                _add(zf, name, data, executable)
    return list(members)
