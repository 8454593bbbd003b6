"""What ``python -m ops.compile_check selective_scan`` compiles: both kernels with every option on, bf16 inputs,
at the tiles the wrapper picks for d_state 16 and 64, plain and grouped B/C, checkpoints every chunk and every 4."""
from ops.compile_check import CompileCase
from ops.selective_scan import triton as kernels

FLAGS = dict(HAS_D=True, HAS_Z=True, HAS_BIAS=True, SOFTPLUS=True, HAS_H0=True)
FWD_TYPES = dict(u_ptr="*bf16", delta_ptr="*bf16", A_ptr="*fp32", B_ptr="*bf16", C_ptr="*bf16", D_ptr="*fp32",
                 z_ptr="*bf16", bias_ptr="*fp32", h0_ptr="*fp32", out_ptr="*bf16", last_ptr="*fp32", ckpt_ptr="*fp32")
BWD_TYPES = dict(FWD_TYPES, g_out_ptr="*bf16", g_last_ptr="*fp32", g_u_ptr="*bf16", g_delta_ptr="*bf16",
                 g_z_ptr="*bf16", g_A_ptr="*fp32", g_B_ptr="*fp32", g_C_ptr="*fp32", g_D_ptr="*fp32",
                 g_bias_ptr="*fp32", g_h0_ptr="*fp32", scratch_ptr="*fp32")


def cases():
    for n_state in (16, 64):
        for grouped in (False, True):
            for ckpt_every in sorted({1, 4, kernels.CKPT_EVERY}):
                label = f"N={n_state} grouped={grouped} ckpt_every={ckpt_every}"
                block_d, block_l, block_n = kernels._blocks(n_state, kernels.FWD_TILE_BUDGET)
                tiles = dict(BLOCK_D=block_d, BLOCK_L=block_l, BLOCK_N=block_n)
                common = dict(FLAGS, CKPT_EVERY=ckpt_every, GROUPED=grouped)
                yield CompileCase(f"forward {label}", kernels._scan_fwd_kernel, FWD_TYPES,
                                  dict(common, SAVE_CKPT=True, **tiles), kernels.FWD_WARPS)
                tiles["BLOCK_D"] = kernels._blocks(n_state, kernels.BWD_TILE_BUDGET)[0]
                yield CompileCase(f"backward {label}", kernels._scan_bwd_kernel, BWD_TYPES,
                                  dict(common, HAS_G_LAST=True, **tiles), kernels.BWD_WARPS)
