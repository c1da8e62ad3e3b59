"""A small meta-training kit: what MAML, MAML++, ANIL/BOIL/sparse-MAML, Reptile, ProtoNets,
OML and ANML share.

  - `recipes`: the published recipe tables, `scenario_kind` and `fill_from_recipe`;
  - `configs`: `RecipeConfig`, the base of the configs that resolve from those tables;
  - `resumable`: the one resumable training loop (`train_steps`) and its partial checkpoints
    (`ResumableRun` with the `NamedState` or `KeyedState` format);
  - `learner`: `FunctionalMetaLearner`, the base of the torch.func meta-learners;
  - `graphed`: `GraphedStep`, one meta-update captured as a CUDA graph.
"""
