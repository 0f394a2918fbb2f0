"""The ``tfdeblur`` command line: one sub-command per module of ``tfdeblur.commands``.

Each module of :mod:`tfdeblur.commands` defines ``register(subparsers)``, which adds its
sub-command's parser and sets ``func`` (``args -> int`` exit code) as its default.
Sub-commands import TensorFlow lazily so ``tfdeblur --help`` is instant.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys


def build_parser() -> argparse.ArgumentParser:
    import tfdeblur.commands as commands

    parser = argparse.ArgumentParser(
        prog="tfdeblur",
        description="Dynamic-scene motion deblurring in TensorFlow/Keras: "
        "train, evaluate, deblur, export, benchmark.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{commands.__name__}.{info.name}")
        module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from tfdeblur.backend import require_tensorflow

    try:
        require_tensorflow(f"tfdeblur {args.command}")
        return int(args.func(args) or 0)
    except (FileNotFoundError, ValueError, KeyError) as err:
        # Bad input: one clear line naming the file or argument, no traceback.
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"tfdeblur {args.command}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
