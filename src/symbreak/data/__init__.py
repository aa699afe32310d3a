"""Offline data pipeline: GPT-2 tokenizer, llm.c shards, corpus preparation, batch sampling.

Text is tokenized once (``prepare_*``) into memory-mappable shards; training samples windows
from them deterministically (``TrainBatches``), so runs are reproducible and resumable.
"""

from symbreak.data.corpus import (
    FORMAT_VERSION,
    cached_shakespeare,
    default_cache_dir,
    prepare_inputs,
    prepare_texts,
    read_text_inputs,
    shakespeare_texts,
)
from symbreak.data.loader import (
    PADDED_GPT2_VOCAB,
    DataBundle,
    TokenWindows,
    TrainBatches,
    addition_spec,
    config_from_dict,
    data_tokenizer,
    default_vocab_size,
    find_shards,
    load_config,
    load_data,
    load_run_data,
    loss_positions,
    resolve_config,
    run_loss_positions,
    val_batches,
    val_window_indices,
)
from symbreak.data.shards import read_shard, write_shard
from symbreak.data.tokenizer import (
    EOT_ID,
    GPT2_VOCAB_SIZE,
    CharTokenizer,
    GPT2Tokenizer,
    decode,
    encode,
    get_tokenizer,
    tokenizer_from_meta,
)

__all__ = [
    "EOT_ID",
    "FORMAT_VERSION",
    "GPT2_VOCAB_SIZE",
    "PADDED_GPT2_VOCAB",
    "CharTokenizer",
    "DataBundle",
    "GPT2Tokenizer",
    "TokenWindows",
    "TrainBatches",
    "addition_spec",
    "cached_shakespeare",
    "config_from_dict",
    "data_tokenizer",
    "decode",
    "default_cache_dir",
    "default_vocab_size",
    "encode",
    "find_shards",
    "get_tokenizer",
    "load_config",
    "load_data",
    "load_run_data",
    "loss_positions",
    "prepare_inputs",
    "prepare_texts",
    "read_shard",
    "read_text_inputs",
    "resolve_config",
    "run_loss_positions",
    "shakespeare_texts",
    "tokenizer_from_meta",
    "val_batches",
    "val_window_indices",
    "write_shard",
]
