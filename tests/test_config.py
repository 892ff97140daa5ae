"""Every option of every config group composes with the primary config and instantiates."""

from pathlib import Path

import hydra
import pytest

from conftest import compose_config

CONF = Path(__file__).resolve().parents[1] / "conf"
GROUPS = ["data", "model", "optim", "scheduler", "trainer", "logger", "callbacks", "experiment"]
OPTIONS = [(group, f.stem) for group in GROUPS for f in sorted((CONF / group).glob("*.yaml"))]
PUBLIC_KEYS = [
    "model.hidden_size",
    "model.cell",
    "optim.lr",
    "data.path",
    "data.seq_len",
    "data.batch_size",
    "model.num_layers",
    "model.dropout",
    "trainer.max_steps",
    "trainer.max_epochs",
    "trainer.max_time",
    "seed",
    "ckpt_path",
]


# The options the README and the docs promise; a group may have more.
PROMISED = {
    "data": {"hello", "shakespeare", "stdlib", "text"},
    "model": {"gru", "lstm", "rnn"},
    "optim": {"adam", "adamw", "sgd"},
    "scheduler": {"constant", "cosine"},
    "trainer": {"auto", "cpu", "ddp", "ddp_cpu", "gpu", "gpu_bf16"},
    "logger": {"tensorboard"},
    "callbacks": {"default", "early_stopping"},
    "experiment": {"seed_notebook", "shakespeare"},
}


def test_every_promised_option_is_shipped():
    for group, promised in PROMISED.items():
        assert promised <= {o for g, o in OPTIONS if g == group}, group


@pytest.mark.parametrize("group,option", OPTIONS, ids=[f"{g}={o}" for g, o in OPTIONS])
def test_option_composes_and_instantiates(group, option, tmp_path, corpus):
    override = f"{group}={option}"
    cfg = compose_config([override, f"data.path={corpus}"] if option == "text" else [override], tmp_path)
    for key in PUBLIC_KEYS:
        assert cfg_has(cfg, key), key
    if group in ("data", "experiment"):
        dm = hydra.utils.instantiate(cfg.data)
        assert dm.seq_len == cfg.data.seq_len
    if group in ("model", "experiment"):
        model = hydra.utils.instantiate(cfg.model, vocab_size=5)
        assert model.cell == cfg.model.cell and model.hidden_size == cfg.model.hidden_size
    if group in ("optim", "scheduler", "experiment"):
        import torch

        params = [torch.nn.Parameter(torch.zeros(2))]
        opt = hydra.utils.instantiate(cfg.optim)(params)
        assert opt.param_groups[0]["lr"] == cfg.optim.lr
        sched = hydra.utils.instantiate(cfg.scheduler)(opt, total_steps=100)
        assert sched.get_last_lr()[0] > 0
    if group in ("logger", "callbacks", "experiment"):
        for node in list(cfg.logger.values()) + list(cfg.callbacks.values()):
            assert isinstance(hydra.utils.instantiate(node), hydra.utils.get_class(node._target_)), (
                node._target_
            )
    if group == "trainer" and option in ("cpu", "default"):
        trainer = hydra.utils.instantiate(cfg.trainer, logger=False, enable_checkpointing=False)
        assert trainer.max_steps == cfg.trainer.max_steps


def cfg_has(cfg, dotted: str) -> bool:
    node = cfg
    for part in dotted.split("."):
        if part not in node:
            return False
        node = node[part]
    return True


def test_overrides_reach_the_config(tmp_path):
    cfg = compose_config(
        ["model=gru", "model.hidden_size=32", "optim=sgd", "optim.lr=0.5", "seed=7"], tmp_path
    )
    assert (cfg.model.cell, cfg.model.hidden_size, cfg.optim._target_, cfg.optim.lr, cfg.seed) == (
        "gru",
        32,
        "torch.optim.SGD",
        0.5,
        7,
    )
