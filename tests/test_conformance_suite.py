"""The conformance suite's machinery: goldens, adapters that misbehave, expectations, report."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np

from conformance import golden
from conformance.mutants import MUTANTS

ROOT = Path(__file__).resolve().parents[1]


def grade(
    tmp_path: Path, impl: str, *extra: str, block_torch: bool = False
) -> tuple[int, str, dict[str, Any]]:
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
    # the adapters of these tests are built on the reference: the worker runs as this user
    env = {**os.environ, "DL_CH2_ISOLATION": "process"}
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=600, env=env)
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
        r"rtol=1e-10, atol=1e-12",
        out,
    )
    assert "largest absolute difference" in out and "largest relative difference" in out
    assert "reproduce with:" in out and "impl = load_adapter('conformance.mutants:relu_abs')" in out


FAKE = """
import numpy as np
from conformance.adapter import CAPABILITIES, VERBS

MODE = {mode!r}


def _verb(name):
    def verb(*args, **kwargs):
        if MODE == "stub":
            raise NotImplementedError(name)
        if MODE == "identity":
            return args[0] if args else None
        first = next((a for a in args if isinstance(a, np.ndarray)), None)
        return np.zeros_like(first) if first is not None else 0.0
    return verb


class Fake:
    name = MODE
    version = "0"
    devices = ("cpu",)
    dtypes = ("float64",)
    capabilities = frozenset(CAPABILITIES) - {{"mnist_training"}}

    def __getattr__(self, name):
        if MODE == "stub" and name in VERBS["core"][:2]:
            raise AttributeError(name)  # missing
        if MODE != "stub" and name == "asarray":
            return lambda x, dtype=None: np.array(x, dtype=dtype)
        if MODE != "stub" and name == "to_numpy":
            return np.asarray
        if any(name in verbs for verbs in VERBS.values()):
            return _verb(name)
        raise AttributeError(name)


ADAPTER = Fake()
"""


def _score(report: dict[str, Any]) -> tuple[int, int]:
    passed = sum(s["passed"] for s in report["sections"].values())
    failed = sum(s["failed"] for s in report["sections"].values())
    return passed, failed


def test_a_stub_scores_exactly_zero_and_a_zeros_or_identity_adapter_at_most_5_percent(
    tmp_path: Path,
) -> None:
    scores = {}
    for mode in ("stub", "zeros", "identity"):
        path = tmp_path / f"{mode}.py"
        path.write_text(FAKE.format(mode=mode))
        rc, out, report = grade(tmp_path, str(path))
        assert rc == 1, out[-2000:]
        passed, failed = _score(report)
        assert passed + failed > 100, out[-2000:]
        scores[mode] = (passed, passed + failed)
        if mode != "stub":
            winners = [r["id"] for r in report["specs"] if r["outcome"] == "passed"]
            assert passed <= 0.05 * (passed + failed), (mode, winners)
    assert scores["stub"][0] == 0, scores


REJECTS_WITH = """
from conformance.adapters.numpy_ref import NumpyAdapter


def _raises(error, verb):
    def reject(self, *args):
        try:
            return getattr(NumpyAdapter(), verb)(*args)
        except Exception as exc:
            raise error(str(exc)) from None
    return reject


class Adapter(NumpyAdapter):
    name = "rejects-with-various-errors"
    dot = _raises(NotImplementedError, "dot")
    stretch = _raises(AttributeError, "stretch")
    naive_vector_dot = _raises(RuntimeError, "naive_vector_dot")  # torch's kind
    vector_add = _raises(ValueError, "vector_add")


ADAPTER = Adapter()
"""


def test_a_rejection_counts_only_with_an_error_that_is_not_a_broken_one(tmp_path: Path) -> None:
    path = tmp_path / "rejects_with.py"
    path.write_text(REJECTS_WITH)
    rc, out, report = grade(tmp_path, str(path), "-k", "reject")
    assert rc == 1, out[-2000:]
    outcome = {r["id"].split("::")[-1]: r["outcome"] for r in report["specs"]}
    dots = [o for k, o in outcome.items() if k.startswith("test_dot_rejects")]
    assert dots and set(dots) == {"failed"}, outcome  # NotImplementedError
    assert outcome["test_stretch_rejects_a_target_whose_trailing_axes_differ"] == "failed"
    assert outcome["test_vector_addition_rejects_points_of_different_shapes"] == "passed"
    naive = [o for k, o in outcome.items() if "reject_bad_shapes[naive_vector_dot" in k]
    assert naive == ["passed"], outcome  # RuntimeError is a rejection
    assert "not implemented or broken, not a rejection" in out


BROKEN_TORCH = """
import torch
from conformance.adapters.torch_port import TorchAdapter

