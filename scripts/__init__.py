"""Command-line entry points (``python -m scripts.<name>``).

Importing the package installs the one-line report of bad input: an :class:`~pipeline.errors.InputError`
that reaches the top of any script prints ``error: <subject>: <file>: <problem>`` and exits non-zero,
without a page of traceback (other errors keep theirs).
"""

from pipeline.errors import install_one_line_errors

install_one_line_errors()
