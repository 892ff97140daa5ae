"""``charrnn-sample``: stream text from a trained run, one character at a time.

    charrnn-sample RUN_DIR_OR_CKPT [prompt=TEXT] [length=N] [temperature=T] [top_k=K] [seed=S] [device=cpu]

Arguments after the run are ``key=value`` pairs, written like Hydra overrides, but this is a plain
script: it reads the model and vocabulary saved with the run and needs no config composition.
The arguments are checked before torch is imported, so a typo fails at once. This module also
holds the small argument parser and error handling that ``charrnn-eval`` shares.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Callable, NoReturn, Sequence

from charrnn.errors import UserError

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

NONE_WORDS = ("none", "null", "")
# Generation on CPU runs on one thread: a step is a few small matrix-vector products, and with
# more threads the OpenMP hand-offs cost more than they save (several times slower on 2 busy cores).
SAMPLING_THREADS = 1


def fail(prog: str, message: str) -> NoReturn:
    """One sentence on stderr and exit status 2: the convention for every user mistake."""
    print(f"{prog}: error: {message}", file=sys.stderr)
    raise SystemExit(2)


def parse_kv(args: Sequence[str], spec: dict[str, Callable[[str, str], Any]], usage: str) -> tuple[str, dict[str, Any]]:
    """``PATH key=value ...`` -> ``(PATH, {key: converted value})``; raises UserError on any mistake.

    ``spec`` maps each allowed key to a converter ``(key, text) -> value``.
    """
    positional = [a for a in args if "=" not in a]
    pairs = [a for a in args if "=" in a]
    if not positional:
        raise UserError(f"missing the run directory or .ckpt file; {usage.splitlines()[0]}")
    if len(positional) > 1:
        raise UserError(f"expected one run directory or .ckpt file and key=value pairs, got {len(positional)} plain arguments: {', '.join(map(repr, positional))}")
    values: dict[str, Any] = {}
    for pair in pairs:
        key, _, text = pair.partition("=")
        key = key.lstrip("+")  # tolerate Hydra's "+key=value" spelling
        if key not in spec:
            raise UserError(f"unknown key {key!r}; the keys are {', '.join(spec)}")
        values[key] = spec[key](key, text)
    return positional[0], values


def as_int(key: str, text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise UserError(f"{key} must be an integer, got {text!r}") from None


def as_optional_int(key: str, text: str) -> int | None:
    return None if text.strip().lower() in NONE_WORDS else as_int(key, text)


def as_float(key: str, text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise UserError(f"{key} must be a number, got {text!r}") from None


def as_str(key: str, text: str) -> str:
    return text


def as_prompt(key: str, text: str) -> str:
    """The prompt with ``\\n``, ``\\t`` and ``\\\\`` unescaped, so a shell argument can hold newlines."""
    out, i = [], 0
    while i < len(text):
        if text[i] == "\\" and i + 1 < len(text) and text[i + 1] in "nt\\":
            out.append({"n": "\n", "t": "\t", "\\": "\\"}[text[i + 1]])
            i += 2
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def check_path(path: str) -> None:
    """A missing path fails before torch is imported (load_run says the same, later)."""
    if not Path(path).expanduser().exists():
        raise UserError(f"{path!r} does not exist; pass a run directory or a .ckpt file")


def check_device(device: str) -> None:
    import torch

    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"device={device} asks for CUDA but this machine has none; use device=cpu")
    try:
        torch.device(device)
    except RuntimeError:
        raise UserError(f"unknown device {device!r}; use cpu, cuda or cuda:N") from None


def run_cli(prog: str, usage: str, body: Callable[[list[str]], int], argv: Sequence[str] | None = None) -> int:
    """``--help`` prints ``usage``; a UserError becomes one line on stderr and exit 2; Ctrl-C and closed pipes end quietly."""
    args = list(sys.argv[1:] if argv is None else argv)
    if any(a in ("-h", "--help") for a in args):
        print(usage, end="")
        return 0
    try:
        return body(args)
    except UserError as e:
        fail(prog, str(e))
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader (e.g. `| head`) left; send what remains nowhere instead of raising at exit.
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


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
    from charrnn.generate import check_sampling_args, generate
    from charrnn.runs import load_run

    check_sampling_args(length, temperature, top_k)  # before loading the checkpoint
    device = opts.get("device", "cpu")
    check_device(device)

    run = load_run(path, device=device)
    if run.model.head.weight.device.type == "cpu":
        import torch

        torch.set_num_threads(SAMPLING_THREADS)
    vocab = run.vocab
    prompt = opts.get("prompt") or ("\n" if "\n" in vocab.index else vocab.chars[0])
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
