"""Sessions: tests across the local torch builds, lint, typecheck, and the main job.

Run ``nox`` for the default sessions (what CI runs), ``nox -s train`` for the main job.
pip is the installer on purpose: the torch wheels lie on local disk and only pip finds them.
"""

from __future__ import annotations

import os

import nox
import nox.command

nox.options.sessions = [
    "tests",
    "conformance_ci",  # = conformance(numpy), conformance(torch-cpu), conformance(mutants)
    "lint",
    "typecheck",
]
nox.options.default_venv_backend = "virtualenv"
nox.options.error_on_missing_interpreters = True

#: The two torch builds available here: a CPU build, and a CUDA build with torchvision.
TORCH_BUILDS: dict[str, list[str]] = {
    "2.13.0": ["torch==2.13.0"],
    "2.14.1": ["torch==2.14.1", "torchvision==0.29.1"],
}

#: Without arguments, the second build skips the course-staff tools' tests (Gradescope
#: bundle, grade-all, the planted student bugs): they grade NumPy submissions in their own
#: processes without torch, so the torch build changes nothing there, and once (on 2.13.0)
#: keeps CI short. The companion notebook's run (test_notebook) and the notebooks graded as
#: written run once too, on 2.13.0 and in conformance_ci (with TensorFlow), and so do the
#: tests that import no torch (the NumPy reference, the grader's pieces, the suite's own) and
#: the train CLI under torchrun (the data-parallel step's tests run on both builds).
TORCH_BUILD_ARGS: dict[str, list[str]] = {
    "2.14.1": [
        "-k",
        "not (test_bundle or test_gradescope or test_grade_all or test_student_bugs"
        " or test_hostile_submissions or test_submission_forms or test_conformance_isolation"
        " or test_grading_issue29 or test_book_notebooks or test_notebook"
        # torch-independent: the NumPy reference, the grader's pieces, the suite's own tests
        " or test_reference.py or test_sandbox or test_starter or test_rubric or test_wire"
        " or test_harness_messages or test_mutation_classify or test_grading_layout"
        " or test_book_names or test_conformance_suite or test_book_starter"
        " or test_repro_snippets or test_grade_speed"
        # the CLI under torchrun: the data-parallel step's own tests run on this build
        " or test_train_cli)",
    ],
}


#: The tooling's libraries, pinned here (pyproject.toml gives only lower bounds); every
#: session that installs the package installs these first.
TOOL_PINS = ["filelock==4.3.2", "psutil==7.2.2"]

#: What runs the companion notebook (tests/test_notebook.py's shortened run, and
#: `nox -s notebook`): nbclient and a Python kernel, about 15 MB with their dependencies.
NOTEBOOK_PINS = ["nbclient==0.11.0", "ipykernel==7.4.0"]


@nox.session
@nox.parametrize("torch", list(TORCH_BUILDS), ids=list(TORCH_BUILDS))
def tests(session: nox.Session, torch: str) -> None:
    """Unit tests with pytest-xdist on one torch build."""
    session.install(*TORCH_BUILDS[torch])
    session.install(*TOOL_PINS, *NOTEBOOK_PINS)
    session.install(".[test,plot]")
    _fetch_mnist(session)
    session.run(
        "python",
        "-c",
        "import torch, dl_ch2; print('torch', torch.__version__, 'dl_ch2', "
        "dl_ch2.__version__, 'cuda', torch.cuda.is_available())",
    )
    args = session.posargs or TORCH_BUILD_ARGS.get(torch, [])
    session.run("pytest", "-n", "2", *args, env={"HYPOTHESIS_PROFILE": "ci"})


#: The oldest torch the project supports (pyproject's lower bound is its minor version;
#: 2.3 brought torch.compiler.is_compiling, which the loss's label check uses). It comes
#: from PyPI as a CUDA build (a 780 MB wheel plus about 2.5 GB of NVIDIA libraries, which
#: its import needs even on a CPU), built against NumPy 1.x: slow to install, so not among
#: the default sessions.
OLDEST_TORCH = "2.3.1"


@nox.session
def tests_oldest_torch(session: nox.Session) -> None:
    """Unit tests on the oldest supported torch (``nox -s tests_oldest_torch``; not by default)."""
    session.install(f"torch=={OLDEST_TORCH}", "numpy<2")
    session.install(*TOOL_PINS)
    session.install(".[test,plot]")
    _fetch_mnist(session)
    session.run(
        "python",
        "-c",
        "import numpy, torch; print('torch', torch.__version__, 'numpy', numpy.__version__)",
    )
    session.run("pytest", "-n", "2", *session.posargs, env={"HYPOTHESIS_PROFILE": "ci"})


def _fetch_mnist(session: nox.Session) -> None:
    """Fetch MNIST once into the shared per-user cache, so data-dependent tests run.

    Required under CI (CI=true); elsewhere a failure only means those tests skip.
    """
    if os.environ.get("CI"):
        session.run("dl-ch2", "data")
        return
    try:
        session.run("dl-ch2", "data")
    except nox.command.CommandFailed:
        session.warn("MNIST could not be fetched: data-dependent tests will skip")


