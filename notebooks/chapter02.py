# %% [markdown]
# # Chapter 2, the mathematical building blocks of neural networks: a PyTorch companion
#
# The 2nd edition's companion notebook (`chapter02_mathematical-building-blocks.ipynb`,
# TensorFlow 2.6), cell by cell, in PyTorch with the names of this project's port
# (`dl_ch2`; MNIST from `dl_ch2_tools.mnist`). Each code cell is the port of the book's
# code cell with the same number; under it, in italics, what the book printed for that
# cell, and a **Differs** line wherever the port's output is not the book's, with the
# reason. Read it beside the book: the prose, figures and pseudocode are there.
#
# Run it top to bottom in Jupyter, or `nox -s notebook` (it writes the executed notebook
# to `runs/notebook/chapter02.ipynb` and compares every printed line with the book's).
# This file is generated from `notebooks/chapter02.py`
# (`python -m dl_ch2_tools.notebook build`); edit that one.

# %% [markdown]
# ## A first look at a neural network
#
# **Loading the MNIST dataset** (`load_mnist` returns the four NumPy arrays Keras'
# `mnist.load_data()` returns, from a verified local cache: `dl-ch2 data` fetches it).

# %% book 1
from dl_ch2_tools.mnist import load_mnist

(train_images, train_labels), (test_images, test_labels) = load_mnist()

# %% book 2
train_images.shape

# %% printed
# (60000, 28, 28)

# %% book 3
len(train_labels)

# %% printed
# 60000

# %% book 4
train_labels

# %% printed
# array([5, 0, 4, ..., 5, 6, 8], dtype=uint8)
# %% differs
# NumPy 2 adds `shape=(60000,)` to the repr of a summarised array; the values are the book's.
# %% check
# array([5, 0, 4, ..., 5, 6, 8],{*}dtype=uint8)

# %% book 5
test_images.shape

# %% printed
# (10000, 28, 28)

# %% book 6
len(test_labels)

# %% printed
# 10000

# %% book 7
test_labels

# %% printed
# array([7, 2, 1, ..., 4, 5, 6], dtype=uint8)
# %% differs
# NumPy 2 adds `shape=(10000,)` to the repr of a summarised array; the values are the book's.
# %% check
# array([7, 2, 1, ..., 4, 5, 6],{*}dtype=uint8)

# %% [markdown]
# **The network architecture**: `Dense(512, relu)` then `Dense(10, softmax)` as torch
# `Linear` layers with Keras' initialisation (glorot_uniform kernels, zero biases). The
# module outputs logits; the softmax is applied by the loss and by `predict`.

# %% book 8
import torch

from dl_ch2 import build_first_example_model

model = build_first_example_model(generator=torch.Generator().manual_seed(0))

# %% [markdown]
# **The compilation step**: Keras' `"rmsprop"` is `keras_rmsprop` (Keras 2.6's defaults:
# learning rate 1e-3, rho 0.9, epsilon 1e-7 outside the square root); the loss
# (sparse categorical cross-entropy) and the accuracy metric are `train_first_example`'s.

# %% book 9
from dl_ch2 import keras_rmsprop

optimizer = keras_rmsprop(model.parameters())

# %% [markdown]
# **Preparing the image data**: `preprocess` is the book's reshape to (N, 784) and
# `astype("float32") / 255`.

# %% book 10
from dl_ch2 import preprocess

train_images = preprocess(train_images)
test_images = preprocess(test_images)

# %% [markdown]
# **"Fitting" the model**: `train_first_example` is Keras' `fit` for this model: it
# reshuffles every epoch, takes the NumPy arrays as they are, and prints Keras' line per
# epoch, whose `accuracy` is Keras' running mean over the epoch's batches.

# %% book 11
from dl_ch2 import train_first_example

losses = train_first_example(
    model,
    train_images,
    train_labels,
    epochs=5,
    batch_size=128,
    optimizer=optimizer,
    generator=torch.Generator().manual_seed(1),
)

# %% quick
from dl_ch2 import train_first_example

