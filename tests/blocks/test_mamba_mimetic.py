"""Mamba(init="mimetic"): off by default, no decay at initialisation, W_C = W_B, reachable from a model config."""
import math

import pytest
import torch
from omegaconf import OmegaConf

from zoo.blocks import Mamba
from zoo.blocks.mamba import MIMETIC_DECAY_RATE
from zoo.model import LM


def rows(mamba: Mamba, which: str) -> torch.Tensor:
    start = mamba.dt_rank + (0 if which == "B" else mamba.d_state)
    return mamba.x_proj.weight[start:start + mamba.d_state]


def test_default_is_mamba_ssm_init_and_mimetic_changes_only_A_and_C():
    torch.manual_seed(0)
    default = Mamba(32, d_state=8)
    torch.manual_seed(0)
    also_default = Mamba(32, d_state=8, init="default")
    torch.manual_seed(0)
    mimetic = Mamba(32, d_state=8, init="mimetic")
    assert default.init == "default"
    for name, value in default.state_dict().items():
        assert torch.equal(value, also_default.state_dict()[name])
        if name not in ("A_log", "x_proj.weight"):
            assert torch.equal(value, mimetic.state_dict()[name]), name  # same draws for everything else
    assert torch.equal(rows(mimetic, "B"), rows(default, "B"))
    assert not torch.equal(rows(default, "C"), rows(default, "B"))
    dt_rows = slice(0, default.dt_rank)
    assert torch.equal(mimetic.x_proj.weight[dt_rows], default.x_proj.weight[dt_rows])


def test_mimetic_state_transition_starts_near_no_decay():
    mimetic, default = Mamba(32, d_state=8, init="mimetic"), Mamba(32, d_state=8)
    dt_max = torch.nn.functional.softplus(mimetic.dt_proj.bias).max()  # the largest initial delta (weights ~0 aside)
    keep = torch.exp(dt_max * -torch.exp(mimetic.A_log))
    assert (keep > 0.998).all() and torch.allclose(-torch.exp(mimetic.A_log), torch.tensor(-MIMETIC_DECAY_RATE))
    # the default (S4D-real, A = -(n+1)) forgets its last state far faster
    assert torch.exp(dt_max * -torch.exp(default.A_log)).min() < 0.5


def test_mimetic_C_B_scores_act_like_attention():
    """C_t . B_s is largest where the SSM input at s equals the one at t (tied query and key projections)."""
    torch.manual_seed(1)
    mamba = Mamba(32, d_state=16, init="mimetic")
    u = torch.randn(64, mamba.d_inner)                          # SSM inputs at 64 positions
    _, B, C = mamba.x_proj(u).split([mamba.dt_rank, mamba.d_state, mamba.d_state], dim=-1)
    scores = C @ B.T                                            # scores[t, s] = C_t . B_s
    assert (scores.argmax(dim=1) == torch.arange(64)).float().mean() > 0.9
    default = Mamba(32, d_state=16)
    _, B, C = default.x_proj(u).split([default.dt_rank, default.d_state, default.d_state], dim=-1)
    assert (( C @ B.T).argmax(dim=1) == torch.arange(64)).float().mean() < 0.3


def test_mimetic_block_runs_and_decodes_like_its_parallel_forward():
    torch.manual_seed(2)
    mamba = Mamba(16, d_state=4, init="mimetic")
    x = torch.randn(2, 12, 16)
    cache = mamba.allocate_cache(2)
    steps = torch.cat([mamba(x[:, t:t + 1], cache=cache) for t in range(12)], dim=1)
    torch.testing.assert_close(steps, mamba(x), atol=1e-5, rtol=1e-4)


def test_config_switch_builds_a_mimetic_model():
    cfg = OmegaConf.to_container(OmegaConf.load("configs/model/conv_mamba_mimetic.yaml"))
    model = LM(vocab_size=32, **cfg)
    layer = model.layers[1].mixer
    assert isinstance(layer, Mamba) and layer.init == "mimetic"
    assert torch.allclose(layer.A_log, torch.full_like(layer.A_log, math.log(MIMETIC_DECAY_RATE)))
    plain = OmegaConf.to_container(OmegaConf.load("configs/model/conv_mamba.yaml"))
    assert LM(vocab_size=32, **plain).layers[1].mixer.init == "default"


@pytest.mark.parametrize("bad", ["Mimetic", "zero", None])
def test_unknown_init_fails_naming_the_choices(bad):
    with pytest.raises(ValueError, match=r"init=.* is not one of 'default', 'mimetic'"):
        Mamba(16, init=bad)
