"""The numpy reference RNN: the teaching notebook's "Simple Form", completed.

A vanilla (Elman) RNN over one-hot characters, written out step by step so the maths can be read
and checked against the PyTorch model (``CharRNN.from_reference`` / ``CharRNN.to_reference``)::

    h_t = tanh(Wxh x_t + Whh h_{t-1} + bh)      y_t = Why h_t + by      p_t = softmax(y_t)

Shapes: ``Wxh`` (hidden, vocab), ``Whh`` (hidden, hidden), ``Why`` (vocab, hidden), ``bh``
(hidden,), ``by`` (vocab,). Everything is float64 and batch-first, vectorised over the batch; the
loss is the mean cross-entropy (natural log) over all ``batch * seq`` targets, exactly what
``torch.nn.functional.cross_entropy`` computes, so the two can be compared to rounding error.
This module imports numpy only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

Params = dict[str, np.ndarray]
PARAM_NAMES = ("Wxh", "Whh", "Why", "bh", "by")


def init_params(vocab_size: int, hidden_size: int, rng: np.random.Generator, scale: float = 0.01) -> Params:
    """min-char-rnn's initialisation: weights ``randn * scale``, biases zero.

    Small weights make every logit near zero, hence the near-uniform first predictions.
    """
    return {
        "Wxh": rng.standard_normal((hidden_size, vocab_size)) * scale,
        "Whh": rng.standard_normal((hidden_size, hidden_size)) * scale,
        "Why": rng.standard_normal((vocab_size, hidden_size)) * scale,
        "bh": np.zeros(hidden_size),
        "by": np.zeros(vocab_size),
    }


def one_hot(indices: np.ndarray, vocab_size: int) -> np.ndarray:
    """Integer indices of any shape -> float64 one-hot with a trailing ``vocab`` axis."""
    return np.eye(vocab_size)[np.asarray(indices)]


def softmax(logits: np.ndarray) -> np.ndarray:
    """Softmax over the last axis; the max is subtracted first so ``exp`` cannot overflow."""
    z = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return z / z.sum(axis=-1, keepdims=True)


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """``log(softmax(logits))`` without taking the log of a rounded-to-zero probability."""
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


@dataclass
class Forward:
    """Everything the forward pass computed; ``backward`` needs it all again."""

    x: np.ndarray  # one-hot inputs (batch, seq, vocab)
    h0: np.ndarray  # initial hidden state (batch, hidden)
    hs: np.ndarray  # hidden states after each step (batch, seq, hidden); hs[:, -1] is the last
    logits: np.ndarray  # (batch, seq, vocab)
    probs: np.ndarray  # softmax(logits)
    targets: np.ndarray | None  # (batch, seq) indices, or None
    loss: float | None  # mean cross-entropy over batch * seq, or None without targets


def _as_onehot(inputs: np.ndarray, vocab_size: int) -> np.ndarray:
    inputs = np.asarray(inputs)
    if inputs.ndim == 3:  # already one-hot (batch, seq, vocab)
        if inputs.shape[-1] != vocab_size:
            raise ValueError(f"one-hot inputs have {inputs.shape[-1]} classes, the model {vocab_size}")
        return inputs.astype(np.float64)
    if inputs.ndim != 2 or not np.issubdtype(inputs.dtype, np.integer):
        raise ValueError(
            f"inputs must be integer (batch, seq) or one-hot (batch, seq, vocab), got {inputs.shape}"
        )
    return one_hot(inputs, vocab_size)


def forward(
    params: Params, inputs: np.ndarray, targets: np.ndarray | None = None, h0: np.ndarray | None = None
) -> Forward:
    """Run the RNN over ``inputs`` from ``h0`` (zeros if None); with targets, also the mean loss.

    ``inputs``: integer indices (batch, seq) or one-hot (batch, seq, vocab). ``h0``: (batch, hidden).
    """
    Wxh, Whh, Why, bh, by = (params[k] for k in PARAM_NAMES)
    x = _as_onehot(inputs, Wxh.shape[1])
    batch, seq, _ = x.shape
    hidden = Whh.shape[0]
    if h0 is None:
        h0 = np.zeros((batch, hidden))
    else:  # (hidden,) is shared by the batch; torch's (1, batch, hidden) is accepted as well
        h0 = np.array(h0, dtype=np.float64)  # a copy: the caller may change theirs later
        h0 = np.broadcast_to(h0, (batch, hidden)).copy() if h0.ndim == 1 else h0.reshape(batch, hidden)
    h = h0
    xw = x @ Wxh.T + bh  # the input's share of every step at once: it does not depend on h
    hs = np.empty((batch, seq, hidden))
    for t in range(seq):  # the recurrence itself is inherently sequential
        h = np.tanh(xw[:, t] + h @ Whh.T)
        hs[:, t] = h
    logits = hs @ Why.T + by
    probs = softmax(logits)
    loss = None
    if targets is not None:
        targets = np.asarray(targets)
        logp = log_softmax(logits)
        picked = np.take_along_axis(logp, targets[..., None], axis=-1)
        loss = float(-picked.mean())
    return Forward(x=x, h0=h0, hs=hs, logits=logits, probs=probs, targets=targets, loss=loss)


def backward(params: Params, fwd: Forward) -> tuple[Params, np.ndarray]:
    """Backpropagation through time of ``fwd.loss``: gradients of every parameter, and of ``h0``."""
    if fwd.targets is None:
        raise ValueError("backward needs the forward pass to have been given targets")
    Whh, Why = params["Whh"], params["Why"]
    batch, seq, vocab = fwd.logits.shape

    def flat(a: np.ndarray) -> np.ndarray:  # (batch, seq, n) -> (batch * seq, n): sum over both
        return a.reshape(batch * seq, -1)

    # d(mean CE)/d(logits) = (softmax - onehot(target)) / number of targets
    dlogits = (fwd.probs - one_hot(fwd.targets, vocab)) / (batch * seq)
    dWhy = flat(dlogits).T @ flat(fwd.hs)
    dby = dlogits.sum(axis=(0, 1))
    dh_out = dlogits @ Why  # what each h_t receives from its own output
    draw = np.empty_like(fwd.hs)  # gradient at the tanh's input, per step
    dh_next = np.zeros_like(fwd.h0)  # what h_t receives from step t+1
    for t in reversed(range(seq)):
        h = fwd.hs[:, t]
        draw[:, t] = (1.0 - h * h) * (dh_out[:, t] + dh_next)  # tanh' = 1 - tanh^2
        dh_next = draw[:, t] @ Whh
    h_prev = np.concatenate([fwd.h0[:, None], fwd.hs[:, :-1]], axis=1)
    grads = {
        "Wxh": flat(draw).T @ flat(fwd.x),
        "Whh": flat(draw).T @ flat(h_prev),
        "Why": dWhy,
        "bh": draw.sum(axis=(0, 1)),
        "by": dby,
    }
    return grads, dh_next  # after step 0, dh_next is d loss / d h0


def loss_and_grads(
    params: Params, inputs: np.ndarray, targets: np.ndarray, h0: np.ndarray | None = None
) -> tuple[float, Params, np.ndarray]:
    """min-char-rnn's ``lossFun``: loss, parameter gradients, and the last hidden state to carry on."""
    fwd = forward(params, inputs, targets, h0)
    grads, _ = backward(params, fwd)
    assert fwd.loss is not None
    return fwd.loss, grads, fwd.hs[:, -1].copy()


