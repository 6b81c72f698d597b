"""Command-line parsing whose errors are one line and exit code 2, like every other bad input."""
from __future__ import annotations

import argparse
import os
import sys
from typing import NoReturn


class OneLineArgumentParser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        print(f"error: {message} (see {self.prog} --help)", file=sys.stderr)
        sys.exit(2)


def positive_int(text: str) -> int:
    """An argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def program(module_form: str, console_form: str) -> str:
    """The name to show in usage and errors: the console command if that is how we were started, else `python -m`."""
    return console_form if os.path.basename(sys.argv[0]) == console_form else module_form
