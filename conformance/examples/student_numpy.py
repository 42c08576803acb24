"""A third party's adapter: a from-scratch NumPy implementation of chapter 2, graded by the suite.

Grade it with:  pytest conformance --impl conformance/examples/student_numpy.py
"""

import numpy as np

EPS = 1e-7


def relu(x):
    return np.maximum(x, 0)


def softmax(x):
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


ACTS = {"relu": relu, "softmax": softmax, "identity": lambda x: x}


class Model:
    def __init__(self, layers, weights, seed):
        rng = np.random.default_rng(seed)
        self.acts = [a for _, _, a in layers]
        if weights is None:
            weights = []
            for i, o, _ in layers:
                weights += [rng.uniform(0, 0.1, (i, o)), np.zeros(o)]
        self.weights = [np.array(w) for w in weights]

    def forward(self, x):
        cache = []
        for k, act in enumerate(self.acts):
            z = x @ self.weights[2 * k] + self.weights[2 * k + 1]
            cache.append((x, z))
            x = ACTS[act](z)
        return x, cache


def need(x, ok):
    if not ok:
        raise ValueError(f"bad shape {x.shape}")
    return x


def loss(labels, p):
    c = np.clip(p, EPS, 1 - EPS)
    return np.log(c.sum(axis=1)) - np.log(c[np.arange(len(labels)), labels])


def loss_grad(labels, p):
    c = np.clip(p, EPS, 1 - EPS)
    rows = np.arange(len(labels))
    g = np.repeat(1 / c.sum(axis=1, keepdims=True), p.shape[1], axis=1)
    g[rows, labels] -= 1 / c[rows, labels]
    g[(p < EPS) | (p > 1 - EPS)] = 0
    return g / len(labels)


