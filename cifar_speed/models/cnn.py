"""The report's custom CNN (Keras): two conv blocks of 32 and 64 filters, a 512-unit head.

Conv32-BN, Conv32-BN, MaxPool, Drop .35, Conv64-BN, Conv64-BN, MaxPool, Drop .35, Flatten(4096),
Dense512-BN, Drop .65, Dense10; 3x3 'same' convolutions with ReLU. 2,169,770 trainable parameters.
"""
from torch import nn

from . import register_model


def conv_bn(i: int, o: int) -> list[nn.Module]:
    # Keras order in the report: Conv2D(activation='relu') then BatchNormalization.
    return [nn.Conv2d(i, o, 3, padding=1), nn.ReLU(inplace=True), nn.BatchNorm2d(o)]


class CustomCNN(nn.Module):
    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.features = nn.Sequential(
            *conv_bn(3, 32), *conv_bn(32, 32), nn.MaxPool2d(2), nn.Dropout(0.35),
            *conv_bn(32, 64), *conv_bn(64, 64), nn.MaxPool2d(2), nn.Dropout(0.35),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(64 * 8 * 8, 512), nn.ReLU(inplace=True), nn.BatchNorm1d(512), nn.Dropout(0.65),
            nn.Linear(512, num_classes),
        )

    def forward(self, x):
        return self.classifier(self.features(x))


@register_model
def cnn(num_classes: int = 10) -> nn.Module:
    return CustomCNN(num_classes)
