"""The O(N^2) oracle of causal Co4 (zoo/blocks/co4.py), written from the definition and sharing none of its code
paths: for every position t it ranks the whole masked sequence (future positions pushed to -inf), reads token t's
rank by counting the earlier values that beat it, and attends over exactly the rows that exist (slicing, not
masking). Slow on purpose; the tests compare the chunked block against it (outputs and gradients).
"""
import torch


def co4_oracle(mixer, x: torch.Tensor) -> torch.Tensor:
    """Causal Co4 of ``mixer``'s weights on x (B, N, D) -> (B, N, D), one position at a time."""
    B, N, D = x.shape
    L, k, H, E = mixer.latents, mixer.topk, mixer.num_heads, mixer.head_dim
    weight, bias = mixer.qkv.weight.to(x.dtype), mixer.qkv.bias.to(x.dtype)
    q_x, k_x, v_x = (x @ weight.T + bias).split(D, dim=-1)
    q_l, k_l, v_l = (mixer.latent_tokens.to(x.dtype) @ weight.T + bias).split(D, dim=-1)
    # the papers' per-latent modulation, pooled over the latent rows (docs/co4.md)
    m_q = q_x + k_x * q_l.mean(dim=0)
    m_k = k_x + q_x * k_l.mean(dim=0)
    m_v = (v_x + 1) ** 2 - 1 + (q_l * k_l * (1 + v_l.abs())).mean(dim=0)

    # (B, N_t, N_s, D): value of token s as seen from step t, -inf for s > t
    future = torch.ones(N, N, dtype=torch.bool, device=x.device).triu(1)[None, :, :, None]

    def masked(m):
        return m[:, None, :, :].expand(B, N, N, D).masked_fill(future, float("-inf"))

    def key(m):  # ranked by the value rounded to bfloat16; the selected rows keep full precision
        return m.detach().to(torch.bfloat16).to(m.dtype)

    outputs = []
    for t in range(N):
        rows = min(t + 1, k)
        tops = []
        for m in (m_q, m_k, m_v):
            seen = masked(key(m))[:, t]                                          # (B, N, D)
            # stable descending sort over time order: ties go to the earlier token
            order = torch.sort(seen, dim=1, descending=True, stable=True).indices[:, :rows]
            tops.append(torch.take_along_dim(m, order, dim=1))                 # (B, rows, D)
        # token t's rank in each channel of M_V: the earlier tokens whose key is >= its own
        rank = (key(m_v)[:, :t] >= key(m_v)[:, t: t + 1]).sum(dim=1)             # (B, D)
        y = m_v[:, t].clone()
        for h in range(H):
            channels = slice(h * E, (h + 1) * E)
            queries = torch.cat([q_l[None, :, channels].expand(B, L, E), tops[0][..., channels]], dim=1)
            keys = torch.cat([k_l[None, :, channels].expand(B, L, E), tops[1][..., channels]], dim=1)
            values = torch.cat([v_l[None, :, channels].expand(B, L, E), tops[2][..., channels]], dim=1)
            weights = torch.softmax(queries @ keys.transpose(1, 2) / E ** 0.5, dim=-1)
            out = weights @ values                                               # (B, L + rows, E)
            if mixer.latent_output == "mean":
                y[:, channels] = y[:, channels] + out[:, :L].mean(dim=1)
            for r in range(rows):
                hit = (rank[:, channels] == r).to(x.dtype)
                y[:, channels] = y[:, channels] + hit * out[:, L + r]
        outputs.append(y)
    y = torch.stack(outputs, dim=1)
    return mixer.out_proj(y) if mixer.out_proj is not None else y
