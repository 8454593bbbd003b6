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


# The anchor shapes of the report: (batch, dim, length, d_state); B/C variable, as Mamba's blocks launch it.
ANCHORS = ((8, 1536, 2048, 16), (2, 1536, 8192, 16), (8, 1536, 2048, 64))
# What a Mamba block launches in training: D, z, delta_bias, softplus, no initial state; autograd hands the backward
# a (zero) gradient for the unused last state.
LAUNCH_FLAGS = dict(HAS_D=True, HAS_Z=True, HAS_BIAS=True, SOFTPLUS=True, HAS_H0=False, GROUPED=False)


def report_cases():
    """Both kernels as the wrapper launches them at each anchor shape (bf16 tensors, fp32 parameters)."""
    for batch, dim, length, n_state in ANCHORS:
        shape = f"B{batch} D{dim} L{length} N{n_state}"
        block_d, block_l, block_n = kernels._blocks(n_state, kernels.FWD_TILE_BUDGET)
        n_chunks = -(-length // block_l)
        n_ckpt = -(-n_chunks // kernels.CKPT_EVERY)
        values = dict(DIM=dim, L=length, N=n_state, G=1, CH_PER_GROUP=dim, N_CHUNKS=n_chunks, N_CKPT=n_ckpt)
        common = dict(LAUNCH_FLAGS, CKPT_EVERY=kernels.CKPT_EVERY)
        yield CompileCase("forward", kernels._scan_fwd_kernel, FWD_TYPES,
                          dict(common, h0_ptr=None, SAVE_CKPT=True, BLOCK_D=block_d, BLOCK_L=block_l, BLOCK_N=block_n),
                          kernels.FWD_WARPS, shape=shape, values=values,
                          loop_elements=block_d * block_l * block_n)
        block_d = kernels._blocks(n_state, kernels.BWD_TILE_BUDGET)[0]
        yield CompileCase("backward", kernels._scan_bwd_kernel, BWD_TYPES,
                          dict(common, HAS_G_LAST=True, g_h0_ptr=None, scratch_ptr=None,
                               BLOCK_D=block_d, BLOCK_L=block_l, BLOCK_N=block_n),
                          kernels.BWD_WARPS, shape=shape, values=values,
                          loop_elements=block_d * block_l * block_n * kernels.CKPT_EVERY)