class StudentAdapter:
    name = "student-numpy"
    version = "1.0"
    devices = ("cpu",)
    dtypes = ("float64", "float32")
    capabilities = frozenset(
        {"naive_ops", "autodiff", "training", "momentum", "rmsprop", "keras_init", "random_init"}
    )

    asarray = staticmethod(lambda x, dtype=None: np.array(x, dtype=dtype))
    to_numpy = staticmethod(np.asarray)
    add = staticmethod(np.add)
    relu = staticmethod(relu)
    maximum = staticmethod(np.maximum)
    dot = staticmethod(np.dot)
    reshape = staticmethod(np.reshape)
    transpose = staticmethod(np.transpose)
    expand_dims = staticmethod(np.expand_dims)
    getitem = staticmethod(lambda x, index: x[index])
    stretch = staticmethod(lambda y, shape: np.broadcast_to(y, shape).copy())
    vector_add = staticmethod(lambda a, b: need(a, a.shape == b.shape) + b)
    preprocess = staticmethod(lambda im: im.reshape((len(im), 28 * 28)).astype("float32") / 255)

    def rotate(self, points, theta):
        c, s = np.cos(theta), np.sin(theta)
        return points @ np.array([[c, s], [-s, c]], dtype=np.result_type(points, 1.0))

    naive_relu = staticmethod(lambda x: relu(need(x, x.ndim == 2)))
    naive_add = staticmethod(lambda x, y: need(x, x.ndim == 2 and x.shape == y.shape) + y)
    naive_add_matrix_and_vector = staticmethod(
        lambda x, y: need(x, x.ndim == 2 and y.shape == x.shape[1:]) + y
    )
    naive_vector_dot = staticmethod(lambda x, y: np.dot(need(x, x.ndim == y.ndim == 1), y))
    naive_matrix_vector_dot = staticmethod(lambda x, y: need(x, x.ndim == 2 and y.ndim == 1) @ y)
    naive_matrix_vector_dot_via_vector_dot = naive_matrix_vector_dot
    naive_matrix_dot = staticmethod(lambda x, y: need(x, x.ndim == y.ndim == 2) @ y)
    dense_model = staticmethod(Model)
    model_weights = staticmethod(lambda model: model.weights)
    predict = staticmethod(lambda model, x: model.forward(x)[0])

    def sparse_categorical_crossentropy(self, labels, p, from_logits=False):
        need(labels, labels.min() >= 0)  # NumPy would wrap label -1 to the last class
        if not from_logits:
            return loss(labels, p)
        z = p - p.max(axis=1, keepdims=True)
        return np.log(np.exp(z).sum(axis=1)) - z[np.arange(len(labels)), labels]

    def evaluate(self, model, x, y, batch_size=None):
        return float((model.forward(x)[0].argmax(1) == y).mean())

    def batches(self, images, labels, batch_size, shuffle=False, seed=None):
        need(images, len(images) == len(labels))
        if shuffle:
            perm = np.random.default_rng(seed).permutation(len(images))
            images, labels = images[perm], labels[perm]
        return [
            (images[i : i + batch_size], labels[i : i + batch_size])
            for i in range(0, len(images), batch_size)
        ]

    def loss_gradient(self, labels, p, from_logits=False):
        one_hot = np.eye(p.shape[1], dtype=p.dtype)[labels]
        return (softmax(p) - one_hot) / len(labels) if from_logits else loss_grad(labels, p)

    def model_gradients(self, model, x, y):
        p, cache = model.forward(x)
        da, grads = loss_grad(y, p), []
        for k in reversed(range(len(model.acts))):
            inp, z = cache[k]
            a = ACTS[model.acts[k]](z)
            if model.acts[k] == "relu":
                dz = da * (z > 0)
            elif model.acts[k] == "softmax":
                dz = a * (da - (da * a).sum(1, keepdims=True))
            else:
                dz = da
            grads = [inp.T @ dz, dz.sum(0), *grads]
            da = dz @ model.weights[2 * k].T
        return grads

    def gradient_affine(self, x):
        return np.full_like(x, 2.0)

    def gradient_dense(self, x, W, b):
        return x.sum(0)[:, None].repeat(W.shape[1], 1), np.full_like(b, len(x))

    def gradient_scalar_graph(self, x, w, b, y_true):
        s = np.sign(x * w + b - y_true)
        return s * x, s

    def training_step(self, model, x, y, learning_rate, optimizer="manual"):
        value = float(loss(y, model.forward(x)[0]).mean())
        self.update_weights(self.model_gradients(model, x, y), model.weights, learning_rate)
        return value

    def update_weights(self, gradients, weights, learning_rate):
        for g, w in zip(gradients, weights, strict=True):
            w -= learning_rate * g

    def fit(self, model, x, y, epochs, batch_size, lr):
        batches = self.batches(x, y, batch_size)
        return [[self.training_step(model, a, b, lr) for a, b in batches] for _ in range(epochs)]

    def momentum_step(self, w, g, v, learning_rate, momentum, rule):
        need(v, 0 <= momentum <= 1)
        v = momentum * v - learning_rate * g
        if rule in ("book", "nesterov"):
            return w + momentum * v - learning_rate * g, v
        return w + v, v

    def sgd_path(self, grad, w0, learning_rate, steps, momentum=0.0, nesterov=False):
        w, v, path = w0, 0.0, [w0]
        for _ in range(steps):
            g = grad(w)
            v = momentum * v - learning_rate * g
            path.append(w := w + momentum * v - learning_rate * g if nesterov else w + v)
        return path

    def rmsprop_step(self, w, g, s, learning_rate=1e-3, rho=0.9, epsilon=1e-7):
        s = rho * s + (1 - rho) * g**2
        return w - learning_rate * g / (np.sqrt(s) + epsilon), s

    def glorot_uniform(self, fan_in, fan_out, seed):
        limit = np.sqrt(6 / (fan_in + fan_out))
        return np.random.default_rng(seed).uniform(-limit, limit, (fan_in, fan_out))


ADAPTER = StudentAdapter()
