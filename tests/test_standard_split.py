"""The standard split (val = the corpus's last 10 %, as nanoGPT) in charrnn-eval; a run with no test split."""

from __future__ import annotations

import json

import pytest
import torch

from charrnn.core.errors import UserError
from charrnn.core.scoring import standard_val, standard_val_held_out
from charrnn.core.windows import check_split, cut_splits
from conftest import TINY_RUN, TINY_TEXT, cli_in_process, only_run_dir, write_corpus


def test_standard_val_is_nanogpts_last_ten_percent():
    tokens = torch.arange(1_115_394)  # Tiny Shakespeare's length: nanoGPT's val starts at int(n * 0.9)
    assert standard_val(tokens)[0].item() == 1_003_854 and len(standard_val(tokens)) == 111_540
    assert standard_val(torch.arange(100)).tolist() == list(range(90, 100))
    assert standard_val_held_out([0.9, 0.05, 0.05]) and standard_val_held_out([0.8, 0.1, 0.1])
    assert not standard_val_held_out([0.95, 0.05, 0.0])


def test_a_zero_test_fraction_means_no_test_and_empty_train_or_val_is_still_refused():
    assert check_split([0.9, 0.1, 0.0]) == [0.9, 0.1, 0.0]
    splits = cut_splits(torch.arange(1000), [0.9, 0.1, 0.0], seq_len=16)
    assert len(splits["train"]) == 900 and len(splits["val"]) == 100 and len(splits["test"]) == 0
    for split in ([0.9, 0.0, 0.1], [0.0, 0.5, 0.5], [0.9, 0.1, -0.1]):
        with pytest.raises(UserError, match="empty train or val"):
            check_split(split)


@pytest.mark.slow
def test_a_run_without_test_split_and_its_standard_val_in_charrnn_eval(tmp_path):
    """data.split=[0.9,0.1,0.0]: no final test, metrics.json's test is empty. On a corpus whose length is a
    multiple of 10 the run's own val is exactly the standard val, so charrnn-eval's two figures agree."""
    n = len(TINY_TEXT)
    assert n % 10 == 0 and int(n * 0.9) == round(n * 0.9)  # the two cuts coincide on this corpus
    write_corpus(tmp_path)
    train = cli_in_process(
        ["data=text", "data.path=tiny.txt", "data.split=[0.9,0.1,0.0]", *TINY_RUN], tmp_path
    )
    assert train.returncode == 0, train.stderr[-3000:]
    assert "test bpc: none (no test split)" in train.stdout
    run = only_run_dir(tmp_path)
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["test"] == {} and metrics["final"]["val/bpc"] > 0

    scored = cli_in_process([str(run), "split=val"], tmp_path, script="charrnn-eval")
    assert scored.returncode == 0, scored.stderr[-2000:]
    record = json.loads(scored.stdout.strip().splitlines()[-1])
    assert "standard val" in scored.stdout and record["standard_val_held_out"] is True
    assert record["standard_val_loss"] == pytest.approx(record["loss"], rel=1e-12)
    assert record["bpc"] == pytest.approx(metrics["best_val_bpc"], abs=1e-6)

    only = cli_in_process([str(run), "split=standard_val", "--json"], tmp_path, script="charrnn-eval")
    assert only.returncode == 0, only.stderr[-2000:]
    assert json.loads(only.stdout)["loss"] == pytest.approx(record["standard_val_loss"], rel=1e-12)

    no_test = cli_in_process([str(run), "split=test"], tmp_path, script="charrnn-eval")
    assert no_test.returncode == 2 and "Traceback" not in no_test.stderr
    assert len(no_test.stderr.strip().splitlines()) == 1 and "split=test" in no_test.stderr
