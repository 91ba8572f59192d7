"""One module per ``integral-pose`` subcommand: ``add_arguments(parser)`` and ``main(args) -> int``.

Command modules parse arguments, call the library (engine, studies, metrics, data) and print; they
sit at the top of the layering and nothing in the library imports them.
"""
