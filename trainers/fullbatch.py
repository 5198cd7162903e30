"""Full-batch gradient descent on the shared loop (the cooccurrence and kernel-regression trainers).

Step s moves the weights to theta_s with the gradient at theta_{s-1}, then runs the forward and backward pass at
theta_s: the loss `step` returns, what `evaluate(s)` logs (losses, margins, gradient norms) and any event a trainer
detects are all at theta_s, and the gradient the next step needs is already there, so a step costs one forward and
one backward pass. After a resume the restored weights have no gradient yet: the next step computes it first.
"""

from __future__ import annotations

from typing import Any

from orchestrator.api import LoopTrainer


class FullBatchTrainer(LoopTrainer):
    """A LoopTrainer whose `setup` ends with `self.forward_backward(state, 0)` and whose optimiser is
    `state["optimizer"]`; it defines `forward_backward`, which must set `state["_grad_at"] = step`."""

    def forward_backward(self, state: dict[str, Any], step: int) -> Any:
        """The full-batch loss at the current weights (theta_step), its gradient left in the parameters' .grad."""
        raise NotImplementedError

    def step(self, state: dict[str, Any], step: int) -> Any:
        if state["_grad_at"] != step - 1:  # resumed: the gradient at the restored weights
            self.forward_backward(state, step - 1)
        state["optimizer"].step()
        return self.forward_backward(state, step)
