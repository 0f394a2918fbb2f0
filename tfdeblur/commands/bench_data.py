"""``tfdeblur bench-data``: is training input-bound? tf.data rate vs. training-step rate."""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    from tfdeblur.options import add_device_arguments, add_loss_arguments

    p = subparsers.add_parser(
        "bench-data",
        help="measure the tf.data training pipeline against the training step time",
        description="Times the network's training pipeline (decode, crop, augment, batch) "
        "alone and training steps on a loaded batch (the step train.py runs, with its loss, "
        "discriminator and dtype policy); headroom > 1 means the input keeps up.",
    )
    p.add_argument("--model", default="lcnet")
    p.add_argument("--model-preset", default=None)
    p.add_argument("--train-preset", default=None, help="default: demo for --data demo, else paper")
    p.add_argument("--data", default="demo")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--patch-size", type=int, default=None)
    add_device_arguments(p)
    add_loss_arguments(p)
    p.add_argument("--steps", type=int, default=20)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from tfdeblur.train.loop import TrainConfig, measure_input_pipeline

    config = TrainConfig(
        model=args.model,
        model_preset=args.model_preset,
        train_preset=args.train_preset,
        data=args.data,
        batch_size=args.batch_size,
        patch_size=args.patch_size,
        strategy=args.strategy,
        mixed_precision=args.mixed_precision,
        loss=args.loss,
        vgg_weights=args.vgg_weights,
    )
    r = measure_input_pipeline(config, args.steps)
    print(
        f"input pipeline: {r['pipeline_images_per_s']:.1f} images/s "
        f"({r['pipeline_batches_per_s']:.2f} batches/s)\n"
        f"training step:  {r['train_step_s'] * 1000:.0f} ms ({r['train_images_per_s']:.1f} images/s)\n"
        f"headroom: {r['headroom']:.1f}x "
        + (
            "(input keeps up)"
            if r["headroom"] > 1
            else "(INPUT-BOUND: add CPU workers or cache decoded images)"
        )
    )
    return 0
