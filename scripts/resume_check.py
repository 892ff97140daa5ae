"""Resume from every checkpoint a run saved, and compare with the run itself: a table of exactness.

For each batching and each run shape (epoch- or step-limited, validation at epoch ends or every 7
batches), one real ``charrnn-train`` run keeps every checkpoint it saves (``save_top_k=-1``). Each
checkpoint then stands in for the state a kill at that moment leaves behind: a copy of the run dir
with only that checkpoint, as ``last.ckpt``, is resumed with ``resume=<copy>``. A resume counts as
identical when its metrics.json (best and final val, test, steps, epochs) equals the whole run's.

    python scripts/resume_check.py [--work DIR] [--batching stateful,random] [--shapes epochs_val1,...]

It runs on the CPU in minutes (about 80 resumes of a 2-layer LSTM-16 on a 6 kB text for all shapes).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

TEXT = "".join(
    f"the {w} sat on the mat {i % 7}.\nand the {w} ran.\n"
    for i, w in enumerate(["cat", "dog", "hen", "fox"] * 40)
)
COMMON = [
    "model.hidden_size=16",
    "model.num_layers=2",
    "model.dropout=0.1",
    "data.seq_len=16",
    "data.batch_size=8",
    "trainer.enable_progress_bar=false",
    "sample.length=10",
    "callbacks.model_checkpoint.save_top_k=-1",
]
EPOCH_END = ["trainer.val_check_interval=1.0", "trainer.check_val_every_n_epoch=1"]
SHAPES = {
    "epochs_val1": ["trainer.max_steps=-1", "trainer.max_epochs=4", *EPOCH_END],
    "epochs_val7": ["trainer.max_steps=-1", "trainer.max_epochs=3", "trainer.val_check_interval=7"],
    "steps_val7": ["trainer.max_steps=120", "trainer.val_check_interval=7", "scheduler=constant"],
    "steps_val1": ["trainer.max_steps=150", *EPOCH_END],
}
KEYS = ("best_val_bpc", "final", "test", "global_step", "epochs")


def train(cwd: Path, args: list[str]) -> None:
    exe = Path(sys.executable).parent / "charrnn-train"
    proc = subprocess.run([str(exe), *args], cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"resume_check: charrnn-train {' '.join(args)} failed:\n{proc.stderr[-2000:]}")


def metrics(run: Path) -> dict:
    found = json.loads((run / "metrics.json").read_text())
    return {k: found[k] for k in KEYS}


def as_if_killed(run: Path, ckpt: Path, copy: Path) -> None:
    """A copy of ``run`` as a kill right after ``ckpt`` leaves it: that checkpoint as last.ckpt,
    unfinished."""
    shutil.copytree(run, copy)
    (copy / "metrics.json").unlink()
    record = json.loads((copy / "run.json").read_text())
    (copy / "run.json").write_text(json.dumps({**record, "status": "running"}))
    for other in [p for p in (copy / "checkpoints").iterdir() if p.name != ckpt.name]:
        other.unlink()
    (copy / "checkpoints" / ckpt.name).rename(copy / "checkpoints" / "last.ckpt")


def check(work: Path, corpus: Path, batching: str, shape: str) -> tuple[int, int, list[int]]:
    """(identical, tried, steps that differed) for one run."""
    cwd = work / f"{batching}-{shape}"
    cwd.mkdir()
    train(cwd, ["data=text", f"data.path={corpus}", f"data.batching={batching}", *COMMON, *SHAPES[shape]])
    (run,) = (cwd / "outputs" / "runs").glob("*/*")
    expected, differed = metrics(run), []
    saved = sorted((run / "checkpoints").glob("best-step*.ckpt"))
    for ckpt in saved:
        copy = cwd / f"from-{ckpt.stem}"
        as_if_killed(run, ckpt, copy)
        train(cwd, [f"resume={copy}"])
        if metrics(copy) != expected:
            differed.append(int(ckpt.stem[-6:]))
    return len(saved) - len(differed), len(saved), differed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--work", type=Path, help="where the runs go (default: a temporary dir, removed after)"
    )
    parser.add_argument("--batching", default="stateful,random")
    parser.add_argument("--shapes", default=",".join(SHAPES))
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="charrnn-resume-check-"))
    work.mkdir(parents=True, exist_ok=True)
    corpus = work / "tiny.txt"
    corpus.write_text(TEXT, encoding="utf-8")
    print(f"{'batching':<10} {'shape':<12} {'identical':>10}  differed at steps")
    total = [0, 0]
    for batching in args.batching.split(","):
        for shape in args.shapes.split(","):
            same, tried, differed = check(work, corpus, batching, shape)
            total = [total[0] + same, total[1] + tried]
            print(f"{batching:<10} {shape:<12} {f'{same}/{tried}':>10}  {differed or '-'}", flush=True)
    print(f"{'all':<23} {f'{total[0]}/{total[1]}':>10}")
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
