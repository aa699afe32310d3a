"""Interoperability with other ecosystems: Hugging Face export, GPT-2 weights, hooks.

Nothing here is imported by the core; ``transformers`` is needed only by the modules that say so
(install the extra: ``pip install 'symbreak[hf]'``).
"""
