"""Subcommands of `cifar-speed`, one module each (discovered by cifar_speed.cli)."""