class Broken(TorchAdapter):
    def relu(self, x):
        return x.abs()  # a planted bug

    def dot(self, x, y):
        if x.ndim == 4:
            raise ValueError("planted: no rank-4 dot")
        return super().dot(x, y)

ADAPTER = Broken("cpu")
"""


def _snippet(message: str) -> str:
    body = message.split("reproduce with:\n", 1)[1]
    lines = []
    for line in body.splitlines():
        if not line.startswith("    "):
            break
        lines.append(line[4:])
    return "\n".join(lines)


def test_the_repro_snippet_of_a_failing_torch_spec_runs_and_shows_the_same_failure(
    tmp_path: Path,
) -> None:
    path = tmp_path / "broken_torch.py"
    path.write_text(BROKEN_TORCH)
    rc, out, _ = grade(tmp_path, str(path), "-k", "test_elementwise_golden or test_dot_golden")
    assert rc == 1
    # a wrong value: the snippet's printed result has the reported value at the reported index
    m = re.search(r"largest absolute difference \S+ at \[(\d+), (\d+)\]: got (\S+), expected", out)
    assert m, out[-3000:]
    i, j, got = int(m[1]), int(m[2]), float(m[3])
    start = out.index("relu on golden case")
    snippet = _snippet(out[start:])
    assert "impl.asarray(np.array([[" in snippet and "tensor(" not in snippet
    # run in the submission's folder, it imports the student's file by its name (issue 27)
    assert "from broken_torch import ADAPTER as impl" in snippet and "conformance" not in snippet
    run = subprocess.run(
        [sys.executable, "-c", snippet + "\nimport sys; sys.stdout.flush()"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    namespace: dict[str, Any] = {}
    sys.path.insert(0, str(tmp_path))
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            exec(snippet, namespace)  # the snippet the suite printed
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("broken_torch", None)
    var = [ln for ln in snippet.splitlines() if " = impl.relu(" in ln][-1].split(" = ")[0]
    result = namespace["impl"].to_numpy(namespace[var])
    assert result[i, j] == got
    # an exception: running the snippet raises the same error
    start = out.index("dot(...) raised ValueError: planted: no rank-4 dot")
    snippet = _snippet(out[start:])
    run = subprocess.run(
        [sys.executable, "-c", snippet], capture_output=True, text=True, cwd=tmp_path, timeout=120
    )
    assert run.returncode != 0 and "ValueError: planted: no rank-4 dot" in run.stderr


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


RECORDER = """
import json, os
from conformance.adapter import VERBS
from conformance.adapters.numpy_ref import NumpyAdapter

LOG = {log!r}
ALL = {{v for verbs in VERBS.values() for v in verbs}}


class Recorder(NumpyAdapter):
    name = "recorder"

    def __getattribute__(self, name):
        value = object.__getattribute__(self, name)
        if name in ALL and callable(value):
            def logged(*args, **kwargs):
                with open(LOG, "a") as f:
                    f.write(json.dumps(name) + "\\n")
                return value(*args, **kwargs)
            return logged
        return value


