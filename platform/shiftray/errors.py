"""Errors about the user's input, as opposed to bugs.

`UserInputError` (and its kinds: a bad job spec, missing data files, a trained run that does not
fit the job) is what the command line prints as one ``error:`` line, naming what is wrong and
what would be right. Anything else is a bug in shiftray and keeps its traceback.
"""

from __future__ import annotations


class UserInputError(ValueError):
    """The spec, the data, a path or a trained run the user gave is wrong; the message says how."""
