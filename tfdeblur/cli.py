"""The ``tfdeblur`` command line: one sub-command per module of ``tfdeblur.commands``.

Each module of :mod:`tfdeblur.commands` defines ``register(subparsers)``, which adds its
sub-command's parser and sets ``func`` (``args -> int`` exit code) as its default.
Building the parsers imports no TensorFlow (sub-commands import it when they run), so
``tfdeblur --help`` is instant, and :func:`tfdeblur.startup.quiet_logs` runs before
TensorFlow loads: its log lines stay off the terminal unless ``--verbose`` (anywhere on
the command line) or ``TFDEBLUR_VERBOSE=1`` asks for them.
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
    # Accepted before and after COMMAND; main() reads it from argv before parsing.
    parser.add_argument("--verbose", action="store_true", help=VERBOSE_HELP)
    for sub in subparsers.choices.values():
        sub.add_argument(
            "--verbose", action="store_true", default=argparse.SUPPRESS, help=VERBOSE_HELP
        )
    return parser


VERBOSE_HELP = "show TensorFlow's own log lines too (also: TFDEBLUR_VERBOSE=1)"


def main(argv: list[str] | None = None) -> int:
    from tfdeblur.startup import quiet_logs

    argv = sys.argv[1:] if argv is None else list(argv)
    # Before parsing: argument types (--tile, --sizes) may import TensorFlow.
    quiet_logs(verbose="--verbose" in argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (FileNotFoundError, ValueError, KeyError) as err:
        # Bad input: one clear line naming the file or argument, no traceback.
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"tfdeblur {args.command}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
