"""Small student models that the release pipeline distils the global model into.

Sized for the default release (MNIST-5k, ``fedavg-cnn`` teacher of 1.66 M parameters): the
``student-cnn`` has about 20 k parameters and a tenth of the teacher's multiply-adds, and
keeps the spatial layout up to its classifier (global average pooling at this size costs
several accuracy points). ``student-tiny`` halves its channels (about 9 k parameters) so that
its int8 file fits an ultra-tiny device's 16 KiB (the camera profile); distilled from the
default teacher it stays within about a point of it.
"""

from torch import Tensor, nn

from fedge.models.registry import register_model

__all__ = ["StudentCNN"]


class StudentCNN(nn.Module):
    """Two 3x3 convolutions (16, 32 channels), each with 2x2 max pooling, and a linear head."""

    def __init__(
        self,
        in_channels: int,
        height: int,
        width: int,
        num_classes: int,
        channels: tuple[int, int] = (16, 32),
    ) -> None:
        super().__init__()
        c1, c2 = channels
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, c1, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(c1, c2, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(c2 * (height // 4) * (width // 4), num_classes)
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))


@register_model("student-cnn", images_only=True, student=True)
def build_student_cnn(*, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """A small CNN student (3x3 convs 16/32 with pooling, linear head; ~20 k params on MNIST)."""
    return StudentCNN(*_image_dims(input_shape), num_classes)


@register_model("student-tiny", images_only=True, student=True)
def build_student_tiny(*, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """An ultra-tiny CNN student (3x3 convs 8/16 with pooling, linear head; ~9 k params)."""
    return StudentCNN(*_image_dims(input_shape), num_classes, channels=(8, 16))


def _image_dims(input_shape: tuple[int, ...]) -> tuple[int, int, int]:
    channels, height, width = input_shape
    if height < 4 or width < 4:
        raise ValueError(f"image input must be at least 4x4, got {height}x{width}")
    return channels, height, width


@register_model("student-mlp", images_only=False, student=True)
def build_student_mlp(*, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """A one-hidden-layer (32 units) perceptron student."""
    in_features = 1
    for dim in input_shape:
        in_features *= dim
    return nn.Sequential(
        nn.Flatten(), nn.Linear(in_features, 32), nn.ReLU(), nn.Linear(32, num_classes)
    )
