"""Where the text comes from: the notebook's "hello", any file, Tiny Shakespeare, the stdlib corpus.

Every loader returns one ``str``. Mistakes a user can make (a missing file, bytes that are not
text, no network for a first download) raise :class:`CorpusError` with one sentence that says
what is wrong and how to fix it.
"""

from __future__ import annotations

import hashlib
import os
import sysconfig
import urllib.request
from pathlib import Path

from charrnn.core.errors import UserError
from charrnn.core.files import atomic_write

HELLO = "hello"

SHAKESPEARE_URL = "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
SHAKESPEARE_SHA256 = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"

# The embedded default corpus: the running Python's own standard library source, read in sorted
# path order, ASCII files only, capped. Every machine that runs charrnn has it, no download, and
# it is real text of the kind people read (code, comments, docstrings) that the project is
# allowed to use. It differs a little between Python versions; runs record its sha256.
STDLIB_MAX_CHARS = 1_250_000
STDLIB_SKIP_DIRS = {"test", "tests", "idlelib", "site-packages", "dist-packages", "lib2to3", "__pycache__"}


class CorpusError(UserError):
    """The corpus cannot be read as the configuration asks."""


def cache_dir() -> Path:
    """Where downloads are kept: ``$CHARRNN_CACHE``, else ``$XDG_CACHE_HOME/charrnn``."""
    if os.environ.get("CHARRNN_CACHE"):
        return Path(os.environ["CHARRNN_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "charrnn"


def read_text_file(path: str | os.PathLike[str], encoding: str = "utf-8", errors: str = "strict") -> str:
    """The whole file as text, with a clear error for each way a path can be wrong."""
    p = Path(path).expanduser()
    if not p.exists():
        raise CorpusError(
            f"corpus file {str(p)!r} does not exist; pass an existing text file as data.path=..."
        )
    if p.is_dir():
        raise CorpusError(
            f"corpus path {str(p)!r} is a directory; pass a text file inside it as data.path=..."
        )
    raw = p.read_bytes()
    if not raw:
        raise CorpusError(f"corpus file {str(p)!r} is empty; pass a file with text in it as data.path=...")
    if b"\x00" in raw[:1_000_000]:
        offset = raw.index(b"\x00")
        raise CorpusError(
            f"corpus file {str(p)!r} holds a NUL byte at offset {offset}, so it looks binary, not text; "
            "pass a text file as data.path=..."
        )
    try:
        return raw.decode(encoding, errors=errors)
    except UnicodeDecodeError as e:
        raise CorpusError(
            f"corpus file {str(p)!r} is not valid {encoding}: byte offset {e.start} "
            f"({raw[e.start : e.start + 1]!r}); convert it, or set data.encoding=<codec> or "
            "data.errors=replace"
        ) from None
    except LookupError:
        raise CorpusError(
            f"unknown text encoding data.encoding={encoding!r}; use a Python codec name such as utf-8 or "
            "latin-1"
        ) from None


def stdlib_text(max_chars: int = STDLIB_MAX_CHARS) -> str:
    """The Python standard library's ``.py`` sources (ASCII files only) in sorted order, capped."""
    root = Path(sysconfig.get_paths()["stdlib"])
    parts: list[str] = []
    total = 0
    for path in _stdlib_sources(root):
        try:
            text = path.read_bytes().decode("ascii")
        except (OSError, UnicodeDecodeError):
            continue
        parts.append(text)
        total += len(text)
        if total >= max_chars:
            break
    corpus = "".join(parts)[:max_chars]
    if len(corpus) < 10_000:
        raise CorpusError(
            f"the Python standard library sources under {str(root)!r} are missing; pick another corpus, "
            "e.g. data=text data.path=FILE"
        )
    return corpus


def _stdlib_sources(root: Path) -> list[Path]:
    """``.py`` files under ``root`` in a fixed order (top-down, sorted), skipping tests and packages."""
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in STDLIB_SKIP_DIRS)
        found.extend(Path(dirpath, f) for f in sorted(filenames) if f.endswith(".py"))
    return found


def shakespeare_text(path: str | None = None, download: bool = True) -> str:
    """Tiny Shakespeare: ``path`` when given, else a cached copy, else one checked download."""
    if path:
        return read_text_file(path)
    cached = cache_dir() / "tinyshakespeare.txt"
    if not cached.exists():
        if not download:
            raise CorpusError(
                f"Tiny Shakespeare is not cached at {str(cached)!r}; pass "
                "data.path=PATH/TO/tinyshakespeare.txt"
            )
        _download(SHAKESPEARE_URL, cached, SHAKESPEARE_SHA256)
    return read_text_file(cached)


def _download(url: str, dest: Path, sha256: str) -> None:
    """Fetch ``url`` into ``dest`` atomically, refusing content whose sha256 differs."""
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            data = response.read()
    except OSError as e:
        raise CorpusError(
            f"could not download {url} ({e.__class__.__name__}: {e}); offline, pass a local copy as "
            "data.path=PATH"
        ) from None
    digest = hashlib.sha256(data).hexdigest()
    if digest != sha256:
        raise CorpusError(
            f"download of {url} has sha256 {digest}, expected {sha256}; pass a good local copy as "
            "data.path=PATH"
        )
    atomic_write(dest, lambda f: f.write(data))


def load_corpus(
    name: str,
    path: str | None = None,
    encoding: str = "utf-8",
    errors: str = "strict",
    max_chars: int | None = None,
) -> str:
    """Text of the corpus ``name`` (``hello``, ``text``, ``shakespeare`` or ``stdlib``), cut to its first
    ``max_chars``."""
    if name == "hello":
        return HELLO
    if name == "text":
        if not path:
            raise CorpusError("data=text needs a file: pass data.path=PATH/TO/FILE.txt")
        text = read_text_file(path, encoding, errors)
    elif name == "shakespeare":
        text = shakespeare_text(path)
    elif name == "stdlib":
        text = read_text_file(path, encoding, errors) if path else stdlib_text(max_chars or STDLIB_MAX_CHARS)
    else:
        raise CorpusError(f"unknown corpus {name!r}; choose one of hello, text, shakespeare, stdlib")
    return text[:max_chars] if max_chars else text
