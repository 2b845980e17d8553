"""Progress for long work, on the human console (stderr): a live bar in a terminal, plain lines elsewhere.

Rich draws nothing while its console is not a terminal (CI, `nohup`, `| tee`) until the work ends, so a 15-minute
`eval` looked hung. Outside a terminal every task instead prints `what done/total, elapsed, ETA` when it starts,
every `interval` seconds and when it finishes.
"""

from __future__ import annotations

import time
from datetime import timedelta

from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn,
                           TimeRemainingColumn)

PLAIN_INTERVAL_S = 30.0


def _clock(seconds: float) -> str:
    return str(timedelta(seconds=round(seconds)))


class LoggedProgress(Progress):
    """A rich `Progress` whose tasks also print plain lines when the console is not a terminal."""

    def __init__(self, *columns, console: Console, interval: float = PLAIN_INTERVAL_S, **kwargs) -> None:
        self.plain = not console.is_terminal
        super().__init__(*columns, console=console, disable=self.plain or kwargs.pop("disable", False), **kwargs)
        self.interval = interval
        self._printed: dict[TaskID, float] = {}

    def add_task(self, description: str, *args, **kwargs) -> TaskID:
        task_id = super().add_task(description, *args, **kwargs)
        self._log(task_id)
        return task_id

    def update(self, task_id: TaskID, **kwargs) -> None:
        super().update(task_id, **kwargs)
        self._log(task_id)

    def advance(self, task_id: TaskID, advance: float = 1) -> None:
        super().advance(task_id, advance)
        self._log(task_id)

    def _log(self, task_id: TaskID) -> None:
        if not self.plain:
            return
        task = self._tasks[task_id]
        now = time.monotonic()
        last = self._printed.get(task_id)
        if last is not None and now - last < self.interval and not task.finished:
            return
        self._printed[task_id] = now
        elapsed = task.elapsed or 0.0
        line = f"{task.description}: {task.completed:g}/{task.total:g}" if task.total else f"{task.description}:"
        line += f", {_clock(elapsed)} elapsed"
        if task.finished:
            line += ", done"
        elif task.completed and task.total:
            line += f", ETA {_clock(elapsed / task.completed * (task.total - task.completed))}"
        info = task.fields.get("info")
        self.console.print(line + (f"  {info}" if info else ""), markup=False, highlight=False)


def progress(console: Console, *, info: bool = False, transient: bool = True) -> LoggedProgress:
    """The one progress display of every command: description, bar, n/total, elapsed, ETA (and `info` fields)."""
    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TimeRemainingColumn()]
    if info:
        columns.insert(3, TextColumn("{task.fields[info]}"))
    return LoggedProgress(*columns, console=console, transient=transient)
