"""The baselines' networks. The two kinds of backbone never share a name:

  - `modules`: nn.Modules of the stream baselines (`Conv4`, `MLP`, ..., `make_backbone` by
    name from `BACKBONES`), with running batch-norm statistics;
  - `functional`: parameter dicts and pure forward functions for inner loops under
    `torch.func` (`FunctionalConv4`, `FunctionalMLP`, `FunctionalResNet12`,
    `make_functional_backbone`), used by the MAML family, Reptile and ProtoNets;
and `oml_anml` holds the OML and ANML networks (nn.Modules; their trunks are backbones too).
"""

from baselines.networks.functional import (
    FunctionalConv4,
    FunctionalMLP,
    FunctionalNet,
    FunctionalResNet12,
    Params,
    make_functional_backbone,
)
from baselines.networks.modules import (
    BACKBONES,
    MLP,
    Conv4,
    ConvNetSmall,
    Identity,
    StreamBatchNorm2d,
    eval_mode,
    make_backbone,
)
from baselines.networks.oml_anml import (
    ANMLBackbone,
    ANMLNet,
    OMLBackbone,
    OMLNet,
    SineNet,
    kaiming_init,
)

__all__ = [
    "ANMLBackbone", "ANMLNet", "BACKBONES", "MLP", "Conv4", "ConvNetSmall", "FunctionalConv4",
    "FunctionalMLP", "FunctionalNet", "FunctionalResNet12", "Identity", "OMLBackbone",
    "OMLNet", "Params", "SineNet", "StreamBatchNorm2d", "eval_mode", "kaiming_init",
    "make_backbone", "make_functional_backbone",
]