CONFORMANCE_TARGETS = ["numpy", "torch-cpu", "torch-cuda", "mutants"]


@nox.session
@nox.parametrize("impl", CONFORMANCE_TARGETS, ids=CONFORMANCE_TARGETS)
def conformance(session: nox.Session, impl: str) -> None:
    """Grade an implementation with the conformance suite, or run the mutants."""
    session.install("torch==2.13.0")
    session.install(*TOOL_PINS)
    session.install(".[conformance,plot]")
    _fetch_mnist(session)
    _conformance_target(session, impl, session.posargs)


@nox.session(name="conformance_ci")
def conformance_ci(session: nox.Session) -> None:
    """What CI runs: grade numpy and torch-cpu, then the mutants, then real code as written
    with TensorFlow installed (``book_notebooks``' tests), in one virtualenv.

    The same commands as ``conformance(numpy)``, ``conformance(torch-cpu)``,
    ``conformance(mutants)`` and ``book_notebooks``; one install instead of four keeps a
    fresh CI short.
    """
    session.install("torch==2.13.0")
    session.install(*TOOL_PINS)
    session.install(".[test,conformance,plot]", TENSORFLOW)
    _fetch_mnist(session)
    for impl in ("numpy", "torch-cpu", "mutants"):
        _conformance_target(session, impl, [])
    session.run("pytest", "-n", "2", *BOOK_NOTEBOOK_TESTS)


def _conformance_target(session: nox.Session, impl: str, extra: list[str]) -> None:
    if impl == "torch-cuda":
        has_cuda = session.run(
            "python", "-c", "import torch; print(torch.cuda.is_available())", silent=True
        )
        if "True" not in str(has_cuda):
            session.skip("torch-cuda: no CUDA device here (torch.cuda.is_available() is False)")
    if impl == "mutants":
        session.run("python", "-m", "conformance", "mutants", *extra)
        return
    # the grading command itself: spawned xdist workers, per-spec timeouts, a budget, and
    # its exit codes (0 passed, 1 failures, 2 usage, 3 incomplete)
    session.run(
        "python",
        "-m",
        "conformance",
        "grade",
        impl,
        "-n",
        "2",
        f"--report-json=conformance-report-{impl}.json",
        f"--report-md=conformance-report-{impl}.md",
        *extra,
        env={"DL_CH2_HYPOTHESIS_PROFILE": "conformance-ci"},
    )


@nox.session
def grade(session: nox.Session) -> None:
    """Grade a third party's adapter: nox -s grade -- path/to/adapter.py [grade options].

    Options as `python -m conformance grade` (`--budget`, `--spec-timeout`, `-n`, ...); the
    session fails unless the grade is complete and passes (exit codes in conformance/README.md).
    """
    if not session.posargs:
        session.error("usage: nox -s grade -- <adapter module or path> [options]")
    session.install("torch==2.13.0")
    session.install(*TOOL_PINS)
    session.install(".[conformance]")
    session.run("python", "-m", "conformance", "grade", *session.posargs)


@nox.session
@nox.parametrize("target", ["numpy", "torch-cpu"], ids=["numpy", "torch-cpu"])
def mutation(session: nox.Session, target: str) -> None:
    """mutmut over the NumPy reference (numpy) or the port's chapter modules (torch-cpu).

    Not in the default run (up to an hour on 2 cores); see conformance/MUTATION.md. Extra
    arguments go to conformance/mutation/run.py (e.g. mutant name globs, --max-children 2).
    """
    session.install("torch==2.13.0")
    session.install(*TOOL_PINS)
    session.install(".[conformance,plot]", "mutmut==3.8.1", "pytest-timeout==2.4.0")
    session.run(
        "python",
        "-m",
        "conformance.mutation.run",
        "--target",
        target,
        *session.posargs,
        env={"DL_CH2_HYPOTHESIS_PROFILE": "conformance-ci"},
    )


@nox.session
def lint(session: nox.Session) -> None:
    """ruff check and ruff format --check."""
    session.install("ruff==0.17.6")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


#: TensorFlow for the notebooks graded as written (issue 27); the CPU build, ~1.5 GB.
TENSORFLOW = "tensorflow-cpu==2.21.0"


@nox.session(name="book_notebooks")
def book_notebooks(session: nox.Session) -> None:
    """Notebooks graded as written, with TensorFlow installed (issue 27): the seed's copy of
    the 2nd-edition notebook and our book-style TensorFlow notebook (the NumPy and PyTorch
    ones run in ``tests``, where the TensorFlow ones skip)."""
    session.install("torch==2.13.0")
    session.install(*TOOL_PINS)
    session.install(".[test,plot,conformance]")
    session.install(TENSORFLOW)
    session.run("pytest", "-n", "2", *BOOK_NOTEBOOK_TESTS, *session.posargs)


