"""`--devices N`: re-run the same command in N processes under torchrun, and supervise them."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Callable


def without_devices_flag(arguments: list[str]) -> list[str]:
    """The command line minus `--devices N` / `--devices=N` (torchrun's ranks must not relaunch)."""
    kept: list[str] = []
    skip = False
    for argument in arguments:
        if skip:
            skip = False
        elif argument == "--devices":
            skip = True
        elif not argument.startswith("--devices="):
            kept.append(argument)
    return kept


def launch_torchrun(devices: int, announce: Callable[[str], None] = print) -> int:
    """Run this process's fakedet command in `devices` processes; its exit code.

    SIGINT/SIGTERM are forwarded to torchrun, which passes them to every rank; the ranks finish
    the step, save and exit, and the launcher exits 128 + signal like one process would.
    """
    arguments = without_devices_flag(sys.argv[1:])
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone",
        f"--nproc-per-node={devices}", "-m", "fakedet", *arguments,
    ]  # fmt: skip
    announce(
        f"Starting {devices} processes: torchrun --nproc-per-node={devices} -m fakedet "
        + " ".join(arguments)
    )
    process = subprocess.Popen(command)
    forwarded: list[int] = []

    def forward(signal_number: int, _frame: object) -> None:
        forwarded.append(signal_number)
        process.send_signal(signal_number)

    previous = {
        number: signal.signal(number, forward) for number in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        code = process.wait()
        # torchrun itself exits 1 after a signal; report it the way a single process does.
        return 128 + forwarded[0] if forwarded and code != 0 else code
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
