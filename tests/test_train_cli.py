"""``charrnn-train`` on a tiny corpus: its run dir, determinism, resume and entry points."""

from __future__ import annotations

import json

import pytest
import torch
from omegaconf import OmegaConf

from charrnn.cli.rundir import load_run
from charrnn.core.errors import UserError
from charrnn.core.vocab import Vocabulary
from charrnn.lit.datamodule import CharDataModule
from conftest import TINY_RUN, cli_in_process, only_run_dir, read_scalars, train_in_process

pytestmark = pytest.mark.slow


def test_train_writes_a_complete_run(finished_run, finished_corpus):
    run, corpus = finished_run, finished_corpus
    for name in ("vocab.json", ".hydra/config.yaml", "metrics.json", "checkpoints/last.ckpt"):
        assert (run / name).is_file(), name
    scalars = read_scalars(run / "tensorboard")
    assert {"train/loss", "val/loss", "val/bpc", "val/acc", "test/loss", "test/bpc", "test/acc"} <= set(
        scalars
    )
    assert [step for step, _ in scalars["val/bpc"]] == [9, 19]

    metrics = json.loads((run / "metrics.json").read_text())
    best_step, best_bpc = min(scalars["val/bpc"], key=lambda sv: sv[1])
    assert metrics["best_val_bpc"] == pytest.approx(best_bpc, rel=1e-6)

    # The best checkpoint loads back (weights only) and gives the logged val loss on the val split.
    loaded = load_run(run)
    assert (
        loaded.checkpoint_path.name.startswith("best-") and loaded.checkpoint["global_step"] == best_step + 1
    )
    assert loaded.vocab == Vocabulary.load(run / "vocab.json")
    cfg = OmegaConf.load(run / ".hydra" / "config.yaml")
    dm = CharDataModule(
        corpus="text", path=str(corpus), seq_len=cfg.data.seq_len, batch_size=cfg.data.batch_size
    )
    dm.setup("fit")
    total, count = 0.0, 0
    state = None
    with torch.no_grad():
        for batch in dm.val_dataloader():
            x, y = dm.on_after_batch_transfer(batch, 0)
            logits, state = loaded.model(x, state)
            total += torch.nn.functional.cross_entropy(
                logits.reshape(-1, logits.size(-1)), y.reshape(-1), ignore_index=-100, reduction="sum"
            ).item()
            count += int((y != -100).sum())
    val_loss = dict(scalars["val/loss"])[best_step]
    assert total / count == pytest.approx(val_loss, rel=1e-5)

    # The HPARAMS tab: the run's config registered with val/bpc as a metric.
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run / "tensorboard"))
    acc.Reload()
    plugin = acc.PluginTagToContent("hparams")
    assert "_hparams_/session_start_info" in plugin and "_hparams_/experiment" in plugin
    assert (
        b"val/bpc" in plugin["_hparams_/experiment"]
        and b"model.hidden_size" in plugin["_hparams_/session_start_info"]
    )


def test_same_seed_gives_identical_logged_values(tmp_path, corpus):
    """train(cfg, ctx) in this process, twice, from a config composed by Hydra."""
    tiny = ["data=text", f"data.path={corpus}", *TINY_RUN]
    best = [train_in_process(tiny, tmp_path / name) for name in ("a", "b")]
    first, second = (read_scalars(tmp_path / name / "tensorboard") for name in ("a", "b"))
    first.pop("epoch", None), second.pop("epoch", None)
    assert first == second and best[0] == best[1]
    assert json.loads((tmp_path / "a" / "metrics.json").read_text())["best_val_bpc"] == best[0]


def test_resume_from_checkpoint(tmp_path, corpus, finished_run):
    tiny = ["data=text", f"data.path={corpus}", *TINY_RUN]  # finished_run's, with the same text elsewhere
    train_in_process(
        [*tiny, "trainer.max_steps=30", f"ckpt_path={finished_run / 'checkpoints' / 'last.ckpt'}"],
        tmp_path / "again",
    )
    scalars = read_scalars(tmp_path / "again" / "tensorboard")
    assert [step for step, _ in scalars["val/bpc"]] == [29]
    assert json.loads((tmp_path / "again" / "metrics.json").read_text())["global_step"] == 30


def test_seed_notebook_learns_ello(tmp_path):
    proc = cli_in_process(["experiment=seed_notebook"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = only_run_dir(tmp_path)
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["test"]["test/acc"] == 1.0
    assert metrics["global_step"] < 1000  # stopped because it learned, not because steps ran out
    loaded = load_run(run)
    logits, _ = loaded.model(loaded.vocab.encode("hell").unsqueeze(0))
    assert loaded.vocab.decode(logits.argmax(-1)[0]) == "ello"
    assert loaded.model.cell == "rnn" and loaded.model.hidden_size == 8 and loaded.vocab.chars == list("ehlo")


def test_gpu_request_without_cuda_is_one_clear_error(tmp_path, corpus):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(UserError) as refused:
        train_in_process(["data=text", f"data.path={corpus}", "trainer=gpu"], tmp_path / "run")
    assert (
        "\n" not in str(refused.value) and "GPU" in str(refused.value) and "trainer=cpu" in str(refused.value)
    )


def test_module_entry_point_runs_from_another_directory(tmp_path, corpus):
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-m", "charrnn.cli.train", "--help"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0 and "model: gru, lstm, rnn" in proc.stdout, proc.stdout + proc.stderr
