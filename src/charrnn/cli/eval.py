"""``charrnn-eval``: loss, bits per char, perplexity and accuracy of a trained run.

    charrnn-eval RUN_DIR_OR_CKPT [split=val|test|train|standard_val] [path=FILE] [batch_size=N] [seq_len=N]
    [device=cpu]
                 [allow_corpus_change=true] [--json]

A split is rebuilt from the run's saved Hydra config (the same corpus, vocabulary and cut as in
training), so ``split=val`` on the best checkpoint reproduces the logged best ``val/bpc``; a corpus
that changed since (its sha256 differs from run.json's) is refused unless ``allow_corpus_change=true``. A file
is scored with the run's vocabulary. Both are read statefully over the whole text
(:func:`charrnn.core.scoring.evaluate`). A split is reported beside the standard split's val (the
corpus's last 10 %, :func:`charrnn.core.scoring.standard_val`), so figures compare with published ones.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from charrnn.cli.args import as_bool, as_int, as_str, check_device, check_path, parse_kv, run_cli
from charrnn.core.errors import UserError

USAGE = """\
usage: charrnn-eval RUN_DIR_OR_CKPT [split=val|test|train|standard_val] [path=FILE] [batch_size=N]
                    [seq_len=N] [device=cpu] [allow_corpus_change=true] [--json]

