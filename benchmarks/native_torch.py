"""The benchmark cases written natively in PyTorch, layer for layer.

Each module has the same layer sizes as the kzoo model it is compared with;
the harness checks that the trainable parameter counts are equal.
"""

import torch
from torch import nn


class MLP(nn.Module):
    def __init__(self, in_features=784, hidden=(512, 512), num_classes=10):
        super().__init__()
        layers, width = [], in_features
        for units in hidden:
            layers += [nn.Linear(width, units), nn.ReLU()]
            width = units
        layers.append(nn.Linear(width, num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x):
        return self.net(x.flatten(1))


def conv_bn_relu(cin, cout, stride=1):
    return [nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]


class SimpleCNN(nn.Module):
    """Stages of (conv-BN-ReLU) x convs, max-pool; global average pool; dropout; head."""

    def __init__(self, in_channels=3, widths=(32, 64, 128), convs_per_stage=2, num_classes=10,
                 dropout=0.5):
        super().__init__()
        layers, cin = [], in_channels
        for width in widths:
            for _ in range(convs_per_stage):
                layers += conv_bn_relu(cin, width)
                cin = width
            layers.append(nn.MaxPool2d(2, ceil_mode=True))
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(cin, num_classes))

    def forward(self, x):  # x: (B, C, H, W)
        return self.head(self.features(x).mean(dim=(2, 3)))


class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Identity()
        if stride != 1 or cin != cout:  # projection shortcut
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                          nn.BatchNorm2d(cout))

    def forward(self, x):
        y = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(y)) + self.shortcut(x))


class CifarResNet(nn.Module):
    """ResNet-6n+2 for 32x32 images: 3x3 stem, three stages of n basic blocks."""

    def __init__(self, blocks=(3, 3, 3), widths=(16, 32, 64), num_classes=10):
        super().__init__()
        self.stem = nn.Sequential(*conv_bn_relu(3, widths[0]))
        layers, cin = [], widths[0]
        for i, (n, width) in enumerate(zip(blocks, widths)):
            for j in range(n):
                layers.append(BasicBlock(cin, width, 2 if (i > 0 and j == 0) else 1))
                cin = width
        self.stages = nn.Sequential(*layers)
        self.head = nn.Linear(cin, num_classes)

    def forward(self, x):
        return self.head(self.stages(self.stem(x)).mean(dim=(2, 3)))


class RecurrentClassifier(nn.Module):
    """One LSTM/GRU layer, the last hidden state, a linear head."""

    def __init__(self, cell="lstm", features=16, units=128, num_classes=10):
        super().__init__()
        rnn = nn.LSTM if cell == "lstm" else nn.GRU
        self.rnn = rnn(features, units, batch_first=True)
        if cell == "lstm":
            # Keras' LSTM has one bias per gate, torch two (b_ih + b_hh): freeze
            # b_hh at zero so both compute and train the same function.
            with torch.no_grad():
                self.rnn.bias_hh_l0.zero_()
            self.rnn.bias_hh_l0.requires_grad_(False)
        self.head = nn.Linear(units, num_classes)

    def forward(self, x):
        out, _ = self.rnn(x)
        return self.head(out[:, -1])


def trainable_params(module):
    return sum(p.numel() for p in module.parameters() if p.requires_grad)