#: The TensorFlow notebooks graded as written: the seed's copy of the 2nd edition, ours.
BOOK_NOTEBOOK_TESTS = ["tests/test_book_notebooks.py", "-k", "tf or seed"]


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy --strict on the package."""
    session.install(
        "torch==2.13.0",
        "mypy==2.4.1",
        "numpy",
        "tqdm",
        "types-tqdm",
        "pytest",
        "hypothesis",
        *TOOL_PINS,
    )
    session.run("mypy", "dl_ch2", "dl_ch2_tools", "conformance")


@nox.session
def train(session: nox.Session) -> None:
    """The main job: fetch MNIST, train both of the chapter's networks into runs/<timestamp>/.

    ``runs/latest`` points at the newest run; its saved weights are then reloaded and
    evaluated (``dl-ch2 evaluate --weights``).

    Extra arguments go to `dl-ch2 train`, e.g. `nox -s train -- --backend numpy --seed 1`.
    """
    session.install("torch==2.13.0")
    session.install(*TOOL_PINS)
    session.install(".[plot]")
    session.run("dl-ch2", "data")
    session.run("dl-ch2", "train", *session.posargs)
    if not session.posargs:  # the saved weights reload to the accuracy the run printed
        for model in ("naive", "keras"):
            session.run("dl-ch2", "evaluate", "--weights", f"runs/latest/{model}.safetensors")


@nox.session
def notebook(session: nox.Session) -> None:
    """The companion notebook at full size: run notebooks/chapter02.ipynb top to bottom.

    Checks that the notebook is in sync with notebooks/chapter02.py, runs it (both of the
    chapter's trainings in full: minutes on a CPU), writes the executed notebook to
    runs/notebook/chapter02.ipynb and prints each cell's comparison with what the book
    printed; fails if one is outside its stated tolerance. Arguments go to
    `python -m dl_ch2_tools.notebook run` (`--out PATH`, `--quick`).
    """
    session.install("torch==2.13.0")
    session.install(*TOOL_PINS, *NOTEBOOK_PINS)
    session.install(".[test,plot]")
    session.run("dl-ch2", "data")
    session.run("python", "-m", "dl_ch2_tools.notebook", "check")
    session.run("python", "-m", "dl_ch2_tools.notebook", "run", *session.posargs)


@nox.session
def headline(session: nox.Session) -> None:
    """The chapter's headline numbers for 3 seeds on both backends (a report, ~5 min on CPU)."""
    session.install("torch==2.13.0")
    session.install(*TOOL_PINS)
    session.install(".")
    session.run("dl-ch2", "data")
    session.run("python", "benchmarks/headline.py", *session.posargs)


@nox.session
def bench(session: nox.Session) -> None:
    """Benchmarks: writes bench-out/bench.json and bench.md (args go to `dl-ch2 bench`).

    One run times the book path, the compiled path, the first example (eager and compiled),
    the idiomatic PyTorch loop and the NumPy reference against the GEMM floor, in interleaved
    rounds, and measures `dl-ch2 train`'s peak memory (book path, and --compile); about
    15 minutes on a quiet 2-core machine.
    """
    session.install("torch==2.13.0")
    session.install(*TOOL_PINS)
    session.install(".")
    _fetch_mnist(session)
    session.run("dl-ch2", "bench", *session.posargs)


@nox.session(name="grade_all_bench")
def grade_all_bench(session: nox.Session) -> None:
    """Throughput of grade-all (issue 13): 200 submissions on this machine, without torch.

    Not in the default run (about 20 minutes on 2 cores). Arguments go to the script, e.g.
    `nox -s grade_all_bench -- --n 20` for a quick look. Writes bench-out/grade-all/.
    """
    session.install("numpy", "pytest", "pytest-xdist", "pytest-timeout", "hypothesis")
    session.install("tqdm", "matplotlib", 'tomli; python_version < "3.11"')
    session.install(*TOOL_PINS)
    session.install("--no-deps", ".")  # dl-ch2 without torch: the suite grades NumPy code
    session.run("python", "benchmarks/grade_all_throughput.py", *session.posargs)


@nox.session(name="grade_time")
def grade_time(session: nox.Session) -> None:
    """One grade's wall and CPU time (issues 27 and 31): the NumPy reference, a student's .py,
    the TF seed and book notebooks with the default rubric; median of interleaved rounds.

    Not in the default run (about 3 minutes on 2 cores). Arguments go to the script
    (`--repeats`, `--only`). Writes bench-out/grade_time.json and prints the docs' table.
    """
    session.install("torch==2.13.0")
    session.install(*TOOL_PINS)
    session.install(".[conformance,plot]", TENSORFLOW)
    _fetch_mnist(session)
    session.run("python", "benchmarks/grade_time.py", *session.posargs)


@nox.session
def bench_distributed(session: nox.Session) -> None:
    """Data-parallel epoch time, 1 process against 2 under torchrun, and bytes all-reduced
    per step: writes bench-out/distributed.json (args go to benchmarks/distributed_bench.py).
    """
    session.install("torch==2.13.0")
    session.install(*TOOL_PINS)
    session.install(".")
    session.run("python", "benchmarks/distributed_bench.py", *session.posargs)
