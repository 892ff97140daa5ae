#!/usr/bin/env python
"""Replay the teaching notebook with the numpy reference RNN: learn "hello" one character ahead.

The vocabulary is the four characters "helo"; the input is "hell" and the target "ello". With
weights drawn as randn * 0.01 every prediction starts near 0.25; training runs until the argmax at
every step spells "ello" and the loss is at most --target-loss (exit 0), or gives up after --steps
updates (exit 1).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

try:
    from charrnn.core import reference as ref
except ImportError:  # running from a checkout without the package installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    from charrnn.core import reference as ref

VOCAB = "helo"
WORD = "hello"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    class Formatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
        pass

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=Formatter)
    parser.add_argument("--hidden-size", type=int, default=8, help="number of hidden units")
    parser.add_argument("--steps", type=int, default=1000, help="most training updates before giving up")
    parser.add_argument("--lr", type=float, default=0.1, help="learning rate")
    parser.add_argument(
        "--optimizer",
        choices=("adagrad", "sgd"),
        default="adagrad",
        help="adagrad as in min-char-rnn, or plain gradient descent",
    )
    parser.add_argument(
        "--clip",
        type=float,
        default=5.0,
        help="clip every gradient entry into [-clip, clip] (min-char-rnn); 0 disables",
    )
    parser.add_argument(
        "--target-loss",
        type=float,
        default=0.05,
        help="also train until the loss is this low, so the predictions are confident; "
        "'inf' stops at the first step whose argmax spells 'ello'",
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of the numpy Generator (weights and sample)"
    )
    parser.add_argument("--print-every", type=int, default=5, help="print the loss every N steps")
    parser.add_argument(
        "--temperature", type=float, default=0.5, help="temperature of the final sample (0 = argmax)"
    )
    args = parser.parse_args(argv)
    if args.hidden_size < 1 or args.steps < 0 or args.print_every < 1 or args.lr <= 0:
        parser.error("--hidden-size and --print-every must be >= 1, --steps >= 0, --lr > 0")
    return args


def print_table(probs: np.ndarray, inputs: str, targets: str) -> None:
    """One row per step: input, target, the probability of each vocabulary character, argmax."""
    print("step  in  target  " + "  ".join(f"p({c})" for c in VOCAB) + "  argmax")
    for t, row in enumerate(probs):
        cells = "  ".join(f"{p:.3f}" for p in row)
        print(f"{t:>4}  {inputs[t]!r:>3}  {targets[t]!r:>6}  {cells}  {VOCAB[int(row.argmax())]!r:>6}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    rng = np.random.default_rng(args.seed)
    ix = {c: i for i, c in enumerate(VOCAB)}
    x = np.array([[ix[c] for c in WORD[:-1]]])  # "hell", a batch of one
    y = np.array([[ix[c] for c in WORD[1:]]])  # "ello"
    inputs, targets = WORD[:-1], WORD[1:]

    params = ref.init_params(len(VOCAB), args.hidden_size, rng)
    opt = ref.Adagrad(params, lr=args.lr) if args.optimizer == "adagrad" else ref.SGD(params, lr=args.lr)
    fwd = ref.forward(params, x, y)
    print(f"vocab {VOCAB!r}, hidden {args.hidden_size}, input {inputs!r} -> target {targets!r}")
    print(f"at initialisation (randn * 0.01), loss {fwd.loss:.4f} (uniform would be ln 4 = {np.log(4):.4f}):")
    print_table(fwd.probs[0], inputs, targets)

    def predicted(f: ref.Forward) -> str:
        return "".join(VOCAB[i] for i in f.probs[0].argmax(axis=-1))

    print(f"\ntraining with {args.optimizer}, lr {args.lr}, clip {args.clip or 'off'}:")
    step = 0

    def done(f: ref.Forward) -> bool:
        return predicted(f) == targets and f.loss <= args.target_loss

    while not done(fwd) and step < args.steps:
        grads, _ = ref.backward(params, fwd)
        if args.clip > 0:
            ref.clip_elementwise(grads, args.clip)
        opt.step(params, grads)
        step += 1
        fwd = ref.forward(params, x, y)
        if step % args.print_every == 0:
            print(f"step {step:>5}  loss {fwd.loss:.4f}  predicts {predicted(fwd)!r}")

    if not done(fwd):
        print(
            f"\nFAILED: after {step} steps the model predicts {predicted(fwd)!r} with loss {fwd.loss:.4f}, "
            f"not {targets!r} with loss <= {args.target_loss}; try more --steps or a larger --lr",
            file=sys.stderr,
        )
        return 1
    print(f"\nlearned after {step} steps: loss {fwd.loss:.4f}, predicts {predicted(fwd)!r}")
    print_table(fwd.probs[0], inputs, targets)
    drawn = ref.sample(params, ix["h"], len(WORD) - 1, rng, temperature=args.temperature)
    print(f"\nsample from 'h' (temperature {args.temperature}): {'h' + ''.join(VOCAB[i] for i in drawn)!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
