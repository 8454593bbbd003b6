"""AdamW for row-sparse gradients (a memory bank): only the rows a step fetched change, and optimizer state is
created lazily, one row at a time, the first time a row is fetched.

Per parameter the state holds ``slot_of`` (row -> slot, -1 = never fetched) and, per slot, the first and second
moments and the row's own step count (rows are updated at different times, so bias correction is per row).
Weight decay is decoupled and, like the update, applied only to the fetched rows.
"""
import torch


def sparse_parameters(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    """Parameters marked ``_sparse_grad`` (stepped by SparseBlockAdam, not by the dense optimizer)."""
    return [p for p in model.parameters() if p.requires_grad and getattr(p, "_sparse_grad", False)]


class SparseBlockAdam(torch.optim.Optimizer):
    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8, weight_decay: float = 0.0):
        if not lr >= 0:
            raise ValueError(f"SparseBlockAdam: lr must be >= 0, got {lr!r}")
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay))

    @staticmethod
    def _rows_and_values(param: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        grad = param.grad
        if grad.is_sparse:
            grad = grad.coalesce()
            return grad.indices()[0], grad.values().reshape(grad.indices().shape[1], -1)
        dense = grad.reshape(grad.shape[0], -1)  # a dense gradient: the rows it touches are the non-zero ones
        rows = dense.ne(0).any(dim=1).nonzero().squeeze(1)
        return rows, dense[rows]

    def _slots(self, param: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        state = self.state[param]
        if not state:
            state["slot_of"] = torch.full((param.shape[0],), -1, dtype=torch.long, device=param.device)
            width = param[0].numel()
            state["exp_avg"] = param.new_zeros(0, width)
            state["exp_avg_sq"] = param.new_zeros(0, width)
            state["step"] = param.new_zeros(0)
        slots = state["slot_of"][rows]
        new = rows[slots < 0]
        if len(new):  # first fetch of these rows: their state starts now
            first = len(state["step"])
            state["slot_of"][new] = torch.arange(first, first + len(new), device=param.device)
            width = state["exp_avg"].shape[1]
            state["exp_avg"] = torch.cat([state["exp_avg"], param.new_zeros(len(new), width)])
            state["exp_avg_sq"] = torch.cat([state["exp_avg_sq"], param.new_zeros(len(new), width)])
            state["step"] = torch.cat([state["step"], param.new_zeros(len(new))])
            slots = state["slot_of"][rows]
        return slots

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for param in group["params"]:
                if param.grad is None:
                    continue
                rows, grad = self._rows_and_values(param)
                if not len(rows):
                    continue
                slots = self._slots(param, rows)
                state = self.state[param]
                step = state["step"][slots] + 1
                exp_avg = state["exp_avg"][slots].mul_(beta1).add_(grad, alpha=1 - beta1)
                exp_avg_sq = state["exp_avg_sq"][slots].mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                state["step"][slots], state["exp_avg"][slots], state["exp_avg_sq"][slots] = step, exp_avg, exp_avg_sq
                correction1 = (1 - beta1 ** step)[:, None]
                correction2 = (1 - beta2 ** step)[:, None]
                update = (exp_avg / correction1) / ((exp_avg_sq / correction2).sqrt() + group["eps"])
                flat = param.view(param.shape[0], -1)
                rows_now = flat[rows] * (1 - group["lr"] * group["weight_decay"]) - group["lr"] * update
                flat[rows] = rows_now
        return loss

    def state_rows(self) -> int:
        """Rows that have optimizer state (were fetched at least once), over every parameter."""
        return sum(len(s["step"]) for s in self.state.values() if s)
