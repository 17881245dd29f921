"""kzoo against the same architectures written natively in PyTorch.

    python -m benchmarks                 # every case, every installed backend
    python -m benchmarks --cases mlp --steps 20 --rounds 3
"""
