"""The ``uncert`` command line: one thin Typer module per subcommand.

Each subcommand reads as load → compute → render, calling the library layer (which has no CLI code),
so everything the CLI does is also a Python API.
"""
