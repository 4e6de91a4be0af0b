"""uncert: post-hoc Laplace approximations for trained PyTorch networks."""

__version__ = "0.1.0"
