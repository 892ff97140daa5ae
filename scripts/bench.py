#!/usr/bin/env python
"""charrnn's benchmarks, printed as one table; every ratio is measured side by side in this run.

rows (--only NAME[,NAME]):
  quality   charrnn-train experiment=shakespeare (real CLI, --seconds of training): full-split val
            loss at 30 s and at the end, from the run's TensorBoard wall times, beside the anchors
  overhead  the project's Lightning loop (CharRNNModule + Trainer as charrnn-train builds it, no
            validation or checkpoints) vs a bare PyTorch loop on the same batches, interleaved
            rounds, medians: LSTM-256 32x64 on the corpus, and the notebook's RNN-8 on "hello"
  flops     achieved FLOP/s of LSTM training (forward + backward + Adam) vs this machine's float32
            matmul peak (2048^3), through CharRNN (one-hot) and a bare nn.LSTM (dense inputs)
  sampling  chars/s and time to first char of charrnn-sample's generator vs calling the model
            (nn.LSTM) once per character
  memory    peak RSS of LSTM-512 64x128 training (fresh process each), corpus as int64 vs one-hot
"""

from __future__ import annotations

import argparse
import importlib.resources
import json
import logging
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any, Callable

ROWS = ("quality", "overhead", "flops", "sampling", "memory")
REPO = Path(__file__).resolve().parents[1]
# Anchors measured elsewhere (2 CPU cores), for comparison only.
NANOGPT_CPU = (1.90, 210)  # nanoGPT's CPU recipe on Tiny Shakespeare: val loss 1.90 after ~210 s
BARE_LSTM = (1.505, 200)  # bare PyTorch LSTM-256, stateful: val loss 1.505 after 200 s
TARGET_END, TARGET_30S = 1.50, 1.75  # val loss (nats/char) at --seconds (240) and at 30 s
NOTEBOOK_ANCHOR = "bare 435 steps/s, stock Lightning + self.log + clipping 195 steps/s (0.45)"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--corpus", required=True, type=Path, help="a text file, e.g. ../shared/data/tinyshakespeare.txt")
    p.add_argument("--only", default=",".join(ROWS), help=f"comma-separated rows to run: {', '.join(ROWS)} (default: all)")
    p.add_argument("--threads", type=int, default=2, help="torch threads, here and in every subprocess (default 2)")
    p.add_argument("--seconds", type=int, default=240, help="quality: training time budget, trainer.max_time (default 240)")
    p.add_argument("--rounds", type=int, default=3, help="overhead: interleaved rounds per side; medians shown (default 3)")
    p.add_argument("--memory-steps", type=int, default=5, help="memory: training steps per measurement (default 5)")
    p.add_argument("--child", help=argparse.SUPPRESS)  # internal: one memory measurement in a fresh process
    args = p.parse_args(argv)
    args.only = [r.strip() for r in args.only.split(",") if r.strip()]
    if unknown := [r for r in args.only if r not in ROWS]:
        p.error(f"unknown row(s) {', '.join(unknown)}; choose from {', '.join(ROWS)}")
    if not args.corpus.is_file():
        p.error(f"--corpus {args.corpus} is not a file")
    if args.threads < 1 or args.seconds < 10 or args.rounds < 1 or args.memory_steps < 1:
        p.error("--threads, --rounds and --memory-steps must be >= 1 and --seconds >= 10")
    args.corpus = args.corpus.resolve()
    return args


