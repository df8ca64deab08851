"""One module per ``crfcore`` subcommand; each exposes ``add_parser(subparsers)``."""
