"""The float model, its numpy training (and QAT), and the PyTorch adapter."""
