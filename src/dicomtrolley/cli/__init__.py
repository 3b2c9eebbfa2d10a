"""The ``dicomtrolley`` command line: click commands over the public API.

Each command lives in a module of its own and is registered by name in
:mod:`dicomtrolley.cli.main`, which also holds the options the commands share.
Everything a command does, a script can do with the library: the commands only
turn options into library objects and results into text.
"""
