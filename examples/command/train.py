"""A training script that knows nothing of the orchestrator: logistic regression on two noisy Gaussian blobs.

It is what a paper's repository often ships: argparse flags, metrics printed as JSON lines, a checkpoint folder
it resumes from. The sweep file next to it (sweep.yaml) runs it unchanged with `trainer: command`.

    python examples/command/train.py --seed 0 --lr 0.5 --steps 400 --checkpoint-dir /tmp/ckpt

Pure Python (no numpy, no torch), so a trial starts in milliseconds.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import signal
import sys
from pathlib import Path


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--eval-every", type=int, default=50)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--dim", type=int, default=16)
    parser.add_argument("--noise", type=float, default=3.0, help="std of each blob around its centre")
    parser.add_argument("--checkpoint-dir", type=Path, default=None)
    parser.add_argument("--checkpoint-every", type=int, default=100)
    return parser.parse_args()


def make_data(rng: random.Random, n: int, dim: int, noise: float) -> list[tuple[list[float], int]]:
    centre = [1.0 / math.sqrt(dim)] * dim  # the blobs sit at +centre and -centre
    data = []
    for _ in range(n):
        label = rng.randrange(2)
        sign = 1.0 if label else -1.0
        data.append(([sign * c + rng.gauss(0.0, noise / math.sqrt(dim)) for c in centre], label))
    return data


def predict(w: list[float], b: float, x: list[float]) -> float:
    z = b + sum(wi * xi for wi, xi in zip(w, x, strict=True))
    return 1.0 / (1.0 + math.exp(-max(-60.0, min(60.0, z))))


def loss_and_accuracy(w: list[float], b: float, data: list[tuple[list[float], int]]) -> tuple[float, float]:
    loss = correct = 0.0
    for x, y in data:
        p = min(max(predict(w, b, x), 1e-12), 1 - 1e-12)
        loss -= math.log(p if y else 1 - p)
        correct += (p > 0.5) == bool(y)
    return loss / len(data), correct / len(data)


def save(path: Path, state: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state))
    os.replace(tmp, path)  # atomic: a kill mid-write leaves the previous checkpoint


def main() -> int:
    args = parse_args()
    data_rng = random.Random(args.seed)
    train = make_data(data_rng, 512, args.dim, args.noise)
    val = make_data(data_rng, 256, args.dim, args.noise)
    rng = random.Random(args.seed + 1)  # minibatch order
    w, b, start = [0.0] * args.dim, 0.0, 1
    running, n_running = 0.0, 0  # the training loss since the last eval

    checkpoint = args.checkpoint_dir / "state.json" if args.checkpoint_dir else None
    if checkpoint is not None and checkpoint.exists():
        state = json.loads(checkpoint.read_text())
        w, b, start = state["w"], state["b"], state["step"] + 1
        running, n_running = state["running"], state["n_running"]
        rng.setstate((state["rng"][0], tuple(state["rng"][1]), state["rng"][2]))
        print(f"resumed from step {state['step']} (checkpoint written on {state['why']})", file=sys.stderr)

    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))  # checkpoint, then exit

    def checkpoint_now(step: int, why: str) -> None:
        if checkpoint is not None:
            save(checkpoint, {"step": step, "why": why, "w": w, "b": b, "rng": rng.getstate(), "running": running,
                              "n_running": n_running})

    if start == 1:
        loss, acc = loss_and_accuracy(w, b, val)
        print(json.dumps({"step": 0, "val_loss": loss, "val_acc": acc}))
    for step in range(start, args.steps + 1):
        batch = [train[rng.randrange(len(train))] for _ in range(args.batch)]
        grad_w, grad_b, batch_loss = [0.0] * args.dim, 0.0, 0.0
        for x, y in batch:
            p = predict(w, b, x)
            batch_loss -= math.log(min(max(p if y else 1 - p, 1e-12), 1.0))
            for i, xi in enumerate(x):
                grad_w[i] += (p - y) * xi / args.batch
            grad_b += (p - y) / args.batch
        w = [wi - args.lr * gi for wi, gi in zip(w, grad_w, strict=True)]
        b -= args.lr * grad_b
        running, n_running = running + batch_loss / args.batch, n_running + 1
        if step % args.eval_every == 0 or step == args.steps:
            loss, acc = loss_and_accuracy(w, b, val)
            print(json.dumps({"step": step, "train_loss": running / n_running, "val_loss": loss,
                              "val_acc": acc}))
            running, n_running = 0.0, 0
        if step % args.checkpoint_every == 0 and step < args.steps:
            checkpoint_now(step, "periodic")
        if stopping:
            checkpoint_now(step, "SIGTERM")
            print(f"SIGTERM at step {step}: checkpointed, exiting", file=sys.stderr)
            return 143
    return 0


if __name__ == "__main__":
    sys.exit(main())