def note(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def compose(overrides: list[str]) -> Any:
    """The project's own composed config (conf/train.yaml + overrides), as charrnn-train sees it."""
    from hydra import compose as hydra_compose, initialize_config_module

    import charrnn.cli.rundir  # noqa: F401  (registers the run-dir resolvers)

    with initialize_config_module(config_module="charrnn.conf", version_base="1.3"):
        return hydra_compose(config_name="train", overrides=overrides)


def detach(h: Any) -> Any:
    """The module's own truncation of a carried state (imported late: it pulls in Lightning)."""
    from charrnn.module import detach_hidden

    return detach_hidden(h)


# --- quality --------------------------------------------------------------------------------


def quality(args: argparse.Namespace) -> list[tuple]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    has_experiment = (importlib.resources.files("charrnn.conf") / "experiment" / "shakespeare.yaml").is_file()
    # The fallback validates often enough to draw a curve (the default is every 250 steps).
    setup = ["experiment=shakespeare"] if has_experiment else ["data=shakespeare", "model=lstm", "trainer.val_check_interval=100"]
    s = args.seconds
    if has_experiment and compose(["experiment=shakespeare", "output_dir=."]).scheduler.get("max_seconds") is not None:
        setup.append(f"scheduler.max_seconds={s}")  # the schedule follows the time budget given here
    overrides = [*setup, f"data.path={args.corpus}", f"trainer.max_time=00:{s // 3600:02d}:{s // 60 % 60:02d}:{s % 60:02d}", "trainer.enable_progress_bar=false"]
    workdir = REPO / "outputs" / "bench"
    workdir.mkdir(parents=True, exist_ok=True)
    note(f"quality: charrnn-train {' '.join(overrides)}  (~{s} s)")
    exe = Path(sys.executable).parent / "charrnn-train"
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run([str(exe), *overrides], cwd=workdir, capture_output=True, text=True, env=env)
    run_line = [line for line in proc.stdout.splitlines() if line.startswith("run dir:")]
    if proc.returncode != 0 or not run_line:
        return [("quality", "charrnn-train failed", f"exit {proc.returncode}", (proc.stderr.strip().splitlines() or ["?"])[-1][:100])]
    run = Path(run_line[0].split(":", 1)[1].strip())
    acc = EventAccumulator(str(run / "tensorboard"), size_guidance={"scalars": 0})
    acc.Reload()
    t0 = acc.FirstEventTimestamp()
    curve = [(e.wall_time - t0, e.value) for e in acc.Scalars("val/loss")] if "val/loss" in acc.Tags()["scalars"] else []
    metrics = json.loads((run / "metrics.json").read_text())
    rows = [("quality", "setup", " ".join(setup) + ("" if has_experiment else "  (conf/experiment/shakespeare.yaml missing: fallback)"),
             f"{metrics['global_step']} steps, {metrics['train_chars_per_second']} chars/s; run {run.relative_to(REPO) if run.is_relative_to(REPO) else run}")]
    if not curve:
        return rows + [("quality", "val/loss", "none logged", "validation never ran within the budget")]
    early = [c for c in curve if c[0] <= 30.0] or curve[:1]
    t30, l30 = early[-1]
    t_end, l_end = curve[-1]
    mark = lambda ok: "ok" if ok else "MISSED"  # noqa: E731
    rows += [
        ("quality", f"val loss @ {t30:.0f} s" + (" (last by 30 s)" if t30 <= 30 else " (none by 30 s; the first)"), f"{l30:.3f} nats = {l30 / math.log(2):.3f} bpc", f"target <= {TARGET_30S} {mark(l30 <= TARGET_30S and t30 <= 30)}"),
        ("quality", f"val loss @ {t_end:.0f} s (end)", f"{l_end:.3f} nats = {l_end / math.log(2):.3f} bpc",
         f"target <= {TARGET_END} (<= {TARGET_END / math.log(2):.2f} bpc) at 240 s {mark(l_end <= TARGET_END) if s == 240 else f'(budget here {s} s)'}; "
         f"anchors: nanoGPT CPU {NANOGPT_CPU[0]} @ ~{NANOGPT_CPU[1]} s, bare LSTM-256 {BARE_LSTM[0]} @ {BARE_LSTM[1]} s"),
        ("quality", "curve (s: val loss)", "  ".join(f"{t:.0f}:{v:.3f}" for t, v in curve), "wall time from the run's first TensorBoard event"),
    ]
    return rows


# --- overhead -------------------------------------------------------------------------------


def overhead(args: argparse.Namespace) -> list[tuple]:
    import lightning as L
    import torch
    from hydra.utils import instantiate
    from lightning.pytorch.callbacks import Callback, ModelCheckpoint
    from torch.nn import functional as F

    from charrnn.core.windows import IGNORE_INDEX
    from charrnn.module import CharRNNModule

    logging.getLogger("lightning").setLevel(logging.ERROR)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")

    class StepTimes(Callback):
        def __init__(self) -> None:
            self.times: list[float] = []

        def on_train_batch_end(self, *_: Any) -> None:
            self.times.append(time.perf_counter())

    def rate(times: list[float], warmup: int) -> float:
        return (len(times) - 1 - warmup) / (times[-1] - times[warmup])

    def bare_round(cfg: Any, dm: Any, steps: int, warmup: int) -> float:
        model = instantiate(cfg.model, vocab_size=len(dm.vocab)).train()
        opt = instantiate(cfg.optim)(model.parameters())
        # The same learning-rate schedule the module steps (the project's default is warmup + cosine).
        sched = instantiate(cfg.scheduler)(opt, total_steps=steps) if cfg.get("scheduler") else None
        times: list[float] = []
        loader = dm.train_dataloader()  # made once and iterated once per epoch, as Lightning does
        while len(times) < steps:
            state = None  # a new epoch starts from a zero state, as the module does
            for batch in loader:
                x, y = dm.on_after_batch_transfer(batch, 0)
                logits, state = model(x, detach(state))
                loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), y.reshape(-1), ignore_index=IGNORE_INDEX)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.trainer.gradient_clip_val)
                opt.step()
                if sched is not None:
                    sched.step()
                times.append(time.perf_counter())
                if len(times) >= steps:
                    break
        return rate(times, warmup)

    def lightning_round(cfg: Any, dm: Any, steps: int, warmup: int, logdir: str) -> float:
        model = instantiate(cfg.model, vocab_size=len(dm.vocab))
        module = CharRNNModule(model, dm.vocab, optimizer=instantiate(cfg.optim), scheduler=instantiate(cfg.scheduler),
                               stateful=dm.batching == "stateful", sample_length=0)
        timer = StepTimes()
        callbacks = [c for c in (instantiate(c) for c in cfg.callbacks.values()) if not isinstance(c, ModelCheckpoint)]
        trainer = instantiate(cfg.trainer, max_steps=steps, limit_val_batches=0, enable_checkpointing=False, enable_progress_bar=False,
                              enable_model_summary=False, logger=instantiate(cfg.logger.tensorboard, save_dir=logdir), callbacks=[*callbacks, timer])
        trainer.fit(module, datamodule=dm)
        return rate(timer.times, warmup)

    setups = [
        ("LSTM-256 32x64", ["data=text", f"data.path={args.corpus}", "model=lstm", "model.hidden_size=256", "data.batch_size=32", "data.seq_len=64"], 120, 10, 0.95),
        ("notebook RNN-8 'hello' 1x4", ["data=hello", "model=rnn", "model.hidden_size=8", "optim.lr=0.01", "trainer.gradient_clip_val=1.0"], 800, 100, 0.60),
    ]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, overrides, steps, warmup, target in setups:
            cfg = compose([*overrides, f"output_dir={tmp}"])
            torch.use_deterministic_algorithms(bool(cfg.trainer.deterministic))  # what the Trainer sets, for both sides
            dm = instantiate(cfg.data)
            dm.setup("fit")
            chars = dm.batch_size * dm.seq_len
            bare, light = [], []
            for r in range(args.rounds):
                note(f"overhead: {name} round {r + 1}/{args.rounds}")
                bare.append(bare_round(cfg, dm, steps, warmup))
                light.append(lightning_round(cfg, dm, steps, warmup, tmp))
            b, lt = statistics.median(bare), statistics.median(light)
            ok = "ok" if lt / b >= target else "MISSED"
            rows.append(("overhead", f"{name}: Lightning / bare", f"{lt / b:.2f}", f"target >= {target:.2f} {ok}"))
            rows.append(("overhead", f"{name}: chars/s (steps/s)", f"bare {b * chars:,.0f} ({b:,.1f}), Lightning {lt * chars:,.0f} ({lt:,.1f})",
                         f"median of {args.rounds} interleaved rounds of {steps} steps" + (f"; anchor: {NOTEBOOK_ANCHOR}" if target < 0.9 else "")))
    return rows


