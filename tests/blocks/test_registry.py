"""The registry refuses a second class under a taken name, for mixers and MLPs alike."""
import pytest
from torch import nn

from zoo.blocks.registry import MIXERS, MLPS, register_mixer, register_mlp


@pytest.mark.parametrize("register, table, kind", [(register_mixer, MIXERS, "mixer"), (register_mlp, MLPS, "mlp")])
def test_a_taken_name_is_refused(register, table, kind):
    taken = sorted(table)[0]
    original = table[taken]

    class Impostor(nn.Module):
        pass
    with pytest.raises(ValueError, match=f"{kind} name '{taken}' is already taken by {original.__name__}"):
        register(taken)(Impostor)
    assert table[taken] is original
    register(taken)(original)  # registering the same class again (a module re-imported) is harmless
