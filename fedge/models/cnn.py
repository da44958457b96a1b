"""Convolutional and fully connected models trained by the fleet (the teachers)."""

from torch import Tensor, nn

from fedge.models.registry import register_model

__all__ = ["TwoConvCNN", "build_mlp", "image_dims"]


class TwoConvCNN(nn.Module):
    """Two same-padded convolutions (``channels``), each followed by GroupNorm in ``groups``
    groups (if given) or BatchNorm (``batch_norm``), ReLU and 2x2 max pooling; then a
    ``hidden``-unit fully connected layer (if given) and the logits (the loss applies the
    softmax)."""

    def __init__(
        self,
        in_channels: int,
        height: int,
        width: int,
        num_classes: int,
        *,
        channels: tuple[int, int],
        kernel_size: int = 3,
        hidden: int | None = None,
        groups: int | None = None,
        batch_norm: bool = False,
    ) -> None:
        super().__init__()
        features: list[nn.Module] = []
        previous = in_channels
        for out in channels:
            features.append(
                nn.Conv2d(previous, out, kernel_size=kernel_size, padding=kernel_size // 2)
            )
            if groups is not None:
                features.append(nn.GroupNorm(groups, out))
            elif batch_norm:
                features.append(nn.BatchNorm2d(out))
            features += [nn.ReLU(), nn.MaxPool2d(2)]
            previous = out
        self.features = nn.Sequential(*features)
        flat = previous * (height // 4) * (width // 4)
        head: list[nn.Module] = [nn.Flatten()]
        if hidden is not None:
            head += [nn.Linear(flat, hidden), nn.ReLU()]
            flat = hidden
        head.append(nn.Linear(flat, num_classes))
        self.classifier = nn.Sequential(*head)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))


def image_dims(input_shape: tuple[int, ...]) -> tuple[int, int, int]:
    """``(channels, height, width)`` of an image input a two-pooling CNN can take."""
    channels, height, width = input_shape
    if height < 4 or width < 4:
        raise ValueError(f"image input must be at least 4x4, got {height}x{width}")
    return channels, height, width


@register_model("fedavg-cnn", images_only=True)
def build_fedavg_cnn(*, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """The FedAvg paper's MNIST CNN (5x5 conv 32, pool, 5x5 conv 64, pool, FC 512).

    The CNN of McMahan et al. 2017: 1,663,370 parameters on MNIST, a softmax output (the
    logits; the loss applies the softmax).
    """
    return TwoConvCNN(
        *image_dims(input_shape), num_classes, channels=(32, 64), kernel_size=5, hidden=512
    )


@register_model("cnn-small", images_only=True)
def build_cnn_small(*, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """A small CNN (3x3 conv 16, pool, 3x3 conv 32, pool, FC 128)."""
    return TwoConvCNN(*image_dims(input_shape), num_classes, channels=(16, 32), hidden=128)


@register_model("cnn-bn", images_only=True)
def build_cnn_bn(*, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """The small CNN with BatchNorm after each convolution: the model FedBN personalises
    (each device keeps its own normalisation statistics; not for DP-SGD)."""
    return TwoConvCNN(
        *image_dims(input_shape), num_classes, channels=(16, 32), hidden=128, batch_norm=True
    )


@register_model("dp-cnn", images_only=True, student=True)
def build_dp_cnn(*, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """A GroupNorm CNN for DP-SGD (3x3 conv 8, pool, 3x3 conv 16, pool; ~8 k params).

    Per-sample gradient clipping rules out BatchNorm (it mixes samples); GroupNorm keeps the
    activations in range without it, and the few parameters (about 8 k on MNIST) keep the
    DP noise, whose norm grows with the square root of the parameter count, small.
    """
    return TwoConvCNN(*image_dims(input_shape), num_classes, channels=(8, 16), groups=4)


@register_model("mlp", images_only=False)
def build_mlp(
    *, input_shape: tuple[int, ...], num_classes: int, hidden: tuple[int, ...] = (64, 32)
) -> nn.Module:
    """A multilayer perceptron for tabular data (flattens images)."""
    in_features = 1
    for dim in input_shape:
        in_features *= dim
    layers: list[nn.Module] = [nn.Flatten()]
    for width in hidden:
        layers += [nn.Linear(in_features, width), nn.ReLU()]
        in_features = width
    layers.append(nn.Linear(in_features, num_classes))
    return nn.Sequential(*layers)
