"""A small sweep on this machine: `python examples/quickstart.py`.

Each run writes a `result.json` into its own folder under data/train/quickstart/.
Follow it with `chester status quickstart` from any shell in the project.
"""

import json
import math
import os
import time

import chester
from chester import VariantGenerator


def train(variant, log_dir, exp_name):
    """A stand-in for training: a few 'epochs' of a decaying loss."""
    loss = 1.0
    for epoch in range(variant["epochs"]):
        loss *= math.exp(-variant["lr"])
        print(f"{exp_name} epoch {epoch}: loss {loss:.4f}", flush=True)
        time.sleep(0.1)
    with open(os.path.join(log_dir, "result.json"), "w") as f:
        json.dump({"lr": variant["lr"], "seed": variant["seed"], "loss": loss}, f)


if __name__ == "__main__":
    vg = VariantGenerator()
    vg.add("lr", [0.1, 0.3, 1.0])
    vg.add("seed", [1, 2])
    vg.add("epochs", [5])
    sweep = chester.launch(train, vg, backend="local", exp_prefix="quickstart")
    print(f"{len(sweep.runs)} runs in the sweep; waiting for them to finish")
    states = sweep.wait(pull=True)
    for name, state in states.items():
        print(f"{name}: {state}")
    print("results in", sweep.runs[0].log_dir.parent)