def clip_elementwise(grads: Params, value: float = 5.0) -> Params:
    """min-char-rnn's clipping: every gradient entry into ``[-value, value]`` (in place; returned).

    Crude but cheap: it stops exploding gradients from one bad step without rescaling the rest.
    """
    for g in grads.values():
        np.clip(g, -value, value, out=g)
    return grads


def clip_global_norm(grads: Params, max_norm: float) -> float:
    """Rescale all gradients together (in place) if their joint L2 norm exceeds ``max_norm``.

    Same rule as ``torch.nn.utils.clip_grad_norm_`` (which adds 1e-6 to the norm); keeps the
    gradient's direction, unlike elementwise clipping. Returns the norm before clipping.
    """
    norm = float(np.sqrt(sum(float((g * g).sum()) for g in grads.values())))
    if norm > max_norm:
        scale = max_norm / (norm + 1e-6)
        for g in grads.values():
            g *= scale
    return norm


class Adagrad:
    """min-char-rnn's Adagrad: ``mem += g**2; p -= lr * g / sqrt(mem + eps)`` (eps inside the root).

    The per-entry step shrinks as squared gradients accumulate in ``memory``; the first step moves
    every entry by about ``lr``. (``torch.optim.Adagrad`` puts eps outside the root instead.)
    """

    def __init__(self, params: Params, lr: float = 0.1, eps: float = 1e-8) -> None:
        self.lr, self.eps = lr, eps
        self.memory = {k: np.zeros_like(v) for k, v in params.items()}

    def step(self, params: Params, grads: Params) -> None:
        for k in PARAM_NAMES:
            self.memory[k] += grads[k] * grads[k]
            params[k] -= self.lr * grads[k] / np.sqrt(self.memory[k] + self.eps)


class SGD:
    """Plain gradient descent, ``p -= lr * g``: the baseline that Adagrad improves on."""

    def __init__(self, params: Params, lr: float = 0.1) -> None:
        self.lr = lr

    def step(self, params: Params, grads: Params) -> None:
        for k in PARAM_NAMES:
            params[k] -= self.lr * grads[k]


def sample(
    params: Params,
    seed_ix: int,
    n: int,
    rng: np.random.Generator,
    temperature: float = 1.0,
    h: np.ndarray | None = None,
) -> list[int]:
    """Draw ``n`` character indices, feeding each back in, starting from ``seed_ix``.

    Logits are divided by ``temperature``: below 1 sharpens the distribution, and as it goes to 0
    the draw becomes the argmax; ``temperature=0`` means exactly argmax (greedy, no draw).
    The seed itself is not included in the result.
    """
    Wxh, Whh, Why, bh, by = (params[k] for k in PARAM_NAMES)
    h = np.zeros(Whh.shape[0]) if h is None else np.asarray(h, dtype=np.float64).reshape(-1)
    ix, out = int(seed_ix), []
    for _ in range(n):
        h = np.tanh(Wxh[:, ix] + Whh @ h + bh)  # Wxh @ onehot(ix) is column ix
        logits = Why @ h + by
        if temperature == 0:
            ix = int(np.argmax(logits))
        else:
            ix = int(rng.choice(len(by), p=softmax(logits / temperature)))
        out.append(ix)
    return out
