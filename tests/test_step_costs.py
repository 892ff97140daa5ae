"""The per-step fast paths keep their guarantees: the NaN check names the first bad step exactly while no
step does device work for it, Lightning still reads training_step's signature right, the quiet profiler
is the run's, and RunCheckpoint's fixed state key is the one Lightning would build."""

from __future__ import annotations

import inspect

import lightning as L
import pytest
import torch

from charrnn.core.errors import UserError
from charrnn.core.model import CharRNN
from charrnn.lit.datamodule import CharDataModule
from charrnn.lit.module import NONFINITE_CHECK_EVERY, CharRNNModule


class Poison(L.Callback):
    """From step ``at`` on, the head's bias is NaN: every later loss is NaN."""

    def __init__(self, at: int) -> None:
        self.at = at

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.at:
            with torch.no_grad():
                pl_module.model.head.bias.fill_(float("nan"))


def fit_poisoned(at: int, max_steps: int, log_every: int) -> CharRNNModule:
    dm = CharDataModule(corpus="hello", seq_len=4, batch_size=1)
    dm.setup("fit")
    module = CharRNNModule(CharRNN(len(dm.vocab), 8), dm.vocab, optimizer=torch.optim.Adam, sample_length=0)
    trainer = L.Trainer(
        accelerator="cpu",
        max_steps=max_steps,
        log_every_n_steps=log_every,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[Poison(at)],
    )
    trainer.fit(module, datamodule=dm)
    return module


@pytest.mark.parametrize(
    "log_every", [25, 1000]
)  # a logging step reads it; with rare logging, the bound does
def test_the_nan_check_names_the_first_bad_step(log_every):
    with pytest.raises(UserError, match=r"NaN or infinite at step 7;"):
        fit_poisoned(7, max_steps=NONFINITE_CHECK_EVERY + 20, log_every=log_every)


def test_the_nan_check_keeps_at_most_its_bound_and_does_no_device_work_per_step():
    module = fit_poisoned(10**6, max_steps=NONFINITE_CHECK_EVERY + 10, log_every=10**6)  # never poisoned
    assert 0 < len(module._losses) <= NONFINITE_CHECK_EVERY and module._bad_step is None
    assert all(not t.requires_grad and t.grad_fn is None for t in module._losses)  # no graph kept alive


def test_lightning_still_sees_training_steps_parameters():
    from lightning.pytorch.utilities.signature_utils import is_param_in_hook_signature

    step = CharRNNModule.training_step
    assert list(inspect.getfullargspec(step).args) == ["self", "batch", "batch_idx"]
    assert is_param_in_hook_signature(step, "batch_idx", min_args=2)


def test_the_run_trainer_has_the_quiet_profiler_unless_one_is_named(tmp_path):
    from charrnn.cli.training import make_trainer
    from charrnn.lit.profiler import QuietProfiler
    from conftest import compose_config

    cfg = compose_config(["data=hello", "trainer.enable_progress_bar=false"], tmp_path)
    assert isinstance(make_trainer(cfg, [], []).profiler, QuietProfiler)
    cfg = compose_config(["data=hello", "+trainer.profiler=simple"], tmp_path)
    assert type(make_trainer(cfg, [], []).profiler).__name__ == "SimpleProfiler"
    with QuietProfiler().profile("x") as entered:
        assert entered is None


def test_run_checkpoints_fixed_state_key_is_lightnings(tmp_path):
    from lightning.pytorch.callbacks import ModelCheckpoint

    from charrnn.lit.checkpoints import RunCheckpoint

    kwargs = {"monitor": "val/bpc", "mode": "min", "save_top_k": 1}
    ours, theirs = (
        RunCheckpoint(dirpath=str(tmp_path), **kwargs),
        ModelCheckpoint(dirpath=str(tmp_path), **kwargs),
    )
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, default_root_dir=tmp_path)
    before = ours.state_key
    ours.setup(trainer, None, "fit")
    assert ours.state_key == before == theirs.state_key and ours._state_key == before
