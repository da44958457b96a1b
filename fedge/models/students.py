"""Small student models that the release pipeline distils the global model into."""

from torch import Tensor, nn

from fedge.models.registry import register_model

__all__ = ["TinyCNN"]


class TinyCNN(nn.Module):
    """Three 3x3 convolutions (8, 16, 32 channels) with pooling and global average pooling."""

    def __init__(self, in_channels: int, num_classes: int) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 8, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(8, 16, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(16, 32, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
        )
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(32, num_classes))

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))


@register_model("student-cnn", images_only=True, student=True)
def build_student_cnn(*, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """A tiny CNN student (3x3 convs 8/16/32, global average pooling)."""
    return TinyCNN(input_shape[0], num_classes)


@register_model("student-mlp", images_only=False, student=True)
def build_student_mlp(*, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """A one-hidden-layer (32 units) perceptron student."""
    in_features = 1
    for dim in input_shape:
        in_features *= dim
    return nn.Sequential(
        nn.Flatten(), nn.Linear(in_features, 32), nn.ReLU(), nn.Linear(32, num_classes)
    )
