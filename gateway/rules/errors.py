"""The one error rule data raises, whichever module finds the problem."""


class RulesError(Exception):
    """Rule data that cannot be used; names the file and key so a reviewer can fix it."""
