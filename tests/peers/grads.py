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


def assert_same_outputs_and_grads(got, want, output_names: tuple[str, ...]):
    """Compare two ``outputs_and_grads`` results (ours, the peer's) at float32 tolerance: each named output and
    the gradient of every input."""
    (outputs, grads), (want_outputs, want_grads) = got, want
    for name, actual, expected in zip(output_names, outputs, want_outputs, strict=True):
        assert_close(name, actual, expected, torch.float32)
    for name in want_grads:
        assert_close(f"grad {name}", grads[name], want_grads[name], torch.float32)
