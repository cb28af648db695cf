"""Cross-entropy with label smoothing and class weights against torch.nn.CrossEntropyLoss."""
from __future__ import annotations

import numpy as np
import pytest

import maqueta as mq
from test_layers import numeric_gradient


@pytest.mark.parametrize("smoothing,weighted", [(0.1, False), (0.0, True), (0.2, True), (1.0, False)])
def test_matches_pytorch_and_finite_differences(smoothing, weighted):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((9, 5)) * 3
    targets = rng.integers(0, 5, 9)
    weights = rng.uniform(0.2, 3, 5) if weighted else None
    loss_fn = mq.losses.CrossEntropy(label_smoothing=smoothing, class_weights=weights)
    loss, grad = loss_fn(logits, targets)
    z = torch.tensor(logits, requires_grad=True)
    expected = torch.nn.CrossEntropyLoss(weight=None if weights is None else torch.from_numpy(weights),
                                         label_smoothing=smoothing)(z, torch.from_numpy(targets))
    expected.backward()
    assert loss == pytest.approx(expected.item(), rel=1e-12)
    np.testing.assert_allclose(grad, z.grad.numpy(), rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(grad, numeric_gradient(lambda: loss_fn(logits, targets)[0], logits), rtol=1e-6, atol=1e-9)


def test_plain_options_are_the_native_loss_and_training_uses_it():
    rng = np.random.default_rng(1)
    logits, targets = rng.standard_normal((6, 4)).astype(np.float32), rng.integers(0, 4, 6)
    a, ga = mq.losses.CrossEntropy()(logits, targets)
    b, gb = mq.losses.cross_entropy(logits, targets)
    assert a == b and np.array_equal(ga, gb)
    model = mq.Sequential([mq.Dense(4, 3)], seed=0)
    model.fit(rng.standard_normal((12, 4)), np.arange(12) % 3, verbose=0,
              loss=mq.losses.CrossEntropy(label_smoothing=0.1, class_weights=[1, 2, 3]))
    with pytest.raises(ValueError, match="class_weights has 2 entries but the model has 3 outputs"):
        model.fit(np.ones((3, 4)), [0, 1, 2], verbose=0, loss=mq.losses.CrossEntropy(class_weights=[1, 2]))
    for bad in (dict(label_smoothing=1.5), dict(class_weights=[-1, 1]), dict(class_weights=[[1, 2]])):
        with pytest.raises(ValueError):
            mq.losses.CrossEntropy(**bad)
