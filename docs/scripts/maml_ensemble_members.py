"""Score the pieces of a `maml++` ensemble checkpoint separately (docs/maml.md).

    python docs/scripts/maml_ensemble_members.py CHECKPOINT.safetensors [--ways 5 --shots 1]

CHECKPOINT is the harness checkpoint of an Omniglot few-shot `maml++` run with `ensemble_top`
> 0 (its path is in the run's JSON, `meta_train.checkpoint`). Prints one JSON line with the
accuracy (mean and 1.96 sd / sqrt(n), in %) on the seed-0 test episodes of the ensemble, of each
member alone (keyed by its meta-step, with its validation score), and of the final
meta-weights, which the checkpoint also holds. A diagnostic: nothing is written to results/.
"""

from __future__ import annotations

import argparse
import json

import torch
from safetensors.torch import load_file

from baselines.maml import MAMLPlusPlusConfig, _member_key
from harness.config import BuildContext
from harness.experiment import build_scenario
from harness.runner import run_episodes


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("checkpoint")
    ap.add_argument("--ways", default="5")
    ap.add_argument("--shots", default="1")
    a = ap.parse_args()
    scenario = build_scenario("omniglot-fewshot", 0, None, {"ways": a.ways, "shots": a.shots})
    state = load_file(a.checkpoint)
    top = len(state["ens_score"])
    plain = {k: v for k, v in state.items() if not k.startswith("ens")}

    def learner(ensemble_top: int, weights: dict[str, torch.Tensor]):
        cfg = MAMLPlusPlusConfig(ensemble_top=ensemble_top)
        built = cfg.build(BuildContext(spec=scenario.spec, seed=0))
        built.load_state_dict(weights)
        return built

    def score(model) -> list[float]:
        s = run_episodes(model, scenario.experiences, scenario.spec).scores
        ci = 1.96 * float(s.std()) / len(s) ** 0.5
        return [round(100 * float(s.mean()), 2), round(100 * ci, 2)]

    out = {"ensemble": score(learner(top, state)), "last": score(learner(0, plain)),
           "members": {}}
    names = [k for k in learner(top, state).meta_params()]
    for i in range(top):
        weights = dict(plain)
        for name in names:  # weights 'conv0.weight', learned inner lrs 'lr:conv0.weight'
            kind, _, base = name.rpartition(":")
            key = ("lrs." if kind == "lr" else "params.") + base.replace(".", "/")
            weights[key] = state[_member_key(i, name)]
        step = int(state["ens_step"][i])
        out["members"][step] = {"val": round(float(state["ens_score"][i]), 4),
                                "test": score(learner(0, weights))}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
