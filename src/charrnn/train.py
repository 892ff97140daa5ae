"""Public names kept from before the package had floors: ``charrnn-train`` lives in :mod:`charrnn.cli.train`."""

from charrnn.cli.train import cli, main, train

__all__ = ["cli", "main", "train"]

if __name__ == "__main__":
    cli()
