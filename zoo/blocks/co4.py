"""Co4 (Adeel 2025, "Beyond Attention: Toward Machines with Intrinsic Higher Mental States"; Zain, Raza & Adeel,
BabyLM 2025, "Single layer tiny Co^4 outpaces GPT-2 and GPT-BERT") made causal, with O(1) decoding.

The released Co4 is bidirectional (vision / RL). This block is its causal version; docs/co4.md lists every choice
the papers do not make and why. In one line per step, for the token at position t:

1. One shared projection with bias gives q, k, v for the L learned latent tokens and for the input token.
2. Modulation, per channel: M_Q = q_L * k_x + q_x, M_K = k_L * q_x + k_x, M_V = v_x^2 + 2 v_x + c_V, where
   q_L, k_L are the latent rows' mean and c_V = mean over latent rows of q_l * k_l * (1 + |v_l|).
3. Running per-channel top-k over the prefix s <= t of M_Q, M_K, M_V, ranked by the value rounded to bfloat16
   (ties, exact or within that rounding, go to the earlier position; see ``ranking_key``): the k
   pseudo-token rows T_Q, T_K, T_V (row r holds the r-th largest value of each channel). Before k tokens have
   been seen only the first t + 1 rows exist (the others are masked out of the attention).
4. Softmax attention (scale head_dim^-1/2, per head, no causal mask among these rows: they all summarise the
   prefix) over the L + k rows [Q_L; T_Q] x [K_L; T_K] -> [V_L; T_V].
5. Output: M_V[t], plus in each channel where token t is itself in the running top-k of M_V (rank r) the
   attention output of row L + r, plus the latent rows' outputs pooled (``latent_output="mean"``) and broadcast.
   No output projection unless ``output_projection=True``.

Training runs chunk by chunk (``chunk_size`` tokens): the top-k of everything before the chunk is carried, and
each position of the chunk merges it with the chunk's causal prefix, so the cost is linear in the length. With
``backend="triton"`` (or "auto" on a GPU) one kernel (ops.running_topk) computes the running top-k of the whole
sequence instead, and only the small attention runs chunk by chunk.
Decoding keeps only the three (k, d_model) top-k tables: O(1) per token. zoo/blocks/co4_reference.py is the
O(N^2) masked oracle of the same definition. Packed rows (``seq_idx``): each document is gathered into its own
row (padded at the end) and run as a sequence of its own, so its top-k never holds another document's values.
"""
import torch
from torch import nn

from ops._backend import resolve_backend
from ops.co4 import TRITON_DTYPES, TRITON_MAX_K, running_topk
from ops.co4.reference import ranking_key
from ops.packing import DocumentLayout
from zoo.blocks.base import Cache, Mixer
from zoo.blocks.registry import register_mixer
from zoo.checks import require_choice, require_positive_int

LATENT_OUTPUTS = ("mean", "none")
CACHE_NAMES = ("top_q", "top_k", "top_v")  # running top-k tables of M_Q, M_K, M_V


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


def running_topk_chunk(carry: torch.Tensor, chunk: torch.Tensor, seen: int):
    """(top (B, C, k, S), rank): the running top-k values themselves (gathered, so differentiable), 0 in slots
    the prefix cannot fill yet. See running_topk_indices."""
    order, rank = running_topk_indices(carry, chunk, seen)
    B, C, k, S = order.shape
    source = torch.cat([carry, chunk, chunk.new_zeros(B, 1, S)], dim=1)
    return torch.gather(source, 1, order.reshape(B, C * k, S)).view(B, C, k, S), rank


