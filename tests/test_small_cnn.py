"""The layers issue's network end to end: a small VGG with batch normalisation and dropout trains
step for step as PyTorch's does, and saves, loads and resumes exactly."""
from __future__ import annotations

import numpy as np
import pytest

import maqueta as mq


def torch_small_vgg(torch, model, widths, dense, size):
    """The same architecture in PyTorch (dropout off), with maqueta's weights and buffers copied in."""
    nn = torch.nn
    layers, channels = [], 1
    for width in widths:
        for _ in range(2):
            layers += [nn.Conv2d(channels, width, 3, padding="same", bias=False), nn.BatchNorm2d(width), nn.ReLU()]
            channels = width
        layers += [nn.MaxPool2d(2), nn.Dropout(0.0)]
        size //= 2
    layers += [nn.Flatten(), nn.Linear(channels * size * size, dense, bias=False), nn.BatchNorm1d(dense), nn.ReLU(),
               nn.Dropout(0.0), nn.Linear(dense, 10)]
    net = nn.Sequential(*layers).double()
    net.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in model.state_dict().items()})
    return net


@pytest.mark.parametrize("widths, dense, size", [((8, 16), 32, 12), ((32, 64), 128, 28)],
                         ids=["small", "train_cnn"])
def test_twenty_steps_agree_with_pytorch_in_float64(widths, dense, size):
    """BatchNorm in training mode included; dropout at 0 (PyTorch draws other masks). The second
    case is examples/train_cnn.py's network at full size."""
    torch = pytest.importorskip("torch")
    model = mq.models.small_vgg(widths=widths, dense=dense, input_size=size, dropout=(0.0, 0.0, 0.0), seed=1,
                                dtype="float64")
    net = torch_small_vgg(torch, model, widths, dense, size)
    rng = np.random.default_rng(0)
    X = rng.standard_normal((20 * 16, 1, size, size))
    y = rng.integers(0, 10, len(X))
    optimizer = mq.AdamW(lr=mq.schedules.OneCycle(0.01, total_steps=20), weight_decay=0.05)
    theirs = torch.optim.AdamW(net.parameters(), lr=0.01, weight_decay=0.05)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(theirs, 0.01, total_steps=20, cycle_momentum=False)
    loss_fn = torch.nn.CrossEntropyLoss()
    for step in range(20):
        xb, yb = X[step * 16:(step + 1) * 16], y[step * 16:(step + 1) * 16]
        ours = model.train_on_batch(xb, yb, optimizer=optimizer)
        net.train()
        theirs.zero_grad()
        loss = loss_fn(net(torch.from_numpy(xb)), torch.from_numpy(yb))
        loss.backward()
        theirs.step()
        scheduler.step()
        assert ours == pytest.approx(loss.item(), rel=1e-9)
    for key, value in net.state_dict().items():
        np.testing.assert_allclose(model.state_dict()[key], value.numpy(), rtol=1e-9, atol=1e-12, err_msg=key)
    x = rng.standard_normal((5, 1, size, size))
    np.testing.assert_allclose(model(x), net.eval()(torch.from_numpy(x)).detach().numpy(), rtol=1e-9, atol=1e-12)


def test_saved_with_batchnorm_and_dropout_predicts_and_resumes_exactly(tmp_path):
    rng = np.random.default_rng(2)
    X, y = rng.standard_normal((96, 1, 12, 12)).astype(np.float32), np.arange(96) % 10

    def build():
        return mq.models.small_vgg(widths=(4, 8), dense=16, input_size=12, seed=3)

    def optimizer():
        return mq.AdamW(lr=mq.schedules.CosineDecay(3e-3, total_steps=18, warmup_steps=3))

    straight = build()
    straight.fit(X, y, epochs=3, batch_size=16, optimizer=optimizer(), verbose=0)
    first = build()
    first.fit(X, y, epochs=1, batch_size=16, optimizer=optimizer(), verbose=0)
    first.save(tmp_path / "ckpt.maq", include_optimizer=True)
    loaded = mq.load(tmp_path / "ckpt.maq")
    np.testing.assert_array_equal(loaded.predict_proba(X), first.predict_proba(X))
    for key, value in first.state_dict().items():
        np.testing.assert_array_equal(loaded.state_dict()[key], value)
    loaded.fit(X, y, epochs=3, initial_epoch=1, batch_size=16, verbose=0)
    for key, value in straight.state_dict().items():
        np.testing.assert_array_equal(loaded.state_dict()[key], value, err_msg=key)


@pytest.mark.parametrize("backend", ["native", "reference"])
def test_layers_without_bias(backend):
    torch = pytest.importorskip("torch")
    conv, dense = mq.Conv2D(2, 3, 3, bias=False), mq.Dense(12, 2, bias=False)
    model = mq.Sequential([conv, mq.ReLU(), mq.Flatten(), dense], input_shape=(2, 4, 4), dtype="float64")
    assert list(model.state_dict()) == ["0.weight", "3.weight"] and conv.bias is None
    assert repr(conv) == "Conv2D(2, 3, kernel_size=3, bias=False)" and mq.Conv2D(**conv.get_config()).has_bias is False
    net = torch.nn.Sequential(torch.nn.Conv2d(2, 3, 3, bias=False), torch.nn.ReLU(), torch.nn.Flatten(),
                              torch.nn.Linear(12, 2, bias=False)).double()
    net.load_state_dict({k: torch.from_numpy(v) for k, v in model.state_dict().items()})
    x = np.random.default_rng(0).standard_normal((16, 2, 4, 4))
    with mq.use_backend(backend):
        np.testing.assert_allclose(model(x), net(torch.from_numpy(x)).detach().numpy(), rtol=1e-12, atol=1e-14)
        model.fit(x, np.arange(16) % 2, epochs=1, batch_size=16, verbose=0)   # 16 images: the lane path in float64
