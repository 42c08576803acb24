"""The dl-ch2 command: the synthetic demo end to end, and clear errors."""

from __future__ import annotations

import pytest
import torch

from dl_ch2_tools.cli import main, synthetic_digits


def test_demo_runs_and_learns(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--epochs", "2", "--samples", "3000", "--seed", "1"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[1] == "Epoch 0" and out[2].startswith("loss at batch 0: ")
    acc_line = next(line for line in out if line.startswith("accuracy: "))
    assert float(acc_line.split(": ")[1]) > 0.3  # chance is 0.1


def test_demo_rejects_unavailable_device(capsys: pytest.CaptureFixture[str]) -> None:
    if torch.cuda.is_available():
        pytest.skip("CUDA is present here")
    assert main(["demo", "--device", "cuda", "--epochs", "1"]) == 2
    assert "CUDA" in capsys.readouterr().err


def test_synthetic_digits_shape_range_and_determinism() -> None:
    a = synthetic_digits(50, generator=torch.Generator().manual_seed(0), device=torch.device("cpu"))
    b = synthetic_digits(50, generator=torch.Generator().manual_seed(0), device=torch.device("cpu"))
    assert a[0].shape == (50, 784) and a[0].dtype == torch.float32 and a[1].shape == (50,)
    assert float(a[0].min()) >= 0 and float(a[0].max()) <= 1
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


@pytest.mark.parametrize(
    "argv",
    [
        ["grade", "x.py", "--dtype", "float64", "--", "-k", "relu"],
        ["grade", "--dtype", "float64", "x.py", "--", "-k", "relu"],
        ["grade", "x.py", "--", "-k", "relu"],
    ],
)
def test_grade_passes_what_follows_the_double_dash_to_pytest_wherever_options_stand(
    argv: list[str],
) -> None:
    from dl_ch2_tools.cli import build_parser, parse_command

    args = parse_command(build_parser(), argv)
    assert (args.adapter, args.pytest_args) == ("x.py", ["-k", "relu"])
    assert args.dtype == ("float64" if "--dtype" in argv else None)
