"""The `minoots` command line."""
import click


@click.group()
def main() -> None:
    """MINOOTS: a durable, Raft-replicated timer kernel."""


@main.command()
def version() -> None:
    """Print the installed version."""
    import minoots

    click.echo(minoots.__version__)
