"""The `optimizer` group's optimizers and schedules by name, and Batch Manhattan: any torch
optimizer stepping on the sign of the mini-batch gradient (or of its own update)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields

import torch
from torch import nn
from torch.optim import Optimizer

from asymbp.layers import output_layer
from asymbp.registry import NonNegative, Positive, PositiveInt, Rate, Registry

#: optimizer.name -> a function building the torch optimizer from the parameters, lr and the
#: config's other keys besides OPTIMIZER_KEYS; its annotations declare each key's range
#: (registry.Range), which Registry.check enforces before a run starts.
OPTIMIZERS: Registry[Callable[..., Optimizer]] = Registry("optimizer", key="optimizer.name")


@OPTIMIZERS.register("sgd")
def sgd(
    params,
    lr: Positive,
    *,
    momentum: Rate = 0.0,
    dampening: NonNegative = 0.0,
    weight_decay: NonNegative = 0.0,
    nesterov: bool = False,
) -> torch.optim.SGD:
    """torch.optim.SGD (momentum below 1: torch accepts >= 1, which never forgets a gradient)."""
    return torch.optim.SGD(
        params, lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay,
        nesterov=nesterov,
    )  # fmt: skip


@OPTIMIZERS.register("adam")
def adam(
    params,
    lr: Positive,
    *,
    betas: tuple[Rate, Rate] = (0.9, 0.999),
    eps: Positive = 1e-8,
    weight_decay: NonNegative = 0.0,
    amsgrad: bool = False,
) -> torch.optim.Adam:
    """torch.optim.Adam."""
    return torch.optim.Adam(
        params, lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay, amsgrad=amsgrad
    )


@dataclass(frozen=True)
class OptimizerKeys:
    """The keys of every optimizer config that are not its torch optimizer's (the declaration
    build checks them by): the rate without and with Batch Manhattan, and the schedule's."""

    lr: Positive
    bm_lr: Positive
    schedule: str
    step_size: PositiveInt  # torch's StepLR takes 0 or a float and fails after an epoch
    gamma: Positive
    milestones: list[PositiveInt] | None = None


#: The keys of OptimizerKeys, and name (lr is passed per parameter group).
OPTIMIZER_KEYS = ("name", *(f.name for f in fields(OptimizerKeys)))

#: optimizer.schedule -> schedule(optimizer, epochs, optimizer config) -> an LR scheduler stepped
#: once per epoch.
SCHEDULES: Registry[Callable] = Registry("schedule", key="optimizer.schedule")


@SCHEDULES.register("none")
def constant_schedule(optimizer: Optimizer, epochs: int, opt) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda epoch: 1.0)


@SCHEDULES.register("step")
def step_schedule(optimizer: Optimizer, epochs: int, opt) -> torch.optim.lr_scheduler.StepLR:
    """Times gamma every step_size epochs."""
    return torch.optim.lr_scheduler.StepLR(optimizer, step_size=opt.step_size, gamma=opt.gamma)


@SCHEDULES.register("cosine")
def cosine_schedule(optimizer: Optimizer, epochs: int, opt) -> torch.optim.lr_scheduler.LRScheduler:
    """Cosine from the rate to 0 over the run's epochs."""
    return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)


@SCHEDULES.register("multistep")
def multistep_schedule(
    optimizer: Optimizer, epochs: int, opt
) -> torch.optim.lr_scheduler.LRScheduler:
    """Times gamma at each epoch of milestones (biotorch's schedule)."""
    milestones = list(opt.milestones)
    return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=milestones, gamma=opt.gamma)


SCOPES = ("all", "weights", "hidden")
SIGN_OF = ("gradient", "update")


def layer_weights(model: nn.Module) -> list[nn.Parameter]:
    """The weights of every Linear and Conv layer and attention projection (not biases, not
    normalization parameters), and the learned V of Kolen-Pollack layers, which take exactly W's
    step."""
    weights = []
    for m in model.modules():
        if isinstance(m, nn.Linear | nn.modules.conv._ConvNd) and m.weight is not None:
            weights.append(m.weight)
        if isinstance(m, nn.MultiheadAttention):  # its query/key/value projections
            projections = (m.in_proj_weight, m.q_proj_weight, m.k_proj_weight, m.v_proj_weight)
            weights += [w for w in projections if w is not None]
        weights += getattr(m, "feedback_parameters", list)()  # layers' and projections' learned V
    return weights


