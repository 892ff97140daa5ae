"""Commands we print for the user to paste (``continue with: charrnn-train resume=<dir>``).

A printed command must work when pasted into a shell, whatever the path holds. Two parsers read it:
the shell, then Hydra's override grammar, which takes ``=`` and ``,`` (a sweep job dir is named
``3_model.hidden_size=32,optim.lr=0.001``), spaces, quotes and brackets as syntax. So the value is
quoted for Hydra first (only where Hydra would not read it back unchanged), then the whole override
for the shell.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

from hydra.core.override_parser.overrides_parser import OverridesParser

PROG = "charrnn-train"  # the name charrnn-train's own lines start with


def hydra_value(text: str) -> str:
    """``text`` as a Hydra override value that Hydra reads back as exactly ``text``.

    A plain path stays as it is. Anything else becomes a double-quoted string, escaped as Hydra's
    grammar unescapes it: a quote is ``\\"``, and a run of backslashes before a quote or before the
    closing quote is doubled (backslashes elsewhere are literal).
    """
    try:
        (override,) = OverridesParser.create().parse_overrides([f"key={text}"])
        if override.value() == text:
            return text
    except (
        Exception
    ):  # Hydra's parser refuses it unquoted (OverrideParseException, LexerNoViableAltException)
        pass
    escaped = re.sub(
        r'(\\*)("|\Z)', lambda m: m.group(1) * 2 + ("\\" + m.group(2) if m.group(2) else ""), text
    )
    return f'"{escaped}"'


def override(key: str, value: str) -> str:
    """``key=value`` quoted for the shell and for Hydra: one shell word that Hydra reads as ``key`` =
    ``value``."""
    return shlex.quote(f"{key}={hydra_value(value)}")


def resume_command(run_dir: str | Path) -> str:
    """``charrnn-train resume=<run_dir>``, ready to paste into a shell."""
    return f"charrnn-train {override('resume', str(run_dir))}"


def sweep_resume_command(sweep_dir: str | Path) -> str:
    """``charrnn-train -m resume=<sweep_dir>``, ready to paste into a shell: continues the whole sweep."""
    return f"charrnn-train -m {override('resume', str(sweep_dir))}"
