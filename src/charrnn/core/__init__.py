"""Layer 1, torch and numpy only: the model, vocabulary, corpora, windows, scoring, generation, the numpy
reference.

Nothing here imports Lightning, Hydra or anything above this layer.
"""
