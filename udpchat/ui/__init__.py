"""User interfaces: the terminal UI (`tui`, prompt_toolkit, imported only when used) and
line mode (`lines`) for pipes, scripts and `--plain`.

Each is the `on_event` callback of the runtime it runs (so it is made first), takes the
events the runtime pushes to it, and calls the runtime interface; they never reach into
a runtime or the core.
"""
