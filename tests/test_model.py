import pytest
import torch

from charrnn.core.model import CharRNN


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("num_layers", [1, 2])
def test_output_shapes(cell, num_layers):
    model = CharRNN(vocab_size=7, hidden_size=5, num_layers=num_layers, cell=cell)
    logits, h = model(torch.randint(0, 7, (3, 11)))
    assert logits.shape == (3, 11, 7)
    hs = h if cell == "lstm" else (h,)
    for t in hs:
        assert t.shape == (num_layers, 3, 5)
    # The carried state continues the sequence exactly as one long call would.
    x = torch.randint(0, 7, (3, 10))
    full, _ = model(x)
    first, state = model(x[:, :4])
    second, _ = model(x[:, 4:], state)
    torch.testing.assert_close(torch.cat([first, second], 1), full)


@pytest.mark.parametrize("input", ["onehot", "embedding"])
def test_one_hot_and_indices_agree(input):
    torch.manual_seed(0)
    model = CharRNN(
        vocab_size=6, hidden_size=8, cell="lstm", input=input, embed_dim=4 if input == "embedding" else None
    )
    idx = torch.randint(0, 6, (2, 9))
    from_idx, _ = model(idx)
    from_onehot, _ = model(torch.nn.functional.one_hot(idx, 6).float())
    torch.testing.assert_close(from_idx, from_onehot)


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="cell"):
        CharRNN(5, 5, cell="transformer")
    with pytest.raises(ValueError, match="hidden_size"):
        CharRNN(5, 0)
    with pytest.raises(ValueError, match="dropout"):
        CharRNN(5, 5, dropout=1.0)