losses = train_first_example(
    model,
    train_images[:1280],
    train_labels[:1280],
    epochs=1,
    batch_size=128,
    optimizer=optimizer,
    generator=torch.Generator().manual_seed(1),
)
# %% printed
# Epoch 1/5
# 60000/60000 [==============================] - 5s - loss: 0.2524 - acc: 0.9273
# Epoch 2/5
# 51328/60000 [========================>.....] - ETA: 1s - loss: 0.1035 - acc: 0.9692
# %% differs
# Keras draws a progress bar and the book caught epoch 2 mid-way (51,328 samples in);
# the port prints one line per epoch. Compared: epoch 1's loss within 0.02 and accuracy
# within 0.01 (another seed or machine moves the last digits).
# %% check full
# Epoch 1/5: 469 steps - loss: {0.2524~0.02} - accuracy: {0.9273~0.01}

# %% [markdown]
# **Using the model to make predictions**: `predict` applies the softmax to the logits
# under `torch.inference_mode()`, so `.numpy()` works on its result.

# %% book 12
from dl_ch2 import predict

test_digits = test_images[0:10]
predictions = predict(model, test_digits)
predictions[0]

# %% printed
# array([1.0726176e-10, 1.6918376e-10, 6.1314843e-08, 8.4106023e-06,
#        2.9967067e-11, 3.0331331e-09, 8.3651971e-14, 9.9999106e-01,
#        2.6657624e-08, 3.8127661e-07], dtype=float32)
# %% differs
# torch prints `tensor([...])` with 4 significant digits; the probabilities come from
# another random initialisation, so each is compared within 0.01. (The book's values as a
# reader's review of the 2nd edition quotes them.)
# %% check full
# numbers 0.01

# %% book 13
predictions[0].argmax()

# %% printed
# 7
# %% differs
# torch prints the index as a 0-d tensor, `tensor(7)`.
# %% check full
# tensor({7~0})

# %% book 14
predictions[0][7]

# %% printed
# 0.99999106
# %% differs
# torch prints `tensor(...)` with 4 decimals; compared within 0.01.
# %% check full
# tensor({0.99999106~0.01})

# %% book 15
test_labels[0]

# %% printed
# 7
# %% differs
# NumPy 2 prints a scalar with its type, `np.uint8(7)`.
# %% check
# {7~0}

# %% [markdown]
# **Evaluating the model on new data**: the port's `evaluate` returns the accuracy alone
# (Keras' returns the loss too).

# %% book 16
from dl_ch2 import evaluate

test_acc = evaluate(model, test_images, test_labels)
print(f"test_acc: {test_acc}")

# %% printed
# test_acc: 0.9785
# %% differs
# Compared within 0.005 (another initialisation and shuffle order).
# %% check full
# test_acc: {0.9785~0.005}

# %% [markdown]
# ## Data representations for neural networks
#
# The book's NumPy arrays as torch tensors: `torch.tensor` for `np.array`; `ndim` and
# `shape` read the same.
#
# ### Scalars (rank-0 tensors)

# %% book 17
x = torch.tensor(12)
x

# %% printed
# array(12)
# %% differs
# torch prints `tensor(12)` where NumPy prints `array(12)`.
# %% check
# numbers 0

# %% book 18
x.ndim

# %% printed
# 0

# %% [markdown]
# ### Vectors (rank-1 tensors)

# %% book 19
x = torch.tensor([12, 3, 6, 14, 7])
x

# %% printed
# array([12, 3, 6, 14, 7])
# %% differs
# `tensor(...)` for `array(...)`.
# %% check
# numbers 0

# %% book 20
x.ndim

# %% printed
# 1

# %% [markdown]
# ### Matrices (rank-2 tensors)

# %% book 21
x = torch.tensor([[5, 78, 2, 34, 0], [6, 79, 3, 35, 1], [7, 80, 4, 36, 2]])
x.ndim

# %% printed
# 2

# %% [markdown]
# ### Rank-3 and higher-rank tensors

# %% book 22
x = torch.tensor(
    [
        [[5, 78, 2, 34, 0], [6, 79, 3, 35, 1], [7, 80, 4, 36, 2]],
        [[5, 78, 2, 34, 0], [6, 79, 3, 35, 1], [7, 80, 4, 36, 2]],
        [[5, 78, 2, 34, 0], [6, 79, 3, 35, 1], [7, 80, 4, 36, 2]],
    ]
)
x.ndim

# %% printed
# 3

