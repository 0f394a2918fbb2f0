"""Train a tfdeblur network: python train.py --model NAME [--data PATH|demo].

Flags -> tfdeblur.train.loop.TrainConfig -> tfdeblur.train.loop.train. Values not given come
from the network's training preset: "paper" for a dataset path, "demo" for --data demo
(a recipe that trains in minutes on a CPU; the heavy networks' demo recipes train their
"tiny" model preset). --show-preset prints the resolved recipe.
"""

from __future__ import annotations

import argparse
import json
import os
import sys


def _models_epilog() -> str:
    """The registered networks with their model and training presets, for ``--help``."""
    from tfdeblur.models.registry import CATALOG  # names only: builds nothing, imports no Keras

    lines = ["registered models (model presets; training presets):"]
    for name, (presets, train_presets) in CATALOG.items():
        lines.append(
            f"  {name:<12} model: {', '.join(presets)}; training: {', '.join(train_presets)}"
        )
    lines += [
        "",
        "examples:",
        "  python train.py --model lcnet --data demo",
        "  python train.py --model deepdeblur --data /data/GOPRO_Large --train-preset official",
        "  python train.py --model sarn --data /data/GOPRO_Large --resume",
    ]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    from tfdeblur.options import add_device_arguments, add_loss_arguments

    p = argparse.ArgumentParser(
        description=__doc__,
        epilog=_models_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--model", default="lcnet", help="registered network (default: lcnet)")
    p.add_argument(
        "--model-preset",
        default=None,
        help="model preset (default: the training preset's, else the paper configuration)",
    )
    p.add_argument(
        "--train-preset",
        default=None,
        help="training preset (default: demo for --data demo, else paper)",
    )
    p.add_argument(
        "--data", default="demo", help="GOPRO_Large or paired-folder root, or 'demo' (default)"
    )
    p.add_argument(
        "--output-dir",
        default=None,
        help="where checkpoints and final.keras go (default: runs/MODEL)",
    )
    p.add_argument("--batch-size", type=int, default=None, help="global batch size")
    p.add_argument("--patch-size", type=int, default=None, help="side of the square crops")
    p.add_argument("--learning-rate", "--lr", type=float, default=None)
    length = p.add_mutually_exclusive_group()
    length.add_argument("--epochs", type=int, default=None)
    length.add_argument("--iterations", type=int, default=None)
    p.add_argument(
        "--steps-per-epoch",
        type=int,
        default=None,
        help="default: the preset's (100 for demo presets), else training pairs / batch",
    )
    p.add_argument("--blur-key", choices=["blur", "blur_gamma"], default=None)
    add_loss_arguments(p)
    p.add_argument(
        "--vgg-layer",
        default=None,
        help="VGG-19 layer of the perceptual loss (default: block3_conv3)",
    )
    p.add_argument(
        "--clip-length", type=int, default=None, help="frames per training clip (video networks)"
    )
    p.add_argument(
        "--validate-every",
        type=int,
        default=None,
        help="epochs between validations (default: the preset's; 10 or 20 for paper presets)",
    )
    p.add_argument(
        "--max-val-images",
        type=int,
        default=None,
        help="validation frames, spread over the test split (default: the preset's; 100 "
        "for paper presets)",
    )
    p.add_argument("--keep-checkpoints", type=int, default=3)
    again = p.add_mutually_exclusive_group()
    again.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --output-dir from its newest readable checkpoint",
    )
    again.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the run in --output-dir (its checkpoints, logs, models, JSON files; "
        "other files are kept). Without --resume or --overwrite a non-empty "
        "--output-dir is refused",
    )
    p.add_argument(
        "--cluster-timeout",
        type=float,
        default=300.0,
        help="--strategy multi_worker: seconds to wait for every task of TF_CONFIG (default 300)",
    )
    add_device_arguments(p)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--verbose",
        type=int,
        default=1,
        choices=[0, 1, 2, 3],
        help="0: silent, 1: progress bar (default), 2: one line per epoch, 3: one line per "
        "epoch and TensorFlow's own log lines (also: TFDEBLUR_VERBOSE=1)",
    )
    p.add_argument(
        "--show-preset", action="store_true", help="print the resolved settings and exit"
    )
    return p


def main(argv: list[str] | None = None) -> int:
    from tfdeblur.startup import quiet_logs

    args = build_parser().parse_args(argv)  # imports no TensorFlow
    quiet_logs(verbose=args.verbose >= 3)
    from tfdeblur.train.cluster import ClusterError
    from tfdeblur.train.loop import TrainConfig, resolve_train_settings, train

    fields = {k: v for k, v in vars(args).items() if k != "show_preset"}
    fields["verbose"] = min(args.verbose, 2)  # Keras' fit verbosity
    fields["output_dir"] = fields["output_dir"] or f"runs/{args.model}"
    config = TrainConfig(**fields)
    try:
        if args.show_preset:
            print(json.dumps(resolve_train_settings(config), indent=2))
            return 0
        summary = train(config)
    except (FileNotFoundError, ValueError, KeyError) as err:
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"train.py: error: {message}", file=sys.stderr)
        return 2
    except FloatingPointError as err:  # non-finite loss: stopped before saving NaN weights
        print(f"train.py: error: {err}", file=sys.stderr)
        return 1
    except ClusterError as err:
        print(f"train.py: error: {err}", file=sys.stderr)
        # TensorFlow's distributed runtime can wait for the lost peer at interpreter exit.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(1)
    except KeyboardInterrupt:
        print(
            "train.py: interrupted; rerun with --resume to continue from the last checkpoint.",
            file=sys.stderr,
        )
        return 130
    print(f"Final weights sha256: {summary['weights_sha256']}")
    saved = summary["final_model"] or "nothing (not the chief worker)"
    untrained = summary["val_psnr_untrained"]
    start = "untrained (not recorded)" if untrained is None else f"untrained {untrained:.2f} dB"
    if summary["initial_epoch"]:
        start += (
            f", resumed at epoch {summary['initial_epoch']} with {summary['val_psnr_start']:.2f} dB"
        )
    print(
        f"Saved {saved}. Validation PSNR: blurry {summary['val_psnr_blurry']:.2f} dB, "
        f"{start} -> trained {summary['val_psnr_trained']:.2f} dB."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
