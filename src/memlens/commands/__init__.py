"""One module per CLI sub-command, each with ``register(subparsers)``."""
