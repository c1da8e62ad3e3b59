"""Score the pieces of a `maml++` ensemble checkpoint separately (docs/maml.md).

    python docs/scripts/maml_ensemble_members.py CHECKPOINT.safetensors [--ways 5 --shots 1]
        [--out FILE]

CHECKPOINT is the harness checkpoint of an Omniglot few-shot `maml++` run with `ensemble_top`
> 0 (its path is in the run's JSON, `meta_train.checkpoint`). Prints one JSON line with the
accuracy (mean and 1.96 sd / sqrt(n), in %) on the seed-0 test episodes of the ensemble, of each
member alone (keyed by its meta-step, with its validation score), and of the final
meta-weights, which the checkpoint also holds; `--out FILE` also saves it with its provenance
(docs/scripts/output.py).
"""

from __future__ import annotations

import argparse
import json

import torch
from output import write
from safetensors.torch import load_file

from baselines.maml_pp import MAMLPlusPlusConfig
from harness.config import BuildContext
from harness.experiment import build_scenario
from harness.runner import run_episodes


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("checkpoint")
    ap.add_argument("--ways", default="5")
    ap.add_argument("--shots", default="1")
    ap.add_argument("--out", help="also save the printed line, with provenance, to this file")
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

    ensemble = learner(top, state)
    out = {"ensemble": score(ensemble), "last": score(learner(0, plain)), "members": {}}
    filled = [i for i in range(top) if not torch.isnan(state["ens_score"][i])]
    for i, member in zip(filled, ensemble.members(), strict=True):
        single = learner(0, plain)
        with torch.no_grad():  # weights and learned inner lrs of this member
            for name, v in single.meta_params().items():
                v.copy_(member[name])
        out["members"][int(state["ens_step"][i])] = {
            "val": round(float(state["ens_score"][i]), 4), "test": score(single)}
    print(json.dumps(out))
    write(a.out, [out])


if __name__ == "__main__":
    main()
