"""The reproduction's subcommands, one module each with `register(subparsers)`; registered with
the `linfilt` command by `linfilt.paper.plugin`."""
