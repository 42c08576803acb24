"""Issue 14, the tools: the CLI under bad input, and runs that are never lost.

Every CLI failure is one line on stderr naming the option, exit 2 for a usage error and 1
for a runtime one, and the output location is checked before any work.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from test_figures_and_main_job import small_mnist

from dl_ch2.training_loop import History, NonFiniteLossError
from dl_ch2_tools import main_job
from dl_ch2_tools.cli import main


def one_error_line(err: str) -> str:
    """The whole of stderr must be one line, with no traceback."""
    assert "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1, err
    return lines[0]


def no_data(root: object = None) -> Any:
    raise AssertionError("MNIST was loaded: the bad input was not refused before any work")


@pytest.mark.parametrize(
    ("argv", "option", "needle"),
    [
        (["train", "--model", "keras", "--batch-size", "0"], "--batch-size", ">= 1, got 0"),
        (["train", "--learning-rate", "nan"], "--learning-rate", "positive and finite"),
        (["train", "--learning-rate", "-1"], "--learning-rate", "positive and finite"),
        (["train", "--learning-rate", "inf"], "--learning-rate", "positive and finite"),
        (["train", "--learning-rate", "0.1x"], "--learning-rate", "expected a number"),
        (["train", "--seed", str(10**23)], "--seed", "[0, 2**64 - 1]"),
        (["train", "--seed", "-1"], "--seed", "[0, 2**64 - 1]"),
        (["train", "--epochs", "0"], "--epochs", ">= 1, got 0"),
        (["train", "--model", "resnet"], "--model", "invalid choice"),
        (["train", "--backend", "numpy", "--compile"], "--compile", "--backend torch"),
        (["demo", "--samples", "-5"], "--samples", ">= 1, got -5"),
        (["demo", "--learning-rate", "0"], "--learning-rate", "positive and finite"),
        (["bench", "--repeats", "0"], "--repeats", ">= 1, got 0"),
        (["bench", "--device", "tpu"], "--device", "not a valid torch device"),
        (["bench", "--only", "nosuch"], "--only", "book_fit"),
        (["bench", "--samples", "10"], "--samples", ">= 128"),
        (["demo", "--device", "tpu"], "--device", "not a valid torch device"),
        (["evaluate", "--weights", "no/such.safetensors"], "--weights", "is not a file"),
        (["evaluate"], "--weights", "required"),
    ],
)
def test_usage_errors_are_one_line_naming_the_option_exit_2(
    argv: list[str],
    option: str,
    needle: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr(main_job, "load_mnist", no_data)
    assert main(argv) == 2
    line = one_error_line(capsys.readouterr().err)
    assert line.startswith("dl-ch2 ") and option in line and needle in line


def test_seed_at_the_top_of_its_range_is_accepted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(main_job, "load_mnist", lambda root=None: small_mnist(60, 20))
    argv = ["train", "--epochs", "1", "--no-figures", "--seed", str(2**64 - 1)]
    assert main([*argv, "--out", str(tmp_path / "run")]) == 0
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["seed"] == 2**64 - 1


def test_figures_out_naming_a_file_is_refused_before_loading_data(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from dl_ch2_tools import mnist

    monkeypatch.setattr(mnist, "load_mnist", no_data)
    afile = tmp_path / "a-file"
    afile.write_text("x")
    assert main(["figures", "--out", str(afile)]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert "argument --out" in line and "not a directory" in line


def test_train_out_naming_a_file_is_refused_before_any_work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(main_job, "load_mnist", no_data)
    afile = tmp_path / "a-file"
    afile.write_text("keep me")
    assert main(["train", "--out", str(afile)]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert "argument --out" in line and str(afile) in line and "not a directory" in line
    assert afile.read_text() == "keep me"


def _read_only_folder(tmp_path: Path) -> Path:
    """A folder this process cannot create files in (root ignores mode bits: use sysfs)."""
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    if not os.access(folder, os.W_OK):
        return folder
    sysfs = Path("/sys/kernel")
    if sysfs.is_dir() and not os.access(sysfs, os.W_OK):  # pragma: no cover - depends
        return sysfs
    try:  # root: even 0o555 is writable; sysfs refuses new files to everyone
        (sysfs / ".dl-ch2-probe").touch()
    except OSError:
        return sysfs
    pytest.skip("no read-only folder available to this user")  # pragma: no cover


def test_train_out_in_a_read_only_folder_is_refused_before_any_work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(main_job, "load_mnist", no_data)
    folder = _read_only_folder(tmp_path)
    try:
        assert main(["train", "--out", str(folder)]) == 2
    finally:
        (tmp_path / "ro").chmod(0o755)
    line = one_error_line(capsys.readouterr().err)
    assert "argument --out" in line and "not writable" in line


def test_out_holding_an_earlier_run_is_refused_unless_force(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.json").write_text('{"earlier": true}\n')
    monkeypatch.setattr(main_job, "load_mnist", no_data)
    assert main(["train", "--out", str(run)]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert "argument --out" in line and "--force" in line and "metrics.json" in line
    assert json.loads((run / "metrics.json").read_text()) == {"earlier": True}

    monkeypatch.setattr(main_job, "load_mnist", lambda root=None: small_mnist(60, 20))
    argv = ["train", "--model", "naive", "--epochs", "1", "--no-figures", "--out", str(run)]
    assert main([*argv, "--force"]) == 0
    assert "naive" in json.loads((run / "metrics.json").read_text())


def _quick(tmp_path: Path, **kw: Any) -> main_job.TrainConfig:
    return main_job.TrainConfig(
        model="naive",
        epochs=1,
        batch_size=32,
        figures=False,
        runs_root=tmp_path / "runs",
        **kw,
    )


def test_without_out_each_run_gets_its_own_folder_and_latest_points_at_the_newest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(main_job, "load_mnist", lambda root=None: small_mnist(60, 20))
    frozen = time.struct_time((2026, 1, 2, 3, 4, 5, 4, 2, 0))
    monkeypatch.setattr(time, "gmtime", lambda *a: frozen)  # both runs in the same second
    runs = tmp_path / "runs"
    main_job.run_train(_quick(tmp_path, seed=1))
    main_job.run_train(_quick(tmp_path, seed=2))
    folders = sorted(p.name for p in runs.iterdir() if not p.is_symlink())
    assert folders == ["20260102-030405", "20260102-030405-1"]
    seeds = [json.loads((runs / f / "metrics.json").read_text())["seed"] for f in folders]
    assert seeds == [1, 2]
    latest = runs / "latest"
    assert latest.is_symlink() and os.readlink(latest) == "20260102-030405-1"
    assert json.loads((latest / "metrics.json").read_text())["seed"] == 2
    assert [p.name for p in runs.iterdir() if p.name.startswith(".")] == []  # no temp links


def test_a_legacy_latest_folder_is_kept_not_overwritten(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(main_job, "load_mnist", lambda root=None: small_mnist(60, 20))
    legacy = tmp_path / "runs" / "latest"
    legacy.mkdir(parents=True)
    (legacy / "metrics.json").write_text('{"old": 1}\n')
    main_job.run_train(_quick(tmp_path))
    kept = [p for p in (tmp_path / "runs").glob("*-legacy") if p.is_dir()]
    assert len(kept) == 1 and json.loads((kept[0] / "metrics.json").read_text()) == {"old": 1}
    assert legacy.is_symlink()


def test_a_failed_run_leaves_no_empty_folder_and_moves_no_latest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(root: object = None) -> Any:
        raise OSError("disk on fire (test)")

    monkeypatch.setattr(main_job, "load_mnist", broken)
    with pytest.raises(OSError, match="disk on fire"):
        main_job.run_train(_quick(tmp_path))
    assert [p.name for p in (tmp_path / "runs").iterdir()] == []


@pytest.mark.parametrize(
    ("field", "value", "error"),
    [
        ("epochs", 0, ValueError),
        ("batch_size", 0, ValueError),
        ("learning_rate", -1.0, ValueError),
        ("learning_rate", float("nan"), ValueError),
        ("learning_rate", "0.1", TypeError),
        ("seed", 2**64, ValueError),
        ("seed", 1.5, TypeError),
    ],
)
def test_the_api_checks_its_config_before_any_work(
    field: str,
    value: object,
    error: type[Exception],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(main_job, "load_mnist", no_data)
    cfg = _quick(tmp_path)
    setattr(cfg, field, value)
    with pytest.raises(error, match=field):
        main_job.run_train(cfg)
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize(
    "exc",
    [
        ZeroDivisionError("division by zero"),
        RuntimeError("mat1 and mat2 shapes cannot be multiplied"),
        TypeError("unsupported operand"),
        OSError(28, "No space left on device"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_runtime_errors_are_one_line_exit_1(
    exc: Exception,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    def boom(root: object = None) -> Any:
        raise exc

    monkeypatch.setattr(main_job, "load_mnist", boom)
    assert main(["train", "--out", str(tmp_path / "run")]) == 1
    line = one_error_line(capsys.readouterr().err)
    assert line.startswith("dl-ch2 train: error: ") and str(exc).split(":")[0] in line


def test_a_diverging_run_is_one_line_naming_the_learning_rate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(main_job, "load_mnist", lambda root=None: small_mnist(60, 20))

    def diverging_fit(*args: object, **kwargs: object) -> History:
        raise NonFiniteLossError(0, 3, float("nan"))

    monkeypatch.setattr(main_job, "fit", diverging_fit)
    argv = ["train", "--model", "naive", "--learning-rate", "1e6", "--out", str(tmp_path / "r")]
    assert main(argv) == 1
    line = one_error_line(capsys.readouterr().err)
    assert "NonFiniteLossError" in line and "epoch 0, batch 3" in line
    assert "--learning-rate 1000000.0" in line


def test_compile_is_passed_to_both_trainers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(main_job, "load_mnist", lambda root=None: small_mnist(60, 20))
    seen: dict[str, dict[str, object]] = {}

    def fake_fit(*args: object, **kwargs: object) -> History:
        seen["fit"] = kwargs
        return History(batch_losses=[[2.3, 2.2]])

    def fake_train_first_example(*args: object, **kwargs: object) -> list[float]:
        seen["train_first_example"] = kwargs
        return [0.5]

    monkeypatch.setattr(main_job, "fit", fake_fit)
    monkeypatch.setattr(main_job, "train_first_example", fake_train_first_example)
    base = ["train", "--epochs", "1", "--no-figures"]
    assert main([*base, "--compile", "--out", str(tmp_path / "a")]) == 0
    assert seen["fit"].get("compile") is True
    assert seen["train_first_example"].get("compile") is True
    assert json.loads((tmp_path / "a" / "metrics.json").read_text())["compile"] is True
    seen.clear()
    assert main([*base, "--out", str(tmp_path / "b")]) == 0
    assert not seen["fit"].get("compile") and not seen["train_first_example"].get("compile")


def test_the_numpy_backend_imports_the_reference_only_inside_functions() -> None:
    source = Path(main_job.__file__).read_text()
    for node in ast.parse(source).body:  # module level only: the atomic writer, nothing else
        if isinstance(node, ast.Import):
            assert not any(a.name.startswith("conformance") for a in node.names)
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("conformance"):
            assert node.module == "conformance.atomic"
    assert "import conformance.reference" in source  # the lazy import is still there


def test_demo_on_an_unavailable_device_is_a_usage_error(
    capsys: pytest.CaptureFixture[str],
) -> None:
    if torch.cuda.is_available():
        pytest.skip("CUDA is present here")
    assert main(["demo", "--device", "cuda:0"]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert "argument --device" in line and "CUDA" in line


def test_grade_keeps_its_usage_exit_code_for_a_bad_adapter(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import conformance.__main__ as conformance_main

    def bad_adapter(*args: object, **kwargs: object) -> int:
        raise ValueError("adapter 'nope.py' does not exist")

    monkeypatch.setattr(conformance_main, "grade", bad_adapter)
    assert main(["grade", "nope.py"]) == 2
    assert "nope.py" in one_error_line(capsys.readouterr().err)


@pytest.mark.mnist
@pytest.mark.usefixtures("mnist_present")
def test_train_stopped_by_sigterm_says_so_and_leaves_no_empty_run_folder(
    tmp_path: Path, sigterm_once_training: Callable[..., tuple[int, str]]
) -> None:
    # a scheduler's or `timeout`'s SIGTERM: one line, exit 143 (128 + 15), and the run
    # folder made for this run is removed while nothing was saved in it
    out = tmp_path / "run"
    train = ["train", "--model", "naive", "--epochs", "3", "--no-figures", "--out", str(out)]
    status, stderr = sigterm_once_training(["-m", "dl_ch2_tools", *train])
    assert status == 143, stderr
    assert stderr.strip().splitlines() == ["dl-ch2 train: stopped by SIGTERM"]
    assert not out.exists()


# --- issue 23: every option explains itself and shows its default --------------------------

#: The commands of the tool itself; grade and the course-staff commands are conformance's.
OWN_COMMANDS = ("demo", "data", "train", "evaluate", "figures", "bench")


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    from dl_ch2_tools.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return {name: sub.choices[name] for name in OWN_COMMANDS}


@pytest.mark.parametrize("command", OWN_COMMANDS)
def test_every_option_has_help_and_shows_its_default(
    command: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "300")  # no wrapping inside a default ("bench-out")
    parser = _subparsers()[command]
    text = " ".join(parser.format_help().split())
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        name = action.option_strings[0] if action.option_strings else action.dest
        assert action.help, f"{command} {name} has no help text"
        default = action.default
        if default is None or default is False:
            continue  # nothing to show: the help says what leaving it out means
        assert f"(default: {default})" in text, f"{command} {name}: default {default!r} not shown"


@pytest.mark.parametrize(
    ("argv", "option"),
    [(["train", "--compile"], "--compile"), (["train", "--backend", "numpy"], "--backend")],
)
def test_torchrun_only_checks_live_in_the_main_job_and_exit_2(
    argv: list[str],
    option: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    from dl_ch2_tools.options import OptionError

    for key, value in (
        ("RANK", "0"),
        ("WORLD_SIZE", "2"),
        ("MASTER_ADDR", "x"),
        ("MASTER_PORT", "1"),
    ):
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(main_job, "load_mnist", no_data)
    cfg = main_job.TrainConfig(
        compile="--compile" in argv, backend=argv[-1] if option == "--backend" else "torch"
    )
    with pytest.raises(OptionError, match=option) as info:
        main_job.validate_config(cfg)
    assert info.value.option == option
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    line = one_error_line(capsys.readouterr().err)
    assert f"argument {option}:" in line and "torchrun" in line
