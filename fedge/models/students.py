"""Small student models that the release pipeline distils the global model into.

Sized for the default release (MNIST-5k, ``fedavg-cnn`` teacher of 1.66 M parameters): the
``student-cnn`` has about 20 k parameters and a tenth of the teacher's multiply-adds, and
keeps the spatial layout up to its classifier (global average pooling at this size costs
several accuracy points). ``student-tiny`` halves its channels (about 9 k parameters) so that
its int8 file fits an ultra-tiny device's 16 KiB (the camera profile); distilled from the
default teacher it stays within about a point of it.
"""

from torch import nn

from fedge.models.cnn import TwoConvCNN, build_mlp, image_dims
from fedge.models.registry import register_model

__all__: list[str] = []


@register_model("student-cnn", images_only=True, student=True)
def build_student_cnn(*, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """A small CNN student (3x3 convs 16/32 with pooling, linear head; ~20 k params on MNIST)."""
    return TwoConvCNN(*image_dims(input_shape), num_classes, channels=(16, 32))


@register_model("student-tiny", images_only=True, student=True)
def build_student_tiny(*, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """An ultra-tiny CNN student (3x3 convs 8/16 with pooling, linear head; ~9 k params)."""
    return TwoConvCNN(*image_dims(input_shape), num_classes, channels=(8, 16))


@register_model("student-mlp", images_only=False, student=True)
def build_student_mlp(*, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """A one-hidden-layer (32 units) perceptron student."""
    return build_mlp(input_shape=input_shape, num_classes=num_classes, hidden=(32,))
