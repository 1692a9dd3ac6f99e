"""The one exception family for user mistakes: reported as one clear message and exit status 2."""


class UserError(Exception):
    """A problem in the user's input (config, paths, data) that they can fix.

    The message names what is wrong and how to fix it; the CLI prints it without a traceback.
    """
