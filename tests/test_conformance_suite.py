"""The conformance suite's machinery: goldens, adapters that misbehave, expectations, report."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np

from conformance import golden
from conformance.mutants import MUTANTS

ROOT = Path(__file__).resolve().parents[1]


def grade(
    tmp_path: Path, impl: str, *extra: str, block_torch: bool = False
) -> tuple[int, str, dict]:
    report = tmp_path / "report.json"
    args = [
        "conformance",
        "-p",
        "no:cacheprovider",
        "--impl",
        impl,
        "--report-json",
        str(report),
        "-m",
        "not slow",
        *extra,
    ]
    if block_torch:
        code = (
            "import sys; sys.modules['torch'] = None; import pytest; "
            f"sys.exit(pytest.main({args!r}))"
        )
        cmd = [sys.executable, "-c", code]
    else:
        cmd = [sys.executable, "-m", "pytest", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=600)
    data = json.loads(report.read_text()) if report.exists() else {}
    return proc.returncode, proc.stdout + proc.stderr, data


def test_regenerating_goldens_reproduces_the_committed_files() -> None:
    arrays, manifest = golden.build_cases()
    committed_manifest = json.loads((golden.GOLDEN_DIR / "manifest.json").read_text())
    assert manifest == committed_manifest
    with np.load(golden.GOLDEN_DIR / "cases.npz", allow_pickle=False) as z:
        assert sorted(z.files) == sorted(arrays)
        for key in z.files:
            np.testing.assert_allclose(z[key], arrays[key], rtol=1e-12, atol=1e-15, err_msg=key)
            assert z[key].dtype == arrays[key].dtype


def test_at_least_15_mutants() -> None:
    assert len(MUTANTS) >= 15


def test_numpy_reference_grades_without_torch(tmp_path: Path) -> None:
    rc, out, report = grade(tmp_path, "numpy", "-k", "s2_3 or s2_5", block_torch=True)
    assert rc == 0, out[-3000:]
    assert report["implementation"]["name"] == "numpy-reference"
    assert report["sections"]["2.3"]["failed"] == 0 and report["sections"]["2.3"]["passed"] > 20


BROKEN = """
import numpy as np
from conformance.adapters.numpy_ref import NumpyAdapter

class Broken(NumpyAdapter):
    name = "broken"
    capabilities = frozenset({"naive_ops"})          # claims no autodiff
    relu = None                                      # lacks a verb
    def add(self, x, y):
        raise RuntimeError("add exploded")           # raises
    def transpose(self, x):
        return "not an array"                         # wrong type

ADAPTER = Broken()
"""


def test_misbehaving_adapter_fails_specs_readably_without_crashing(tmp_path: Path) -> None:
    path = tmp_path / "broken.py"
    path.write_text(BROKEN)
    rc, out, report = grade(tmp_path, str(path), "-k", "s2_3 or s2_5")
    assert rc == 1, out[-2000:]
    assert "INTERNALERROR" not in out and "Traceback" not in out
    by_name = {r["id"].split("::")[-1]: r for r in report["specs"]}
    assert "lacks the verb 'relu'" in by_name["test_elementwise_golden[relu]"]["message"]
    assert (
        "add(...) raised RuntimeError: add exploded"
        in by_name["test_elementwise_golden[add]"]["message"]
    )
    assert "is a str" in by_name["test_transpose_300_by_20"]["message"]
    assert "wrong return type" in by_name["test_transpose_300_by_20"]["message"]
    assert by_name["test_model_gradients_golden"]["outcome"] == "not claimed"
    # the rest still ran and passed
    assert by_name["test_dot_is_not_symmetric"]["outcome"] == "passed"
    assert report["sections"]["2.5"]["not_claimed"] >= 5


def test_failure_message_stands_alone(tmp_path: Path) -> None:
    rc, out, _ = grade(tmp_path, "conformance.mutants:relu_abs", "-k", "test_elementwise_golden")
    assert rc == 1
    assert re.search(
        r"relu on golden case 'relu': \d+ of 2000 values differ beyond "
        r"rtol=1e-07, atol=1e-07",
        out,
    )
    assert "largest absolute difference" in out and "largest relative difference" in out
    assert "reproduce with:" in out and "impl = load_adapter('conformance.mutants:relu_abs')" in out


def test_expectation_file_skip_xfail_and_unmatched_warning(tmp_path: Path) -> None:
    exp = tmp_path / "expect.txt"
    exp.write_text(
        textwrap.dedent("""
        # comments and blank lines are fine
        skip   *test_transpose_300_by_20*     # not relevant to us
        xfail  *test_elementwise_golden*relu*  # known bug 7
        skip   *test_does_not_exist*           # stale entry
    """)
    )
    rc, out, report = grade(
        tmp_path,
        "conformance.mutants:relu_abs",
        "-k",
        "elementwise or transpose_300",
        "--expectations",
        str(exp),
    )
    assert rc == 0, out[-2000:]
    outcomes = {r["id"].split("::")[-1]: r["outcome"] for r in report["specs"]}
    assert outcomes["test_transpose_300_by_20"] == "skipped"
    assert outcomes["test_elementwise_golden[relu]"] == "xfailed"
    assert any("test_does_not_exist" in w for w in report["warnings"])
    bad = tmp_path / "bad.txt"
    bad.write_text("skip *x*\n")  # no comment: refused
    rc, out, _ = grade(tmp_path, "numpy", "--expectations", str(bad))
    assert rc != 0 and "# why" in out


def test_report_header_and_markdown(tmp_path: Path) -> None:
    md = tmp_path / "card.md"
    rc, out, report = grade(tmp_path, "numpy", "-k", "s2_2", "--report-md", str(md))
    assert rc == 0
    assert "dl-ch2 conformance suite 0.1.0" in out
    assert "implementation: numpy-reference 0.1.0 (--impl numpy)" in out
    assert "device: cpu; dtype: float64" in out and "python 3." in out
    text = md.read_text()
    assert "| §2.2 Data representations |" in text and "| **all** |" in text
    assert report["schema"] == "dl-ch2-conformance-report/2"
    assert {"implementation", "suite_version", "device", "dtype", "sections", "specs"} <= set(
        report
    )


def test_readme_worked_adapter_is_the_example_and_passes(tmp_path: Path) -> None:
    readme = (ROOT / "conformance" / "README.md").read_text()
    example = (ROOT / "conformance" / "examples" / "student_numpy.py").read_text()
    blocks = re.findall(r"```python\n(.*?)```", readme, flags=re.S)
    assert example in blocks, "the README's worked adapter drifted from examples/student_numpy.py"
    code_lines = [
        ln for ln in example.splitlines() if ln.strip() and not ln.strip().startswith("#")
    ]
    assert len(code_lines) < 150
    path = tmp_path / "adapter_from_readme.py"
    path.write_text(next(b for b in blocks if "class StudentAdapter" in b))
    rc, out, report = grade(tmp_path, str(path))
    assert rc == 0, out[-3000:]
    assert all(s["failed"] == 0 for s in report["sections"].values())
    assert report["sections"]["2.1"]["not_claimed"] >= 0


def test_mutant_runner_kills_and_prints_matrix(tmp_path: Path) -> None:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "conformance.mutants",
            "relu_abs",
            "last_batch_dropped",
            "--out",
            str(tmp_path / "km.md"),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=600,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "2 of 2 mutants killed" in out.stdout
    matrix = (tmp_path / "km.md").read_text()
    assert "| relu_abs | relu implemented as abs |" in matrix and "**NO**" not in matrix
