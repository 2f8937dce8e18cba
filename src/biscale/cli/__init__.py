"""Command-line interface (typer). One module per command group; ``main.py`` assembles them."""
