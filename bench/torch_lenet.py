"""Classic LeNet-5 in PyTorch, layer for layer the same as `models.lenet.build_lenet5`, for the
side-by-side benchmarks only (torch is never a runtime dependency)."""

import torch
from torch import nn

from models.lenet import C3_INPUTS


class LeNet5(nn.Module):
    """[B, 1, 32, 32] -> [B, 10] logits; tanh, average pooling, C3's connection table."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.c1 = nn.Conv2d(1, 6, 5)
        self.c3 = nn.Conv2d(6, 16, 5)
        self.c5 = nn.Linear(16 * 5 * 5, 120)  # a 5x5 convolution over a 5x5 map, as in Keras
        self.f6 = nn.Linear(120, 84)
        self.output = nn.Linear(84, num_classes)
        self.pool = nn.AvgPool2d(2)
        mask = torch.zeros(16, 6, 1, 1)
        for out, sources in enumerate(C3_INPUTS):
            mask[out, sources] = 1.0
        self.register_buffer("c3_mask", mask)

    def forward(self, x):
        x = self.pool(torch.tanh(self.c1(x)))  # 14x14x6
        c3_kernel = self.c3.weight * self.c3_mask
        x = self.pool(torch.tanh(nn.functional.conv2d(x, c3_kernel, self.c3.bias)))  # 5x5x16
        x = torch.tanh(self.c5(x.flatten(1)))  # 120
        return self.output(torch.tanh(self.f6(x)))
