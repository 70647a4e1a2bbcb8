"""User interfaces: line mode for pipes and scripts (and, later, the terminal UI).

They consume runtime events and call the runtime interface; they never reach into a
runtime or the core.
"""
