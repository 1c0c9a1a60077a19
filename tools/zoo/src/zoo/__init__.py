"""The `zoo` command-line tool. Library code lives in heads-core and the task packages."""

__version__ = "0.1.0"
