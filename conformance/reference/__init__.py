"""The pure-NumPy reference implementation of chapter 2 (the conformance oracle).

Independent of the torch port: backward passes are derived by hand and checked by finite
differences, and nothing in this package imports torch, so a third party grading a JAX or
TensorFlow implementation needs only NumPy. Names and signatures follow ``dl_ch2``.
Arrays are float64 by default (float32 on request); randomness goes through
``numpy.random.Generator``.
"""

from conformance.reference.batch_generator import BatchGenerator, num_batches
from conformance.reference.first_example import FirstExampleModel, train_first_example
from conformance.reference.gradients import ScalarGraph, chain_rule, derivative, sgd_path
from conformance.reference.losses import (
    sparse_categorical_crossentropy,
    sparse_categorical_crossentropy_backward,
)
from conformance.reference.momentum import keras_sgd_update, naive_momentum_update
from conformance.reference.naive_model import (
    NaiveDense,
    NaiveSequential,
    build_naive_model,
    identity,
    relu,
    softmax,
)
from conformance.reference.optimizers import SGD, RMSprop
from conformance.reference.tensor_operations import (
    naive_add,
    naive_add_matrix_and_vector,
    naive_matrix_dot,
    naive_matrix_vector_dot,
    naive_matrix_vector_dot_via_vector_dot,
    naive_relu,
    naive_vector_dot,
)
from conformance.reference.training_loop import (
    evaluate,
    fit,
    loss_and_gradients,
    one_training_step,
    update_weights,
)

__all__ = [
    "SGD",
    "BatchGenerator",
    "FirstExampleModel",
    "NaiveDense",
    "NaiveSequential",
    "RMSprop",
    "ScalarGraph",
    "build_naive_model",
    "chain_rule",
    "derivative",
    "evaluate",
    "fit",
    "identity",
    "keras_sgd_update",
    "loss_and_gradients",
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
    "relu",
    "sgd_path",
    "softmax",
    "sparse_categorical_crossentropy",
    "sparse_categorical_crossentropy_backward",
    "train_first_example",
    "update_weights",
]
