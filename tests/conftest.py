import os

import torch

# Without a GPU, Triton kernels run in Triton's interpreter. The flag is read when kernels are defined,
# so it must be set before any test module imports one.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
