"""The typer app: one small module per command group; rendering; exit codes."""
