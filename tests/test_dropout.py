"""Dropout and Dropout2D: PyTorch's scaling, identity in evaluation, masks fixed by the seed and
independent of threads, gradients through the same mask, and exact resume."""
from __future__ import annotations

import numpy as np
import pytest

import maqueta as mq
from layer_checks import backends_for, check_gradients, model_of, run_layer
from maqueta import ops, plain, reference
from maqueta.layers.base import Call

BACKENDS = backends_for("dropout_forward", "dropout_backward")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("make,shape", [(lambda: mq.Dropout(0.3), (5, 7)), (lambda: mq.Dropout2D(0.5), (4, 6, 3, 2))],
                         ids=["dropout", "dropout2d"])
def test_training_scales_what_it_keeps_and_evaluation_passes_through(make, shape, backend):
    layer = make()
    model_of(layer)
    x = np.random.default_rng(0).standard_normal(shape) + 5
    with mq.use_backend(backend):
        y, call = run_layer(layer, x)
        kept = y != 0
        np.testing.assert_allclose(y[kept], x[kept] / (1 - layer.p), rtol=1e-15)
        if layer.channelwise:   # whole planes go or stay
            planes = kept.reshape(*shape[:2], -1)
            assert (planes.all(axis=2) | ~planes.any(axis=2)).all()
        assert 0 < kept.mean() < 1
        assert run_layer(layer, x, training=False)[0] is x
        check_gradients(layer, x)


def test_drop_rate_is_p_over_many_values():
    keep = reference.dropout_keep((1000, 1000), 0.3, seed=123)
    assert abs(keep.mean() - 0.7) < 0.002
    assert not np.array_equal(keep, reference.dropout_keep((1000, 1000), 0.3, seed=124))
    assert np.array_equal(keep, reference.dropout_keep((1000, 1000), 0.3, seed=123))


@pytest.mark.parametrize("p", [0.0, 1.0])
def test_edge_probabilities(p):
    layer = mq.Dropout(p)
    model_of(layer)
    x = np.ones((3, 4))
    with mq.use_backend("reference"):
        y, _ = run_layer(layer, x)
    np.testing.assert_array_equal(y, x if p == 0 else 0 * x)


@pytest.mark.parametrize("backend", BACKENDS)
def test_seed_fixes_the_run_and_resume_is_exact(backend, tmp_path):
    rng = np.random.default_rng(1)
    X, y = rng.standard_normal((48, 1, 6, 6)), np.arange(48) % 3

    def build():
        return mq.Sequential([mq.Conv2D(1, 4, 3), mq.ReLU(), mq.Dropout2D(0.25), mq.Flatten(), mq.Dropout(0.5),
                              mq.Dense(64, 3)], seed=5, dtype="float64", input_shape=(1, 6, 6))

    with mq.use_backend(backend):
        straight = build()
        straight.fit(X, y, epochs=3, batch_size=16, verbose=0)
        again = build()
        again.fit(X, y, epochs=1, batch_size=16, verbose=0)
        again.save(tmp_path / "ckpt.maq", include_optimizer=True)
        resumed = mq.load(tmp_path / "ckpt.maq")
        resumed.fit(X, y, epochs=3, initial_epoch=1, batch_size=16, verbose=0)
    np.testing.assert_array_equal(resumed.get_flat_parameters(), straight.get_flat_parameters())
    assert not np.array_equal(straight.predict_proba(X), build().predict_proba(X))


def test_bad_probability():
    for p in (-0.1, 1.5, "half", True):
        with pytest.raises(ValueError, match="p must be a probability"):
            mq.Dropout(p)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("make,shape", [(lambda: mq.Dropout(0.4), (7, 5, 3)),
                                        (lambda: mq.Dropout2D(0.5), (7, 6, 3, 2))], ids=["dropout", "dropout2d"])
def test_slices_with_their_offsets_draw_the_whole_batch_mask(make, shape, backend):
    """Data-parallel training: each process holds a slice of the global batch (one may be empty)
    and hashes its values' indices in the global batch (Call.batch_offset), so the slices' masks
    put together are the whole batch's, bit for bit, and the generator advances once per step."""
    x = np.random.default_rng(2).standard_normal(shape) + 5

    def forward(lo, hi):
        layer = make()
        model_of(layer)
        call = Call(layer, 0, True)
        call.rng, call.batch_offset, call.need_dx = layer._model.state.layer_rng, lo, True
        y = layer.forward(x[lo:hi], call)
        return y, layer.backward(np.ones_like(y), call), layer._model.state.layer_rng.integers(2**63)

    with mq.use_backend(backend):
        whole = forward(0, len(x))
        parts = [forward(lo, hi) for lo, hi in ((0, 3), (3, 3), (3, 7))]
    for k in range(2):
        np.testing.assert_array_equal(np.concatenate([part[k] for part in parts]), whole[k])
    assert all(part[2] == whole[2] for part in parts)   # every slice drew the same seed, the empty one too


@pytest.mark.parametrize("kernels", [ops, plain], ids=["native", "plain"])
@pytest.mark.parametrize("channelwise", [False, True])
def test_kernel_offset_matches_the_reference_and_is_checked(channelwise, kernels):
    x = np.random.default_rng(3).standard_normal((5, 4, 3, 2))
    for offset in (0, 1, 4, 10**12):
        ours, theirs = kernels.dropout_forward(x, 0.3, 2**64 - 7, channelwise, offset=offset), \
            reference.dropout_forward(x, 0.3, 2**64 - 7, channelwise, offset=offset)
        np.testing.assert_array_equal(ours[1], theirs[1])
        np.testing.assert_array_equal(ours[0], theirs[0])
    for bad in (-1, 1.5, True):
        with pytest.raises(ValueError, match="offset must be an int >= 0"):
            kernels.dropout_forward(x, 0.3, 1, channelwise, offset=bad)
