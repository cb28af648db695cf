"""maqueta.augment: each transform against a plain NumPy version drawing the same numbers, its
checks, its config, and its use in fit (training batches only, the data untouched, exact resume)."""
from __future__ import annotations

import numpy as np
import pytest

import maqueta as mq
from maqueta import augment as aug
from conftest import small_data


def batch(n=6, c=2, h=5, w=7, seed=0):
    return np.random.default_rng(seed).random((n, c, h, w)).astype(np.float32)


def test_random_crop_is_pad_then_crop_at_each_images_offset():
    x = batch()
    crop = aug.RandomCrop((5, 7), padding=(2, 3))
    got = crop(x.copy(), np.random.default_rng(1))
    replay = np.random.default_rng(1)
    top, left = replay.integers(0, 5, 6), replay.integers(0, 7, 6)
    padded = np.pad(x, ((0, 0), (0, 0), (2, 2), (3, 3)))   # as torchvision: zero padding, then one crop per image
    expected = np.stack([padded[i, :, top[i]:top[i] + 5, left[i]:left[i] + 7] for i in range(6)])
    np.testing.assert_array_equal(got, expected)
    assert len(set(zip(top, left))) > 1   # offsets differ between images
    np.testing.assert_array_equal(aug.RandomCrop((5, 7))(x.copy(), np.random.default_rng(0)), x)   # no padding: no change


def test_random_translate_moves_each_image_and_fills_zeros():
    x = batch(n=8)
    got = aug.RandomTranslate(2)(x.copy(), np.random.default_rng(3))
    replay = np.random.default_rng(3)
    dy, dx = replay.integers(-2, 3, 8), replay.integers(-2, 3, 8)
    for i in range(8):
        expected = np.zeros_like(x[i])
        src = x[i][:, max(0, -dy[i]):5 - max(0, dy[i]), max(0, -dx[i]):7 - max(0, dx[i])]
        expected[:, max(0, dy[i]):max(0, dy[i]) + src.shape[1], max(0, dx[i]):max(0, dx[i]) + src.shape[2]] = src
        np.testing.assert_array_equal(got[i], expected, err_msg=f"image {i} shifted by ({dy[i]}, {dx[i]})")


def test_random_horizontal_flip():
    x = batch(n=50)
    got = aug.RandomHorizontalFlip(0.3)(x.copy(), np.random.default_rng(5))
    flipped = np.random.default_rng(5).random(50) < 0.3
    np.testing.assert_array_equal(got[flipped], x[flipped][..., ::-1])
    np.testing.assert_array_equal(got[~flipped], x[~flipped])
    np.testing.assert_array_equal(aug.RandomHorizontalFlip(1.0)(x.copy(), np.random.default_rng(0)), x[..., ::-1])
    np.testing.assert_array_equal(aug.RandomHorizontalFlip(0.0)(x.copy(), np.random.default_rng(0)), x)


def test_compose_applies_in_order_and_reuses_its_buffers():
    x = batch()
    flip, shift = aug.RandomHorizontalFlip(), aug.RandomTranslate((1, 2))
    got = aug.Compose([flip, shift])(x.copy(), np.random.default_rng(7))
    rng = np.random.default_rng(7)
    np.testing.assert_array_equal(got, shift(flip(x.copy(), rng), rng))
    buffers = [arrays[0] for arrays in shift._shifter._local.cache.values()]
    shift(x[:4].copy(), rng)   # an epoch's last, smaller batch gets its own
    shift(x.copy(), rng)
    assert len(shift._shifter._local.cache) == 2
    assert next(iter(shift._shifter._local.cache.values()))[0] is buffers[0]   # the same shape reuses its array


def test_config_and_repr_round_trip():
    compose = aug.Compose([aug.RandomCrop(32, padding=4), aug.RandomHorizontalFlip(0.25), aug.RandomTranslate((1, 2))])
    config = compose.get_config()
    assert config == {"transforms": [
        {"class_name": "RandomCrop", "config": {"size": [32, 32], "padding": [4, 4]}},
        {"class_name": "RandomHorizontalFlip", "config": {"p": 0.25}},
        {"class_name": "RandomTranslate", "config": {"max_shift": [1, 2]}}]}
    assert repr(compose) == ("Compose([RandomCrop(size=[32, 32], padding=[4, 4]), RandomHorizontalFlip(p=0.25), "
                             "RandomTranslate(max_shift=[1, 2])])")
    again = aug.from_config({"class_name": "Compose", "config": config})
    assert again.get_config() == config
    with pytest.raises(ValueError, match="not a transform description"):
        aug.from_config({"class_name": "os.system", "config": {}})


@pytest.mark.parametrize("make,message", [
    (lambda: aug.RandomHorizontalFlip(1.5), "p must be a probability"),
    (lambda: aug.RandomHorizontalFlip(True), "p must be a probability"),
    (lambda: aug.RandomCrop(0), "size must be >= 1"),
    (lambda: aug.RandomCrop(32, padding=-1), "padding must be >= 0"),
    (lambda: aug.RandomTranslate((1, 2, 3)), "max_shift must be an int or a pair"),
    (lambda: aug.Compose([lambda b, r: b]), r"transforms\[0\] is .* not a maqueta.augment transform"),
])
def test_bad_arguments_are_refused(make, message):
    with pytest.raises((ValueError, TypeError), match=message):
        make()


