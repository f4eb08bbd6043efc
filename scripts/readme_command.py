"""Print one of the README's set-up commands (``serve`` or ``test``).

The README marks each with ``<!-- readme-command: NAME -->`` above its code
block; CI and the tests run the command from there, so the README cannot
drift from what is actually run.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def readme_command(name: str, text: str | None = None) -> str:
    text = README.read_text(encoding="utf-8") if text is None else text
    match = re.search(
        rf"<!-- readme-command: {re.escape(name)} -->\s*```sh\n(.+?)\n```", text, re.DOTALL
    )
    if match is None:
        raise SystemExit(f"README.md has no command marked {name!r}")
    return match.group(1).strip()


if __name__ == "__main__":
    print(readme_command(sys.argv[1]))
