"""Convolutional and fully connected models trained by the fleet (the teachers)."""

from torch import Tensor, nn

from fedge.models.registry import register_model

__all__ = ["DPCNN", "BatchNormCNN", "FedAvgCNN", "SmallCNN", "build_mlp"]


class FedAvgCNN(nn.Module):
    """The CNN of the FedAvg paper (McMahan et al. 2017): 1,663,370 parameters on MNIST.

    Two 5x5 convolutions (32, 64 channels), each followed by 2x2 max pooling, a 512-unit fully
    connected layer and a softmax output (the logits; the loss applies the softmax).
    """

    def __init__(self, in_channels: int, height: int, width: int, num_classes: int) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 32, kernel_size=5, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, kernel_size=5, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        flat = 64 * (height // 4) * (width // 4)
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(flat, 512), nn.ReLU(), nn.Linear(512, num_classes)
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))


class SmallCNN(nn.Module):
    """A smaller CNN: two 3x3 convolutions (16, 32 channels) and a 128-unit layer."""

    def __init__(self, in_channels: int, height: int, width: int, num_classes: int) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 16, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(16, 32, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        flat = 32 * (height // 4) * (width // 4)
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(flat, 128), nn.ReLU(), nn.Linear(128, num_classes)
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))


class BatchNormCNN(nn.Module):
    """:class:`SmallCNN` with BatchNorm after each convolution: the model FedBN personalises.

    Its normalisation statistics are each device's own under ``--strategy fedbn``; not for
    DP-SGD (BatchNorm mixes samples).
    """

    def __init__(self, in_channels: int, height: int, width: int, num_classes: int) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 16, kernel_size=3, padding=1),
            nn.BatchNorm2d(16),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(16, 32, kernel_size=3, padding=1),
            nn.BatchNorm2d(32),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        flat = 32 * (height // 4) * (width // 4)
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(flat, 128), nn.ReLU(), nn.Linear(128, num_classes)
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))


class DPCNN(nn.Module):
    """A small CNN for DP-SGD: 3x3 convolutions (8, 16 channels) with GroupNorm, no BatchNorm.

    Per-sample gradient clipping rules out BatchNorm (it mixes samples); GroupNorm keeps the
    activations in range without it, and the few parameters (about 8 k on MNIST) keep the
    DP noise, whose norm grows with the square root of the parameter count, small.
    """

    def __init__(self, in_channels: int, height: int, width: int, num_classes: int) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 8, kernel_size=3, padding=1),
            nn.GroupNorm(4, 8),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(8, 16, kernel_size=3, padding=1),
            nn.GroupNorm(4, 16),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(16 * (height // 4) * (width // 4), num_classes)
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))


def _image_dims(input_shape: tuple[int, ...]) -> tuple[int, int, int]:
    channels, height, width = input_shape
    if height < 4 or width < 4:
        raise ValueError(f"image input must be at least 4x4, got {height}x{width}")
    return channels, height, width


@register_model("fedavg-cnn", images_only=True)
def build_fedavg_cnn(*, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """The FedAvg paper's MNIST CNN (5x5 conv 32, pool, 5x5 conv 64, pool, FC 512)."""
    return FedAvgCNN(*_image_dims(input_shape), num_classes)


@register_model("cnn-small", images_only=True)
def build_cnn_small(*, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """A small CNN (3x3 conv 16, pool, 3x3 conv 32, pool, FC 128)."""
    return SmallCNN(*_image_dims(input_shape), num_classes)


@register_model("cnn-bn", images_only=True)
def build_cnn_bn(*, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """The small CNN with BatchNorm after each convolution (for FedBN)."""
    return BatchNormCNN(*_image_dims(input_shape), num_classes)


@register_model("dp-cnn", images_only=True, student=True)
def build_dp_cnn(*, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """A GroupNorm CNN for DP-SGD (3x3 conv 8, pool, 3x3 conv 16, pool; ~8 k params)."""
    return DPCNN(*_image_dims(input_shape), num_classes)


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
