"""``charrnn-sample``: stream text from a trained run, one character at a time.

    charrnn-sample RUN_DIR_OR_CKPT [prompt=TEXT] [length=N] [temperature=T] [top_k=K] [seed=S] [device=cpu]

Arguments after the run are ``key=value`` pairs, written like Hydra overrides, but this is a plain
script: it reads the model and vocabulary saved with the run and needs no config composition.
The arguments are checked before torch is imported, so a typo fails at once (:mod:`charrnn.cli.args`).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from typing import Any

from charrnn.cli.args import (
    as_float,
    as_int,
    as_optional_int,
    as_prompt,
    as_str,
    check_device,
    check_path,
    parse_kv,
    run_cli,
)
from charrnn.core.errors import UserError

USAGE = """\
usage: charrnn-sample RUN_DIR_OR_CKPT [prompt=TEXT] [length=N] [temperature=T] [top_k=K] [seed=S] [device=cpu]

Generate text from a trained charrnn run and stream it to stdout, prompt first.

  RUN_DIR_OR_CKPT  a run directory (its best checkpoint, else last.ckpt) or a .ckpt file
  prompt=TEXT      text to start from (default: a newline if the vocabulary has one, else its
                   first character); \\n, \\t and \\\\ are read as newline, tab and backslash
  length=N         characters to generate after the prompt (default 500)
  temperature=T    > 0; lower is more conservative, near 0 is greedy (default 0.8)
  top_k=K          sample only among the K most likely characters (default: none, no limit)
  seed=S           an integer for repeatable output (default: none, random)
  device=D         cpu (default), cuda or cuda:N

examples:
  charrnn-sample outputs/runs/2026-11-25/13-30-17_f58a6a prompt=ROMEO: length=300 seed=0
  charrnn-sample run/checkpoints/last.ckpt temperature=0.5 top_k=5
"""

SPEC: dict[str, Callable[[str, str], Any]] = {
    "prompt": as_prompt,
    "length": as_int,
    "temperature": as_float,
    "top_k": as_optional_int,
    "seed": as_optional_int,
    "device": as_str,
}


def sample(args: list[str]) -> int:
    """Parse, check, load the run, then write the prompt and each generated character as it comes."""
    path, opts = parse_kv(args, SPEC, USAGE)
    length, temperature, top_k = opts.get("length", 500), opts.get("temperature", 0.8), opts.get("top_k")
    if "prompt" in opts and not opts["prompt"]:
        raise UserError("the prompt must hold at least one character (or leave prompt= out for the default)")
    check_path(path)
    from charrnn.core.checkpoint import load_model
    from charrnn.core.generate import SAMPLING_THREADS, check_sampling_args, default_prompt, generate

    check_sampling_args(length, temperature, top_k)  # before loading the checkpoint
    device = opts.get("device", "cpu")
    check_device(device)

    run = load_model(path, device=device)
    if run.model.head.weight.device.type == "cpu":
        import torch

        torch.set_num_threads(SAMPLING_THREADS)
    vocab = run.vocab
    prompt = opts.get("prompt") or default_prompt(vocab)
    vocab.encode(prompt)  # unknown characters: one clear error before anything is printed
    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(errors="backslashreplace")  # type: ignore[union-attr]
    out = sys.stdout
    out.write(prompt)
    out.flush()
    for ch in generate(run.model, vocab, prompt, length, temperature, top_k, opts.get("seed")):
        out.write(ch)
        out.flush()
    out.write("\n")
    out.flush()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point of ``charrnn-sample``."""
    return run_cli("charrnn-sample", USAGE, sample, argv)


if __name__ == "__main__":
    sys.exit(main())
