"""`emo` commands for working with results: analyze, similar, report, export, web."""

from __future__ import annotations

import argparse


def add_result_commands(sub: argparse._SubParsersAction) -> None:
    """Register the result commands on the `emo` parser (each sets ``handler``)."""
