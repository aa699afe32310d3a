"""``IGNORE_INDEX``: the target id the loss skips (torch's ``cross_entropy`` default).

It lives on the lowest floor because both sides of the loss need it: the data loaders mark
positions that carry no target with it, and the model's loss kernels skip it.
"""

IGNORE_INDEX = -100
