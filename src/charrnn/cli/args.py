"""The small ``PATH key=value ...`` parser and error handling that ``charrnn-sample`` and ``charrnn-eval``
share.

The arguments are plain strings checked before torch is imported, so a typo fails at once.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from charrnn.core.errors import UserError

NONE_WORDS = ("none", "null", "")


def fail(prog: str, message: str) -> NoReturn:
    """One sentence on stderr and exit status 2: the convention for every user mistake."""
    print(f"{prog}: error: {message}", file=sys.stderr)
    raise SystemExit(2)


def parse_kv(
    args: Sequence[str], spec: dict[str, Callable[[str, str], Any]], usage: str
) -> tuple[str, dict[str, Any]]:
    """``PATH key=value ...`` -> ``(PATH, {key: converted value})``; raises UserError on any mistake.

    ``spec`` maps each allowed key to a converter ``(key, text) -> value``.
    """
    # key=value only for a known key: any other argument is the path, '=' and spaces included.
    pairs = [a for a in args if "=" in a and a.partition("=")[0].lstrip("+") in spec]
    positional = [a for a in args if a not in pairs]
    for arg in positional:
        key = arg.partition("=")[0].lstrip("+")
        if "=" in arg and key.isidentifier() and not Path(arg).expanduser().exists():
            raise UserError(f"unknown key {key!r}; the keys are {', '.join(spec)}")
    if not positional:
        raise UserError(f"missing the run directory or .ckpt file; {usage.splitlines()[0]}")
    if len(positional) > 1:
        raise UserError(
            f"expected one run directory or .ckpt file and key=value pairs, got {len(positional)} plain "
            f"arguments: {', '.join(map(repr, positional))}"
        )
    values: dict[str, Any] = {}
    for pair in pairs:
        key, _, text = pair.partition("=")
        key = key.lstrip("+")  # tolerate Hydra's "+key=value" spelling
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


def as_bool(key: str, text: str) -> bool:
    """true/false (as Hydra spells them; also yes/no, 1/0)."""
    word = text.strip().lower()
    if word not in ("true", "false", "yes", "no", "1", "0"):
        raise UserError(f"{key} must be true or false, got {text!r}")
    return word in ("true", "yes", "1")


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


def run_cli(
    prog: str, usage: str, body: Callable[[list[str]], int], argv: Sequence[str] | None = None
) -> int:
    """``--help`` prints ``usage``; a UserError becomes one line on stderr and exit 2; Ctrl-C and closed pipes
    end quietly."""
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
