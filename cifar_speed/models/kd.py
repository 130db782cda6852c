"""The PyTorch knowledge-distillation tutorial's teacher (DeepNN) and student (LightNN).

`forward(x)` returns logits. `forward_features(x)` returns (logits, hidden) for the cosine loss
(flattened features before the classifier) and `forward_feature_map(x)` returns (logits, map) for
the regressor loss (the last conv feature map). One module each, so checkpoints stay plain.
"""
from torch import nn

from . import register_model


class DeepNN(nn.Module):
    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 128, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(128, 64, 3, padding=1), nn.ReLU(inplace=True),
            nn.MaxPool2d(2, 2),
            nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(64, 32, 3, padding=1), nn.ReLU(inplace=True),
            nn.MaxPool2d(2, 2),
        )
        self.classifier = nn.Sequential(
            nn.Linear(2048, 512), nn.ReLU(inplace=True), nn.Dropout(0.1), nn.Linear(512, num_classes),
        )

    def forward_feature_map(self, x):
        fmap = self.features(x)                     # [B, 32, 8, 8]
        return self.classifier(fmap.flatten(1)), fmap

    def forward_features(self, x):
        logits, fmap = self.forward_feature_map(x)
        # The tutorial pools the teacher's 2048 features to the student's 1024 for the cosine loss.
        return logits, nn.functional.avg_pool1d(fmap.flatten(1), 2)

    def forward(self, x):
        return self.classifier(self.features(x).flatten(1))


class LightNN(nn.Module):
    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2, 2),
            nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2, 2),
        )
        self.classifier = nn.Sequential(
            nn.Linear(1024, 256), nn.ReLU(inplace=True), nn.Dropout(0.1), nn.Linear(256, num_classes),
        )

    def forward_feature_map(self, x):
        fmap = self.features(x)                     # [B, 16, 8, 8]
        return self.classifier(fmap.flatten(1)), fmap

    def forward_features(self, x):
        logits, fmap = self.forward_feature_map(x)
        return logits, fmap.flatten(1)

    def forward(self, x):
        return self.classifier(self.features(x).flatten(1))


@register_model
def deepnn(num_classes: int = 10) -> nn.Module:
    return DeepNN(num_classes)


@register_model
def lightnn(num_classes: int = 10) -> nn.Module:
    return LightNN(num_classes)