# %% [markdown]
# ### Key attributes
#
# From here on the MNIST arrays are torch tensors (`torch.from_numpy` shares the memory).

# %% book 23
(train_images, train_labels), (test_images, test_labels) = load_mnist()
train_images, train_labels = torch.from_numpy(train_images), torch.from_numpy(train_labels)

# %% book 24
train_images.ndim

# %% printed
# 3

# %% book 25
train_images.shape

# %% printed
# (60000, 28, 28)
# %% differs
# torch prints a shape as `torch.Size([60000, 28, 28])`.
# %% check
# numbers 0

# %% book 26
train_images.dtype

# %% printed
# uint8
# %% differs
# torch names it `torch.uint8`.
# %% check
# torch.uint8

# %% [markdown]
# **Displaying the fourth digit**

# %% book 27
import matplotlib.pyplot as plt

digit = train_images[4]
plt.imshow(digit, cmap=plt.cm.binary)
plt.show()

# %% book 28
train_labels[4]

# %% printed
# 9
# %% differs
# torch prints `tensor(9, dtype=torch.uint8)`.
# %% check
# tensor({9~0}, dtype=torch.uint8)

# %% [markdown]
# ### Manipulating tensors in PyTorch

# %% book 29
my_slice = train_images[10:100]
my_slice.shape

# %% printed
# (90, 28, 28)
# %% differs
# `torch.Size([...])` for a tuple.
# %% check
# numbers 0

# %% book 30
my_slice = train_images[10:100, :, :]
my_slice.shape

# %% printed
# (90, 28, 28)
# %% differs
# `torch.Size([...])` for a tuple.
# %% check
# numbers 0

# %% book 31
my_slice = train_images[10:100, 0:28, 0:28]
my_slice.shape

# %% printed
# (90, 28, 28)
# %% differs
# `torch.Size([...])` for a tuple.
# %% check
# numbers 0

# %% book 32
my_slice = train_images[:, 14:, 14:]

# %% book 33
my_slice = train_images[:, 7:-7, 7:-7]

# %% [markdown]
# ### The notion of data batches

# %% book 34
batch = train_images[:128]

# %% book 35
batch = train_images[128:256]

# %% book 36
n = 3
batch = train_images[128 * n : 128 * (n + 1)]

# %% [markdown]
# ## The gears of neural networks: tensor operations
#
# The book's naive functions are the port's, with the same names, on tensors
# (`dl_ch2/tensor_operations.py`: the loops as written, argument checks instead of
# `assert`). Import them, or write your own in these cells.
#
# ### Element-wise operations

# %% book 37
from dl_ch2 import naive_relu

# %% book 38
from dl_ch2 import naive_add

# %% book 39
import time

g = torch.Generator().manual_seed(0)
x = torch.rand((20, 100), generator=g)
y = torch.rand((20, 100), generator=g)

t0 = time.time()
for _ in range(1000):
    z = x + y
    z = torch.maximum(z, torch.tensor(0.0))
print("Took: {0:.2f} s".format(time.time() - t0))

# %% printed
# Took: 0.02 s
# %% differs
# A timing: it depends on the machine (the book's figure is from its text).
# %% check
# none

# %% book 40
t0 = time.time()
for _ in range(1000):
    z = naive_add(x, y)
    z = naive_relu(z)
print("Took: {0:.2f} s".format(time.time() - t0))

# %% quick
t0 = time.time()
for _ in range(10):
    z = naive_add(x, y)
    z = naive_relu(z)
print("Took: {0:.2f} s".format(time.time() - t0))
# %% printed
# Took: 2.45 s
# %% differs
# A timing. Indexing a torch tensor element by element costs several times what NumPy's
# does, so the loops take longer than the book's 2.45 s; the point stands: the
# vectorised operations are about a thousand times faster.
# %% check
# none

# %% [markdown]
# ### Broadcasting

# %% book 41
X = torch.rand((32, 10), generator=g)
y = torch.rand((10,), generator=g)

# %% book 42
y = torch.unsqueeze(y, dim=0)

# %% book 43
Y = torch.cat([y] * 32, dim=0)

# %% book 44
from dl_ch2 import naive_add_matrix_and_vector

# %% book 45
x = torch.rand((64, 3, 32, 10), generator=g)
y = torch.rand((32, 10), generator=g)
z = torch.maximum(x, y)

