"""The O(N^2) oracle of causal Co4 (zoo/blocks/co4.py), written from the definition and sharing none of its code
paths: for every position t it recomputes each latent's reading of the prefix as an explicit weighted mean of the
tokens s <= t (in the input space, then projected), ranks the whole masked sequence (future positions pushed to
-inf), reads token t's rank by counting the earlier values that beat it, and attends over exactly the rows that
exist (slicing, not masking). Slow on purpose; the tests compare the block against it (outputs and gradients).
"""
import torch


def co4_oracle(mixer, x: torch.Tensor) -> torch.Tensor:
    """Causal Co4 of ``mixer``'s weights on x (B, N, D) -> (B, N, D), one position at a time."""
    B, N, D = x.shape
    L, k, H, E = mixer.latents, mixer.topk, mixer.num_heads, mixer.head_dim
    weight, bias = mixer.qkv.weight.to(x.dtype), mixer.qkv.bias.to(x.dtype)
    q_x, k_x, v_x = (x @ weight.T + bias).split(D, dim=-1)
    tokens = mixer.latent_tokens.to(x.dtype)                                     # (L, D)
    q_tokens = (tokens @ weight.T + bias)[:, :D]

    def latents_at(t):
        """(B, L, D) each of q, k, v of the latents at step t."""
        if mixer.latent_mode == "static":
            latent = tokens.expand(B, L, D)
        else:  # each latent: its token + the mean of x_s, s <= t, weighted sigmoid(q_latent . k_s / sqrt(D))
            w = torch.sigmoid(k_x[:, : t + 1] @ q_tokens.T / D ** 0.5)         # (B, t + 1, L)
            read = (w.transpose(1, 2) @ x[:, : t + 1]) / w.sum(1)[..., None]    # (B, L, D)
            latent = tokens + read
        return (latent @ weight.T + bias).split(D, dim=-1)

    latent_steps = [latents_at(t) for t in range(N)]
    # the papers' per-latent modulation, pooled over the latent rows (docs/co4.md)
    m_q = torch.stack([q_x[:, t] + k_x[:, t] * q_l.mean(1) for t, (q_l, _, _) in enumerate(latent_steps)], 1)
    m_k = torch.stack([k_x[:, t] + q_x[:, t] * k_l.mean(1) for t, (_, k_l, _) in enumerate(latent_steps)], 1)
    m_v = torch.stack([(v_x[:, t] + 1) ** 2 - 1 + (q_l * k_l * (1 + v_l.abs())).mean(1)
                       for t, (q_l, k_l, v_l) in enumerate(latent_steps)], 1)

    # (B, N_t, N_s, D): value of token s as seen from step t, -inf for s > t
    future = torch.ones(N, N, dtype=torch.bool, device=x.device).triu(1)[None, :, :, None]

    def masked(m):
        return m[:, None, :, :].expand(B, N, N, D).masked_fill(future, float("-inf"))

    def key(m):  # ranked by the value rounded to bfloat16; the selected rows keep full precision
        return m.detach().to(torch.bfloat16).to(m.dtype)

    outputs = []
    for t in range(N):
        rows = min(t + 1, k)
        q_l, k_l, v_l = latent_steps[t]
        tops = []
        for m in (m_q, m_k, m_v):
            seen = masked(key(m))[:, t]                                             # (B, N, D)
            # stable descending sort over time order: ties go to the earlier token
            order = torch.sort(seen, dim=1, descending=True, stable=True).indices[:, :rows]
            tops.append(torch.take_along_dim(m, order, dim=1))                 # (B, rows, D)
        # token t's rank in each channel of M_V: the earlier tokens whose key is >= its own
        rank = (key(m_v)[:, :t] >= key(m_v)[:, t: t + 1]).sum(dim=1)                     # (B, D)
        y = m_v[:, t].clone()
        for h in range(H):
            channels = slice(h * E, (h + 1) * E)
            queries = torch.cat([q_l[..., channels], tops[0][..., channels]], dim=1)
            keys = torch.cat([k_l[..., channels], tops[1][..., channels]], dim=1)
            values = torch.cat([v_l[..., channels], tops[2][..., channels]], dim=1)
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
