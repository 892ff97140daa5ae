"""scripts/bench.py's GPU-issue rows (overhead, throughput, packing) run end to end at a tiny size on CPU:
the real script in a subprocess, its table's rows checked for shape (the figures mean nothing this small)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from conftest import REPO, TINY_TEXT


def bench(*args: str, cwd) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(REPO / "scripts" / "bench.py"), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"},
    )


def table_rows(stdout: str) -> list[list[str]]:
    """The table's body rows (first line of each cell), from rich's box drawing."""
    rows = []
    for line in stdout.splitlines():
        if line.startswith("│"):
            cells = [c.strip() for c in line.strip("│").split("│")]
            if cells[0]:
                rows.append(cells)
    return rows


@pytest.mark.slow
def test_the_gpu_rows_run_small_on_cpu(tmp_path):
    corpus = tmp_path / "tiny.txt"
    corpus.write_text(TINY_TEXT, encoding="utf-8")
    proc = bench(
        "--corpus", str(corpus), "--only", "overhead,throughput,packing", "--small", "--rounds", "1",
        "--threads", "1", "--packing-jobs", "1,2", cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "device cpu" in proc.stdout
    rows = table_rows(proc.stdout)
    assert [r[0] for r in rows] == ["overhead"] * 6 + ["throughput"] * 2 + ["packing"] * 2, rows
    ratios = [r for r in rows if r[1].endswith("Lightning / bare") or "project / bare" in r[1]]
    assert len(ratios) == 3 and all(float(r[2]) > 0 for r in ratios)
    assert all(r[3].startswith("target >=") for r in ratios[:2])
    packing = [r for r in rows if r[0] == "packing"]
    # One job's row is always a figure; the two jobs' row is one, or says why there is none: on a loaded
    # machine two tiny jobs can train one after the other ("failed: the jobs never trained at the same time").
    assert [r[1].split(":")[0] for r in packing] == ["1 job(s) at once", "2 job(s) at once"], packing
    assert packing[0][1] == "1 job(s) at once: aggregate chars/s" and "failed" not in packing[0][2], packing
    assert all("no device lease" in r[3] for r in packing)


def test_cuda_is_refused_in_one_sentence_without_it(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    corpus = tmp_path / "tiny.txt"
    corpus.write_text(TINY_TEXT, encoding="utf-8")
    proc = bench("--corpus", str(corpus), "--only", "overhead", "--device", "cuda", cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == (
        "bench.py: error: --device cuda: torch sees no CUDA device on this machine; run with --device cpu"
    )
