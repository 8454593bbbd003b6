"""Co4 (Adeel 2025, "Beyond Attention: Toward Machines with Intrinsic Higher Mental States"; Zain, Raza & Adeel,
BabyLM 2025, "Single layer tiny Co^4 outpaces GPT-2 and GPT-BERT") made causal, with O(1) decoding.

docs/co4.md says what is the 2025 paper's, what the released code's (ARIA-Funded-TREND/HMS, bidirectional: its top-k
over tokens and its CLS latent) and what ours. In one line per step, for the token at position t:

1. One shared projection with bias gives q, k, v for the input token and for the L latent tokens.
2. The latents read the prefix (``latent_mode="prefix"``, the default): latent l at step t is its learned token
   plus a normalised running sum over s <= t of the tokens, weighted sigmoid(q_l . k_s / sqrt(D)) by how well its
   query matches each token's key, so it changes with the input and decoding keeps only the running sums
   (L x (D + 1) numbers). ``"static"``: the learned tokens alone (the ablation; then the modulation below is an
   affine map of x).
3. Modulation, per channel: M_Q = q_L * k_x + q_x, M_K = k_L * q_x + k_x, M_V = v_x^2 + 2 v_x + c_V, where
   q_L, k_L are the latent rows' mean and c_V = mean over latent rows of q_l * k_l * (1 + |v_l|).
4. Running per-channel top-k over the prefix s <= t of M_Q, M_K, M_V, ranked by the value rounded to bfloat16
   (ties, exact or within that rounding, go to the earlier position; see ``ranking_key`` and docs/co4.md for why
   not the exact value): the k pseudo-token rows T_Q, T_K, T_V (row r holds the r-th largest value of each channel). Before k
   tokens have been seen only the first t + 1 rows exist (the others are masked out of the attention).
5. Softmax attention (scale head_dim^-1/2, per head, no causal mask among these rows: they all summarise the
   prefix) over the L + k rows [Q_L; T_Q] x [K_L; T_K] -> [V_L; T_V].
6. Output: M_V[t], plus in each channel where token t is itself in the running top-k of M_V (rank r) the
   attention output of row L + r, plus the latent rows' outputs pooled (``latent_output="mean"``) and broadcast.
   No output projection unless ``output_projection=True``.

The running top-k of the whole sequence is one op call, ``ops.running_topk``: the Triton kernel on a GPU;
``backend="reference"`` (and "auto" where no kernel runs) counts ranks chunk by chunk in PyTorch (``chunk_size``
tokens; see ``running_topk_indices``). On CPU "auto" runs steps 2-6 compiled (ops/co4/cpu_mix.py: the prefix
latents' statistics in one sweep, then the latent rows, the top-k and the small attention fused per token), the same
values as the PyTorch path without its (B, T, L, D) and (B, T, k, D) tensors. The small attention then runs in
pieces of at least ``chunk_size`` tokens, as many as fit ``ATTENTION_SCORES`` numbers. Decoding keeps the three
(k, d_model) top-k tables and the latents' running sums: O(1) per token. tests/blocks/co4_reference.py is the
O(N^2) oracle of the same definition. Packed rows (``seq_idx``): each document is gathered into its own row
(padded at the end) and run as a sequence of its own, so nothing crosses a document boundary.
"""
import torch
import torch.nn.functional as F
from torch import nn

import ops.co4
from ops._backend import resolve_backend
from ops.co4 import TRITON_DTYPES, TRITON_MAX_K, running_topk
from ops.co4.cpu_mix import MAX_ROWS, co4_latent_cpu, co4_mix_cpu
from ops.co4.reference import ranking_key
from ops.packing import DocumentLayout
from zoo.blocks.base import Cache, Mixer
from zoo.blocks.registry import register_mixer
from zoo.checks import require_choice, require_positive_int

LATENT_MODES = ("prefix", "static")
LATENT_OUTPUTS = ("mean", "none")
CACHE_NAMES = ("top_q", "top_k", "top_v")  # running top-k tables of M_Q, M_K, M_V
READ_NAMES = ("read_sum", "read_weight")   # prefix mode: each latent's weighted sum of the tokens, and its weight
ATTENTION_SCORES = 1 << 24                 # attention scores per piece of the small attention (memory only)


