"""The one exception type for user mistakes.

Console scripts catch :class:`UserError` and print its message as one sentence on stderr with a
non-zero exit; anything else is a bug and keeps its traceback.
"""


class UserError(ValueError):
    """Bad input from the user (config, corpus, checkpoint, prompt): the message says the fix."""
