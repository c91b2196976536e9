"""The command line (Typer): thin commands that parse options and call one library function."""
