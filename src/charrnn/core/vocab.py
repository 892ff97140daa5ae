"""Vocabulary: the sorted unique characters of a text, and the maps between characters and indices.

Its own module (torch and the standard library only) so that sampling and checkpoint loading do
not pay for importing Lightning.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor

from charrnn.core.errors import UserError


class Vocabulary:
    """The sorted unique characters of a text, and the maps between characters and indices."""

    def __init__(self, chars: Sequence[str]) -> None:
        self.chars: list[str] = list(chars)
        if len(set(self.chars)) != len(self.chars) or any(len(c) != 1 for c in self.chars):
            raise ValueError("a vocabulary is a list of distinct single characters")
        self.index = {c: i for i, c in enumerate(self.chars)}

    @classmethod
    def from_text(cls, text: str) -> Vocabulary:
        return cls(sorted(set(text)))

    def __len__(self) -> int:
        return len(self.chars)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocabulary) and other.chars == self.chars

    def __repr__(self) -> str:
        return f"Vocabulary({len(self)} chars)"

    def unknown(self, text: str) -> list[str]:
        """The distinct characters of ``text`` that are not in this vocabulary, in order of appearance."""
        return list(dict.fromkeys(c for c in text if c not in self.index))

    def encode(self, text: str) -> Tensor:
        """``text`` as an int64 tensor of indices; unknown characters raise one clear error."""
        missing = self.unknown(text)
        if missing:
            shown = ", ".join(repr(c) for c in missing[:10]) + (" ..." if len(missing) > 10 else "")
            raise UserError(
                f"{len(missing)} character(s) are not in the model's vocabulary: {shown}; remove them or "
                "train on text that has them"
            )
        return torch.tensor([self.index[c] for c in text], dtype=torch.long)

    def decode(self, indices: Sequence[int] | Tensor) -> str:
        if isinstance(indices, Tensor):
            indices = indices.tolist()
        return "".join(self.chars[i] for i in indices)

    def to_json(self) -> str:
        return json.dumps({"chars": self.chars}, ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str) -> Vocabulary:
        return cls(json.loads(text)["chars"])

    def save(self, path: str | os.PathLike[str]) -> None:
        Path(path).write_text(self.to_json(), encoding="utf-8")

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Vocabulary:
        return cls.from_json(Path(path).read_text(encoding="utf-8"))
