"""AdamW, RMSprop, gradient clipping and learning-rate schedules, step by step against
torch.optim (float64), and the RMSprop kernel against the oracle."""
from __future__ import annotations

import numpy as np
import pytest

import maqueta as mq
from conftest import assert_close
from maqueta import ops, reference, schedules


def run_both(make_ours, make_theirs, steps=12, size=57, clip=None, seed=0):
    """The same gradients through our optimizer and torch's; returns both parameter vectors."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(seed)
    ours = rng.standard_normal(size)
    theirs = torch.tensor(ours.copy(), requires_grad=True)
    optimizer, reference_optimizer = make_ours(), make_theirs([theirs])
    scheduler = reference_optimizer.scheduler if hasattr(reference_optimizer, "scheduler") else None
    optimizer.bind(size, np.float64)
    for _ in range(steps):
        grad = rng.standard_normal(size) * 3
        optimizer.step(ours, grad.copy())
        theirs.grad = torch.from_numpy(grad.copy())
        if clip is not None:
            torch.nn.utils.clip_grad_norm_([theirs], clip)
        reference_optimizer.step()
        if scheduler is not None:
            scheduler.step()
    return ours, theirs.detach().numpy()


@pytest.mark.parametrize("backend", ["native", "reference"])
@pytest.mark.parametrize("kwargs", [dict(), dict(weight_decay=0.1, lr=3e-3), dict(betas=(0.8, 0.9), eps=1e-6)])
def test_adamw_matches_torch(kwargs, backend):
    torch = pytest.importorskip("torch")
    with mq.use_backend(backend):
        ours, theirs = run_both(lambda: mq.AdamW(**kwargs), lambda p: torch.optim.AdamW(p, **kwargs))
    np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("backend", ["native", "reference"])
@pytest.mark.parametrize("kwargs", [dict(), dict(momentum=0.9), dict(centered=True), dict(centered=True, momentum=0.5),
                                    dict(weight_decay=0.01, alpha=0.9, eps=1e-6, lr=1e-3)])
def test_rmsprop_matches_torch(kwargs, backend):
    torch = pytest.importorskip("torch")
    with mq.use_backend(backend):
        ours, theirs = run_both(lambda: mq.RMSprop(**kwargs), lambda p: torch.optim.RMSprop(p, **kwargs))
    np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("clip", [0.5, 1e3])
def test_global_clipnorm_matches_clip_grad_norm(clip):
    torch = pytest.importorskip("torch")
    ours, theirs = run_both(lambda: mq.SGD(0.1, momentum=0.9, global_clipnorm=clip),
                            lambda p: torch.optim.SGD(p, 0.1, momentum=0.9), clip=clip)
    np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=1e-14)


def with_scheduler(make_optimizer, make_scheduler):
    def build(params):
        optimizer = make_optimizer(params)
        optimizer.scheduler = make_scheduler(optimizer)
        return optimizer
    return build


@pytest.mark.parametrize("case", ["step", "cosine", "cosine-warmup", "onecycle", "onecycle-linear"])
def test_schedules_match_torch_lr_schedulers(case):
    torch = pytest.importorskip("torch")
    S = torch.optim.lr_scheduler
    steps = 40
    ours = {"step": schedules.StepDecay(0.1, step_size=7, gamma=0.5),
            "cosine": schedules.CosineDecay(0.1, total_steps=steps, min_lr=1e-3),
            "cosine-warmup": schedules.CosineDecay(0.1, total_steps=steps, warmup_steps=5, min_lr=1e-3,
                                                   warmup_start_factor=0.1),
            "onecycle": schedules.OneCycle(0.1, total_steps=steps),
            "onecycle-linear": schedules.OneCycle(0.05, total_steps=steps, pct_start=0.25, anneal="linear")}[case]
    theirs = {"step": lambda o: S.StepLR(o, 7, 0.5),
              "cosine": lambda o: S.CosineAnnealingLR(o, steps, eta_min=1e-3),
              "cosine-warmup": lambda o: S.SequentialLR(o, [S.LinearLR(o, 0.1, total_iters=5),
                                                            S.CosineAnnealingLR(o, steps - 5, eta_min=1e-3)], [5]),
              "onecycle": lambda o: S.OneCycleLR(o, 0.1, total_steps=steps, cycle_momentum=False),
              "onecycle-linear": lambda o: S.OneCycleLR(o, 0.05, total_steps=steps, pct_start=0.25,
                                                        anneal_strategy="linear", cycle_momentum=False)}[case]
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=ours(0) if case != "onecycle" else 0.1)
    if case in ("step", "cosine", "cosine-warmup"):
        optimizer.param_groups[0]["lr"] = ours.lr
        optimizer.param_groups[0]["initial_lr"] = ours.lr
    scheduler = theirs(optimizer)
    for step in range(steps):
        assert ours(step) == pytest.approx(optimizer.param_groups[0]["lr"], rel=1e-12, abs=1e-15), step
        optimizer.step()
        scheduler.step()


def test_a_schedule_drives_training_and_survives_a_checkpoint(tmp_path):
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((64, 6)), np.arange(64) % 3

    def build():
        return mq.Sequential([mq.Dense(6, 8), mq.ReLU(), mq.Dense(8, 3)], dtype="float64", seed=1)

    def optimizer():
        return mq.AdamW(lr=schedules.OneCycle(0.05, total_steps=32), global_clipnorm=1.0)

    straight = build()
    straight.fit(X, y, epochs=4, batch_size=8, optimizer=optimizer(), verbose=0)
    first = build()
    first.fit(X, y, epochs=2, batch_size=8, optimizer=optimizer(), verbose=0)
    first.save(tmp_path / "ckpt.maq", include_optimizer=True)
    resumed = mq.load(tmp_path / "ckpt.maq")
    assert isinstance(resumed.optimizer, mq.AdamW) and isinstance(resumed.optimizer.schedule, schedules.OneCycle)
    assert resumed.optimizer.iterations == 16 and resumed.optimizer.lr == schedules.OneCycle(0.05, 32)(16)
    resumed.fit(X, y, epochs=4, initial_epoch=2, batch_size=8, verbose=0)
    np.testing.assert_array_equal(resumed.get_flat_parameters(), straight.get_flat_parameters())
    with pytest.raises(TypeError, match="cannot also be set by hand"):
        resumed.optimizer.lr = 0.1


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("centered,momentum,weight_decay", [(False, 0.0, 0.0), (True, 0.9, 0.01), (False, 0.5, 0.0)])
def test_rmsprop_kernel_matches_the_oracle(dtype, centered, momentum, weight_decay, threads, rng):
    size = 200_001
    state = [rng.standard_normal(size).astype(dtype), rng.random(size).astype(dtype),
             (rng.standard_normal(size) * 0.01).astype(dtype) if centered else None,
             rng.standard_normal(size).astype(dtype) if momentum else None]
    mine = [None if a is None else a.copy() for a in state]
    theirs = [None if a is None else a.copy() for a in state]
    for _ in range(3):
        grad = rng.standard_normal(size).astype(dtype)
        ops.rmsprop_update(mine[0], grad, mine[1], mine[2], mine[3], 1e-2, 0.9, 1e-8, weight_decay, momentum)
        reference.rmsprop_update(theirs[0], grad, theirs[1], theirs[2], theirs[3], 1e-2, 0.9, 1e-8, weight_decay,
                                 momentum)
    for a, b in zip(mine, theirs):
        if a is not None:
            assert_close(a, b, dtype)


def test_optimizer_arguments_are_checked():
    with pytest.raises(ValueError, match="alpha must be in"):
        mq.RMSprop(alpha=1.5)
    with pytest.raises(ValueError, match="global_clipnorm must be > 0"):
        mq.AdamW(global_clipnorm=0)
    with pytest.raises(ValueError, match="warmup_steps .* must be fewer than total_steps"):
        schedules.CosineDecay(0.1, total_steps=5, warmup_steps=5)
    with pytest.raises(ValueError, match="momentum > 0 needs a momentum_buffer"):
        p = np.zeros(3)
        ops.rmsprop_update(p, np.zeros(3), np.zeros(3), None, None, 0.1, momentum=0.9)