Score a trained charrnn run on a split of its corpus or on any text file: loss (nats/char),
bits per char, perplexity and accuracy over the whole text, reading it statefully as validation
does (batch_size parallel streams, windows of seq_len, hidden state carried, starting from zero).

  RUN_DIR_OR_CKPT  a run directory (its best checkpoint, else last.ckpt) or a .ckpt file
  split=NAME       val (default), test or train: rebuilt from the run's saved config, and reported
                   beside the standard val (the corpus's last 10 %, nanoGPT's val);
                   split=standard_val scores only that
  path=FILE        a text file instead of a split (the only choice for a .ckpt outside a run dir)
  batch_size=N     parallel streams (default: the run's data.batch_size, else 32)
  seq_len=N        window length (default: the run's data.seq_len, else 64)
  device=D         cpu (default), cuda or cuda:N
  allow_corpus_change=true  score a split although the run's corpus changed since it trained
  --json           print only one JSON line instead of the table and the JSON line

examples:
  charrnn-eval outputs/runs/2026-11-25/13-30-17_f58a6a split=test
  charrnn-eval run/checkpoints/last.ckpt path=other.txt --json
"""

SPLITS = ("val", "test", "train", "standard_val")
SPEC: dict[str, Callable[[str, str], Any]] = {
    "split": as_str,
    "path": as_str,
    "batch_size": as_int,
    "seq_len": as_int,
    "device": as_str,
    "allow_corpus_change": as_bool,
}


def check_corpus_unchanged(run: Any, text: str, split: str, allowed: bool) -> None:
    """A split of a corpus that changed since training is not the split the model was trained and
    validated on: refused unless ``allow_corpus_change=true`` (run.json keeps the corpus sha256)."""
    from charrnn.cli.record import corpus_info
    from charrnn.cli.rundir import read_run_file

    record = run.run_dir / "run.json"
    before = (read_run_file(record).get("corpus") or {}).get("sha256") if record.is_file() else None
    now = corpus_info("", None, text)["sha256"]
    if before and before != now and not allowed:
        raise UserError(
            f"the run's corpus changed since it trained (sha256 {before[:12]}... in run.json, {now[:12]}... "
            f"now), so split={split} is not the split it was trained and scored on; pass "
            "allow_corpus_change=true to score the changed text anyway, or path=FILE to score any other text"
        )


def run_text(run: Any) -> str:
    """The text of the corpus the run's saved config names (a relative ``data.path``: from where it
    trained)."""
    from omegaconf import OmegaConf

    from charrnn.core.corpora import load_corpus

    if run.config is None:
        raise UserError(
            f"{str(run.checkpoint_path)!r} is not inside a run directory with .hydra/config.yaml, so its "
            "splits are unknown; pass path=FILE to score a text file"
        )
    data = run.config.get("data") or {}
    path = data.get("path")
    if path and not Path(path).expanduser().is_absolute() and not Path(path).exists():
        # Relative to the directory training ran in (Hydra records it), not to ours.
        hydra_yaml = run.run_dir / ".hydra" / "hydra.yaml"
        cwd = (
            OmegaConf.select(OmegaConf.load(hydra_yaml), "hydra.runtime.cwd", default=None)
            if hydra_yaml.is_file()
            else None
        )
        if cwd and (Path(cwd) / path).exists():
            path = str(Path(cwd) / path)
    return load_corpus(
        data.get("corpus", "stdlib"),
        path,
        data.get("encoding", "utf-8"),
        data.get("errors", "strict"),
        data.get("max_chars"),
    )


def run_splits(run: Any, split: str, allow_change: bool = False) -> tuple[dict[str, Any], bool]:
    """The run's train/val/test splits rebuilt from its saved config by the code training made them with
    (:func:`charrnn.core.windows.corpus_splits`), with ``standard_val``; and whether training left that
    out."""
    from charrnn.core.scoring import standard_val, standard_val_held_out
    from charrnn.core.windows import corpus_splits, split_fractions

    text = run_text(run)
    check_corpus_unchanged(run, text, split, allow_change)
    data = run.config.get("data") or {}
    fractions = split_fractions(data.get("corpus", "stdlib"), data.get("split"))
    stateful = data.get("batching", "stateful") == "stateful"
    vocab, tokens, splits = corpus_splits(
        text, fractions, data.get("seq_len", 64), data.get("batch_size", 32), stateful
    )
    if vocab != run.vocab:
        extra, missing = (
            sorted(set(vocab.chars) - set(run.vocab.chars)),
            sorted(set(run.vocab.chars) - set(vocab.chars)),
        )
        raise UserError(
            "the corpus the run's config names now has a different vocabulary than the checkpoint "
            f"({len(vocab)} vs {len(run.vocab)} characters; new: {''.join(extra)[:20]!r}, gone: "
            f"{''.join(missing)[:20]!r}), so its splits are not the ones the model was trained on; pass "
            "path=FILE to score a text file"
        )
    # The corpus's last 10 %, whatever the run's own cut; "hello" (not cut) trains on all of it.
    held_out = fractions is not None and standard_val_held_out(fractions)
    return {**splits, "standard_val": standard_val(tokens)}, held_out


def print_table(record: dict[str, Any]) -> None:
    """The human-readable lines of a :func:`evaluate_run` record."""
    print(f"checkpoint   {record['checkpoint']}")
    print(
        f"text         {record['source']}: {record['chars']:,} characters scored, "
        f"batch_size={record['batch_size']} seq_len={record['seq_len']}, state carried"
    )
    print(f"loss         {record['loss']:.6f} nats/char")
    print(f"bpc          {record['bpc']:.6f} bits/char")
    print(f"perplexity   {record['perplexity']:.4f}")
    print(f"accuracy     {record['acc']:.4%}")
    if "standard_val_loss" in record:
        held_out = (
            "held out" if record["standard_val_held_out"] else "NOT held out: the run trained on part of it"
        )
        print(
            f"standard val {record['standard_val_loss']:.6f} nats/char = {record['standard_val_bpc']:.6f} "
            f"bpc (the corpus's last 10 %, as nanoGPT; {held_out})"
        )


def parse_args(args: list[str]) -> tuple[str, dict[str, Any]]:
    """``RUN_DIR_OR_CKPT`` and the options, every one checked before any file is read."""
    from charrnn.core.windows import check_windows

    path, opts = parse_kv([a for a in args if a != "--json"], SPEC, USAGE)
    if "split" in opts and "path" in opts:
        raise UserError("pass either split=... or path=..., not both")
    if "allow_corpus_change" in opts and "path" in opts:
        raise UserError(
            "allow_corpus_change is for a split of the run's corpus; path=FILE is scored as it is"
        )
    if opts.setdefault("split", "val") not in SPLITS:
        raise UserError(
            f"unknown split={opts['split']!r}; choose val, test, train or standard_val (or path=FILE)"
        )
    # The arguments given; a run's own data.batch_size and data.seq_len were checked when it trained.
    check_windows(opts.get("batch_size", 1), opts.get("seq_len", 1), prefix="")
    check_path(path)
    if "path" in opts:
        check_path(opts["path"])
    check_device(opts.setdefault("device", "cpu"))
    return path, opts


def evaluate_run(args: list[str]) -> int:
    """Parse, load, pick the tokens, score them, print the table and/or the JSON line."""
    path, opts = parse_args(args)
    from charrnn.cli.rundir import load_run
    from charrnn.core.corpora import read_text_file
    from charrnn.core.scoring import evaluate

    run, split = load_run(path, device=opts["device"]), opts["split"]
    data_cfg = run.config.data if run.config is not None else {}
    batch_size = opts.get("batch_size", data_cfg.get("batch_size", 32))
    seq_len = opts.get("seq_len", data_cfg.get("seq_len", 64))
    if "path" in opts:
        # encode raises the error that names any characters outside the vocabulary
        tokens, source = run.vocab.encode(read_text_file(opts["path"])), opts["path"]
    else:
        splits, held_out = run_splits(run, split, opts.get("allow_corpus_change", False))
        tokens, source = splits[split], f"split={split}"
    if len(tokens) < 2:
        raise UserError(f"{source} holds {len(tokens)} character(s); scoring needs at least 2")
    metrics = evaluate(run.model, tokens, batch_size, seq_len)
    record = {
        "checkpoint": str(run.checkpoint_path),
        "source": source,
        **metrics,
        "batch_size": int(batch_size),
        "seq_len": int(seq_len),
    }
    if "path" not in opts and split != "standard_val" and len(splits["standard_val"]) >= 2:  # not for "hello"
        standard = evaluate(run.model, splits["standard_val"], batch_size, seq_len)
        record.update(
            standard_val_loss=standard["loss"],
            standard_val_bpc=standard["bpc"],
            standard_val_held_out=held_out,
        )
    if "--json" not in args:
        print_table(record)
    print(json.dumps(record))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point of ``charrnn-eval``."""
    return run_cli("charrnn-eval", USAGE, evaluate_run, argv)


if __name__ == "__main__":
    sys.exit(main())