@pytest.mark.parametrize("transform,message", [
    (aug.RandomCrop(28, padding=4), r"RandomCrop size \(28, 28\) must equal the images' size \(32, 32\)"),
    (aug.RandomCrop(32, padding=32), "padding .* must be smaller than the images' size"),
    (aug.Compose([aug.RandomTranslate((0, 40))]), "max_shift .* must be smaller"),
])
def test_fit_checks_the_transform_against_the_data_before_training(transform, message):
    X, y = small_data(10)
    model = mq.models.lenet5()
    before = model.get_flat_parameters().copy()
    with pytest.raises(ValueError, match=message):
        model.fit(X, y, augment=transform, verbose=0)
    with pytest.raises(TypeError, match="augment must be a maqueta.augment transform"):
        model.fit(X, y, augment=lambda b, r: b, verbose=0)
    assert model.optimizer is None and model.classes_ is None
    np.testing.assert_array_equal(model.get_flat_parameters(), before)
    state = model.state.generator_states()
    assert state["augment_rng"] == np.random.default_rng([0, 3]).bit_generator.state


def test_fit_refuses_augmenting_flat_samples():
    model = mq.Sequential([mq.Dense(4, 3)], seed=0)
    with pytest.raises(ValueError, match=r"augments images \(N, C, H, W\); the samples have shape \(4,\)"):
        model.fit(np.ones((6, 4), np.float32), np.arange(6) % 3, augment=aug.RandomHorizontalFlip(), verbose=0)


class Spy(aug.Augmentation):
    """Records the batches it is given, then flips them all."""

    def __init__(self):
        self.sizes, self.arrays = [], []

    def __call__(self, batch, rng):
        self.sizes.append(len(batch))
        self.arrays.append(batch)
        batch[...] = batch[..., ::-1].copy()
        return batch

    def get_config(self):
        return {}


@pytest.mark.parametrize("shuffle", [True, False])
def test_fit_augments_training_batches_only_and_never_the_data(shuffle):
    X, y = small_data(25)
    X_val, y_val = small_data(7, seed=1)
    original, original_val = X.copy(), X_val.copy()
    spy = Spy()
    model = mq.models.lenet5()
    history = model.fit(X, y, epochs=2, batch_size=10, shuffle=shuffle, validation_data=(X_val, y_val),
                        augment=spy, verbose=0)
    assert spy.sizes == [10, 10, 5] * 2   # the validation data never went through it
    np.testing.assert_array_equal(X, original)
    np.testing.assert_array_equal(X_val, original_val)
    assert all(not np.shares_memory(a, X) for a in spy.arrays)
    assert spy.arrays[0] is spy.arrays[3]   # written into the batch array the model reuses
    assert history.history["val_loss"][-1] == model.evaluate(X_val, y_val)["loss"]
    # flipping every image is the same as training on the flipped data
    plain = mq.models.lenet5()
    plain.fit(np.ascontiguousarray(X[..., ::-1]), y, epochs=2, batch_size=10, shuffle=shuffle, verbose=0)
    np.testing.assert_array_equal(plain.get_flat_parameters(), model.get_flat_parameters())


def test_augmented_run_resumes_bit_identical(tmp_path):
    X, y = small_data(40)
    augment = aug.Compose([aug.RandomCrop(32, padding=3), aug.RandomHorizontalFlip(), aug.RandomTranslate(2)])
    straight = mq.models.lenet5(seed=2)
    straight.fit(X, y, epochs=3, batch_size=16, augment=augment, verbose=0)
    first = mq.models.lenet5(seed=2)
    first.fit(X, y, epochs=1, batch_size=16, augment=augment, verbose=0)
    first.save(tmp_path / "ckpt.maq", include_optimizer=True)
    resumed = mq.load(tmp_path / "ckpt.maq")
    resumed.fit(X, y, epochs=3, initial_epoch=resumed.epochs_trained, batch_size=16, augment=augment, verbose=0)
    np.testing.assert_array_equal(resumed.get_flat_parameters(), straight.get_flat_parameters())
    unaugmented = mq.models.lenet5(seed=2)
    unaugmented.fit(X, y, epochs=3, batch_size=16, verbose=0)
    assert not np.array_equal(unaugmented.get_flat_parameters(), straight.get_flat_parameters())


def test_files_without_an_augment_generator_still_load():
    model = mq.models.lenet5(seed=5)
    model.state.augment_rng.random(3)
    states = model.training_state()
    del states["augment_rng"]   # as files written before fit could augment
    fresh = mq.models.lenet5(seed=5)
    fresh.set_training_state(states)
    assert fresh.state.generator_states()["augment_rng"] == np.random.default_rng([5, 3]).bit_generator.state

