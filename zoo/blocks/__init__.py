"""Sequence mixers and MLPs; importing this package registers every block under its config name."""
from zoo.blocks.base import Cache, Mixer
from zoo.blocks.registry import MIXERS, MLPS, build_mixer, build_mlp, register_mixer, register_mlp

# each family module registers its classes on import
from zoo.blocks.attention import Attention
from zoo.blocks.based import BasedLinearAttention
from zoo.blocks.co4 import Co4
from zoo.blocks.deltanet import DeltaNet, GatedDeltaNet
from zoo.blocks.gla import GatedLinearAttention
from zoo.blocks.hpm import HierarchicalMemoryFFN
from zoo.blocks.mamba import Mamba
from zoo.blocks.mamba2 import Mamba2
from zoo.blocks.mingru import MinGRU, MinLSTM
from zoo.blocks.mlp import GeluMLP, SwiGLU
from zoo.blocks.rwkv7 import RWKV7
from zoo.blocks.short_conv import ShortConv
