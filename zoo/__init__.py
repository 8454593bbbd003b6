"""The zoo: sequence-model blocks for language models, one LM trunk, recall and throughput benchmarks."""
__version__ = "0.1.0"
