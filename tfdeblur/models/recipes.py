"""Training-recipe helpers shared by the network modules."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def demo_recipe(base: Mapping[str, Any], **changes: Any) -> dict[str, Any]:
    """The ``demo`` training preset of a heavy network, derived from one of its recipes.

    ``--data demo`` runs it (``python train.py --model NAME --data demo``): the ``base``
    recipe's loss, augmentation and data kind on the network's ``tiny`` model preset,
    batch 4 of 64x64 patches of the 24 demo pairs (64 is a multiple of every network's
    internal padding), a constant 1e-3 rate (the papers' rates barely move a network in a
    few hundred steps), and validation on every demo test frame after every epoch.
    ``changes`` set the length (``epochs`` or ``iterations``) and anything else.
    """
    recipe = {
        **base,
        "model_preset": "tiny",
        "batch_size": 4,
        "patch_size": 64,
        "learning_rate": 1e-3,
        "lr_schedule": {"type": "constant"},
        "validate_every": 1,
        "max_val_images": None,
    }
    recipe.update(changes)
    return recipe