# %% [markdown]
# ### Tensor product
#
# `dot` is `np.dot`'s rule on tensors (`torch.dot` for two vectors, `@` for matrices).

# %% book 46
from dl_ch2 import dot

x = torch.rand((32,), generator=g)
y = torch.rand((32,), generator=g)
z = dot(x, y)

# %% book 47
from dl_ch2 import naive_vector_dot

# %% book 48
from dl_ch2 import naive_matrix_vector_dot

# %% book 49
from dl_ch2 import naive_matrix_vector_dot_via_vector_dot as naive_matrix_vector_dot

# %% book 50
from dl_ch2 import naive_matrix_dot

# %% [markdown]
# ### Tensor reshaping

# %% book 51
train_images = train_images.reshape((60000, 28 * 28))

# %% book 52
x = torch.tensor([[0.0, 1.0], [2.0, 3.0], [4.0, 5.0]])
x.shape

# %% printed
# (3, 2)
# %% differs
# `torch.Size([...])` for a tuple.
# %% check
# numbers 0

# %% book 53
x = x.reshape((6, 1))
x

# %% printed
# array([[ 0.],
#        [ 1.],
#        [ 2.],
#        [ 3.],
#        [ 4.],
#        [ 5.]])
# %% differs
# `tensor(...)` for `array(...)`.
# %% check
# numbers 0

# %% book 54
x = torch.zeros((300, 20))
x = torch.transpose(x, 0, 1)
x.shape

# %% printed
# (20, 300)
# %% differs
# `torch.Size([...])` for a tuple.
# %% check
# numbers 0

# %% [markdown]
# ### Geometric interpretation of tensor operations
#
# No code in the notebook here. `dl-ch2 figures` draws the chapter's figures: vector
# addition and rotation (`vector_add`, `rotate`), and the computation graph of §2.4.4.
#
# ## The engine of neural networks: gradient-based optimization
#
# #### The gradient tape in TensorFlow, and autograd in PyTorch
#
# `GradientTape` and `variable` mirror TensorFlow's API over torch.autograd; each cell
# also shows the plain PyTorch way: a tensor with `requires_grad=True`, `backward()`,
# and `.grad`. Two differences from TensorFlow's tape: torch records every operation on
# such a tensor, inside the `with` block or not (the tape only scopes the example), and
# `tape.gradient` returns zeros for a source the target does not depend on, where
# TensorFlow returns `None`.

# %% book 55
from dl_ch2 import GradientTape, variable

x = variable(0.0)
with GradientTape() as tape:
    y = 2 * x + 3
grad_of_y_wrt_x = tape.gradient(y, x)

# plain PyTorch: autograd records y = 2 * x + 3; backward() fills x.grad
x = torch.tensor(0.0, requires_grad=True)
y = 2 * x + 3
y.backward()
torch.testing.assert_close(x.grad, grad_of_y_wrt_x)
grad_of_y_wrt_x

# %% printed
# <tf.Tensor: shape=(), dtype=float32, numpy=2.0>
# %% differs
# torch prints `tensor(2.)`.
# %% check
# numbers 0

# %% book 56
x = variable(torch.rand((2, 2), generator=g))
with GradientTape() as tape:
    y = 2 * x + 3
grad_of_y_wrt_x = tape.gradient(y, x)

# plain PyTorch: backward() needs a scalar; the tape, as TensorFlow's, takes y's sum
x = torch.rand((2, 2), generator=g).requires_grad_()
y = 2 * x + 3
y.sum().backward()
torch.testing.assert_close(x.grad, grad_of_y_wrt_x)
grad_of_y_wrt_x

# %% printed
# <tf.Tensor: shape=(2, 2), dtype=float32, numpy=
# array([[2., 2.],
#        [2., 2.]], dtype=float32)>
# %% differs
# torch prints `tensor([[2., 2.], [2., 2.]])`.
# %% check
# tensor([[2., 2.], [2., 2.]])

# %% book 57
W = variable(torch.rand((2, 2), generator=g))
b = variable(torch.zeros((2,)))
x = torch.rand((2, 2), generator=g)
with GradientTape() as tape:
    y = torch.matmul(x, W) + b
grad_of_y_wrt_W_and_b = tape.gradient(y, [W, b])

