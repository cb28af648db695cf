"""Learning-rate schedules: an optimizer's lr as a function of the updates it has applied.

Pass one as an optimizer's ``lr`` (``mq.AdamW(lr=mq.schedules.OneCycle(0.01, total_steps))``): update
t (counted from 0) then uses ``schedule(t)``. Because the value depends only on the optimizer's
update count, a run resumed from a checkpoint continues the schedule exactly. Each matches the
PyTorch scheduler it names when that scheduler's ``step()`` is called after every update.
"""
from __future__ import annotations

import math
import numbers

__all__ = ["Schedule", "StepDecay", "CosineDecay", "OneCycle", "SCHEDULES", "from_config"]


def _number(value, name, low=0.0, high=math.inf, low_open=False):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) \
            or value < low or value > high or (low_open and value == low):
        raise ValueError(f"{name} must be a number in {'(' if low_open else '['}{low}, {high}], got {value!r}")
    return float(value)


def _count(value, name, low=1):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
    return int(value)


class Schedule:
    """Base class: ``schedule(step) -> lr`` for step = 0, 1, 2, ...; ``get_config()`` rebuilds it."""

    def __call__(self, step):
        raise NotImplementedError

    def get_config(self) -> dict:
        raise NotImplementedError

    def __repr__(self):
        return f"{type(self).__name__}(" + ", ".join(f"{k}={v!r}" for k, v in self.get_config().items()) + ")"


class StepDecay(Schedule):
    """lr * gamma ** (step // step_size), as ``torch.optim.lr_scheduler.StepLR``."""

    def __init__(self, lr, step_size, gamma=0.1):
        self.lr = _number(lr, "lr", high=1e30)
        self.step_size = _count(step_size, "step_size")
        self.gamma = _number(gamma, "gamma")

    def __call__(self, step):
        return self.lr * self.gamma ** (step // self.step_size)

    def get_config(self):
        return {"lr": self.lr, "step_size": self.step_size, "gamma": self.gamma}


class CosineDecay(Schedule):
    """A linear warm-up from lr * warmup_start_factor to lr over warmup_steps, then half a cosine
    from lr down to min_lr at total_steps (held there after): ``torch.optim.lr_scheduler``'s
    SequentialLR of LinearLR(start_factor, total_iters=warmup_steps) and
    CosineAnnealingLR(T_max=total_steps - warmup_steps, eta_min=min_lr)."""

    def __init__(self, lr, total_steps, warmup_steps=0, min_lr=0.0, warmup_start_factor=1.0 / 3):
        self.lr = _number(lr, "lr", high=1e30)
        self.total_steps = _count(total_steps, "total_steps")
        self.warmup_steps = _count(warmup_steps, "warmup_steps", low=0)
        if self.warmup_steps >= self.total_steps:
            raise ValueError(f"warmup_steps ({warmup_steps}) must be fewer than total_steps ({total_steps})")
        self.min_lr = _number(min_lr, "min_lr", high=self.lr)
        self.warmup_start_factor = _number(warmup_start_factor, "warmup_start_factor", high=1.0, low_open=True)

    def __call__(self, step):
        if step < self.warmup_steps:
            f = self.warmup_start_factor
            return self.lr * (f + (1.0 - f) * step / self.warmup_steps)
        t = min(step - self.warmup_steps, self.total_steps - self.warmup_steps)
        return self.min_lr + (self.lr - self.min_lr) * (1 + math.cos(math.pi * t / (self.total_steps - self.warmup_steps))) / 2

    def get_config(self):
        return {"lr": self.lr, "total_steps": self.total_steps, "warmup_steps": self.warmup_steps, "min_lr": self.min_lr,
                "warmup_start_factor": self.warmup_start_factor}


class OneCycle(Schedule):
    """The 1cycle policy, as ``torch.optim.lr_scheduler.OneCycleLR`` with cycle_momentum=False:
    from max_lr / div_factor up to max_lr over the first pct_start of total_steps, then down to
    max_lr / div_factor / final_div_factor, along half cosines (anneal="cos") or lines ("linear")."""

    def __init__(self, max_lr, total_steps, pct_start=0.3, div_factor=25.0, final_div_factor=1e4, anneal="cos"):
        self.max_lr = _number(max_lr, "max_lr", high=1e30)
        self.total_steps = _count(total_steps, "total_steps", low=2)
        self.pct_start = _number(pct_start, "pct_start", high=1.0)
        self.div_factor = _number(div_factor, "div_factor", low_open=True)
        self.final_div_factor = _number(final_div_factor, "final_div_factor", low_open=True)
        if anneal not in ("cos", "linear"):
            raise ValueError(f"anneal must be 'cos' or 'linear', got {anneal!r}")
        self.anneal = anneal
        self.peak = float(self.pct_start * self.total_steps) - 1   # as PyTorch: the step at max_lr

    def _between(self, start, end, fraction):
        if self.anneal == "cos":
            return end + (start - end) / 2.0 * (math.cos(math.pi * fraction) + 1)
        return (end - start) * fraction + start

    def __call__(self, step):
        initial = self.max_lr / self.div_factor
        final = initial / self.final_div_factor
        step = min(step, self.total_steps - 1)
        if step <= self.peak:
            return self._between(initial, self.max_lr, step / self.peak if self.peak > 0 else 1.0)
        return self._between(self.max_lr, final, (step - self.peak) / (self.total_steps - 1 - self.peak))

    def get_config(self):
        return {"max_lr": self.max_lr, "total_steps": self.total_steps, "pct_start": self.pct_start,
                "div_factor": self.div_factor, "final_div_factor": self.final_div_factor, "anneal": self.anneal}


SCHEDULES = {cls.__name__: cls for cls in (StepDecay, CosineDecay, OneCycle)}


def from_config(config):
    """The schedule a ``{"class_name": ..., "config": ...}`` dict (what optimizers save) describes."""
    if not isinstance(config, dict) or config.get("class_name") not in SCHEDULES or not isinstance(config.get("config"), dict):
        raise ValueError(f"not a saved schedule: {config!r}")
    return SCHEDULES[config["class_name"]](**config["config"])
