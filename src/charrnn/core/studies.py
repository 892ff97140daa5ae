"""Where an Optuna study lives, from a storage URL: shared by the sweeper (the launching process, which
needs neither torch nor Lightning) and each trial's pruning callback (charrnn.lit.pruning)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def open_storage(url: str) -> Any:
    """An Optuna storage from a URL: ``journal:///path/to/file`` is Optuna's journal file (for a shared
    filesystem, where SQLite's locks are unsafe); anything else (sqlite:///, postgresql://, ...) is an
    RDB URL."""
    import optuna
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    if url.startswith("journal://"):
        path = Path(url[len("journal://") :]).expanduser()
        path.parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(str(path)))
    return optuna.storages.get_storage(url)
