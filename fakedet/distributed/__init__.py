"""Running as many processes: torchrun's environment and collectives, `--devices N` launching,
and the signals (Ctrl-C, SIGTERM) a scheduler stops a run with."""