# plain PyTorch: the same sum, backward(), then each weight's .grad
(torch.matmul(x, W) + b).sum().backward()
torch.testing.assert_close([W.grad, b.grad], grad_of_y_wrt_W_and_b)
grad_of_y_wrt_W_and_b

# %% printed
# [<tf.Tensor: shape=(2, 2), dtype=float32, numpy=
#  array([[0.46594226, 0.46594226],
#         [0.98007166, 0.98007166]], dtype=float32)>,
#  <tf.Tensor: shape=(2,), dtype=float32, numpy=array([2., 2.], dtype=float32)>]
# %% differs
# The gradient w.r.t. W holds the column sums of a random x, so its values differ; each
# row repeats one value, as in the book, and the gradient w.r.t. b is [2., 2.].
# %% check
# [tensor([[{*}],{*}[{*}]]), tensor([2., 2.])]

# %% [markdown]
# ## Looking back at our first example

# %% book 58
(train_images, train_labels), (test_images, test_labels) = load_mnist()
train_images = preprocess(train_images)
test_images = preprocess(test_images)

# %% book 59
model = build_first_example_model(generator=torch.Generator().manual_seed(0))

# %% book 60
optimizer = keras_rmsprop(model.parameters())

# %% book 61
losses = train_first_example(
    model,
    train_images,
    train_labels,
    epochs=5,
    batch_size=128,
    optimizer=optimizer,
    generator=torch.Generator().manual_seed(1),
)

# %% quick
losses = train_first_example(
    model,
    train_images[:640],
    train_labels[:640],
    epochs=1,
    batch_size=128,
    optimizer=optimizer,
    generator=torch.Generator().manual_seed(1),
)
# %% differs
# The book shows no output for this cell; the port prints Keras' lines, as in cell [11]
# (the same seeds: the same lines).
# %% check
# none

# %% [markdown]
# ### Reimplementing our first example from scratch
#
# `NaiveDense` and `NaiveSequential` are `torch.nn.Module`s with the book's `weights`
# (`dl_ch2/naive_model.py`); `BatchGenerator`, `one_training_step`, `update_weights` and
# `fit` keep the book's names and arguments (`dl_ch2/batch_generator.py`,
# `dl_ch2/training_loop.py`).
#
# #### A simple Dense class

# %% book 62
from dl_ch2 import NaiveDense

# %% [markdown]
# #### A simple Sequential class

# %% book 63
from dl_ch2 import NaiveSequential

# %% book 64
from dl_ch2 import relu, softmax

g = torch.Generator().manual_seed(0)
model = NaiveSequential(
    [
        NaiveDense(input_size=28 * 28, output_size=512, activation=relu, generator=g),
        NaiveDense(input_size=512, output_size=10, activation=softmax, generator=g),
    ]
)
assert len(model.weights) == 4

# %% [markdown]
# #### A batch generator

# %% book 65
from dl_ch2 import BatchGenerator

# %% [markdown]
# ### Running one training step
#
# `one_training_step` takes the gradients with autograd (`torch.autograd.grad` of the
# batch's mean loss w.r.t. `model.weights`), then calls `update_weights`.

# %% book 66
from dl_ch2 import one_training_step

# %% book 67
from dl_ch2 import update_weights

learning_rate = 1e-3

# %% book 68
optimizer = torch.optim.SGD(model.weights, lr=1e-3)

# %% [markdown]
# `one_training_step(model, images_batch, labels_batch, optimizer)` steps this optimizer
# instead of `update_weights`, to the same weights. `fit` below uses `update_weights`.
#
# ### The full training loop

# %% book 69
from dl_ch2 import fit

# %% book 70
(train_images, train_labels), (test_images, test_labels) = load_mnist()
train_images = preprocess(train_images)
test_images = preprocess(test_images)

history = fit(model, train_images, train_labels, epochs=10, batch_size=128)

# %% quick
(train_images, train_labels), (test_images, test_labels) = load_mnist()
train_images = preprocess(train_images)
test_images = preprocess(test_images)

