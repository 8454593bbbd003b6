"""Run a function on fresh leaf copies of its inputs and backpropagate, so ours and a peer's compare one-to-one."""
import torch

from ops.testing import assert_close


def outputs_and_grads(fn, inputs: dict, grad_out: torch.Tensor):
    """fn(**inputs) -> a tensor or a tuple whose first entry is the main output (later ones: states, or None).

    Backpropagates (main output * grad_out).sum() plus the sum of every later differentiable output, so that
    gradients flowing through final states are compared too. Returns (outputs as a tuple, {input name: grad}).
    """
    leaves = {name: value.detach().clone().requires_grad_() for name, value in inputs.items()}
    outputs = fn(**leaves)
    outputs = outputs if isinstance(outputs, tuple) else (outputs,)
    loss = (outputs[0] * grad_out).sum()
    for extra in outputs[1:]:
        if extra is not None and extra.requires_grad:
            loss = loss + extra.sum()
    loss.backward()
    return tuple(o.detach() if o is not None else None for o in outputs), {n: v.grad for n, v in leaves.items()}


def assert_same_outputs_and_grads(got, want, output_names: tuple[str, ...], dtype: torch.dtype = torch.float32,
                                  grad_scale: float = 1.0, against: str = ""):
    """Compare two ``outputs_and_grads`` results (ours, the expected one): each named output at ``dtype``'s
    tolerance (``assert_close``), and the gradient of every input in the expected result at ``grad_scale`` times it
    (a test leaves out an input's gradient by deleting it from ``want``); ``against`` is added to each name."""
    (outputs, grads), (want_outputs, want_grads) = got, want
    for name, actual, expected in zip(output_names, outputs, want_outputs, strict=True):
        assert_close(name + against, actual, expected, dtype)
    for name in want_grads:
        assert_close(f"grad {name}{against}", grads[name], want_grads[name], dtype, scale=grad_scale)


def assert_modules_agree(theirs, mine, x: torch.Tensor, grad_out: torch.Tensor, theirs_again, unwrap=lambda y: y):
    """A peer's module and ours holding the same weights: equal outputs and parameter gradients (in the peer's
    parameter order); then ``theirs_again`` (a fresh peer module) loaded with our state dict gives our output.
    ``unwrap`` takes the output tensor out of what the peer's forward returns."""
    y_theirs, y_mine = unwrap(theirs(x)), mine(x)
    (y_theirs * grad_out).sum().backward()
    (y_mine * grad_out).sum().backward()
    assert_close("out", y_mine, y_theirs, torch.float32)
    for (name, p_theirs), p_mine in zip(theirs.named_parameters(), mine.parameters(), strict=True):
        assert_close(f"grad {name}", p_mine.grad, p_theirs.grad, torch.float32)
    theirs_again.load_state_dict(mine.state_dict())
    with torch.no_grad():
        assert_close("the peer with our state dict", unwrap(theirs_again(x)), mine(x), torch.float32)


def decode_through_both(theirs, mine, x):
    """Token by token through mamba-ssm's ``step`` (its inference cache) and through our cache: (ours, theirs,
    our cache, their ssm state)."""
    import torch
    length = x.shape[1]
    conv_state, ssm_state = theirs.allocate_inference_cache(x.shape[0], max_seqlen=length, dtype=torch.float32)
    cache = mine.allocate_cache(x.shape[0])
    with torch.no_grad():
        theirs_steps = torch.cat([theirs.step(x[:, t:t + 1], conv_state, ssm_state)[0] for t in range(length)], 1)
        my_steps = torch.cat([mine(x[:, t:t + 1], cache=cache) for t in range(length)], 1)
    return my_steps, theirs_steps, cache, ssm_state

