"""Failure messages name what a verb returned and which must-raise input it accepted (issue 22)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from conformance.harness import Impl


class Fake:
    name = "fake"
    capabilities = frozenset()

    def __init__(self, result: Any) -> None:
        self.result = result

    def asarray(self, x: np.ndarray, dtype: str | None = None) -> np.ndarray:
        return np.array(x, dtype=dtype)

    def to_numpy(self, x: Any) -> np.ndarray:
        return np.asarray(x)

    def verb(self, x: Any) -> Any:
        if np.size(x) == 1:
            return x  # valid input
        if np.size(x) == 2:
            raise ValueError("refused")
        return self.result


def message(result: Any, *, rejected_first: bool = False) -> str:
    impl = Impl(Fake(result), "fake.py", "float64", "cpu")
    impl.call("verb", np.ones(1))
    if rejected_first:
        impl.rejects("verb", np.ones(2))
    with pytest.raises(pytest.fail.Exception) as info:
        impl.rejects("verb", np.ones(3))
    return str(info.value)


@pytest.mark.parametrize(
    ("result", "named"),
    [
        (None, "returned None;"),
        ((np.ones(2), np.ones(2)), "returned a tuple of 2 item(s);"),
        ([1.0], "returned a list of 1 item(s);"),
        (np.zeros((2, 3)), "returned an array of shape (2, 3) and dtype float64;"),
    ],
)
def test_an_accepted_invalid_input_names_what_came_back(result: Any, named: str) -> None:
    text = message(result)
    assert named in text
    assert "an array of shape ()" not in text


def test_the_message_says_which_must_raise_input_was_accepted() -> None:
    text = message(np.zeros(3), rejected_first=True)
    # the first must-raise call was refused; the second, of three ones, was accepted
    assert "must-raise call 2 of this spec: impl.verb(np.array([1.0, 1.0, 1.0]" in text


def test_a_verb_returning_none_is_named_as_none_where_an_array_was_expected() -> None:
    impl = Impl(Fake(None), "fake.py", "float64", "cpu")
    with pytest.raises(pytest.fail.Exception, match="the result of verb is None, not an array"):
        impl.run("verb", np.ones(3))