ADAPTER = Recorder()
"""

#: words in spec names that name a verb without spelling it
ALIASES = {
    "vector_addition": "vector_add",
    "rotation": "rotate",
    "rmsprop": "rmsprop_step",
    "slicing": "getitem",
    "crops": "getitem",
    "batch_generator": "batches",
}


def test_every_scored_spec_calls_the_implementation_and_the_verbs_its_name_names(
    tmp_path: Path,
) -> None:
    from conformance.adapter import VERBS

    # the adapter runs in a worker, which cannot tell one spec from the next: each spec's
    # verbs come from the grader's call log (the report), checked against what the worker
    # actually ran (the adapter's own log)
    log = tmp_path / "calls.jsonl"
    path = tmp_path / "recorder.py"
    path.write_text(RECORDER.format(log=str(log)))
    rc, out, report = grade(tmp_path, str(path))
    assert rc == 0, out[-3000:]
    ran = {json.loads(line) for line in log.read_text().splitlines()}
    called = {s["id"].split("::", 1)[-1]: set(s.get("verbs") or []) for s in report["specs"]}
    assert set().union(*called.values()) - {"to_numpy"} == ran - {"to_numpy"}
    verbs = sorted({v for vs in VERBS.values() for v in vs}, key=len, reverse=True)
    problems = []
    for spec in report["specs"]:
        name = spec["id"].split("::", 1)[-1]
        got = called.get(name, set())
        if not got - {"asarray", "to_numpy"}:
            problems.append(f"{name} calls no verb of the implementation")
        text = name
        for word, verb in [*((v, v) for v in verbs), *ALIASES.items()]:
            pattern = rf"(?<![a-z0-9]){word}(?![a-z0-9])"
            if re.search(pattern, text):
                text = re.sub(pattern, "#", text)
                if verb not in got:
                    problems.append(f"{name} names {word!r} but never calls {verb}")
    assert not problems, "\n".join(problems)


FLOAT32_INSIDE = """
import numpy as np
from conformance.adapters.numpy_ref import NumpyAdapter


class Float32Inside(NumpyAdapter):
    name = "float32-inside"

    def add(self, x, y):
        return (x.astype(np.float32) + y.astype(np.float32)).astype(x.dtype)

    def dot(self, x, y):
        return np.dot(x.astype(np.float32), y.astype(np.float32)).astype(x.dtype)


ADAPTER = Float32Inside()
"""


def test_float32_arithmetic_fails_a_float64_grade(tmp_path: Path) -> None:
    path = tmp_path / "f32.py"
    path.write_text(FLOAT32_INSIDE)
    rc, out, report = grade(tmp_path, str(path), "-k", "golden")
    assert rc == 1, out[-2000:]
    failed = {r["id"].split("::")[-1] for r in report["specs"] if r["outcome"] == "failed"}
    assert "test_elementwise_golden[add]" in failed
    assert {f"test_dot_golden[dot_{c}]" for c in ("vector", "matrix_matrix")} <= failed, failed


PORT_BROKEN = """
import dl_ch2
from conformance.adapters.torch_port import CPU as ADAPTER

# plant a bug in the port's own functions: the torch adapter must notice each one
dl_ch2.vector_add = lambda a, b: a - b
dl_ch2.rotate = lambda points, theta: points.clone()
dl_ch2.stretch = lambda y, shape: y.expand(*shape).clone() * 2
dl_ch2.preprocess = lambda images: images.reshape(len(images), 784).astype("float32")
dl_ch2.sgd_path = lambda grad, w0, lr, steps, **kw: [float(w0)] * (steps + 1)
dl_ch2.fit = lambda model, images, labels, **kw: dl_ch2.History([[0.0]])
dl_ch2.evaluate = lambda model, images, labels, batch_size=None: 0.5
dl_ch2.keras_sgd_update = lambda w, g, v, lr, m=0.0, nesterov=False: (w - lr * g, v)
"""


def test_the_torch_adapter_grades_the_ports_own_functions(tmp_path: Path) -> None:
    path = tmp_path / "port_broken.py"
    path.write_text(PORT_BROKEN)
    words = "vector_addition or rotation or stretch or preprocess or sgd_path or fit or evaluate"
    rc, out, report = grade(tmp_path, str(path), "-k", f"{words} or momentum_rules")
    assert rc == 1, out[-2000:]
    failed = {
        r["id"].split("::")[-1].split("[")[0] for r in report["specs"] if r["outcome"] == "failed"
    }
    for spec in (
        "test_vector_addition_of_the_two_points_of_figure_2_6_in_both_orders",
        "test_rotation_by_theta_turns_row_vectors_counter_clockwise",
        "test_stretch_repeats_the_vector_into_32_rows_and_adding_it_equals_broadcasting",
        "test_preprocess_reshapes_to_n_by_784_float32_divided_by_255",
        "test_sgd_path_on_a_curve_converges_crawls_diverges",
        "test_fit_runs_2_epochs_in_order_with_a_short_last_batch",
        "test_evaluate_batch_by_batch_counts_every_sample",
        "test_momentum_rules_over_20_steps",
    ):
        assert spec in failed, (spec, sorted(failed))
