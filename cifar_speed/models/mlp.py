"""The report's MLP baseline: 3072 -> 1024 -> 512 -> 256 -> 128 -> 10 (Keras Dense + BN + Dropout)."""
from torch import nn

from . import register_model


class MLP(nn.Module):
    def __init__(self, num_classes: int = 10):
        super().__init__()

        def block(i, o, drop):
            return [nn.Linear(i, o), nn.ReLU(inplace=True), nn.BatchNorm1d(o), nn.Dropout(drop)]

        self.net = nn.Sequential(
            nn.Flatten(),
            *block(3072, 1024, 0.4),
            *block(1024, 512, 0.3),
            *block(512, 256, 0.2),
            nn.Linear(256, 128), nn.ReLU(inplace=True),
            nn.Linear(128, num_classes),
        )

    def forward(self, x):
        return self.net(x)


@register_model
def mlp(num_classes: int = 10) -> nn.Module:
    return MLP(num_classes)
