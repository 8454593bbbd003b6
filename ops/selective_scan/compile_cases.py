"""What ``python -m ops.compile_check selective_scan`` compiles.

``cases()``: both kernels with every option on, bf16 inputs, plain and grouped B/C, with and without packed
documents (seq_idx), at the launch tiles.
``report_cases()``: both kernels exactly as a Mamba block launches them in training at the anchor shapes (and
with packed documents at the first); one
main-loop iteration (one chunk) processes BLOCK_D * BLOCK_L * N (d, l, n) elements per program, its inner loop
runs once per state.
"""
from ops.compile_check import CompileCase
from ops.selective_scan import triton as kernels

FLAGS = dict(HAS_D=True, HAS_Z=True, HAS_BIAS=True, SOFTPLUS=True)
FWD_TYPES = dict(u_ptr="*bf16", delta_ptr="*bf16", A_ptr="*fp32", B_ptr="*bf16", C_ptr="*bf16", D_ptr="*fp32",
                 z_ptr="*bf16", bias_ptr="*fp32", restart_ptr="*u8", out_ptr="*bf16", y_ptr="*bf16",
                 ckpt_ptr="*fp32")
BWD_TYPES = dict(FWD_TYPES, g_out_ptr="*bf16", g_u_ptr="*bf16", g_delta_ptr="*bf16", g_z_ptr="*bf16",
                 g_A_ptr="*fp32", g_B_ptr="*fp32", g_C_ptr="*fp32", g_D_ptr="*fp32", g_bias_ptr="*fp32",
                 lam_ptr="*fp32", scratch_ptr="*fp32")
FWD_TILES = dict(BLOCK_D=kernels.FWD_BLOCK_D, BLOCK_L=kernels.BLOCK_L, ROWS=kernels.tile_rows(kernels.BLOCK_L))
BWD_TILES = dict(BLOCK_D=kernels.BWD_BLOCK_D, BLOCK_L=kernels.BLOCK_L, ROWS=kernels.tile_rows(kernels.BLOCK_L))


def cases():
    for grouped, packed in ((False, False), (True, False), (False, True)):
        common = dict(FLAGS, GROUPED=grouped, HAS_RESTART=packed)
        yield CompileCase(f"forward grouped={grouped} packed={packed}", kernels._scan_fwd_kernel, FWD_TYPES,
                          dict(common, SAVE_Y=True, **FWD_TILES), kernels.FWD_WARPS)
        yield CompileCase(f"backward grouped={grouped} packed={packed}", kernels._scan_bwd_kernel, BWD_TYPES,
                          dict(common, **BWD_TILES), kernels.BWD_WARPS)


# The anchor shapes of the report: (batch, dim, length, d_state); B/C variable, as Mamba's blocks launch it.
ANCHORS = ((8, 1536, 2048, 16), (2, 1536, 8192, 16), (8, 1536, 2048, 64))


def report_cases():
    """Both kernels as the wrapper launches them at each anchor shape: D, z, delta_bias and softplus on, no
    initial state, B/C (batch, N, L), bf16 tensors and fp32 parameters."""
    for (batch, dim, length, n_state), packed in [(shape, False) for shape in ANCHORS] + [(ANCHORS[0], True)]:
        shape = f"B{batch} D{dim} L{length} N{n_state}"
        n_chunks = -(-length // kernels.BLOCK_L)
        values = dict(DIM=dim, L=length, L_PAD=n_chunks * kernels.BLOCK_L, N=n_state, G=1, CH_PER_GROUP=dim,
                      N_CHUNKS=n_chunks)
        common = dict(FLAGS, GROUPED=False, HAS_RESTART=packed)
        label = " packed" if packed else ""
        yield CompileCase("forward" + label, kernels._scan_fwd_kernel, FWD_TYPES, dict(common, SAVE_Y=True, **FWD_TILES),
                          kernels.FWD_WARPS, shape=shape, values=values,
                          loop_elements=kernels.FWD_BLOCK_D * kernels.BLOCK_L * n_state, inner_trips=n_state)
        yield CompileCase("backward" + label, kernels._scan_bwd_kernel, BWD_TYPES, dict(common, **BWD_TILES),
                          kernels.BWD_WARPS, shape=shape, values=values,
                          loop_elements=kernels.BWD_BLOCK_D * kernels.BLOCK_L * n_state, inner_trips=n_state)
