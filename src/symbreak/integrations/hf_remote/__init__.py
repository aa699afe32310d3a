"""Custom Hugging Face code shipped inside exported directories (see ``symbreak export``).

The modules here are copied verbatim next to the weights; they import only ``torch`` and
``transformers`` so an export loads where symbreak is not installed.
"""
