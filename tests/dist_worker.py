"""One rank of the data-parallel equivalence and fault tests (run under torchrun).

``python -m torch.distributed.run --standalone --nproc-per-node N tests/dist_worker.py OUT``
trains §2.5's fit and §2.1's first example data-parallel on small synthetic float64 data
and saves this rank's final weights and losses to ``OUT/rank{R}.pt`` (rank 0 writes last,
after all ranks agree on the weights). ``run_single`` is the one-process run the test
compares against.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import fault_injection
import torch
from torch import nn

from dl_ch2 import distributed
from dl_ch2.first_example import glorot_uniform_, train_first_example
from dl_ch2.naive_model import NaiveDense, NaiveSequential, relu, softmax
from dl_ch2.training_loop import fit

#: 4 batches of 128 and a last batch of 1 sample: 5 steps per epoch, 20 over 4 epochs; on
#: 2 or 3 ranks the last batch leaves rank 1 (and 2) an empty shard, and 128 splits 43/43/42.
SAMPLES, FEATURES, HIDDEN, CLASSES = 4 * 128 + 1, 20, 16, 10
EPOCHS, BATCH, LR = 4, 128, 0.05


def data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(SAMPLES, FEATURES, generator=g, dtype=torch.float64)
    y = torch.randint(0, CLASSES, (SAMPLES,), generator=g)
    return x, y


def naive_model() -> NaiveSequential:
    g = torch.Generator().manual_seed(1)
    return NaiveSequential(
        [
            NaiveDense(FEATURES, HIDDEN, relu, dtype=torch.float64, generator=g),
            NaiveDense(HIDDEN, CLASSES, softmax, dtype=torch.float64, generator=g),
        ]
    )


def first_example_model() -> nn.Sequential:
    g = torch.Generator().manual_seed(2)
    model = nn.Sequential(
        nn.Linear(FEATURES, HIDDEN, dtype=torch.float64),
        nn.ReLU(),
        nn.Linear(HIDDEN, CLASSES, dtype=torch.float64),
    )
    for m in (model[0], model[2]):
        glorot_uniform_(m.weight, g)
        nn.init.zeros_(m.bias)
    return model


def run(dp: distributed.DataParallel | None) -> dict[str, Any]:
    x, y = data()
    naive = naive_model()
    history = fit(
        naive,
        x,
        y,
        epochs=EPOCHS,
        batch_size=BATCH,
        learning_rate=LR,
        shuffle=True,
        generator=torch.Generator().manual_seed(3),
        print_fn=None,
        progress=False,
        data_parallel=dp,
    )
    keras = first_example_model()
    keras_accuracy: list[float] = []
    keras_losses = train_first_example(
        keras,
        x,
        y,
        epochs=EPOCHS,
        batch_size=BATCH,
        generator=torch.Generator().manual_seed(4),
        data_parallel=dp,
        keras_accuracy=keras_accuracy,
    )
    return {
        "naive": [w.detach().clone() for w in naive.weights],
        "naive_losses": history.batch_losses,
        "keras": [p.detach().clone() for p in keras.parameters()],
        "keras_losses": keras_losses,
        "keras_accuracy": keras_accuracy,
        "naive_model": naive,
        "keras_model": keras,
    }


def run_single() -> dict[str, Any]:
    """The same training in one process at the same global batch size."""
    return run(None)


def main(out: Path) -> None:
    fault_injection.install()
    distributed.init_from_env()
    dp = distributed.DataParallel()
    result = run(dp)
    distributed.check_weights_identical(result.pop("naive_model").weights)
    distributed.check_weights_identical(list(result.pop("keras_model").parameters()))
    result["world_size"] = dp.world_size
    result["steps"] = dp.steps
    result["bytes_per_step"] = dp.bytes_per_step()
    torch.save(result, out / f"rank{dp.rank}.pt")
    distributed.shutdown()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
