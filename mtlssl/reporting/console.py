"""The rich console: progress bars with throughput, and results tables."""

from __future__ import annotations

import math
from collections.abc import Mapping

from rich import get_console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

# The global console, which the logging RichHandler also writes to, so bars and log lines do not collide.
console = get_console()


def progress() -> Progress:
    """A transient bar per loop: the log file keeps the per-epoch lines, the bar only shows liveness."""
    return Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"), TimeRemainingColumn(), console=console, transient=True,
        disable=not console.is_terminal,
    )


def fmt(value: float | None) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return f"{value:.4f}"


def metrics_table(title: str, metrics: Mapping[str, float]) -> Table:
    """A two-column table of ``name -> value``."""
    table = Table(title=title, title_justify="left")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for name, value in metrics.items():
        table.add_row(name, fmt(value))
    return table
