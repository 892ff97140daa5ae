"""CharRNN: the notebook's recurrent language model as a plain ``nn.Module``.

A recurrent layer (``nn.RNN`` with tanh, ``nn.LSTM`` or ``nn.GRU``) reads characters and a linear
head turns each hidden state into logits over the vocabulary. Nothing here knows about Lightning
or files: this module imports torch only, so it can be read, tested and reused on its own.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from charrnn.core.errors import UserError, checked

CELLS: dict[str, type[nn.RNNBase]] = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}
INPUTS = ("onehot", "embedding")

Hidden = Tensor | tuple[Tensor, Tensor]


class CharRNN(nn.Module):
    """Character-level RNN: ``forward(x, h=None) -> (logits, h)``, batch-first.

    ``x`` is integer indices of shape ``(batch, seq)``, as the data module, scoring and generation
    pass them: this is the one place they are one-hot encoded (``input="onehot"``) or looked up in a
    learned ``vocab x embed_dim`` table (``input="embedding"``). One-hot floats of shape
    ``(batch, seq, vocab)`` (the notebook's form) are taken as they are; for the table that is the
    same maths as a lookup, so both input forms give identical results.
    """

    def __init__(
        self,
        vocab_size: int,
        hidden_size: int,
        num_layers: int = 1,
        cell: str = "rnn",
        dropout: float = 0.0,
        input: str = "onehot",
        embed_dim: int | None = None,
    ) -> None:
        super().__init__()
        # Messages name the config keys (model.*): Hydra builds this class from conf/model/.
        if cell not in CELLS:
            raise UserError(
                f"unknown model.cell={cell!r}; choose one of {', '.join(CELLS)} (or model=rnn|lstm|gru)"
            )
        if input not in INPUTS:
            raise UserError(f"unknown model.input={input!r}; choose onehot or embedding")
        self.vocab_size = checked("vocab_size", vocab_size, integer=True, low=1)
        self.hidden_size = checked("model.hidden_size", hidden_size, integer=True, low=1)
        self.num_layers = checked("model.num_layers", num_layers, integer=True, low=1)
        self.dropout_p = checked("model.dropout", dropout, low=0.0, high=1.0, high_open=True)
        self.cell = cell
        self.input = input
        if embed_dim is not None and input != "embedding":  # a setting that would be silently ignored
            raise UserError(
                f"model.embed_dim={embed_dim} has no effect with model.input={input} (its input is one-hot "
                "vectors of the vocabulary); set model.input=embedding, or leave model.embed_dim unset"
            )
        self.embed_dim = (
            checked("model.embed_dim", embed_dim, integer=True, low=1)
            if embed_dim is not None
            else self.hidden_size
        )

        self.embedding = nn.Embedding(self.vocab_size, self.embed_dim) if input == "embedding" else None
        rnn_input = self.embed_dim if self.embedding is not None else self.vocab_size
        # Torch applies its dropout between stacked layers only; a one-layer net has none there.
        self.rnn = CELLS[cell](
            rnn_input,
            self.hidden_size,
            num_layers=self.num_layers,
            dropout=self.dropout_p if self.num_layers > 1 else 0.0,
            batch_first=True,
        )
        self.drop = nn.Dropout(self.dropout_p)
        self.head = nn.Linear(self.hidden_size, self.vocab_size)
        self._init_weights()

    def _init_weights(self) -> None:
        # Torch's default uniform(+-1/sqrt(H)) init is kept; an LSTM's forget gates start open
        # (bias 1, split over the two bias vectors) so early gradients flow through time.
        if self.cell == "lstm":
            h = self.hidden_size
            for name, param in self.rnn.named_parameters():
                if name.startswith("bias_"):
                    with torch.no_grad():
                        param[h : 2 * h].fill_(0.5)

    def config(self) -> dict[str, Any]:
        """The constructor arguments, enough to rebuild this model from a checkpoint."""
        return {
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "num_layers": self.num_layers,
            "cell": self.cell,
            "dropout": self.dropout_p,
            "input": self.input,
            "embed_dim": self.embed_dim if self.embedding is not None else None,
        }

    def forward(self, x: Tensor, h: Hidden | None = None) -> tuple[Tensor, Hidden]:
        weight = self.head.weight
        if x.dtype in (torch.int64, torch.int32, torch.int16, torch.uint8):
            if self.embedding is not None:
                x = self.embedding(x)
            else:
                x = nn.functional.one_hot(x.long(), self.vocab_size).to(weight.dtype)
        else:
            x = x.to(weight.dtype)
            if self.embedding is not None:
                x = x @ self.embedding.weight
        out, h = self.rnn(x, h)
        return self.head(self.drop(out)), h

    def init_hidden(self, batch_size: int, device: torch.device | str | None = None) -> Hidden:
        """A zero state for ``batch_size`` sequences, shaped as the cell expects."""
        weight = self.head.weight
        zeros = torch.zeros(
            self.num_layers, batch_size, self.hidden_size, device=device or weight.device, dtype=weight.dtype
        )
        return (zeros, zeros.clone()) if self.cell == "lstm" else zeros

    # --- exchange with the numpy reference (charrnn.reference) -------------------------------

    @classmethod
    def from_reference(cls, params: Mapping[str, Any]) -> CharRNN:
        """A one-layer ``rnn`` CharRNN in float64 holding the numpy reference's weights.

        ``bh`` goes into ``bias_ih_l0`` and ``bias_hh_l0`` is zero, so the sum torch uses equals ``bh``.
        """
        wxh = torch.as_tensor(params["Wxh"], dtype=torch.float64)
        hidden_size, vocab_size = wxh.shape
        model = cls(vocab_size, hidden_size, num_layers=1, cell="rnn").double()
        targets = {
            "Wxh": model.rnn.weight_ih_l0,
            "Whh": model.rnn.weight_hh_l0,
            "bh": model.rnn.bias_ih_l0,
            "Why": model.head.weight,
            "by": model.head.bias,
        }
        with torch.no_grad():
            for key, param in targets.items():
                value = torch.as_tensor(params[key], dtype=torch.float64)
                if value.shape != param.shape:  # copy_ would broadcast a wrong shape silently
                    raise ValueError(f"{key} has shape {tuple(value.shape)}, expected {tuple(param.shape)}")
                param.copy_(value)
            model.rnn.bias_hh_l0.zero_()
        return model

    def to_reference(self) -> dict[str, Any]:
        """This model's weights as the numpy reference's float64 arrays (biases folded into ``bh``)."""
        if self.cell != "rnn" or self.num_layers != 1 or self.embedding is not None:
            raise ValueError("to_reference needs a one-layer 'rnn' cell with one-hot input")
        rnn = self.rnn

        def array(t: Tensor) -> Any:
            return t.detach().to("cpu", torch.float64).numpy().copy()

        return {
            "Wxh": array(rnn.weight_ih_l0),
            "Whh": array(rnn.weight_hh_l0),
            "Why": array(self.head.weight),
            "bh": array(rnn.bias_ih_l0 + rnn.bias_hh_l0),
            "by": array(self.head.bias),
        }