# --- flops ----------------------------------------------------------------------------------


def interleaved(steps: dict[str, Callable[[], None]], rounds: int = 3, min_seconds: float = 1.0, warmup: int = 2) -> dict[str, float]:
    """Median seconds per call of each step, timed in alternating rounds (a, b, a, b, ...) so load changes hit all alike."""
    for step in steps.values():
        for _ in range(warmup):
            step()
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(rounds):
        for name, step in steps.items():
            n, start = 0, time.perf_counter()
            while n < 3 or time.perf_counter() - start < min_seconds:
                step()
                n += 1
            times[name].append((time.perf_counter() - start) / n)
    return {name: statistics.median(t) for name, t in times.items()}


def flops(args: argparse.Namespace) -> list[tuple]:
    import torch
    from torch import nn
    from torch.nn import functional as F

    from charrnn.core.corpora import read_text_file
    from charrnn.data import Vocabulary
    from charrnn.model import CharRNN

    vocab_size = len(Vocabulary.from_text(read_text_file(args.corpus)))
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    c = torch.empty(2048, 2048)
    best = math.inf
    for _ in range(5):
        start = time.perf_counter()
        torch.matmul(a, b, out=c)
        best = min(best, time.perf_counter() - start)
    peak = 2 * 2048**3 / best
    rows = [("flops", f"float32 matmul peak, {args.threads} threads", f"{peak / 1e9:.1f} GFLOP/s", "2048^3 torch.matmul, best of 5")]
    batch, seq = 32, 64
    targets = {256: 0.75, 512: 0.85}
    for hidden in (128, 256, 512):
        # Matmul FLOPs per character: LSTM forward 2*4H(I+H), backward about twice that; head 2*H*V, x3.
        per_char = 3 * 2 * 4 * hidden * (vocab_size + hidden) + 3 * 2 * hidden * vocab_size
        tokens = torch.randint(0, vocab_size, (batch, seq + 1))
        x_idx, y = tokens[:, :-1], tokens[:, 1:].reshape(-1)
        x_dense = torch.randn(batch, seq, vocab_size)

        project = CharRNN(vocab_size, hidden, cell="lstm").train()
        bare_lstm, bare_head = nn.LSTM(vocab_size, hidden, batch_first=True), nn.Linear(hidden, vocab_size)

        def trainer_step(params: list[Any], forward: Callable[[Any, Any], Any], x: Any) -> Callable[[], None]:
            opt, carry = torch.optim.Adam(params, lr=1e-3), [None]

            def step() -> None:
                logits, carry[0] = forward(x, detach(carry[0]))
                loss = F.cross_entropy(logits.reshape(-1, vocab_size), y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()

            return step

        def bare_forward(x: Any, h: Any) -> Any:
            out, h = bare_lstm(x, h)
            return bare_head(out), h

        note(f"flops: LSTM-{hidden}")
        seconds = interleaved({
            # The project's path: indices one-hot encoded per batch (as on_after_batch_transfer does), then CharRNN.
            "CharRNN (one-hot)": trainer_step(list(project.parameters()), lambda x, h: project(F.one_hot(x, vocab_size).float(), h), x_idx),
            "bare nn.LSTM (dense)": trainer_step([*bare_lstm.parameters(), *bare_head.parameters()], bare_forward, x_dense),
        })
        results = {name: per_char * batch * seq / sec for name, sec in seconds.items()}
        ours, bare = results["CharRNN (one-hot)"], results["bare nn.LSTM (dense)"]
        target = targets.get(hidden)
        verdict = f"target >= {target:.0%} {'ok' if ours / peak >= target else 'MISSED'}" if target else "no target"
        rows.append(("flops", f"LSTM-{hidden} {batch}x{seq} train step, % of peak", f"CharRNN {ours / peak:.0%} ({ours / 1e9:.1f} GFLOP/s), bare nn.LSTM {bare / peak:.0%} ({bare / 1e9:.1f})",
                     f"{verdict}; {per_char / 1e6:.2f} MFLOP/char, V={vocab_size}"))
    return rows


# --- sampling -------------------------------------------------------------------------------


def sampling(args: argparse.Namespace) -> list[tuple]:
    import torch
    from torch.nn import functional as F

    from charrnn.core.corpora import read_text_file
    from charrnn.data import Vocabulary
    from charrnn.core.generate import generate, pick
    from charrnn.model import CharRNN
    from charrnn.core.generate import SAMPLING_THREADS

    text = read_text_file(args.corpus)
    vocab = Vocabulary.from_text(text)
    prompt, n = text[:200], 2000
    rows = []
    for threads in sorted({SAMPLING_THREADS, args.threads}):
        torch.set_num_threads(threads)
        label = f"{threads} thread(s)" + (", as charrnn-sample runs" if threads == SAMPLING_THREADS else "")
        for hidden in (256, 512):
            torch.manual_seed(0)
            model = CharRNN(len(vocab), hidden, cell="lstm").eval()
            note(f"sampling: LSTM-{hidden}, {threads} thread(s)")

            def ours() -> tuple[float, float]:
                start = time.perf_counter()
                gen = generate(model, vocab, prompt, n, temperature=1.0, seed=0)
                next(gen)
                first, t1 = time.perf_counter() - start, time.perf_counter()
                return first, sum(1 for _ in gen) / (time.perf_counter() - t1)

            def naive() -> float:
                """The model's forward (one nn.LSTM call) for every character, with the same pick()."""
                generator = torch.Generator().manual_seed(0)
                with torch.inference_mode():
                    _, state = model(vocab.encode(prompt[:-1]).unsqueeze(0))
                    idx, start = vocab.encode(prompt[-1]), time.perf_counter()
                    for _ in range(n // 4):
                        logits, state = model(F.one_hot(idx.view(1, 1), len(vocab)).float(), state)
                        idx = pick(logits[:, -1], 1.0, None, generator)
                return (n // 4) / (time.perf_counter() - start)

            runs, naives = [], []
            for _ in range(3):  # interleaved: ours, naive, ours, naive, ...
                runs.append(ours())
                naives.append(naive())
            first, rate, base = statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs), statistics.median(naives)
            verdict = f"target >= 3,000 {'ok' if rate >= 3000 else 'MISSED'}" if hidden == 512 and threads == SAMPLING_THREADS else ""
            rows.append(("sampling", f"LSTM-{hidden}, {label}: chars/s generator vs naive", f"{rate:,.0f} vs {base:,.0f} ({rate / base:.1f}x)", verdict))
            rows.append(("sampling", f"LSTM-{hidden}, {label}: time to first char", f"{first * 1e3:.1f} ms", f"{len(prompt)}-char prompt, untrained model, V={len(vocab)}"))
    torch.set_num_threads(args.threads)
    return rows


# --- memory ---------------------------------------------------------------------------------


def memory_child(args: argparse.Namespace) -> None:
    """One measurement in this fresh process: prints {"maxrss_kb": ...} as the last line."""
    import resource

    import torch
    from torch.nn import functional as F

    from charrnn.data import IGNORE_INDEX, CharDataModule
    from charrnn.model import CharRNN

    torch.set_num_threads(args.threads)
    kind = args.child.split(":", 1)[1]
    dm = CharDataModule(corpus="text", path=str(args.corpus), batch_size=64, seq_len=128)
    dm.setup("fit")
    model = CharRNN(len(dm.vocab), 512, cell="lstm")
    if kind == "train":
        opt, state = torch.optim.Adam(model.parameters(), lr=2e-3), None
        for i, batch in enumerate(dm.train_dataloader()):
            if i >= args.memory_steps:
                break
            x, y = dm.on_after_batch_transfer(batch, 0)
            logits, state = model(x, detach(state))
            loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), y.reshape(-1), ignore_index=IGNORE_INDEX)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
    extra = {"tokens_bytes": dm.tokens.element_size() * dm.tokens.numel(), "chars": dm.tokens.numel(), "vocab": len(dm.vocab)}
    print(json.dumps({"maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, **extra}))


def memory(args: argparse.Namespace) -> list[tuple]:
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "PYTHONWARNINGS": "ignore"}
    out = {}
    for kind in ("baseline", "train"):
        note(f"memory: {kind} (fresh process)")
        cmd = [sys.executable, __file__, "--corpus", str(args.corpus), "--threads", str(args.threads), "--memory-steps", str(args.memory_steps), "--child", f"memory:{kind}"]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if proc.returncode != 0:
            return [("memory", f"{kind} measurement failed", f"exit {proc.returncode}", (proc.stderr.strip().splitlines() or ["?"])[-1][:100])]
        out[kind] = json.loads(proc.stdout.strip().splitlines()[-1])
    base, train = out["baseline"]["maxrss_kb"] / 1024, out["train"]["maxrss_kb"] / 1024
    n, v, tb = out["train"]["chars"], out["train"]["vocab"], out["train"]["tokens_bytes"]
    return [
        ("memory", f"peak RSS, LSTM-512 64x128, {args.memory_steps} steps", f"{train:,.0f} MiB (imports + data + model: {base:,.0f} MiB; training adds {train - base:,.0f})", "ru_maxrss, one fresh process each"),
        ("memory", "corpus tensor vs one-hot", f"{tb / 2**20:,.1f} MiB int64 vs {n * v * 4 / 2**20:,.0f} MiB float32 one-hot", f"{n:,} chars x V={v}; one-hot is made per batch only"),
    ]


# --- table ----------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    import torch

    torch.set_num_threads(args.threads)
    if args.child:
        memory_child(args)
        return 0
    funcs = {"quality": quality, "overhead": overhead, "flops": flops, "sampling": sampling, "memory": memory}
    rows: list[tuple] = []
    for name in args.only:
        started = time.perf_counter()
        rows += funcs[name](args)
        note(f"{name}: {time.perf_counter() - started:.0f} s")

    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"charrnn benchmarks: {args.corpus.name}, {args.threads} thread(s), torch {torch.__version__}", show_lines=False)
    for col in ("row", "measure", "value", "target / anchor / note"):
        table.add_column(col, overflow="fold")
    previous = None
    for row in rows:
        if previous is not None and row[0] != previous:
            table.add_section()
        table.add_row(*(str(c) for c in row))
        previous = row[0]
    Console(width=None if sys.stdout.isatty() else 200).print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
