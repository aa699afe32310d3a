"""symbreak: GPT-style transformers with symmetry breaking in attention.

Batchwise-sampled, unlearned query and value biases (bQ, bV) remove the redundant rotational
degrees of freedom of each attention head. See README.md for the quick start.
"""

__version__ = "0.1.0"