history = fit(model, train_images[:1280], train_labels[:1280], epochs=1, batch_size=128)
# %% printed
# Epoch 0
# loss at batch 0: 5.38
# loss at batch 100: 2.29
# loss at batch 200: 2.24
# loss at batch 300: 2.10
# loss at batch 400: 2.27
# Epoch 1
# loss at batch 0: 1.93
# loss at batch 100: 1.93
# loss at batch 200: 1.86
# loss at batch 300: 1.72
# loss at batch 400: 1.87
# Epoch 2
# loss at batch 0: 1.60
# loss at batch 100: 1.63
# loss at batch 200: 1.54
# loss at batch 300: 1.44
# loss at batch 400: 1.54
# Epoch 3
# loss at batch 0: 1.34
# loss at batch 100: 1.38
# loss at batch 200: 1.28
# loss at batch 300: 1.22
# loss at batch 400: 1.30
# Epoch 4
# loss at batch 0: 1.14
# loss at batch 100: 1.19
# loss at batch 200: 1.07
# loss at batch 300: 1.05
# loss at batch 400: 1.13
# Epoch 5
# loss at batch 0: 0.99
# loss at batch 100: 1.05
# loss at batch 200: 0.92
# loss at batch 300: 0.93
# loss at batch 400: 1.01
# Epoch 6
# loss at batch 0: 0.87
# loss at batch 100: 0.94
# loss at batch 200: 0.81
# loss at batch 300: 0.84
# loss at batch 400: 0.92
# Epoch 7
# loss at batch 0: 0.79
# loss at batch 100: 0.85
# loss at batch 200: 0.73
# loss at batch 300: 0.77
# %% differs
# The reader's copy of the notebook's output stops inside epoch 7; the port prints all 10
# epochs. Compared: the first loss within 0.10 (it depends on the random initial weights
# alone), every other line within 0.03.
# %% check full
# Epoch 0
# loss at batch 0: {5.38~0.10}
# loss at batch 100: {2.29~0.03}
# loss at batch 200: {2.24~0.03}
# loss at batch 300: {2.10~0.03}
# loss at batch 400: {2.27~0.03}
# Epoch 1
# loss at batch 0: {1.93~0.03}
# loss at batch 100: {1.93~0.03}
# loss at batch 200: {1.86~0.03}
# loss at batch 300: {1.72~0.03}
# loss at batch 400: {1.87~0.03}
# Epoch 2
# loss at batch 0: {1.60~0.03}
# loss at batch 100: {1.63~0.03}
# loss at batch 200: {1.54~0.03}
# loss at batch 300: {1.44~0.03}
# loss at batch 400: {1.54~0.03}
# Epoch 3
# loss at batch 0: {1.34~0.03}
# loss at batch 100: {1.38~0.03}
# loss at batch 200: {1.28~0.03}
# loss at batch 300: {1.22~0.03}
# loss at batch 400: {1.30~0.03}
# Epoch 4
# loss at batch 0: {1.14~0.03}
# loss at batch 100: {1.19~0.03}
# loss at batch 200: {1.07~0.03}
# loss at batch 300: {1.05~0.03}
# loss at batch 400: {1.13~0.03}
# Epoch 5
# loss at batch 0: {0.99~0.03}
# loss at batch 100: {1.05~0.03}
# loss at batch 200: {0.92~0.03}
# loss at batch 300: {0.93~0.03}
# loss at batch 400: {1.01~0.03}
# Epoch 6
# loss at batch 0: {0.87~0.03}
# loss at batch 100: {0.94~0.03}
# loss at batch 200: {0.81~0.03}
# loss at batch 300: {0.84~0.03}
# loss at batch 400: {0.92~0.03}
# Epoch 7
# loss at batch 0: {0.79~0.03}
# loss at batch 100: {0.85~0.03}
# loss at batch 200: {0.73~0.03}
# loss at batch 300: {0.77~0.03}

# %% [markdown]
# ### Evaluating the model
#
# In evaluation, run the model under `torch.inference_mode()`: its output then records no
# autograd history, and `.numpy()` works on it as on the book's tensor.

# %% book 71
import numpy as np

with torch.inference_mode():
    predictions = model(torch.from_numpy(test_images))
predictions = predictions.numpy()
predicted_labels = np.argmax(predictions, axis=1)
matches = predicted_labels == test_labels
print(f"accuracy: {matches.mean():.2f}")

# %% printed
# accuracy: 0.81
# %% differs
# Compared within 0.02.
# %% check full
# accuracy: {0.81~0.02}
