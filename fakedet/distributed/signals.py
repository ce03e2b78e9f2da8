"""Ctrl-C and SIGTERM during training: noted, so the loop can finish its step and save first."""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import Any

from fakedet.errors import TrainingError


class TrainingInterrupted(TrainingError):
    """Ctrl-C or SIGTERM: the step finished, latest_model.pt was saved; exit 128 + signal."""

    def __init__(self, signal_number: int, checkpoint: Path) -> None:
        name = signal.Signals(signal_number).name
        super().__init__(
            f"Stopped by {name} after saving {checkpoint}; continue with: fakedet resume {checkpoint}"
        )
        self.exit_code = 128 + signal_number


class StopSignals:
    """Catches SIGINT/SIGTERM while installed; `received` is the first one caught, else None."""

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict[int, Any] = {}

    def install(self) -> None:
        # Handlers can only be set from the main thread (a test runner's worker thread cannot).
        if threading.current_thread() is not threading.main_thread():
            return
        for number in (signal.SIGINT, signal.SIGTERM):
            self._previous[number] = signal.signal(number, self._note)

    def _note(self, signal_number: int, _frame: object) -> None:
        self.received = signal_number

    def restore(self) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)
        self._previous.clear()