@register_mixer("co4")
class Co4(Mixer):
    """Causal Co4: latent-modulated triadic attention over a running per-channel top-k of the prefix.

    Hyperparameters: ``latents`` L learned latent tokens; ``topk`` k pseudo-token rows (12 in the vision code);
    ``num_heads`` (must divide d_model; each head attends over its head_dim channels of the L + k rows);
    ``latent_output`` how the latent rows' attention output reaches every position ("mean": their mean is added
    to each token's output; "none": latents only act through modulation and as keys/values); ``output_projection``
    (False as in the papers; True adds a d_model x d_model projection, ``out_proj``); ``chunk_size`` tokens per
    training chunk (memory/speed only: results do not depend on it).
    Decoding state: the running top-k values of M_Q, M_K and M_V, 3 * k * d_model numbers, whatever the length.
    """

    backends = ("auto", "reference", "triton")  # reference: the chunked PyTorch path; triton: ops.running_topk

    def __init__(self, d_model: int, layer_idx: int = 0, backend: str = "auto", latents: int = 8, topk: int = 12,
                 num_heads: int = 2, latent_output: str = "mean", output_projection: bool = False,
                 chunk_size: int = 8):
        super().__init__(d_model, layer_idx, backend)
        owner = type(self).__name__
        require_positive_int("latents", latents, owner)
        require_positive_int("topk", topk, owner)
        require_positive_int("num_heads", num_heads, owner)
        require_positive_int("chunk_size", chunk_size, owner)
        require_choice("latent_output", latent_output, LATENT_OUTPUTS, owner)
        if not isinstance(output_projection, bool):
            raise ValueError(f"{owner}: output_projection must be True or False, got {output_projection!r}")
        if d_model % num_heads:
            raise ValueError(f"{owner}: num_heads={num_heads} must divide d_model={d_model}")
        self.latents, self.topk, self.num_heads, self.chunk_size = latents, topk, num_heads, chunk_size
        self.latent_output, self.head_dim = latent_output, d_model // num_heads
        self.scale = self.head_dim ** -0.5
        self.qkv = nn.Linear(d_model, 3 * d_model, bias=True)  # shared by latent and input tokens
        # latent tokens live in the (normalised) input space and go through the same projection
        self.latent_tokens = nn.Parameter(torch.randn(latents, d_model))
        self.out_proj = nn.Linear(d_model, d_model, bias=False) if output_projection else None

    # the oracle (co4_reference.py) recomputes these steps on its own; the tests compare the two
    def latent_qkv(self, dtype):
        q_l, k_l, v_l = self.qkv(self.latent_tokens.to(dtype)).chunk(3, dim=-1)  # (L, D) each
        return q_l, k_l, v_l

    def modulate(self, x: torch.Tensor):
        """x (B, T, D) -> M_Q, M_K, M_V (B, T, D) and the latent rows q_L, k_L, v_L (L, D)."""
        q_x, k_x, v_x = self.qkv(x).chunk(3, dim=-1)
        q_l, k_l, v_l = self.latent_qkv(x.dtype)
        m_q = q_l.mean(0) * k_x + q_x
        m_k = k_l.mean(0) * q_x + k_x
        m_v = v_x * v_x + 2 * v_x + (q_l * k_l * (1 + v_l.abs())).mean(0)
        return (m_q, m_k, m_v), (q_l, k_l, v_l)

    def _attend(self, rows: torch.Tensor, rank: torch.Tensor, start: int) -> torch.Tensor:
        """rows (B, C, L + k, 3D): [latent rows; top-k rows] of q|k|v at each position of a chunk starting at
        ``start``; rank (B, C, D): each token's rank in the top-k of M_V. Returns the (B, C, D) mixed output."""
        B, C, R, _ = rows.shape
        L, H, E, D = self.latents, self.num_heads, self.head_dim, self.d_model
        k = R - L
        seen = torch.arange(start + 1, start + C + 1, device=rows.device)        # tokens in each prefix
        filled = torch.arange(k, device=rows.device)[None, :] < seen[:, None]    # (C, k) rows that exist
        key_valid = torch.cat([filled.new_ones(C, L), filled], dim=1)            # (C, L + k)
        q, kk, v = (part.unflatten(-1, (H, E)).transpose(2, 3) for part in rows.split(D, dim=-1))  # (B, C, H, R, E)
        scores = (q @ kk.transpose(-1, -2)) * self.scale
        scores = scores.masked_fill(~key_valid[None, :, None, None, :], float("-inf"))
        out = (scores.softmax(dim=-1) @ v).transpose(2, 3).reshape(B, C, R, D)
        # each channel reads the row of its own rank among the top-k of M_V (nothing where it is not in it)
        own = out[:, :, L:].gather(2, rank.clamp(max=k - 1).unsqueeze(2)).squeeze(2)
        mixed = own * (rank < k).to(out.dtype)
        if self.latent_output == "mean":
            mixed = mixed + out[:, :, :L].mean(dim=2)
        return mixed

    def forward(self, x: torch.Tensor, cache: Cache | None = None, seq_idx: torch.Tensor | None = None) -> torch.Tensor:
        self.check_packing(x, cache, seq_idx)
        if seq_idx is not None:  # the running top-k restarts per document: run each as its own row
            layout = DocumentLayout(seq_idx)
            return layout.repack(self.forward(layout.unpack(x)))
        B, T, D = x.shape
        (m_q, m_k, m_v), latent_rows = self.modulate(x)
        # the three streams rank independently per channel: run them as one tensor of 3 * d_model channels
        streams = torch.cat([m_q, m_k, m_v], dim=-1)
        if cache is None:
            carry, start = x.new_full((B, self.topk, 3 * D), float("-inf")), 0
        else:
            carry = torch.cat([cache[name].to(x.dtype) for name in CACHE_NAMES], dim=-1)
            start = cache.seen
        latent = torch.cat(latent_rows, dim=-1)                                  # (L, 3D): q|k|v of each latent
        L, k = self.latents, self.topk
        if self._fused(x):
            y, carry = self._forward_fused(streams, m_v, carry, start, latent)
            return self._finish(y, carry, cache)
        outputs = []
        for c0 in range(0, T, self.chunk_size):
            c1 = min(T, c0 + self.chunk_size)
            C = c1 - c0
            order, rank = running_topk_indices(carry, streams[:, c0:c1], start + c0)
            # one gather builds every position's rows: [latents; its top-k], padding (zeros) where none yet
            source = torch.cat([carry, streams[:, c0:c1], streams.new_zeros(B, 1, 3 * D),
                                latent.expand(B, L, 3 * D)], dim=1)
            latent_index = torch.arange(k + C + 1, k + C + 1 + L, device=x.device)[None, None, :, None]
            index = torch.cat([latent_index.expand(B, C, L, 3 * D), order], dim=2)
            rows = torch.gather(source, 1, index.reshape(B, C * (L + k), 3 * D)).view(B, C, L + k, 3 * D)
            # the top-k of everything up to the chunk's end; unfilled slots hold -inf for the next merge
            last_filled = torch.arange(k, device=x.device) < start + c1
            carry = torch.where(last_filled[None, :, None], rows[:, -1, L:],
                                torch.full((), float("-inf"), dtype=rows.dtype, device=x.device))
            outputs.append(m_v[:, c0:c1] + self._attend(rows, rank[..., 2 * D:], start + c0))
        y = torch.cat(outputs, dim=1)
        return self._finish(y, carry, cache)

    def _finish(self, y: torch.Tensor, carry: torch.Tensor, cache: Cache | None) -> torch.Tensor:
        """Store the last top-k tables in the cache; the optional output projection."""
        if cache is not None:
            for name, table in zip(CACHE_NAMES, carry.detach().split(self.d_model, dim=-1)):
                cache[name].copy_(table)
            cache.seen += y.shape[1]
        return self.out_proj(y) if self.out_proj is not None else y

    def _fused(self, x: torch.Tensor) -> bool:
        """Whether the running top-k runs as the Triton kernel; "auto" keeps the chunked path where the kernel
        does not apply (k above its limit, another dtype) rather than the op's slow sequential reference."""
        chosen = resolve_backend(self.backend, x.device, type(self).__name__)
        if chosen == "triton" and self.backend == "auto":
            return self.topk <= TRITON_MAX_K and x.dtype in TRITON_DTYPES
        return chosen == "triton"

    def _forward_fused(self, streams, m_v, carry, start: int, latent):
        """The running top-k of the whole sequence in one op call (1 to 4 kernel launches), then the attention chunk
        by chunk (its rows are (L + k) x 3D numbers per token). Returns the mixed output and the last top-k tables."""
        B, T, S = streams.shape
        L, k, D = self.latents, self.topk, self.d_model
        top, rank, _ = running_topk(streams, k, carry if start else None, min(start, k), backend="triton")
        outputs = []
        for c0 in range(0, T, self.chunk_size):
            c1 = min(T, c0 + self.chunk_size)
            rows = torch.cat([latent.expand(B, c1 - c0, L, S), top[:, c0:c1]], dim=2)
            outputs.append(m_v[:, c0:c1] + self._attend(rows, rank[:, c0:c1, 2 * D:], start + c0))
        # unfilled slots hold -inf in the tables, as in the chunked path
        filled = torch.arange(k, device=streams.device)[None, :, None] < start + T
        carry = top[:, -1].masked_fill(~filled, float("-inf"))
        return torch.cat(outputs, dim=1), carry

    def allocate_cache(self, batch_size: int, device=None, dtype=None) -> Cache:
        weight = self.qkv.weight
        shape = (batch_size, self.topk, self.d_model)
        options = dict(device=device or weight.device, dtype=dtype or weight.dtype)
        # the tables hold copies of modulated values (no accumulation): the model's dtype is exact enough
        return Cache(**{name: torch.full(shape, float("-inf"), **options) for name in CACHE_NAMES})

    def state_size(self, seq_len: int) -> int:
        if isinstance(seq_len, bool) or not isinstance(seq_len, int) or seq_len < 0:
            raise ValueError(f"{type(self).__name__}: seq_len must be a non-negative integer, got {seq_len!r}")
        return 3 * self.topk * self.d_model  # allocated in full from the start; latent rows are parameters

    def extra_repr(self) -> str:
        return (f"d_model={self.d_model}, latents={self.latents}, topk={self.topk}, num_heads={self.num_heads}, "
                f"latent_output={self.latent_output!r}, output_projection={self.out_proj is not None}, "
                f"chunk_size={self.chunk_size}, backend={self.backend!r}")
