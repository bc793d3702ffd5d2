"""What the command-line tools share: an argument parser whose help is the tool's own docstring.

Imports nothing heavy, so that a tool answers ``--help`` (or a mistyped flag) before loading torch.
"""

from __future__ import annotations

import argparse

__all__ = ["tool_parser"]


def tool_parser(doc: str) -> argparse.ArgumentParser:
    """An argument parser described by a tool's module docstring: its first paragraph, then the rest (the
    examples) as written."""
    summary, _, details = doc.partition("\n\n")
    return argparse.ArgumentParser(
        description=summary, epilog=details or None, formatter_class=argparse.RawDescriptionHelpFormatter
    )
