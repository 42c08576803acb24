"""dl_ch2: chapter 2 of *Deep Learning with Python* in PyTorch.

Modules follow the chapter: ``first_example`` (§2.1), ``data_representations`` (§2.2),
``tensor_operations`` (§2.3), ``gradients`` and ``momentum`` (§2.4), and ``naive_model``,
``batch_generator``, ``losses``, ``training_loop`` (§2.5). The book's names are
re-exported here.
"""

from dl_ch2._checks import resolve_device
from dl_ch2.batch_generator import BatchGenerator, num_batches
from dl_ch2.first_example import (
    build_first_example_model,
    glorot_uniform_,
    keras_rmsprop,
    predict,
    train_first_example,
)
from dl_ch2.gradients import GradientTape, ScalarGraph, chain_rule, derivative, sgd_path, variable
from dl_ch2.losses import sparse_categorical_crossentropy
from dl_ch2.mnist import MNISTError, load_mnist, mnist_tensors, preprocess
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
    History,
    NonFiniteLossError,
    evaluate,
    fit,
    one_training_step,
    update_weights,
)

__version__ = "0.1.0"

__all__ = [
    "BatchGenerator",
    "GradientTape",
    "History",
    "MNISTError",
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
    "fit",
    "glorot_uniform_",
    "keras_rmsprop",
    "keras_sgd_update",
    "load_mnist",
    "mnist_tensors",
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
