"""Which constructions of each registered mixer the generic contract tests run.

A mixer registered later is tested with its defaults (plus d_model) without touching this file; list extra
hyperparameter sets here when a block has modes the defaults do not reach (e.g. attention's window).
"""
import zoo.blocks  # noqa: F401  (registers every block)
from zoo.blocks.registry import MIXERS

D_MODEL = 32

EXTRA_CASES = {
    "attention": [{"num_heads": 2}, {"num_heads": 4, "window": 5}, {"num_heads": 2, "rotary": False}],
    "short_conv": [{"kernel_size": 4}],
    "mamba": [{"init": "mimetic"}],
    # small heads and state (the defaults' d_state 128, headdim 64 give one head at d_model 32); two groups, a
    # gated-MLP part, per-channel D, the scan's own z gate, a dt clamp
    "mamba2": [{"d_state": 8, "headdim": 8, "ngroups": 2, "d_ssm": 48, "D_has_hdim": True},
               {"d_state": 4, "headdim": 16, "rmsnorm": False, "dt_limit": (0.01, 0.5), "chunk_size": 5}],
    # short convs and grouped kv heads; no output gate
    "gla": [{"use_short_conv": True, "num_kv_heads": 2, "feature_map": "relu"},
            {"use_output_gate": False, "clamp_min": -0.5, "num_heads": 2}],
    # top-k saturated within the test lengths, chunks crossing it, several heads; the other latent/output modes
    "co4": [{"latents": 2, "topk": 3, "num_heads": 4, "chunk_size": 5},
            {"latent_output": "none", "output_projection": True, "chunk_size": 1},
            {"latent_mode": "static", "topk": 3, "chunk_size": 4}],
    "rwkv7": [{"head_dim": 8, "value_dim": 64}],  # several heads, values wider than keys
    # fla's other modes: no short convs, elu+1 / sum-normalised q and k, no beta, gated output; grouped value heads
    "deltanet": [{"use_short_conv": False, "qk_activation": "elu", "qk_norm": "sum", "use_beta": False,
                  "use_gate": True, "allow_neg_eigval": True}],
    "gated_deltanet": [{"num_heads": 1, "num_v_heads": 2, "head_dim": 8, "use_gate": False, "conv_bias": True,
                        "allow_neg_eigval": True}],
}


def mixer_cases() -> list[tuple[str, dict]]:
    cases = []
    for name in sorted(MIXERS):
        cases.append((name, {}))
        cases += [(name, hyper) for hyper in EXTRA_CASES.get(name, [])]
    return cases


def case_id(case) -> str:
    name, hyper = case
    return name + "".join(f"-{k}={v}" for k, v in hyper.items())
