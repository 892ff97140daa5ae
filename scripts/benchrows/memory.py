"""memory: peak RSS of LSTM-512 64x128 training (a fresh process each), corpus as int64 vs one-hot."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from typing import Any

from .common import BENCH, Row, compose, detach, last_line, note


def train(model: Any, dm: Any, steps: int) -> None:
    """`steps` stateful training steps, clipped, as the module takes them."""
    import torch
    from torch.nn import functional as F

    from charrnn.core.windows import IGNORE_INDEX

    opt, state = torch.optim.Adam(model.parameters(), lr=2e-3), None
    for i, batch in enumerate(dm.train_dataloader()):
        if i >= steps:
            break
        x, y = dm.on_after_batch_transfer(batch, 0)
        logits, state = model(x, detach(state))
        loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), y.reshape(-1), ignore_index=IGNORE_INDEX)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()


def child(args: argparse.Namespace) -> None:
    """One measurement in this fresh process (--child memory:KIND): prints {"maxrss_kb": ...} as the last
    line."""
    import resource

    import torch
    from hydra.utils import instantiate

    from charrnn.core.model import CharRNN

    torch.set_num_threads(args.threads)
    kind = args.child.split(":", 1)[1]
    # The data module as the config builds it (wherever the class lives): the corpus, 64 x 128 windows.
    cfg = compose(
        ["data=text", f"data.path={args.corpus}", "data.batch_size=64", "data.seq_len=128", "output_dir=."]
    )
    dm = instantiate(cfg.data)
    dm.setup("fit")
    model = CharRNN(len(dm.vocab), 512, cell="lstm")
    if kind == "train":
        train(model, dm, args.memory_steps)
    extra = {
        "tokens_bytes": dm.tokens.element_size() * dm.tokens.numel(),
        "chars": dm.tokens.numel(),
        "vocab": len(dm.vocab),
    }
    print(json.dumps({"maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, **extra}))


def run(args: argparse.Namespace) -> list[Row]:
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "PYTHONWARNINGS": "ignore"}
    out = {}
    for kind in ("baseline", "train"):
        note(f"memory: {kind} (fresh process)")
        cmd = [
            sys.executable,
            str(BENCH),
            "--corpus",
            str(args.corpus),
            "--threads",
            str(args.threads),
            "--memory-steps",
            str(args.memory_steps),
            "--child",
            f"memory:{kind}",
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if proc.returncode != 0:
            return [
                ("memory", f"{kind} measurement failed", f"exit {proc.returncode}", last_line(proc.stderr))
            ]
        out[kind] = json.loads(proc.stdout.strip().splitlines()[-1])
    base, trained = out["baseline"]["maxrss_kb"] / 1024, out["train"]["maxrss_kb"] / 1024
    n, v, tb = out["train"]["chars"], out["train"]["vocab"], out["train"]["tokens_bytes"]
    return [
        (
            "memory",
            f"peak RSS, LSTM-512 64x128, {args.memory_steps} steps",
            f"{trained:,.0f} MiB (imports + data + model: {base:,.0f} MiB; training adds "
            f"{trained - base:,.0f})",
            "ru_maxrss, one fresh process each",
        ),
        (
            "memory",
            "corpus tensor vs one-hot",
            f"{tb / 2**20:,.1f} MiB int64 vs {n * v * 4 / 2**20:,.0f} MiB float32 one-hot",
            f"{n:,} chars x V={v}; one-hot is made per batch only",
        ),
    ]
