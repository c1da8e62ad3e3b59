"""The published recipes of the meta-learners that resolve per scenario kind (MAML family,
MAML++, Reptile, ProtoNets), and how a config takes its values from them.

A recipe table maps a recipe ('paper': the published one, 'quick': the CPU one, which
overrides 'paper') and a scenario kind (`scenario_kind`) to field values; a config field left
at None takes the table's value (`fill_from_recipe`). A config is keyed, hashed and recorded
as resolved, so editing one kind's entry retrains that kind only.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

from harness.protocol import ScenarioSpec

Kind = Literal["sinusoid", "vector", "omniglot", "omniglot20", "miniimagenet"]
Recipes = dict[str, dict[str, dict[str, Any]]]
"""recipe ('paper', 'quick') -> scenario kind -> field values."""


def scenario_kind(spec: ScenarioSpec) -> Kind:
    """Which published recipe applies to a scenario with this spec ('vector': classification
    of flat inputs, no published recipe; an MLP with MAML's settings)."""
    if spec.task == "regression":
        return "sinusoid"
    if len(spec.input_shape) == 1:
        return "vector"
    if spec.input_shape[0] == 1:
        return "omniglot" if spec.n_outputs <= 5 else "omniglot20"
    return "miniimagenet"


def fill_from_recipe(cfg: Any, recipes: Recipes, kind: str,
                     defaults: dict[str, Any] | None = None) -> Any:
    """A copy of `cfg` whose None fields take the value of `recipes` for this scenario kind:
    the 'paper' entry, overridden by the entry of the config's own recipe ('quick'), then
    `defaults` for what neither sets."""
    values = {**(defaults or {}), **recipes["paper"][kind], **recipes[cfg.recipe].get(kind, {})}
    return dataclasses.replace(cfg, **{k: v for k, v in values.items()
                                       if getattr(cfg, k) is None})


# Published recipes (Finn et al. 2017, Sec. 5 and App. A; Antoniou et al. 2019, Sec. 5).
# 'quick' overrides on top of 'paper'. train_queries: queries per class (points for sinusoid).
# Sinusoid inner_lr: the paper's text says 0.01, but the authors' code runs the sinusoid with
# its default update_lr of 0.001 (the command in its usage notes sets none), so 0.001 it is.
# It does not reproduce the published curve's shape (docs/maml.md, "Sinusoid regression").
_MAML_OMNIGLOT = dict(backbone="conv4-stride", test_steps=10, meta_lr=1e-3, meta_steps=60000,
                      train_queries=0, bn="transductive")
"""The settings MAML's Omniglot recipes share (5-way: 'omniglot', 20-way: 'omniglot20')."""
_MAML_OMNIGLOT_QUICK = dict(test_steps=10, train_queries=1, bn="support")

MAML_RECIPES: Recipes = {
    "paper": {
        "sinusoid": dict(backbone="mlp-maml", inner_lr=0.001, inner_steps=1, test_steps=10,
                         meta_lr=1e-3, meta_batch=25, meta_steps=70000, train_queries=10,
                         bn="transductive"),
        "vector": dict(backbone="mlp", inner_lr=0.1, inner_steps=1, test_steps=5,
                       meta_lr=1e-3, meta_batch=16, meta_steps=10000, train_queries=5,
                       bn="support"),
        "omniglot": dict(_MAML_OMNIGLOT, inner_lr=0.4, inner_steps=1, meta_batch=32),
        "omniglot20": dict(_MAML_OMNIGLOT, inner_lr=0.1, inner_steps=5, meta_batch=16),
        "miniimagenet": dict(backbone="conv4", inner_lr=0.01, inner_steps=5, test_steps=10,
                             meta_lr=1e-3, meta_batch=4, meta_steps=60000, train_queries=15,
                             bn="transductive"),
    },
    "quick": {
        "sinusoid": dict(meta_steps=70000),
        "vector": dict(meta_steps=1000),
        "omniglot": dict(_MAML_OMNIGLOT_QUICK, meta_steps=5000),
        "omniglot20": dict(_MAML_OMNIGLOT_QUICK, meta_steps=2000),
        "miniimagenet": dict(meta_steps=2000, bn="support"),
    },
}
"""train_queries=0 means 'as many as shots' (MAML's Omniglot code samples K queries)."""

MAML_PP_RECIPES: Recipes = {
    "paper": {
        "*": dict(meta_steps=75000, msl_steps=5000, da_steps=25000, ensemble_top=5,
                  inner_lr=0.1, cosine=True),
        # The authors' Omniglot configs (experiment_config/omniglot_maml++-omniglot_1_8_0.1_64_
        # {5,20}_0.json): batch_size 8, 100 epochs x 500 iterations, multi-step loss for 10
        # epochs, first_order_to_second_order_epoch -1 (second order from the start),
        # max_pooling true (conv4, not MAML's strided conv4).
        "omniglot": dict(backbone="conv4", meta_batch=8, meta_steps=50000, da_steps=0),
        "omniglot20": dict(backbone="conv4", meta_batch=8, meta_steps=50000, da_steps=0),
        # Their MiniImageNet configs (experiment_config/mini-imagenet_maml++-mini-imagenet_
        # {1,5}_2_0.01_48_5_0.json): batch_size 2, 48 filters, init inner lr 0.01, 100 epochs,
        # multi-step loss for 15 epochs, second order from the start, 15 target samples, and
        # min_learning_rate = meta_learning_rate (0.001), i.e. no annealing of the meta lr.
        "miniimagenet": dict(backbone="conv4", channels=48, meta_batch=2, meta_steps=50000,
                             msl_steps=7500, da_steps=0, inner_lr=0.01, cosine=False),
    },
    "quick": {
        "*": dict(msl_steps=500, da_steps=500, ensemble_top=0, inner_lr=0.1, cosine=True),
        "miniimagenet": dict(channels=48, inner_lr=0.01, cosine=False),
    },
}
"""MAML++'s own recipe values, by recipe and scenario kind ('*': every kind), applied before
`MAML_RECIPES` (which fill what these leave unset; `channels` counts as unset at 0). 'quick'
keeps MAML's CPU recipe with the multi-step loss and the first-order phase over 500 steps, and
no ensembling, with MAML++'s inner lr, schedule and width."""


# Reptile (Nichol et al. 2018).
REPTILE_RECIPES: Recipes = {
    "paper": {  # Nichol et al. 2018, App. A (Omniglot / MiniImageNet); sinusoid: Sec. 5.1
        "omniglot": dict(backbone="conv4-stride", inner_lr=1e-3, inner_steps=5, inner_batch=10,
                         train_shots=10, test_steps=50, test_batch=5, meta_step=1.0,
                         meta_batch=5, meta_steps=100000),
        "omniglot20": dict(backbone="conv4-stride", inner_lr=5e-4, inner_steps=10,
                           inner_batch=20, train_shots=10, test_steps=50, test_batch=10,
                           meta_step=1.0, meta_batch=5, meta_steps=200000),
        "miniimagenet": dict(backbone="conv4", inner_lr=1e-3, inner_steps=8, inner_batch=10,
                             train_shots=15, test_steps=50, test_batch=10, meta_step=1.0,
                             meta_batch=5, meta_steps=100000),
        "sinusoid": dict(backbone="mlp", inner_lr=0.02, inner_steps=32, inner_batch=10,
                         train_shots=50, test_steps=10, test_batch=0, meta_step=0.1,
                         meta_batch=1, meta_steps=30000, inner_opt="sgd"),
        "vector": dict(backbone="mlp", inner_lr=1e-3, inner_steps=5, inner_batch=10,
                       train_shots=10, test_steps=20, test_batch=0, meta_step=1.0,
                       meta_batch=5, meta_steps=3000),
    },
    "quick": {
        "omniglot": dict(meta_steps=10000, test_steps=50),  # ~18 min on one thread: MAML's budget
        "omniglot20": dict(meta_steps=6000),
        "miniimagenet": dict(meta_steps=3000),
        "sinusoid": dict(meta_steps=10000),
        "vector": dict(meta_steps=1000),
    },
}


# Prototypical Networks (Snell et al. 2017).
PROTONET_RECIPES: Recipes = {
    "paper": {
        "omniglot": dict(train_ways=60, train_queries=5, meta_steps=20000),
        "omniglot20": dict(train_ways=60, train_queries=5, meta_steps=20000),
        "miniimagenet": dict(train_ways=30, train_queries=15, meta_steps=20000),
        "vector": dict(train_ways=20, train_queries=5, meta_steps=2000),
    },
    "quick": {
        "omniglot": dict(train_ways=20, train_queries=5, meta_steps=2000),
        "omniglot20": dict(train_ways=20, train_queries=5, meta_steps=2000),
        "miniimagenet": dict(train_ways=20, train_queries=10, meta_steps=2000),
        "vector": dict(meta_steps=500),
    },
}
