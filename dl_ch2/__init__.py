"""dl_ch2: chapter 2 of *Deep Learning with Python* in PyTorch.

The chapter's modules, in the book's order:

- ``first_example`` (§2.1): the Keras model in PyTorch, ``preprocess``;
- ``data_representations`` (§2.2): tensors, their ranks, shapes and slices;
- ``tensor_operations`` (§2.3): the naive loops, broadcasting, ``dot``, reshape, geometry;
- ``gradients`` and ``momentum`` (§2.4): derivatives, the chain rule, SGD, momentum;
- ``naive_model``, ``batch_generator``, ``losses``, ``training_loop`` (§2.5): the model
  built from scratch, its batches, its loss, ``one_training_step``, ``fit``, ``evaluate``.

Beside them: ``loss_monitor`` (the checks on the training loss and their errors),
``distributed`` (data-parallel steps under torchrun), ``_checks`` (argument checks),
``_numpy_io`` (the book's NumPy arrays, made tensors at the top of ``fit``, ``evaluate``,
``predict`` and ``train_first_example``),
``_steps`` (the shape of a step) and ``_compile`` (the ``compile=True`` wrapper).

The tooling around them (MNIST fetching and ``load_mnist``, the ``dl-ch2`` CLI, the main
job, figures, benchmarks) is the separate package ``dl_ch2_tools``; the port never imports
it, nor the conformance suite. The book's names are re-exported here and imported on
first use, so ``import dl_ch2`` is cheap.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dl_ch2._checks import resolve_device
    from dl_ch2.batch_generator import BatchGenerator, num_batches
    from dl_ch2.first_example import (
        build_first_example_model,
        first_example_step,
        glorot_uniform_,
        keras_rmsprop,
        predict,
        preprocess,
        train_first_example,
    )
    from dl_ch2.gradients import (
        GradientTape,
        ScalarGraph,
        chain_rule,
        derivative,
        sgd_path,
        variable,
    )
    from dl_ch2.losses import sparse_categorical_crossentropy
    from dl_ch2.momentum import keras_sgd_update, naive_momentum_update
    from dl_ch2.naive_model import NaiveDense, NaiveSequential, build_naive_model, relu, softmax
    from dl_ch2.tensor_operations import (
        dot,
        naive_add,
        naive_add_matrix_and_vector,
        naive_matrix_dot,
        naive_matrix_vector_dot,
        naive_matrix_vector_dot_via_vector_dot,
        naive_relu,
        naive_vector_dot,
        reshape,
        rotate,
        rotation_matrix,
        stretch,
        transpose,
        vector_add,
    )
    from dl_ch2.training_loop import (
        DivergenceError,
        History,
        NonFiniteLossError,
        evaluate,
        fit,
        one_training_step,
        update_weights,
    )

__version__ = "0.1.0"

#: Where each re-exported name lives.
_EXPORTS: dict[str, str] = {
    "BatchGenerator": "dl_ch2.batch_generator",
    "DivergenceError": "dl_ch2.training_loop",
    "GradientTape": "dl_ch2.gradients",
    "History": "dl_ch2.training_loop",
    "NaiveDense": "dl_ch2.naive_model",
    "NaiveSequential": "dl_ch2.naive_model",
    "NonFiniteLossError": "dl_ch2.training_loop",
    "ScalarGraph": "dl_ch2.gradients",
    "build_first_example_model": "dl_ch2.first_example",
    "build_naive_model": "dl_ch2.naive_model",
    "chain_rule": "dl_ch2.gradients",
    "derivative": "dl_ch2.gradients",
    "dot": "dl_ch2.tensor_operations",
    "evaluate": "dl_ch2.training_loop",
    "first_example_step": "dl_ch2.first_example",
    "fit": "dl_ch2.training_loop",
    "glorot_uniform_": "dl_ch2.first_example",
    "keras_rmsprop": "dl_ch2.first_example",
    "keras_sgd_update": "dl_ch2.momentum",
    "naive_add": "dl_ch2.tensor_operations",
    "naive_add_matrix_and_vector": "dl_ch2.tensor_operations",
    "naive_matrix_dot": "dl_ch2.tensor_operations",
    "naive_matrix_vector_dot": "dl_ch2.tensor_operations",
    "naive_matrix_vector_dot_via_vector_dot": "dl_ch2.tensor_operations",
    "naive_momentum_update": "dl_ch2.momentum",
    "naive_relu": "dl_ch2.tensor_operations",
    "naive_vector_dot": "dl_ch2.tensor_operations",
    "num_batches": "dl_ch2.batch_generator",
    "one_training_step": "dl_ch2.training_loop",
    "predict": "dl_ch2.first_example",
    "preprocess": "dl_ch2.first_example",
    "relu": "dl_ch2.naive_model",
    "reshape": "dl_ch2.tensor_operations",
    "resolve_device": "dl_ch2._checks",
    "rotate": "dl_ch2.tensor_operations",
    "rotation_matrix": "dl_ch2.tensor_operations",
    "sgd_path": "dl_ch2.gradients",
    "softmax": "dl_ch2.naive_model",
    "sparse_categorical_crossentropy": "dl_ch2.losses",
    "stretch": "dl_ch2.tensor_operations",
    "train_first_example": "dl_ch2.first_example",
    "transpose": "dl_ch2.tensor_operations",
    "update_weights": "dl_ch2.training_loop",
    "variable": "dl_ch2.gradients",
    "vector_add": "dl_ch2.tensor_operations",
}

__all__ = [
    "BatchGenerator",
    "DivergenceError",
    "GradientTape",
    "History",
    "NaiveDense",
    "NaiveSequential",
    "NonFiniteLossError",
    "ScalarGraph",
    "__version__",
    "build_first_example_model",
    "build_naive_model",
    "chain_rule",
    "derivative",
    "dot",
    "evaluate",
    "first_example_step",
    "fit",
    "glorot_uniform_",
    "keras_rmsprop",
    "keras_sgd_update",
    "naive_add",
    "naive_add_matrix_and_vector",
    "naive_matrix_dot",
    "naive_matrix_vector_dot",
    "naive_matrix_vector_dot_via_vector_dot",
    "naive_momentum_update",
    "naive_relu",
    "naive_vector_dot",
    "num_batches",
    "one_training_step",
    "predict",
    "preprocess",
    "relu",
    "reshape",
    "resolve_device",
    "rotate",
    "rotation_matrix",
    "sgd_path",
    "softmax",
    "sparse_categorical_crossentropy",
    "stretch",
    "train_first_example",
    "transpose",
    "update_weights",
    "variable",
    "vector_add",
]


def __getattr__(name: str) -> Any:
    """Import the chapter module that defines ``name`` on first use (PEP 562)."""
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'dl_ch2' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
