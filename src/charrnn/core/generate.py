"""Sampling text from a CharRNN, one character at a time, with the hidden state carried.

The prompt is read once; each new character then costs one recurrent step (O(1) per character,
nothing re-run). Calling ``nn.LSTM`` once per character spends most of its time in per-call
overhead, so the step here works on the layer weights directly: the first layer's input
projection of a one-hot (or embedded) character is one row of a precomputed table, and the rest
is one matrix-vector product per layer plus the head.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import torch
from torch import Tensor

from charrnn.core.errors import UserError
from charrnn.core.model import CharRNN, Hidden
from charrnn.core.vocab import Vocabulary

# Generation on CPU runs on one thread: a step is a few small matrix-vector products, and with
# more threads the OpenMP hand-offs cost more than they save (several times slower on 2 busy cores).
SAMPLING_THREADS = 1


class Stepper:
    """One recurrent step of a CharRNN for a batch of character indices, using its current weights."""

    def __init__(self, model: CharRNN) -> None:
        self.cell = model.cell
        rnn = model.rnn
        self.layers: list[tuple[Tensor, Tensor, Tensor, Tensor]] = []
        for layer in range(model.num_layers):
            w_ih = getattr(rnn, f"weight_ih_l{layer}").detach()
            w_hh = getattr(rnn, f"weight_hh_l{layer}").detach()
            b_ih = getattr(rnn, f"bias_ih_l{layer}").detach()
            b_hh = getattr(rnn, f"bias_hh_l{layer}").detach()
            self.layers.append((w_ih.t().contiguous(), w_hh.t().contiguous(), b_ih, b_hh))
        # Row c of this table is layer 0's input projection of character c, bias included.
        w_ih0, _, b_ih0, _ = self.layers[0]
        inputs = (
            model.embedding.weight.detach()
            if model.embedding is not None
            else torch.eye(model.vocab_size, dtype=w_ih0.dtype, device=w_ih0.device)
        )
        self.input_table = inputs @ w_ih0 + b_ih0
        self.head_w = model.head.weight.detach().t().contiguous()
        self.head_b = model.head.bias.detach()

    def __call__(self, idx: Tensor, state: Hidden) -> tuple[Tensor, Hidden]:
        """Logits ``(batch, vocab)`` for the next character, and the new state."""
        lstm = self.cell == "lstm"
        h_all, c_all = state if lstm else (state, None)  # type: ignore[misc]
        new_h, new_c = [], []
        x_proj, x = self.input_table[idx], None  # x: the layer below's output
        for layer, (w_ih, w_hh, b_ih, b_hh) in enumerate(self.layers):
            if layer > 0:
                x_proj = torch.addmm(b_ih, x, w_ih)
            h = h_all[layer]
            h_proj = torch.addmm(b_hh, h, w_hh)
            if self.cell == "rnn":
                x = torch.tanh(x_proj + h_proj)
            elif self.cell == "gru":
                xr, xz, xn = x_proj.chunk(3, dim=-1)
                hr, hz, hn = h_proj.chunk(3, dim=-1)
                r, z = torch.sigmoid(xr + hr), torch.sigmoid(xz + hz)
                n = torch.tanh(xn + r * hn)
                x = (1 - z) * n + z * h
            else:
                i, f, g, o = (x_proj + h_proj).chunk(4, dim=-1)
                c = torch.sigmoid(f) * c_all[layer] + torch.sigmoid(i) * torch.tanh(g)
                x = torch.sigmoid(o) * torch.tanh(c)
                new_c.append(c)
            new_h.append(x)
        logits = torch.addmm(self.head_b, x, self.head_w)
        h_out = torch.stack(new_h)
        return logits, ((h_out, torch.stack(new_c)) if lstm else h_out)


def pick(logits: Tensor, temperature: float, top_k: int | None, generator: torch.Generator) -> Tensor:
    """Draw one index per row from ``softmax(logits / temperature)``, limited to the ``top_k`` best."""
    logits = logits.float() / temperature
    if top_k is not None and top_k < logits.size(-1):
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


def check_sampling_args(length: int, temperature: float, top_k: int | None) -> None:
    if int(length) < 1:
        raise UserError(f"length must be at least 1, got {length}")
    if not float(temperature) > 0:
        raise UserError(
            f"temperature must be greater than 0 (small values approach greedy decoding), got {temperature}"
        )
    if top_k is not None and int(top_k) < 1:
        raise UserError(f"top_k must be at least 1 (or top_k=none for no limit), got {top_k}")


def default_prompt(vocab: Vocabulary) -> str:
    """The prompt when none is given: a newline if the vocabulary has one, else its first character."""
    return "\n" if "\n" in vocab.index else vocab.chars[0]


def generate(
    model: CharRNN,
    vocab: Vocabulary,
    prompt: str,
    length: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    seed: int | None = None,
) -> Iterator[str]:
    """Yield ``length`` characters that follow ``prompt``, one at a time.

    A fixed ``seed`` gives the same text every time; the global random state is left untouched.
    """
    check_sampling_args(length, temperature, top_k)
    if not prompt:
        raise UserError("the prompt must hold at least one character")
    prompt_ids = vocab.encode(prompt)
    device = model.head.weight.device
    generator = torch.Generator(device=device)
    generator.manual_seed(seed if seed is not None else int.from_bytes(os.urandom(8), "little") >> 1)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            # The prompt (all but its last character) in one call; then one step per character.
            state = model.init_hidden(1, device)
            if len(prompt_ids) > 1:
                _, state = model(prompt_ids[:-1].unsqueeze(0).to(device), state)
            step = Stepper(model)
            idx = prompt_ids[-1:].to(device)
            for _ in range(length):
                logits, state = step(idx, state)
                idx = pick(logits, temperature, top_k, generator)
                yield vocab.chars[int(idx)]
    finally:
        model.train(was_training)