def running_topk_indices(carry: torch.Tensor, chunk: torch.Tensor, seen: int):
    """Which entries form the per-channel running top-k over one chunk, continuing from all earlier tokens.

    carry: (B, k, S) the top-k of the ``seen`` earlier tokens, sorted descending (ties: earlier first); only its
    first min(seen, k) slots are read as entries. chunk: (B, C, S) this chunk's values in time order.
    Returns (order, rank), integer tensors built without a graph. order (B, C, k, S): for the prefix ending at
    chunk position i, slot r holds the index of its r-th entry in [carry; chunk] (k + C where the prefix has
    fewer than r + 1 tokens: the caller appends a padding row there). rank (B, C, S): where position i itself
    stands in its prefix's top-k (k when it is not in it).
    """
    B, k, S = carry.shape
    C = chunk.shape[1]
    device = chunk.device
    with torch.no_grad():
        slot = torch.arange(k, device=device)[None, :, None]
        carried = ranking_key(carry).masked_fill(slot >= seen, float("-inf"))     # empty slots rank below all
        new = ranking_key(chunk)
        position = torch.arange(C, device=device)
        later = (position[:, None] < position[None, :])[None, :, :, None]        # (1, C_i, C_j, 1): j after i
        # the order is (key descending, time ascending); carried entries are earlier than the chunk and
        # already in that order. Chunk element a beats chunk element b: larger key, or equal and earlier.
        a, b = new[:, :, None, :], new[:, None, :, :]
        beats = (a > b) | ((a == b) & later)
        # rank of chunk element j in the prefix ending at i: carried entries >= it, chunk elements j' <= i beating it
        chunk_rank = beats.cumsum(dim=1) + (carried[:, :, None, :] >= new[:, None, :, :]).sum(dim=1)[:, None]
        chunk_rank = chunk_rank.masked_fill(later, k)
        # rank of carried entry r: r, plus the chunk elements up to i with a strictly larger key; empty slots never rank
        slot = slot[None]
        carry_rank = (slot + (new[:, :, None, :] > carried[:, None, :, :]).cumsum(dim=1)).masked_fill(slot >= seen, k)
        ranks = torch.cat([carry_rank, chunk_rank], dim=2).clamp_(max=k)        # (B, C, k + C, S)
        # ranks below k are distinct within a prefix: scatter each winner's candidate index to its slot
        candidate = torch.arange(k + C, device=device)[None, None, :, None].expand(B, C, k + C, S)
        order = torch.full((B, C, k + 1, S), k + C, dtype=torch.int64, device=device)
        order = order.scatter_(2, ranks, candidate)[:, :, :k]                    # (B, C, k, S)
        rank = torch.diagonal(chunk_rank, dim1=1, dim2=2).permute(0, 2, 1).clamp(max=k)
    return order, rank


def prefix_sum(values: torch.Tensor) -> torch.Tensor:
    """Cumulative sum over dim 1 by doubling (log2 T vectorised adds; Hillis & Steele): on CPU ~3x faster than
    torch.cumsum over a middle dimension, whose kernel walks each strided column one element at a time. The sums
    are formed in another order than a sequential scan's (a tree), so they agree to rounding."""
    span = 1
    while span < values.shape[1]:
        values = torch.cat([values[:, :span], values[:, span:] + values[:, :-span]], dim=1)
        span *= 2
    return values