def output_layer_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The parameters of the model's output layer (`asymbp.layers.output_layer`): its weight, its
    bias and, under Kolen-Pollack, its learned V."""
    return list(output_layer(model)[1].parameters())


class BatchManhattan(Optimizer):
    """Wraps `optimizer` so that it steps on sign(gradient) of the parameters in `scope`.

    sign_of="update" (default, ours): the wrapped optimizer computes its (momentum-smoothed,
        weight-decayed) update first, and each parameter moves by exactly lr * sign(that update).
        Chosen on validation over the alternative, which drifts on long runs (docs/training.md,
        "Batch Manhattan"; docs/results/bm_study).
    sign_of="gradient" (Xiao et al. 2018's BM-SGD): each gradient is replaced by its sign, then
        the wrapped optimizer applies weight decay, momentum and the learning rate as usual, so a
        weight moves by up to lr / (1 - momentum) per step. The gradients are left signed.
    scope="all" (default): every parameter is signed.
    scope="weights": only the Linear/Conv weights of `model` are signed; the other parameters
        take the wrapped optimizer's plain step.
    scope="hidden": every parameter but the output layer's (`output_layer_parameters(model)`) is
        signed; the output layer takes the wrapped optimizer's plain step at its group's rate, as
        in Xiao et al. 2018 (their train.py trains the last layer with plain SGD at its own rate
        unless --lbm). `asymbp.build` puts the output layer in a group at optimizer.lr.

    It shares the wrapped optimizer's parameter groups and state, so learning-rate schedulers and
    the `state_dict` round trip work as for the wrapped optimizer.
    """

    def __init__(
        self,
        optimizer: Optimizer,
        *,
        scope: str = "all",
        sign_of: str = "update",
        model: nn.Module | None = None,
    ) -> None:
        if scope not in SCOPES:
            raise ValueError(f"Batch Manhattan scope must be one of {SCOPES}, got {scope!r}")
        if sign_of not in SIGN_OF:
            raise ValueError(f"Batch Manhattan sign_of must be one of {SIGN_OF}, got {sign_of!r}")
        if scope != "all" and model is None:
            raise ValueError(f"Batch Manhattan scope={scope!r} needs the model: pass model=...")
        self.optimizer = optimizer
        self.scope = scope
        self.sign_of = sign_of
        self._weight_ids = {id(p) for p in layer_weights(model)} if scope == "weights" else None
        self._plain_ids = (
            {id(p) for p in output_layer_parameters(model)} if scope == "hidden" else set()
        )
        # Optimizer.__setstate__ creates the hook tables without building a second set of groups.
        self.__setstate__({"defaults": optimizer.defaults})

    # The groups and state are the wrapped optimizer's, never copies.
    @property
    def param_groups(self):
        return self.optimizer.param_groups

    @param_groups.setter
    def param_groups(self, value):
        self.optimizer.param_groups = value

    @property
    def state(self):
        return self.optimizer.state

    @state.setter
    def state(self, value):
        self.optimizer.state = value

    def state_dict(self):
        return self.optimizer.state_dict()

    def load_state_dict(self, state_dict) -> None:
        self.optimizer.load_state_dict(state_dict)

    def add_param_group(self, param_group) -> None:
        self.optimizer.add_param_group(param_group)

    def __getstate__(self):
        return {
            "defaults": self.defaults,
            "optimizer": self.optimizer,
            "scope": self.scope,
            "sign_of": self.sign_of,
            "_weight_ids": self._weight_ids,
            "_plain_ids": self._plain_ids,
        }

    def __repr__(self) -> str:
        return f"BatchManhattan(scope={self.scope!r}, sign_of={self.sign_of!r}, {self.optimizer!r})"

    def _in_scope(self, group) -> list[torch.Tensor]:
        return [
            p
            for p in group["params"]
            if p.grad is not None
            and (self._weight_ids is None or id(p) in self._weight_ids)
            and id(p) not in self._plain_ids
        ]

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        if self.sign_of == "gradient":
            grads = [p.grad for group in self.param_groups for p in self._in_scope(group)]
            if grads:
                torch._foreach_sign_(grads)
            self.optimizer.step()
            return loss
        before = [
            (group["lr"], p, p.clone())
            for group in self.param_groups
            for p in self._in_scope(group)
        ]
        self.optimizer.step()
        for lr, p, old in before:
            update_sign = torch.sign(p - old)
            p.copy_(old).add_(update_sign, alpha=float(lr))
        return loss
