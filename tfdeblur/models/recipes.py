"""Training-recipe helpers shared by the network modules."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

#: The data augmentation switches of a training recipe's ``augment`` section.
AUGMENTATIONS = ("flip", "rotate", "channel_shuffle", "saturation", "noise")


def augmentation(*enabled: str) -> dict[str, bool]:
    """A recipe's ``augment`` section: the switches named in ``enabled`` on, every other
    one of :data:`AUGMENTATIONS` off (all five written out, so a recipe states them)."""
    unknown = sorted(set(enabled) - set(AUGMENTATIONS))
    if unknown:
        raise ValueError(f"unknown augmentation(s) {unknown}; known: {AUGMENTATIONS}.")
    return {name: name in enabled for name in AUGMENTATIONS}


def demo_recipe(
    base: Mapping[str, Any], iterations: int, validations: int = 5, **changes: Any
) -> dict[str, Any]:
    """The ``demo`` training preset of a heavy network, derived from one of its recipes.

    ``--data demo`` runs it (``python train.py --model NAME --data demo``): the ``base``
    recipe's loss, augmentation and data kind on the network's ``tiny`` model preset,
    batch 4 of 64x64 patches of the 24 demo pairs (64 is a multiple of every network's
    internal padding), ``iterations`` steps at a 1e-3 rate (the papers' rates barely move
    a network in a few hundred steps) divided by 10 for the last fifth (the constant
    rate's noise otherwise decides the final number), in ``validations`` epochs, each
    ending with a validation on every demo test frame. One pass over the 24 pairs would
    make 6-step epochs whose validations and checkpoints cost more than the training;
    these keep validation under a fifth of the run. ``changes`` set anything else.
    """
    recipe = {key: value for key, value in base.items() if key not in ("epochs", "iterations")}
    recipe.update(
        model_preset="tiny",
        batch_size=4,
        patch_size=64,
        learning_rate=1e-3,
        lr_schedule={
            "type": "multistep",
            "milestones": [iterations * 4 // 5],
            "unit": "iterations",
            "factor": 0.1,
        },
        iterations=iterations,
        steps_per_epoch=iterations // validations,
        validate_every=1,
        max_val_images=None,
    )
    recipe.update(changes)
    return recipe
