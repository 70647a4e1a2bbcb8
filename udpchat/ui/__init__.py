"""User interfaces: the terminal UI (`tui`, prompt_toolkit, imported only when used) and
line mode (`lines`) for pipes, scripts and `--plain`.

They consume runtime events and call the runtime interface; they never reach into a
runtime or the core.
"""
