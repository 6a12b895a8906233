"""``python -m captum_mamba.cli`` (and ``torchrun -m captum_mamba.cli``): the ``captum-mamba`` command."""

from captum_mamba.cli import command

if __name__ == "__main__":
    command()
