"""A block's fast backend (a peer's GPU kernel, or "auto" reaching a compiled CPU kernel) against its reference
backend: same weights, outputs through a cache (prefill, continued prefill, decode), the state left in the cache,
the input's and every parameter's gradient."""
import torch

from ops.testing import assert_close


def assert_backend_matches_reference(reference, fused, state_key: str, d_model: int = 64, length: int = 300,
                                     device: str = "cuda"):
    fused.load_state_dict(reference.state_dict())
    x = torch.randn(2, length, d_model, device=device)
    weights = torch.randn(x.shape, device=device)
    outputs = []
    for mixer in (reference, fused):
        xi = x.clone().requires_grad_()
        (mixer(xi) * weights).sum().backward()
        cache = mixer.allocate_cache(2)
        with torch.no_grad():
            first, then = length * 2 // 3, length - 10  # prefill, continued prefill, then 10 decode steps
            pieces = [mixer(x[:, :first], cache=cache), mixer(x[:, first:then], cache=cache)]
            pieces += [mixer(x[:, t:t + 1], cache=cache) for t in range(then, length)]
        outputs.append((xi.grad, torch.cat(pieces, 1), cache[state_key],
                        {n: p.grad for n, p in mixer.named_parameters()}))
    (dx_ref, y_ref, state_ref, grads_ref), (dx, y, state, grads) = outputs
    assert_close("cached forward", y, y_ref, torch.float32, scale=5)
    assert_close("state", state, state_ref, torch.float32, scale=5)
    assert_close("input grad", dx, dx_ref, torch.float32, scale=5)
    for name, grad in grads.items():
        assert_close(f"grad {name}", grad, grads_ref[name], torch.float32, scale=5)
