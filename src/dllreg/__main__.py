"""``python -m dllreg``: the command line, which lives in dllreg.cli (the top layer)."""

from .cli.main import run

if __name__ == "__main__":
    run()
