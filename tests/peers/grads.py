"""Run a function on fresh leaf copies of its inputs and backpropagate, so ours and a peer's compare one-to-one."""
import torch


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
