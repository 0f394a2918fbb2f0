"""Training-recipe helpers shared by the network modules."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def demo_recipe(base: Mapping[str, Any], **changes: Any) -> dict[str, Any]:
    """The ``demo`` training preset of a heavy network, derived from one of its recipes.

    ``--data demo`` runs it (``python train.py --model NAME --data demo``): the ``base``
    recipe's loss, augmentation and data kind on the network's ``tiny`` model preset,
    batch 4 of 64x64 patches of the 24 demo pairs (64 is a multiple of every network's
    internal padding), a 1e-3 rate (the papers' rates barely move a network in a few
    hundred steps) divided by 10 for the last fifth of the ``iterations`` (the constant
    rate's noise otherwise decides the final number), epochs of 100 steps (not 6: one pass
    over 24 pairs) and validation on every demo test frame every second epoch, so that at
    most a fifth of the run is spent validating. ``changes`` set the length
    (``iterations``, required) and anything else.
    """
    steps = int(changes["iterations"])
    recipe = {key: value for key, value in base.items() if key not in ("epochs", "iterations")}
    recipe.update(
        model_preset="tiny",
        batch_size=4,
        patch_size=64,
        learning_rate=1e-3,
        lr_schedule={
            "type": "multistep",
            "milestones": [steps * 4 // 5],
            "unit": "iterations",
            "factor": 0.1,
        },
        steps_per_epoch=100,
        validate_every=2,
        max_val_images=None,
    )
    recipe.update(changes)
    return recipe