def _accumulation(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


@register_mixer("co4")
class Co4(Mixer):
    """Causal Co4: latent-modulated triadic attention over a running per-channel top-k of the prefix.

    Hyperparameters: ``latents`` L latent tokens (1: the released code's single CLS latent); ``latent_mode``
    "prefix" (default: each latent reads the prefix through a normalised running sum, so it depends on the input)
    or "static" (the learned tokens alone, the ablation); ``topk`` k pseudo-token rows (12 in the released code);
    ``num_heads`` (must divide d_model; each head attends over its head_dim channels of the L + k rows);
    ``latent_output`` how the latent rows' attention output reaches every position ("mean": their mean is added
    to each token's output; "none": latents only act through modulation and as keys/values); ``output_projection``
    (False as in the papers; True adds a d_model x d_model projection, ``out_proj``); ``chunk_size`` tokens per
    chunk of the PyTorch top-k path and the least per piece of the attention (memory/speed only: results do not
    depend on it).
    Decoding state: the running top-k values of M_Q, M_K and M_V (3 * k * d_model numbers), and in prefix mode
    each latent's running sum of tokens and of weights (L * (d_model + 1)), whatever the length.
    """

    backends = ("auto", "reference", "triton")  # reference: the chunked PyTorch path; triton: ops.running_topk

    def __init__(self, d_model: int, layer_idx: int = 0, backend: str = "auto", latents: int = 8, topk: int = 12,
                 num_heads: int = 2, latent_output: str = "mean", output_projection: bool = False,
                 chunk_size: int = 8, latent_mode: str = "prefix"):
        super().__init__(d_model, layer_idx, backend)
        owner = type(self).__name__
        require_positive_int("latents", latents, owner)
        require_positive_int("topk", topk, owner)
        require_positive_int("num_heads", num_heads, owner)
        require_positive_int("chunk_size", chunk_size, owner)
        require_choice("latent_output", latent_output, LATENT_OUTPUTS, owner)
        require_choice("latent_mode", latent_mode, LATENT_MODES, owner)
        if not isinstance(output_projection, bool):
            raise ValueError(f"{owner}: output_projection must be True or False, got {output_projection!r}")
        if d_model % num_heads:
            raise ValueError(f"{owner}: num_heads={num_heads} must divide d_model={d_model}")
        self.latents, self.topk, self.num_heads, self.chunk_size = latents, topk, num_heads, chunk_size
        self.latent_output, self.latent_mode, self.head_dim = latent_output, latent_mode, d_model // num_heads
        self.scale = self.head_dim ** -0.5
        self.qkv = nn.Linear(d_model, 3 * d_model, bias=True)  # shared by latent and input tokens
        # latent tokens live in the (normalised) input space and go through the same projection
        self.latent_tokens = nn.Parameter(torch.randn(latents, d_model))
        self.out_proj = nn.Linear(d_model, d_model, bias=False) if output_projection else None

    # ---- latents ------------------------------------------------------------------------------------------------
    # the oracle (tests/blocks/co4_reference.py) recomputes these steps on its own; the tests compare the two
    def latent_qkv(self, dtype):
        """q|k|v of the learned latent tokens, (L, 3D)."""
        return self.qkv(self.latent_tokens.to(dtype))

    def read_weights(self, k_x: torch.Tensor, latent: torch.Tensor) -> torch.Tensor:
        """How much each latent reads each token: sigmoid(q_l . k_x / sqrt(D)), (B, T, L), accumulation dtype."""
        q_latent = latent[:, : self.d_model].to(_accumulation(k_x.dtype))
        return torch.sigmoid(k_x.to(q_latent.dtype) @ q_latent.T * self.d_model ** -0.5)

    def latent_rows(self, x: torch.Tensor, projected: torch.Tensor, cache: Cache | None):
        """q, k, v of the latent rows at every position, each (1, 1, L, D) static or (B, T, L, D) reading the prefix.

        projected = x @ W^T (B, T, 3D), without the bias. Latent l at step t is its token plus the weighted mean of
        the tokens s <= t (and the cache's earlier ones); as the projection is linear, its q|k|v is the token's
        plus the same weighted mean of the tokens' projections, so nothing is projected per latent and position.
        The cache holds the sums in the input space (L x D) and their weights (L)."""
        D = self.d_model
        latent = self.latent_qkv(x.dtype)
        if self.latent_mode == "static":
            return tuple(part[None, None] for part in latent.split(D, dim=-1))
        weight = self.read_weights(projected[..., D: 2 * D] + self.qkv.bias[D: 2 * D].to(x.dtype), latent)  # (B, T, L)
        norm = weight.cumsum(1)
        earlier = None
        if cache is not None:
            earlier_sum, earlier_weight = cache["read_sum"], cache["read_weight"]
            earlier = F.linear(earlier_sum, self.qkv.weight.to(earlier_sum.dtype))                  # (B, L, 3D)
            norm = norm + earlier_weight[:, None]
            earlier_sum += torch.einsum("btl,btd->bld", weight, x.to(weight.dtype)).detach()
            earlier_weight += weight.sum(1).detach()
        scale = 1 / norm.clamp_min(torch.finfo(norm.dtype).tiny)[..., None]                       # (B, T, L, 1)
        rows = []
        for i in range(3):  # one stream at a time: (B, T, L, D) each, never a 3D-wide tensor to split in backward
            total = prefix_sum(weight[..., None] * projected[:, :, None, i * D: (i + 1) * D].to(weight.dtype))
            if earlier is not None:
                total = total + earlier[:, None, :, i * D: (i + 1) * D]
            rows.append(latent[:, i * D: (i + 1) * D] + (total * scale).to(x.dtype))
        return tuple(rows)

    def modulate(self, x: torch.Tensor, cache: Cache | None = None, rows_in_kernel: bool = False):
        """x (B, T, D) -> M_Q, M_K, M_V (B, T, D) and the latent rows' q, k, v, each (1 or B, 1 or T, L, D).
        ``rows_in_kernel`` (the caller's fused CPU kernel makes the prefix latents' rows, ``_rows_in_kernel``): the
        latents come back as (projected, read weights, latent q|k|v) instead."""
        projected = F.linear(x, self.qkv.weight)
        q_x, k_x, v_x = (projected + self.qkv.bias).chunk(3, dim=-1)
        if rows_in_kernel:
            # the statistics compiled, the rows left to the mix kernel: no (B, T, L, D) tensor at all
            base = self.latent_qkv(x.dtype)
            weight = self.read_weights(k_x, base)
            latent = (projected, weight, base)
            mean_q, mean_k, c_v = co4_latent_cpu(projected, weight, base, rows=False)
        elif self.latent_mode == "prefix" and cache is None and ops.co4.cpu_mix_runs(self.backend, x):
            # compiled: the rows and their statistics in one sweep, no (B, T, L, D) temporaries (cpu_mix.py)
            base = self.latent_qkv(x.dtype)
            *latent, mean_q, mean_k, c_v = co4_latent_cpu(projected, self.read_weights(k_x, base), base)
        else:
            q_l, k_l, v_l = latent = self.latent_rows(x, projected, cache)
            mean_q, mean_k, c_v = q_l.mean(2), k_l.mean(2), (q_l * k_l * (1 + v_l.abs())).mean(2)
        m_q = mean_q * k_x + q_x
        m_k = mean_k * q_x + k_x
        m_v = v_x * v_x + 2 * v_x + c_v
        return (m_q, m_k, m_v), latent

    def _rows_in_kernel(self, x: torch.Tensor, cache: Cache | None) -> bool:
        """Whether the fused kernel (which runs) makes the prefix latents' rows itself: float32/float64 (16-bit models
        keep the rows rounded to their dtype, as the PyTorch path does), no cache (the PyTorch rows continue one)."""
        return self.latent_mode == "prefix" and cache is None and x.dtype in (torch.float32, torch.float64)

    # ---- the running top-k ---------------------------------------------------------------------------------------
    def _op_backend(self, x: torch.Tensor) -> str | None:
        """The ops.running_topk backend that runs the top-k here, or None for the chunked PyTorch path: "auto" takes
        the Triton kernel where it applies (else the chunked path, not the op's slow sequential reference) and the
        compiled kernel on CPU."""
        chosen = resolve_backend(self.backend, x.device, type(self).__name__)
        if chosen == "triton":
            fits = self.topk <= TRITON_MAX_K and x.dtype in TRITON_DTYPES
            return "triton" if fits or self.backend == "triton" else None
        return "auto" if ops.co4.cpu_kernel_runs(self.backend, x) else None

    def _running_topk(self, streams: torch.Tensor, carry: torch.Tensor | None, start: int, op_backend: str | None):
        """(top (B, T, k, S), rank (B, T, S), the table after the last token (B, k, S), -inf in unfilled slots)."""
        B, T, S = streams.shape
        k = self.topk
        if op_backend is not None:
            top, rank, _ = running_topk(streams, k, carry if start else None, min(start, k), backend=op_backend)
        else:
            carry = streams.new_full((B, k, S), float("-inf")) if carry is None else carry
            tops, ranks = [], []
            for c0 in range(0, T, self.chunk_size):
                chunk = streams[:, c0: c0 + self.chunk_size]
                order, rank = running_topk_indices(carry, chunk, start + c0)
                C = chunk.shape[1]
                source = torch.cat([carry, chunk, chunk.new_zeros(B, 1, S)], dim=1)
                top = torch.gather(source, 1, order.reshape(B, C * k, S)).view(B, C, k, S)
                filled = torch.arange(k, device=streams.device)[None, :, None] < start + c0 + C
                carry = top[:, -1].masked_fill(~filled, float("-inf"))
                tops.append(top)
                ranks.append(rank)
            top, rank = torch.cat(tops, 1), torch.cat(ranks, 1)
        filled = torch.arange(k, device=streams.device)[None, :, None] < start + T
        return top, rank, top[:, -1].masked_fill(~filled, float("-inf"))

    def _running_topks(self, streams, carries, start: int, op_backend: str | None):
        """The running top-k of M_Q, M_K, M_V: three (top, rank, last table). The kernels run one stream per call,
        so the rows arrive as three tensors (slicing one 3D-wide tensor would cost full-size zero fills in backward);
        the chunked PyTorch path runs the three as one tensor of 3D channels (a third of the ops) and splits."""
        if op_backend is not None:
            return [self._running_topk(m, carry, start, op_backend) for m, carry in zip(streams, carries)]
        carry = None if carries[0] is None else torch.cat(carries, dim=-1)
        top, rank, last = self._running_topk(torch.cat(streams, dim=-1), carry, start, None)
        return list(zip(*(t.chunk(3, dim=-1) for t in (top, rank, last))))

    # ---- the attention over [latents; top-k rows] -----------------------------------------------------------------
    def _attend(self, latent, top, rank: torch.Tensor, start: int) -> torch.Tensor:
        """latent: q, k, v of the latent rows, each (B|1, C|1, L, D); top: q, k, v of the top-k rows, each (B, C, k, D),
        at each position of a piece starting at ``start``; rank (B, C, D): each token's rank in the top-k of M_V.
        Returns the (B, C, D) mixed output."""
        B, C, k, D = top[0].shape
        L, H, E = self.latents, self.num_heads, self.head_dim
        seen = torch.arange(start + 1, start + C + 1, device=rank.device)        # tokens in each prefix
        filled = torch.arange(k, device=rank.device)[None, :] < seen[:, None]    # (C, k) rows that exist
        key_valid = torch.cat([filled.new_ones(C, L), filled], dim=1)            # (C, L + k)
        # rows (B, C, H, L + k, E), laid out by the concatenation itself, so the products below copy nothing
        q, kk, v = (torch.cat([lat.unflatten(-1, (H, E)).transpose(2, 3).expand(B, C, H, L, E),
                               rows.unflatten(-1, (H, E)).transpose(2, 3)], dim=3) for lat, rows in zip(latent, top))
        scores = (q @ kk.transpose(-1, -2)) * self.scale                         # (B, C, H, L + k, L + k)
        weights = scores.masked_fill(~key_valid[None, :, None, None, :], float("-inf")).softmax(dim=-1)
        # only two things are read: the top-k rows' outputs (each channel the row of its own rank among the top-k of
        # M_V, nothing where it is not in it) and the mean of the latent rows' outputs, which is the output of their
        # mean attention weights
        if self.latent_output == "mean":
            weights = torch.cat([weights[..., :L, :].mean(dim=3, keepdim=True), weights[..., L:, :]], dim=3)
            first = 1
        else:
            weights, first = weights[..., L:, :], 0
        out = (weights @ v).transpose(2, 3).flatten(-2)                          # (B, C, first + k, D)
        own = out[:, :, first:].gather(2, rank.clamp(max=k - 1).unsqueeze(2)).squeeze(2)
        mixed = own * (rank < k).to(out.dtype)
        return mixed + out[:, :, 0] if first else mixed

    def _piece(self, batch: int) -> int:
        """Tokens per piece of the attention: as many as keep its scores under ATTENTION_SCORES, at least chunk_size."""
        rows = self.latents + self.topk
        return max(self.chunk_size, ATTENTION_SCORES // (batch * self.num_heads * rows * rows))

    # ---- forward -------------------------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor, cache: Cache | None = None, seq_idx: torch.Tensor | None = None) -> torch.Tensor:
        self.check_packing(x, cache, seq_idx)
        if seq_idx is not None:  # the running top-k and the latents' sums restart per document: one row each
            layout = DocumentLayout(seq_idx)
            return layout.repack(self.forward(layout.unpack(x)))
        T = x.shape[1]
        op_backend = self._op_backend(x)  # before the cache changes: a bad backend fails with nothing written
        fused = op_backend == "auto" and self.latents + self.topk <= MAX_ROWS and ops.co4.cpu_mix_runs(self.backend, x)
        prefix = fused and self._rows_in_kernel(x, cache)
        streams, latent = self.modulate(x, cache, rows_in_kernel=prefix)
        carries, start = (None,) * 3, 0
        if cache is not None:
            carries, start = [cache[name].to(x.dtype) for name in CACHE_NAMES], cache.seen
        if fused:
            y, (last_q, last_k, last_v) = self._fused_cpu(streams, latent, carries, start, prefix)
        else:
            y, (last_q, last_k, last_v) = self._unfused(streams, latent, carries, start, op_backend)
        if cache is not None:
            for name, table in zip(CACHE_NAMES, (last_q, last_k, last_v)):
                cache[name].copy_(table.detach())
            cache.seen += T
        return self.out_proj(y) if self.out_proj is not None else y

    def _fused_cpu(self, streams, latent, carries, start: int, prefix: bool = False):
        """The running top-k and the small attention in one compiled CPU kernel (ops/co4/cpu_mix.py): the same
        values as ``_unfused`` without its (B, T, k, D) tensors. ``prefix``: latent is (projected, read weights,
        latent q|k|v) and the kernel makes the rows."""
        if self.latent_mode == "static":  # one (1, 1, L, D) row set for every position
            latent = [lat.reshape(self.latents, self.d_model) for lat in latent]
        initial = None if carries[0] is None else torch.stack(carries)
        mix, last = co4_mix_cpu(*streams, *latent, self.topk, self.num_heads, self.scale,
                                self.latent_output == "mean", initial, min(start, self.topk), prefix=prefix)
        return streams[2] + mix, last.unbind(0)

    def _unfused(self, streams, latent, carries, start: int, op_backend: str | None):
        """The running top-k (one op call per stream, or the chunked PyTorch path), then the attention in pieces."""
        T = streams[0].shape[1]
        (top_q, _, last_q), (top_k, _, last_k), (top_v, rank, last_v) = self._running_topks(streams, carries, start,
                                                                                          op_backend)
        top = (top_q, top_k, top_v)
        outputs = []
        piece = self._piece(streams[0].shape[0])
        for c0 in range(0, T, piece):
            c1 = min(T, c0 + piece)
            # static latent rows are one (1, 1, L, D) row set for every position
            outputs.append(streams[2][:, c0:c1] + self._attend([lat[:, c0:c1] if lat.shape[1] > 1 else lat
                                                               for lat in latent],
                                                              [rows[:, c0:c1] for rows in top],
                                                              rank[:, c0:c1], start + c0))
        return torch.cat(outputs, dim=1), (last_q, last_k, last_v)

    def allocate_cache(self, batch_size: int, device=None, dtype=None) -> Cache:
        weight = self.qkv.weight
        device, dtype = device or weight.device, dtype or weight.dtype
        shape = (batch_size, self.topk, self.d_model)
        # the tables hold copies of modulated values (no accumulation): the model's dtype is exact enough
        tensors = {name: torch.full(shape, float("-inf"), device=device, dtype=dtype) for name in CACHE_NAMES}
        if self.latent_mode == "prefix":  # running sums: accumulated in float32 (float64 for float64 models)
            options = dict(device=device, dtype=_accumulation(dtype))
            tensors.update(read_sum=torch.zeros(batch_size, self.latents, self.d_model, **options),
                           read_weight=torch.zeros(batch_size, self.latents, **options))
        return Cache(**tensors)

    def state_size(self, seq_len: int) -> int:
        if isinstance(seq_len, bool) or not isinstance(seq_len, int) or seq_len < 0:
            raise ValueError(f"{type(self).__name__}: seq_len must be a non-negative integer, got {seq_len!r}")
        tables = 3 * self.topk * self.d_model  # allocated in full from the start; the latent tokens are parameters
        return tables + (self.latents * (self.d_model + 1) if self.latent_mode == "prefix" else 0)

    def extra_repr(self) -> str:
        return (f"d_model={self.d_model}, latents={self.latents}, latent_mode={self.latent_mode!r}, "
                f"topk={self.topk}, num_heads={self.num_heads}, latent_output={self.latent_output!r}, "
                f"output_projection={self.out_proj is not None}, chunk_size={self.chunk_size}, "
                f"backend={self.backend!r}")
